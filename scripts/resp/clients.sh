#!/usr/bin/env bash
# Real Redis clients against hoardhaven's RESP listener: redis-cli (scripted), redis-py with
# RESP2 and RESP3, redis-benchmark (errors only, no figures), and fakeredis's test suite from
# its PyPI source distribution (never copied into this repository), which runs against a real
# server on localhost:6390, database 2. Prints the suite's pass count; fails if a client check
# fails or the suite passes fewer tests than the floor below (a regression gate: raise it as
# commands are added).
# Usage: scripts/resp/clients.sh [--no-suite]
# Installs what it needs (Debian's redis-tools when root; a venv under target/); without them
# it skips with a message, unless HOARDHAVEN_REQUIRE_TOOLS is set.
set -euo pipefail
cd "$(dirname "$0")/../.."
SUITE_FLOOR=300
FAKEREDIS_VERSION=2.41.0
need_tools() {
    if [ -n "${HOARDHAVEN_REQUIRE_TOOLS:-}" ]; then
        echo "$1 is required (HOARDHAVEN_REQUIRE_TOOLS is set) but could not be installed" >&2
        exit 1
    fi
    echo "SKIPPED: $1 is not available; RESP client checks not run"
    exit 0
}
if ! command -v redis-cli >/dev/null || ! command -v redis-benchmark >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends redis-tools >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-tools >/dev/null; }
    fi
fi
command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null || need_tools redis-tools
venv="$PWD/target/resp-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check redis pytest pytest-asyncio pytest-mock \
    hypothesis valkey "fakeredis==$FAKEREDIS_VERSION" >/dev/null 2>&1 || need_tools "redis-py/pytest (PyPI)"

cargo build --quiet --bin hoardhaven
work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
port=6390
target/debug/hoardhaven serve --listen 127.0.0.1:0 --resp-listen "127.0.0.1:$port" \
    --data-dir "$work/data" --sync never >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
    sleep 0.1
done

echo "== redis-cli"
cli() { redis-cli -p "$port" "$@"; }
expect() { local want="$1"; shift; local got; got="$(cli "$@")"; [ "$got" = "$want" ] ||
    { echo "redis-cli $*: expected '$want', got '$got'" >&2; exit 1; }; }
expect PONG ping
expect OK set greeting hello
expect hello get greeting
expect 6 append greeting "!"
expect 1 exists greeting
expect 10 incrby counter 10
expect OK -n 2 set greeting other
expect other -n 2 get greeting
expect hello! get greeting
printf 'MULTI\nSET t1 a\nSET t2 b\nEXEC\n' | cli >/dev/null
expect b get t2
echo "redis-cli: ok"

echo "== redis-py"
"$venv/bin/python" scripts/resp/redis_py_check.py "$port"

echo "== redis-benchmark (errors only; figures come from scripts/bench on a quiet machine)"
out="$(redis-benchmark -p "$port" -t ping,set,get,incr,mset -n 2000 -c 10 -q 2>&1)"
echo "$out"
if echo "$out" | grep -qi "error"; then
    echo "redis-benchmark reported errors" >&2
    exit 1
fi
[ "$(echo "$out" | grep -c 'requests per second')" -ge 5 ] || { echo "redis-benchmark did not run every test" >&2; exit 1; }

if [ "${1:-}" = "--no-suite" ]; then exit 0; fi
echo "== fakeredis $FAKEREDIS_VERSION test suite (real-server variants, RESP2 and RESP3)"
(cd "$work" && "$venv/bin/pip" download -q --no-deps --no-binary :all: "fakeredis==$FAKEREDIS_VERSION" &&
    tar xzf "fakeredis-$FAKEREDIS_VERSION.tar.gz") || need_tools "fakeredis sdist (PyPI)"
suite="$work/fakeredis-$FAKEREDIS_VERSION"
report="${HOARDHAVEN_RESP_REPORT:-$work/suite.txt}"
(cd "$suite" && "$venv/bin/python" -m pytest -m real -q --no-header -p no:cacheprovider -rf \
    test/test_mixins/test_string_commands.py test/test_mixins/test_generic_commands.py \
    test/test_mixins/test_generic_scan_commands.py test/test_mixins/test_transactions_commands.py \
    test/test_mixins/test_connection_commands.py) >"$report" 2>&1 || true
summary="$(tail -1 "$report")"
echo "$summary"
passed="$(echo "$summary" | grep -o '[0-9]* passed' | grep -o '[0-9]*' || echo 0)"
if [ "${passed:-0}" -lt "$SUITE_FLOOR" ]; then
    echo "fakeredis suite: $passed passed, below the floor of $SUITE_FLOOR" >&2
    grep '^FAILED' "$report" | head -50 >&2
    exit 1
fi
echo "fakeredis suite: $passed passed (floor $SUITE_FLOOR); failures listed in $report"
