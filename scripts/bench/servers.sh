#!/usr/bin/env bash
# hoardhaven over HTTP beside Redis 7 and etcd, on loopback, in one run; every server is
# started here and stopped before the script ends.
#
#   scripts/bench/servers.sh            # writes JSON/CSV to docs/bench/data, then the report
#
# Environment: DUR (per test, default 6s), ROUNDS (slices per test, tests taking turns, default 3), CONN (default 50), KEYS (key space, default
# 10000), SWEEP (connection counts for the concurrency plot, default "1 4 16 50 128"),
# REDIS_N / REDIS_N_AOF (redis-benchmark requests, default 300000 / 150000),
# OUT (result directory), NO_BUILD=1 to skip the release build.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
OUT=${OUT:-$ROOT/docs/bench/data}
DUR=${DUR:-6s}
ROUNDS=${ROUNDS:-3}
CONN=${CONN:-50}
KEYS=${KEYS:-10000}
SWEEP=${SWEEP:-1 4 16 50 128}
REDIS_N=${REDIS_N:-300000}
REDIS_N_AOF=${REDIS_N_AOF:-150000}
mkdir -p "$OUT"
build
hb() { timeout 900 "$BIN" bench -q --keys "$KEYS" --duration "$DUR" --rounds "$ROUNDS" "$@"; }

echo "# $(date -u +%FT%TZ) $(machine)" | tee "$OUT/machine.txt"

# --- hoardhaven, both engines, both sync modes ------------------------------------------------
for engine in bitcask memory; do
  for sync in never always; do
    name="hh-$engine-$sync"
    echo "== $name"
    hh_start "$name" --engine "$engine" --sync "$sync"
    hb --url "$HH_URL" -c "$CONN" -t get,put,mixed --label "$name" --json "$OUT/$name.json"
    if [ "$engine" = bitcask ] && [ "$sync" = never ] && command -v wrk >/dev/null; then
      # A second client for the same server: wrk (C, one key) beside the Rust load tool.
      { echo "wrk -t2 -c$CONN -d$DUR GET /healthz"; timeout 300 wrk -t2 -c"$CONN" -d"$DUR" "$HH_URL/healthz"
        echo "wrk -t2 -c$CONN -d$DUR GET /kv/k000000000000001"
        timeout 300 wrk -t2 -c"$CONN" -d"$DUR" "$HH_URL/kv/k000000000000001"; } > "$OUT/wrk-$name.txt"
    fi
    if [ "$engine" = bitcask ]; then
      for c in $SWEEP; do
        tests=put; [ "$sync" = never ] && tests=get,put
        hb --url "$HH_URL" -c "$c" -t "$tests" --no-preload --label "$name-c$c" \
          --json "$OUT/sweep-$name-c$c.json" >/dev/null
      done
    fi
    stop_pid "$HH_PID"
  done
done

# --- Redis 7: no persistence, then appendfsync always ------------------------------------------
redis_run redis-nopersist "$REDIS_N" ping_mbulk,set,get --appendonly no
redis_run redis-aof-always "$REDIS_N_AOF" ping_mbulk,set,get --appendonly yes --appendfsync always

# --- etcd through its HTTP JSON gateway, driven by the same load tool ---------------------------
if etcd_start; then
  echo "== etcd"
  hb --target etcd --url "$ETCD_URL" -c "$CONN" -t get,put --label etcd --json "$OUT/etcd.json"
  stop_pid "$ETCD_PID"
fi

python3 "$ROOT/scripts/bench/report.py" --data "$OUT" --out "${REPORT_OUT:-$ROOT/docs/bench}"
