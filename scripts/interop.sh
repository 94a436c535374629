#!/usr/bin/env bash
# Real clients against the release binary: headless Chromium (the demo page and
# the WebSocket API), Node's ws, Python's websockets. Installs what they need first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-interop.sh
cargo build --release --quiet --bin sockwave
echo "== browser (Chromium) and Node ws"
(cd tests/interop && node --test --test-concurrency=1 browser.test.mjs ws.test.mjs)
echo "== Python websockets"
target/interop-venv/bin/pytest -q tests/interop
