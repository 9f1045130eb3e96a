#!/usr/bin/env bash
# Soak run: tests/soak.rs for a set duration per engine (release build), with merges and
# snapshots running; checks every acknowledged write after a reopen and that RSS and disk
# stayed bounded; writes the curves to soak-<engine>.csv.
# Usage: scripts/soak.sh [seconds per engine, default 600] [output dir, default target/soak]
set -euo pipefail
cd "$(dirname "$0")/.."
export HOARDHAVEN_SOAK_SECS="${1:-600}"
export HOARDHAVEN_SOAK_OUT="${2:-target/soak}"
cargo test --release --test soak -- --nocapture
echo "curves: $HOARDHAVEN_SOAK_OUT/soak-bitcask.csv, $HOARDHAVEN_SOAK_OUT/soak-memory.csv"
