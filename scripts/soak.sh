#!/usr/bin/env bash
# Churn soak (scripts/soak.py): connections opening and closing in waves,
# every way a client can end, while steady clients echo and verify every
# byte; then descriptors, RSS and /metrics are checked.
#   scripts/soak.sh [SECONDS] [soak.py options]     (default 60 s)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin sockwave
py=target/interop-venv/bin/python
if ! "$py" -c 'import websockets' 2>/dev/null; then
    py=target/demo-venv/bin/python
    if ! "$py" -c 'import websockets' 2>/dev/null; then
        python3 -m venv target/demo-venv
        target/demo-venv/bin/pip install --quiet --disable-pip-version-check websockets
    fi
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "$py" scripts/soak.py "$@"
