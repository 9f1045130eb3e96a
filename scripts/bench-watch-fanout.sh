#!/usr/bin/env bash
# Watch fan-out benchmark (docs/benchmarks.md, "Watch fan-out"): a release server with
# sync=never on a fresh data directory, then examples/watch_fanout.rs against it.
# Usage: scripts/bench-watch-fanout.sh [WATCHERS] [WRITES_PER_SEC] [SECS_PER_PHASE]
# Build first: cargo build --release --bin hoardhaven --example watch_fanout
set -euo pipefail
watchers=${1:-1000}; rate=${2:-5000}; secs=${3:-15}
ulimit -n 65536 2>/dev/null || true
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
target/release/hoardhaven serve --listen 127.0.0.1:0 --port-file "$dir/port" \
  --data-dir "$dir/data" --sync never --watch-max-watchers $((watchers * 2)) \
  --max-in-flight 100000 --log-level warn 2>"$dir/log" &
pid=$!
for _ in $(seq 100); do [ -s "$dir/port" ] && break; sleep 0.1; done
target/release/examples/watch_fanout "$(cat "$dir/port")" "$watchers" "$rate" "$secs"
