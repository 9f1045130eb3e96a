#!/usr/bin/env bash
# System benchmarks, each figure beside its floor in the same run:
#  - bitcask (crates/engine/benches/bitcask_system.rs) at 1 M and 10 M keys: disk sequential write, append and
#    overwrite fdatasync rates, engine PUT/GET on one thread, keydir bytes per key, sync=always
#    at 1/8/64 writers, start-up with hints vs a full scan, merge vs sequential write;
#  - memory engine (crates/engine/benches/memory_bench.rs): throughput, durable puts, snapshot pause, bytes/key;
#  - Redis 7's used_memory per key on the same data (16 B keys, 100 B values), for the memory
#    engine's bytes-per-key target.
#
#   scripts/bench/system.sh     # KEYS (default 1000000), KEYS_BIG (default 10000000), OUT
set -euo pipefail
source "$(dirname "$0")/lib.sh"
OUT=${OUT:-$ROOT/docs/bench/data}
KEYS=${KEYS:-1000000}
KEYS_BIG=${KEYS_BIG:-10000000}
mkdir -p "$OUT"
cd "$ROOT"
echo "# $(date -u +%FT%TZ) $(machine)" | tee "$OUT/machine-system.txt"

label() { case $1 in 1000000) echo 1M;; 10000000) echo 10M;; *) echo "$1";; esac; }
for n in $KEYS $KEYS_BIG; do
  echo "== bitcask system benchmark, $n keys"
  timeout 1800 cargo bench --bench bitcask_system -- --keys "$n" --dir "$WORK/bitcask" \
    --json "$OUT/system-$(label "$n").json" | tee "$OUT/system-$(label "$n").txt"
done

echo "== memory engine benchmark, $KEYS keys"
timeout 1800 cargo bench --bench memory_bench -- mem "$KEYS" | tee "$OUT/memory-bench.txt"
timeout 1800 cargo bench --bench memory_bench -- all "$KEYS" | tee -a "$OUT/memory-bench.txt"

echo "== Redis used_memory per key, $KEYS keys of 16 B with 100 B values"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/redis"
timeout 900 redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
  --appendonly no --daemonize no --logfile "$WORK/redis.log" &
rpid=$!; PIDS+=("$rpid")
for _ in $(seq 1 500); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.02; done
before=$(redis-cli -p "$port" info memory | awk -F: '/^used_memory:/ {print $2+0}')
python3 - "$KEYS" <<'PY' | timeout 600 redis-cli -p "$port" --pipe >/dev/null
import sys
n = int(sys.argv[1])
out = sys.stdout.buffer
val = b"v" * 100
for i in range(n):
    k = b"key:%012d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$16\r\n" + k + b"\r\n$100\r\n" + val + b"\r\n")
PY
after=$(redis-cli -p "$port" info memory | awk -F: '/^used_memory:/ {print $2+0}')
keys=$(redis-cli -p "$port" dbsize)
python3 -c "print('redis used_memory per key: %.1f B/key (%d keys)' % (($after-$before)/$keys, $keys))" \
  | tee "$OUT/redis-memory.txt"
stop_pid "$rpid"

python3 "$ROOT/scripts/bench/report.py" --data "$OUT" --out "${REPORT_OUT:-$ROOT/docs/bench}"
