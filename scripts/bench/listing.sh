#!/usr/bin/env bash
# Prefix listing over HTTP beside a point GET (issue 16): one server per engine with KEYS keys
# (default 1,000,000), then `hoardhaven bench -t get,list` against it in one run, so a page's
# cost reads as a number of point GETs.
#
#   NO_BUILD=1 hh-bench bash scripts/bench/listing.sh
#
# Environment: KEYS, CONNS (default 50), DUR (default 5s), ROUNDS (default 2),
# ENGINES (default "bitcask memory"), NO_BUILD=1 to skip the release build.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
build
echo "# $(date -u +%FT%TZ) $(machine)"
scratch=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$scratch"' EXIT
for eng in ${ENGINES:-bitcask memory}; do
  mkdir -p "$scratch/$eng"
  "$BIN" serve --listen 127.0.0.1:0 --port-file "$scratch/$eng/port" --engine "$eng" \
    --sync never --data-dir "$scratch/$eng/data" 2>"$scratch/$eng/log" &
  pid=$!
  for _ in $(seq 200); do [ -s "$scratch/$eng/port" ] && break; sleep 0.05; done
  addr=$(cat "$scratch/$eng/port")
  echo "== $eng"
  "$BIN" bench --url "http://$addr" -k "${KEYS:-1000000}" -t get,list -c "${CONNS:-50}" \
    --duration "${DUR:-5s}" --rounds "${ROUNDS:-2}" --label "$eng"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
