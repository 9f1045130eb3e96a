#!/usr/bin/env bash
# hoardhaven's RESP listener beside Redis 7 (Debian's redis-server), same machine, same run,
# same load tool (redis-benchmark -c 50 -d 100 -r 10000), at equal durability:
#   hoardhaven --sync never   vs  redis-server --save '' --appendonly no
#   hoardhaven --sync always  vs  redis-server --appendonly yes --appendfsync always
# each for SET and GET, without and with 16-command pipelines (-P 16). Prints one table with
# the ratio hoardhaven / Redis per row and the load average before and after; run it on a
# quiet machine (no build or test running) or the figures decide nothing.
#
#   scripts/bench/resp.sh [requests per test, default 200000]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
N=${1:-200000}
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || {
  echo "needs redis-server and redis-benchmark (apt-get install redis-server redis-tools)" >&2; exit 1; }
build
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
bench() { # PORT PIPELINE -> "set_rps get_rps"
  redis-benchmark -p "$1" -c 50 -n "$N" -d 100 -r 10000 -P "$2" -t set,get --csv 2>/dev/null |
    python3 -c 'import csv,sys; r={row[0]:float(row[1]) for row in csv.reader(sys.stdin) if row and row[0] in ("SET","GET")}; print(r["SET"], r["GET"])'
}
declare -A RES
for durability in none always; do
  rp=$(free_port)
  if [ $durability = none ]; then
    redis-server --port "$rp" --save '' --appendonly no --dir "$WORK" --daemonize no >/dev/null &
  else
    mkdir -p "$WORK/redis-aof"
    redis-server --port "$rp" --save '' --appendonly yes --appendfsync always --dir "$WORK/redis-aof" --daemonize no >/dev/null &
  fi
  RPID=$!; PIDS+=("$RPID")
  for _ in $(seq 1 500); do redis-cli -p "$rp" ping >/dev/null 2>&1 && break; sleep 0.02; done
  hp=$(free_port)
  sync=$([ $durability = none ] && echo never || echo always)
  hh_start "resp-$durability" --sync "$sync" --resp-listen "127.0.0.1:$hp"
  for _ in $(seq 1 500); do redis-cli -p "$hp" ping >/dev/null 2>&1 && break; sleep 0.02; done
  for p in 1 16; do
    read -r rs rg < <(bench "$rp" $p)
    read -r hs hg < <(bench "$hp" $p)
    RES[$durability,$p]="$rs $rg $hs $hg"
  done
  stop_pid "$HH_PID"; stop_pid "$RPID"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| durability | pipeline | op | Redis 7 (req/s) | hoardhaven RESP (req/s) | ratio |\n|---|---|---|---|---|---|\n'
for durability in none always; do
  for p in 1 16; do
    read -r rs rg hs hg <<<"${RES[$durability,$p]}"
    python3 -c 'import sys; d,p,rs,rg,hs,hg=sys.argv[1:]; rs,rg,hs,hg=map(float,(rs,rg,hs,hg)); print(f"| {d} | {p} | SET | {rs:,.0f} | {hs:,.0f} | {hs/rs:.2f} |"); print(f"| {d} | {p} | GET | {rg:,.0f} | {hg:,.0f} | {hg/rg:.2f} |")' \
      "$([ $durability = none ] && echo 'sync=never / no persistence' || echo 'sync=always / appendfsync always')" "$p" "$rs" "$rg" "$hs" "$hg"
  done
done
