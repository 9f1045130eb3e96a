#!/usr/bin/env bash
# A 3-node hoardhaven cluster beside a 3-member etcd cluster (Debian's etcd-server) on
# loopback, same load tool, same run: durable PUT and linearizable GET at 1, 16 and 64
# connections, then leader failover time (SIGKILL -> first acknowledged write), p50 over 20.
#
#   scripts/bench/cluster.sh          # writes docs/bench/data/cluster/*.json, prints the table
#
# Environment: CONNS (default "1 16 64"), DUR (per test, default 5s), ROUNDS (default 2),
# KILLS (default 20), KEYS (default 10000), OUT, NO_BUILD=1 to skip the release build.
# Needs etcd (apt-get install etcd-server); without it only hoardhaven is measured.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
OUT=${OUT:-$ROOT/docs/bench/data/cluster}
build
echo "# $(date -u +%FT%TZ) $(machine)"
skip=()
command -v etcd >/dev/null || { echo "etcd not installed: hoardhaven only" >&2; skip=(--skip-etcd); }
python3 "$ROOT/scripts/bench/cluster.py" --bin "$BIN" --out "$OUT" \
  --conns "${CONNS:-1 16 64}" --duration "${DUR:-5s}" --rounds "${ROUNDS:-2}" \
  --kills "${KILLS:-20}" --keys "${KEYS:-10000}" "${skip[@]}"
