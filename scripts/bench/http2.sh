#!/usr/bin/env bash
# GET over HTTP/2 (h2c prior knowledge, 4 connections x 25 streams = 100 in flight) beside
# HTTP/1.1 (100 connections x 1, and 4 connections x 1) against one release server, with
# h2load (Debian's nghttp2-client). Prints h2load's summary lines and the load average.
#   scripts/bench/http2.sh [SECONDS]        (default 10 per run, after 2 s of warm-up)
set -euo pipefail
secs=${1:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release/hoardhaven
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
"$bin" serve --listen 127.0.0.1:0 --port-file "$dir/port" --data-dir "$dir/data" \
  --log-level warn --max-in-flight 4096 2>"$dir/log" &
pid=$!
for _ in $(seq 1 500); do [ -s "$dir/port" ] && break; sleep 0.02; done
addr=$(cat "$dir/port")
until curl -sf "http://$addr/readyz" >/dev/null; do sleep 0.05; done
curl -sf -X PUT --data-binary "$(head -c 100 /dev/zero | tr '\0' v)" "http://$addr/kv/bench-key" >/dev/null
url="http://$addr/kv/bench-key"
run() {
  local name=$1; shift
  echo "== $name"
  h2load -D "$secs" --warm-up-time 2 "$@" "$url" | grep -E "^(finished in|requests:|status codes:|time for request:)"
}
run "HTTP/2 h2c, 4 connections x 25 streams" -c 4 -m 25
run "HTTP/1.1, 100 connections" --h1 -c 100 -m 1
run "HTTP/1.1, 4 connections" --h1 -c 4 -m 1
run "HTTP/2 h2c, 4 connections x 1 stream" -c 4 -m 1
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
