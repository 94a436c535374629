#!/usr/bin/env bash
# Churn soak (scripts/soak.py): connections opening and closing in waves,
# every way a client can end, while steady clients echo and verify every
# byte; then descriptors, RSS and /metrics are checked.
#   scripts/soak.sh [SECONDS] [soak.py options]     (default 60 s)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin sockwave
py=$(scripts/websockets-python.sh)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "$py" scripts/soak.py "$@"
