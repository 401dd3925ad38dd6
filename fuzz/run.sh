#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) with libFuzzer, on the stable
# toolchain: cargo-fuzz and nightly cannot be installed on these machines, so this
# passes the sanitizer-coverage flags cargo-fuzz would pass, with RUSTC_BOOTSTRAP=1.
# The corpus grows in a scratch copy; the checked-in seeds stay small.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/solstice-fuzz-target}
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# --target keeps the instrumentation off build scripts, as cargo-fuzz does.
target=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --target "$target"
for fuzzer in plan_yaml plan_kdl expression; do
    scratch=$(mktemp -d)
    cp -r "corpus/$fuzzer/." "$scratch/"
    echo "== $fuzzer ($seconds s)"
    "$CARGO_TARGET_DIR/$target/release/$fuzzer" "$scratch" -max_total_time="$seconds" -rss_limit_mb=2048
    rm -rf "$scratch"
done
