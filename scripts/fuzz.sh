#!/usr/bin/env bash
# Runs each fuzz target for a bounded time on the stable toolchain.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 20)
# Debug assertions are on (-a): ours and our dependencies' checks catch misuse
# that release builds let pass. cargo-fuzz drives libFuzzer; without a nightly toolchain we build with no
# sanitizer (`-s none`) and let RUSTC_BOOTSTRAP=1 accept the few -Z flags
# cargo-fuzz passes. Crashes land in fuzz/artifacts/<target>/ and fail the run;
# each one found is turned into a regression test in tests/fuzz_regressions.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1
for target in handshake frame conn conn_deflate out_queue upgrade tls_transport; do
    mkdir -p "fuzz/corpus/$target"
    echo "fuzz: $target for ${secs}s"
    cargo fuzz run -s none --release -a "$target" "fuzz/corpus/$target" fuzz/seeds/"$target" -- \
        -max_total_time="$secs" -max_len=65536 -print_final_stats=1 2>&1 | tail -n 4
done
