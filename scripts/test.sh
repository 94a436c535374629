#!/usr/bin/env bash
# Every test that needs nothing beyond this repository, a Rust toolchain and
# Debian's redis-server and cmake (installed here if missing, for the broker
# and C packaging tests):
# formatting, clippy with -D warnings, docs, the unit/protocol/loopback/
# broker/fuzz-replay tests (the protocol, TLS and fuzz-replay ones in a debug
# build too), and the criterion benches run once each in test mode.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-redis.sh
scripts/setup-c.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The crate and the C library build without TLS and Redis too.
cargo check --no-default-features --lib --quiet
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
cargo test --release
# The unit, protocol, TLS and fuzz-replay suites once more with debug assertions
# on (ours and our dependencies': rustls asserts on misuse only there).
cargo test --quiet --lib --test protocol_conn --test fuzz_regressions --test tls
cargo test --release --benches --quiet
