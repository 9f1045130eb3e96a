#!/usr/bin/env bash
# HTTP PUT with sync=always and sync=never on both engines, beside each server's own /healthz
# (same load tool, same connections), in one run of about a minute and a half.
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
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
