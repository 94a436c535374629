#!/usr/bin/env bash
# Every test that needs nothing beyond this repository and a Rust toolchain:
# formatting, clippy with -D warnings, docs, the unit/protocol/loopback/fuzz-replay
# tests, and the criterion benches run once each in test mode.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The crate and the C library build without TLS too.
cargo check --no-default-features --lib --quiet
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
cargo test --release
cargo test --release --benches --quiet
