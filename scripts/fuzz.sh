#!/usr/bin/env bash
# Bounded cargo-fuzz runs of every target in fuzz/ (the decoders of every on-disk format and
# operation sequences against a model). Usage: scripts/fuzz.sh [seconds per target, default 10]
# Each target starts from its committed seed corpus, fuzz/seeds/<target>/ (valid files the
# engines wrote; tests/fuzz_seeds.rs checks and regenerates them), given to libFuzzer as a
# second, read-only corpus directory: new inputs go to the first, a scratch directory, so a
# run never grows the committed seeds. Set HOARDHAVEN_FUZZ_CORPUS=dir to keep
# the grown corpora (dir/<target>/) for a longer run later.
# Needs cargo-fuzz (installed here if missing, unless HOARDHAVEN_FUZZ_NO_INSTALL is set) and
# RUSTC_BOOTSTRAP=1 for libFuzzer's -Z flags on the stable toolchain. Prints executions per
# target. Skips with a message (exit 0) when cargo-fuzz cannot be had, unless
# HOARDHAVEN_REQUIRE_TOOLS is set.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-10}"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    if [ -z "${HOARDHAVEN_FUZZ_NO_INSTALL:-}" ]; then
        echo "== installing cargo-fuzz (once; cached in ~/.cargo/bin)"
        cargo install cargo-fuzz --locked >/dev/null 2>&1 || true
    fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    if [ -n "${HOARDHAVEN_REQUIRE_TOOLS:-}" ]; then
        echo "cargo-fuzz is required (HOARDHAVEN_REQUIRE_TOOLS is set) but not installed" >&2
        exit 1
    fi
    echo "SKIPPED: cargo-fuzz is not installed; fuzzing not run"
    exit 0
fi
# No sanitizer: the engine is safe Rust (its one unsafe block, mmap, is not reached here),
# and without ASan the targets run several times faster.
cargo fuzz build -O -s none >/dev/null
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
corpora="${HOARDHAVEN_FUZZ_CORPUS:-$scratch/corpus}"
for target in $(cargo fuzz list); do
    seeds="seeds/$target"
    if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
        echo "fuzz target $target has no seed corpus in fuzz/$seeds (see tests/fuzz_seeds.rs)" >&2
        exit 1
    fi
    corpus="$corpora/$target"
    mkdir -p "$corpus"
    log="$(mktemp -p "$scratch")"
    if ! cargo fuzz run -O -s none "$target" "$corpus" "$seeds" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=8192 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz target $target FAILED (artifact in fuzz/artifacts/$target)" >&2
        exit 1
    fi
    runs="$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' | tail -1)"
    cov="$(grep -Eo 'cov: [0-9]+' "$log" | grep -Eo '[0-9]+' | tail -1)"
    echo "fuzz $target: ${runs:-?} executions in ${secs} s from $(ls "$seeds" | wc -l) seeds, coverage ${cov:-?} edges, no crash"
    rm -f "$log"
done
