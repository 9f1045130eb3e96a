#!/usr/bin/env bash
# Embedded engines side by side (criterion): hoardhaven's bitcask (pread and mmap) and memory
# engines, sled, redb and fjall, same workloads at equal durability; then the report.
#
#   scripts/bench/engines.sh                       # 1 M keys at 100 B, 250 k at 4 KiB
#   HH_BENCH_KEYS=100000 HH_BENCH_SECS=1 scripts/bench/engines.sh   # a quick run
# Other knobs (HH_BENCH_KEYS_4K, HH_BENCH_STORES, HH_BENCH_DIR): bench-peers/benches/engines.rs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
OUT=${OUT:-$ROOT/docs/bench/data}
mkdir -p "$OUT"
cd "$ROOT"
echo "# $(date -u +%FT%TZ) $(machine) keys=${HH_BENCH_KEYS:-1000000} keys4k=${HH_BENCH_KEYS_4K:-250000}" \
  | tee "$OUT/machine-engines.txt"
rm -rf target/criterion
rc=0
HH_BENCH_DIR=${HH_BENCH_DIR:-$WORK} timeout 5400 \
  cargo bench -p hoardhaven-bench-peers --bench engines >"$OUT/engines.log" 2>&1 || rc=$?
grep -E "^(loaded|[a-z0-9-]+/[0-9])|thrpt" "$OUT/engines.log" || true
[ "$rc" = 0 ] || { echo "cargo bench failed ($rc); see $OUT/engines.log" >&2; exit "$rc"; }
python3 "$ROOT/scripts/bench/report.py" --data "$OUT" --criterion target/criterion \
  --out "${REPORT_OUT:-$ROOT/docs/bench}"
