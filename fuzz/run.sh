#!/usr/bin/env bash
# Fuzzes `dozor_proto::decode` with cargo fuzz (libFuzzer) for a number of executions.
#
#   fuzz/run.sh [RUNS] [extra libFuzzer flags...]     RUNS defaults to 1000000
#   FUZZ_TARGET=decode_fields fuzz/run.sh 1000000     the structure-aware target
#
# Exits non-zero when libFuzzer finds a crash; the input is saved in fuzz/artifacts/<target>/.
#
# Works on the stable toolchain: cargo fuzz needs nightly-only flags (-Zsanitizer, ...), which
# stable accepts with RUSTC_BOOTSTRAP=1. Installs cargo-fuzz from crates.io when it is missing.
# Environment: FUZZ_TARGET (decode or decode_fields; default decode), CARGO_TARGET_DIR
# (default <repo>/target-fuzz), FUZZ_JOBS (cargo build jobs; default 1), SANITIZER (default
# address; `none` runs faster).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
runs="${1:-1000000}"
shift || true
target="${FUZZ_TARGET:-decode}"

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target-fuzz}"
export CARGO_BUILD_JOBS="${FUZZ_JOBS:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

mkdir -p "$here/corpus/$target" "$here/artifacts/$target"
cd "$repo"
# -a: debug assertions and overflow checks on, so an arithmetic overflow is a crash.
# corpus/decode holds the hand-written seeds (seed-*); new inputs are added beside them.
# One fuzzing process (no -jobs/-workers): the machine is shared.
exec cargo fuzz run --fuzz-dir "$here" -a --sanitizer "${SANITIZER:-address}" "$target" \
    "$here/corpus/$target" -- \
    -runs="$runs" -max_len=20000 -dict="$here/decode.dict" -print_final_stats=1 "$@"
