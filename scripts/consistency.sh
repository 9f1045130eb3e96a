#!/usr/bin/env bash
# Linearizability under faults (issue 13): recorded histories checked against a
# compare-and-set register per key, on the real server, one nemesis per run.
#
#   scripts/consistency.sh [seconds] [nemesis]
#
#   seconds   how long each run's nemesis strikes (default 60)
#   nemesis   kill | pause | partition | none | all (default all = kill, pause, partition)
#
# Each nemesis runs against bitcask (sync=always), the memory engine (aof on, sync=always) and
# a 3-node Raft cluster (kills favour the leader; partitions cut peer and client links), which
# must be linearizable with no acknowledged write lost. Two mutants run too and must FAIL the
# checker: with `kill`, the memory engine with `--aof off` (acknowledges before durability);
# with `partition`, the cluster read with `consistency=stale` (each node's local copy).
#
# Environment:
#   CONSISTENCY_SYSTEMS  systems to run (default "bitcask memory raft")
#   CONSISTENCY_REPORT   the Markdown file whose results table is updated (default
#                        docs/consistency.md; CI points it at target/)
#   CONSISTENCY_SEED     repeat a run's random choices
#
# Histories, summaries and checker reports land in target/consistency/<time>/<system>-<nemesis>/.
# The results table keeps one row per (nemesis, system): a run replaces its row.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
nemesis="${2:-all}"
systems="${CONSISTENCY_SYSTEMS:-bitcask memory raft}"
report="${CONSISTENCY_REPORT:-docs/consistency.md}"
case "$nemesis" in
  all) nemeses="kill pause partition" ;;
  kill | pause | partition | none) nemeses="$nemesis" ;;
  *) echo "usage: $0 [seconds] [kill|pause|partition|none|all]" >&2; exit 2 ;;
esac
case "$seconds" in
  '' | *[!0-9]*) echo "seconds must be a whole number, got '$seconds'" >&2; exit 2 ;;
esac

out="target/consistency/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
echo "== building the consistency test"
cargo test --test consistency --no-run

status=0
run() { # system nemesis seconds
  local dir="$out/$1-$2"
  echo "== $2 against $1 for $3 s ($(cut -d' ' -f1-3 /proc/loadavg) load)"
  if CONSISTENCY_SYSTEM="$1" CONSISTENCY_NEMESIS="$2" CONSISTENCY_SECONDS="$3" \
    CONSISTENCY_OUT="$dir" cargo test -q --test consistency -- \
    --ignored --exact run_from_env --nocapture >"$out/$1-$2.log" 2>&1; then
    echo "   as expected: $(tail -c +1 "$dir/row.md")"
  else
    status=1
    echo "   FAILED (log: $out/$1-$2.log)"
    tail -n 60 "$out/$1-$2.log"
  fi
  if [ -f "$dir/row.md" ]; then
    printf '%s %s\n' "$(cut -d' ' -f1 /proc/loadavg)" "$(cat "$dir/row.md")" >>"$out/rows"
  fi
}

for n in $nemeses; do
  for s in $systems; do
    run "$s" "$n" "$seconds"
  done
  # The mutants: must be caught. Short: a few faults suffice.
  short="$(( seconds < 10 ? seconds : 10 ))"
  if [ "$n" = kill ] && [[ " $systems " == *" memory "* ]]; then
    run memory-noaof kill "$short"
  fi
  if [ "$n" = partition ] && [[ " $systems " == *" raft "* ]]; then
    run raft-stale partition "$short"
  fi
done

if [ -f "$out/rows" ]; then
  python3 - "$report" "$out/rows" "$seconds" "$nemesis" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" <<'EOF'
import re, sys, datetime
report, rows_file, seconds, nemesis, commit = sys.argv[1:6]
BEGIN, END = "<!-- consistency-results:begin -->", "<!-- consistency-results:end -->"
try:
    text = open(report).read()
except FileNotFoundError:
    text = f"# Consistency results\n\n{BEGIN}\n{END}\n"
if BEGIN not in text:
    text += f"\n{BEGIN}\n{END}\n"
head, rest = text.split(BEGIN, 1)
old, tail = rest.split(END, 1)
rows = {}
for line in old.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if line.startswith("| ") and len(cells) >= 14 and cells[0] not in ("nemesis", "---"):
        rows[(cells[0], cells[1])] = line
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
for line in open(rows_file):
    load, row = line.rstrip("\n").split(" ", 1)
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    rows[(cells[0], cells[1])] = f"{row} {load} | {stamp}, `{commit}` |"
def cells(r):
    return [c.strip() for c in r.strip().strip("|").split("|")]
def is_mutant(c):
    return "before durability" in c[1] or "stale reads" in c[1]
held = [cells(r) for r in rows.values() if not is_mutant(cells(r))]
faults = sum(int(c[6]) for c in held)
ok = all(c[8] == "Linearizable" and c[9] == "0" for c in held)
mutants = [cells(r) for r in rows.values() if is_mutant(cells(r))]
lines = [
    "| nemesis | system | seconds | events | ok / fail / info | ok ops/s | faults | keys | outcome | acked writes lost | check s | seed | load avg | when |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
lines += sorted(rows.values())
summary = (
    f"\nSystems that must hold (single node with sync=always, the Raft cluster): **{faults} faults injected** over {len(held)} runs; "
    + ("every run linearizable with 0 acknowledged writes lost." if ok else "**NOT every run passed: see above.**")
)
for m in mutants:
    summary += (f" The mutant ({m[1]}) under {m[0]}: **{m[8]}**, "
                f"{m[9]} acknowledged writes lost, over {m[6]} faults.")
block = "\n".join(lines) + "\n" + summary + "\n"
open(report, "w").write(head + BEGIN + "\n" + block + END + tail)
print(f"updated {report}: {faults} faults in the runs that must hold")
EOF
fi
echo "outputs in $out"
exit "$status"
