#!/usr/bin/env bash
# A few seconds of `hoardhaven bench` against a live server (debug build), so the load tool and
# its JSON report cannot rot. No thresholds: it checks that every test ran without errors.
#
#   scripts/bench/smoke.sh
set -euo pipefail
HH_BIN=${HH_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/debug/hoardhaven}
source "$(dirname "$0")/lib.sh"
(cd "$ROOT" && cargo build --quiet --bin hoardhaven)
hh_start smoke --sync never
timeout 120 "$BIN" bench -q --url "$HH_URL" -c 4 --keys 200 -n 400 -t get,put,mixed \
  --json "$WORK/smoke.json"
python3 - "$WORK/smoke.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
tests = [x["test"] for x in r["results"]]
assert tests == ["healthz", "get", "put", "mixed"], tests
bad = [x for x in r["results"] if x["errors"] or x["requests"] != 400]
assert not bad, bad
print("bench smoke: %d tests, %s" % (len(tests), ", ".join("%s %.0f req/s" % (x["test"], x["rps"]) for x in r["results"])))
PY
stop_pid "$HH_PID"
