#!/usr/bin/env bash
# HTTP throughput of hoardhaven on loopback, in one run (release build, wrk).
#   bench/http/run.sh [SECONDS] [CONNECTIONS]
# For each server configuration: GET /healthz (static route), GET /kv/k (100 B value) and
# PUT of 100 B values (wrk Lua script), requests/s and p50/p99 latency.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-8}
CONN=${2:-64}
BIN=target/release/hoardhaven
[ -x "$BIN" ] || cargo build --release
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

start() { # name, flags...
  local name=$1; shift
  rm -f "$WORK/port"
  "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name" --port-file "$WORK/port" \
    --log-level warn "$@" 2>"$WORK/$name.log" &
  PID=$!
  for _ in $(seq 1 500); do [ -s "$WORK/port" ] && break; sleep 0.02; done
  ADDR=$(cat "$WORK/port")
  for _ in $(seq 1 500); do curl -sf "http://$ADDR/readyz" >/dev/null && break; sleep 0.02; done
  head -c 100 /dev/zero | tr '\0' 'v' | curl -sf -X PUT --data-binary @- "http://$ADDR/kv/k" >/dev/null
}
stop() { kill "$PID"; wait "$PID" || true; PID=; }

measure() { # label, wrk args...
  local label=$1; shift
  local out
  out=$(wrk -t2 -c"$CONN" -d"${DUR}s" --latency "$@")
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local errs
  errs=$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr '\n' ' ')
  printf '%-44s %10s req/s   p50 %-9s p99 %-9s %s\n' "$label" "$rps" "$p50" "$p99" "$errs"
}

echo "# wrk -t2 -c$CONN -d${DUR}s, $(nproc) cores, $(date -u +%FT%TZ)"
if [ -n "${DEFAULTS_ONLY:-}" ]; then
  # The default dispatch (reads inline, writes on the dedicated pool), both sync modes.
  for sync in never always; do
    start "default-$sync" --sync "$sync"
    measure "[sync=$sync defaults] GET /healthz" "http://$ADDR/healthz"
    measure "[sync=$sync defaults] GET /kv/k (100 B)" "http://$ADDR/kv/k"
    measure "[sync=$sync defaults] PUT /kv/* (100 B)" -s bench/http/put.lua "http://$ADDR"
    stop
  done
  exit 0
fi
for mode in ${MODES:-inline blocking pool}; do
  start "never-$mode" --sync never --exec-reads "$mode" --exec-writes "$mode"
  measure "[sync=never exec=$mode] GET /healthz" "http://$ADDR/healthz"
  measure "[sync=never exec=$mode] GET /kv/k (100 B)" "http://$ADDR/kv/k"
  measure "[sync=never exec=$mode] PUT /kv/* (100 B)" -s bench/http/put.lua "http://$ADDR"
  stop
done
for mode in ${ALWAYS_MODES:-inline blocking pool}; do
  start "always-$mode" --sync always --exec-reads inline --exec-writes "$mode"
  measure "[sync=always exec=$mode] GET /healthz" "http://$ADDR/healthz"
  measure "[sync=always exec=$mode] PUT /kv/* (100 B)" -s bench/http/put.lua "http://$ADDR"
  stop
done
