#!/usr/bin/env bash
# HTTP PUT with sync=always and sync=never on both engines, beside each server's own /healthz
# (same load tool, same connections), then Redis 7 SET (no persistence, appendfsync always;
# redis-benchmark, same connections, values and keys) and etcd's durable put (the same load
# tool, --target etcd), in one run of about two minutes. Raw results go to $OUT
# (default: a temporary directory).
#
#   NO_BUILD=1 scripts/bench/writes.sh      # after `cargo build --release`
#
# Environment: DUR (per test, default 5s), CONN (default 50), SWEEP (connection counts for
# bitcask sync=always PUT, default "1 256"), KEYS (default 10000).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DUR=${DUR:-5s}
CONN=${CONN:-50}
KEYS=${KEYS:-10000}
SWEEP=${SWEEP:-1 256}
OUT=${OUT:-$WORK/out}
REDIS_N=${REDIS_N:-200000}
mkdir -p "$OUT"
build
hb() { timeout 300 "$BIN" bench --keys "$KEYS" --duration "$DUR" --rounds 1 "$@"; }
echo "# $(date -u +%FT%TZ) $(machine)"
for engine in bitcask memory; do
  for sync in never always; do
    name="hh-$engine-$sync"
    echo "== $name (c=$CONN)"
    hh_start "$name" --engine "$engine" --sync "$sync"
    hb --url "$HH_URL" -c "$CONN" -t put --label "$name"
    if [ "$engine" = bitcask ] && [ "$sync" = always ]; then
      for c in $SWEEP; do
        echo "== $name (c=$c)"
        hb --url "$HH_URL" -c "$c" -t put --no-preload --label "$name-c$c"
      done
    fi
    stop_pid "$HH_PID"
  done
done
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  redis_run redis-nopersist "$REDIS_N" set --appendonly no
  redis_run redis-aof-always "$REDIS_N" set --appendonly yes --appendfsync always
else
  echo "redis-server not installed (apt-get install -y redis-server): skipped" >&2
fi
if etcd_start; then
  echo "== etcd (durable put, c=$CONN)"
  hb --target etcd --url "$ETCD_URL" -c "$CONN" -t put --label etcd
  stop_pid "$ETCD_PID"
fi
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
