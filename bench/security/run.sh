#!/usr/bin/env bash
# Cost of auth and TLS on GET throughput, and behaviour under 10x the concurrency limit.
# One run, one machine, loopback; figures are ratios within the run. Release build first:
#   cargo build --release && bash bench/security/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release/hoardhaven
DUR=${DUR:-10}
T=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
TOKEN=bench-read-token-0123456789abcdef
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null

start() { # name, extra flags...
  local name=$1; shift
  "$BIN" serve --listen 127.0.0.1:0 --data-dir "$T/$name" --port-file "$T/$name.port" \
    --log-level warn "$@" >/dev/null 2>"$T/$name.log" &
  for _ in $(seq 200); do [ -s "$T/$name.port" ] && break; sleep 0.05; done
  cat "$T/$name.port"
}

PLAIN=$(start plain --sync never)
AUTH=$(start auth --sync never --auth-tokens "read:$TOKEN,write:$TOKEN-w")
TLS=$(start tls --sync never --tls-cert-file "$T/cert.pem" --tls-key-file "$T/key.pem")
sleep 1
curl -s -X PUT --data-binary 'hello-world-value-0123456789' "http://$PLAIN/kv/k" >/dev/null
curl -s -X PUT -H "Authorization: Bearer $TOKEN-w" --data-binary 'hello-world-value-0123456789' "http://$AUTH/kv/k" >/dev/null
curl -sk -X PUT --data-binary 'hello-world-value-0123456789' "https://$TLS/kv/k" >/dev/null

rps() { awk '/Requests\/sec/ {print $2}'; }
echo "== GET /kv/k, wrk -t2 -c64 -d${DUR}s (keep-alive)"
P=$(wrk -t2 -c64 -d${DUR}s "http://$PLAIN/kv/k" | tee "$T/p.txt" | rps)
A=$(wrk -t2 -c64 -d${DUR}s -H "Authorization: Bearer $TOKEN" "http://$AUTH/kv/k" | tee "$T/a.txt" | rps)
S=$(wrk -t2 -c64 -d${DUR}s "https://$TLS/kv/k" | tee "$T/s.txt" | rps)
grep -h "Non-2xx" "$T"/[pas].txt || true
printf 'plain %s req/s\nauth  %s req/s  ratio %.3f\ntls   %s req/s  ratio %.3f\n' \
  "$P" "$A" "$(echo "$A / $P" | bc -l)" "$S" "$(echo "$S / $P" | bc -l)"

echo "== overload: PUT sync=always, --max-in-flight 16, wrk -c160 (10x)"
OVER=$(start over --sync always --max-in-flight 16)
sleep 1
cat > "$T/put.lua" <<'LUA'
wrk.method = "PUT"
wrk.body = string.rep("x", 100)
local codes = {}
request = function()
  return wrk.format(nil, "/kv/key" .. math.random(1, 100000))
end
response = function(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
done = function(summary, latency, requests)
  -- per-thread tables are not merged by wrk; print what this state saw
end
LUA
wrk -t2 -c160 -d${DUR}s --latency -s "$T/put.lua" "http://$OVER" | tee "$T/o.txt"
(for _ in $(seq 20); do curl -s -o /dev/null -w '%{http_code}\n' "http://$OVER/healthz"; sleep 0.2; done) >"$T/h.txt" &
wrk -t2 -c160 -d5s -s "$T/put.lua" "http://$OVER" >/dev/null
wait %% 2>/dev/null || true
echo "healthz during overload: $(sort "$T/h.txt" | uniq -c | tr '\n' ' ')"
curl -s "http://$OVER/metrics" | grep -E '^hoardhaven_http_requests_total\{.*route="/kv/\{\*key\}"' || true
