#!/usr/bin/env bash
# Prints a Python interpreter that has the websockets package: the interop
# venv (scripts/setup-interop.sh) if it is there, else target/demo-venv,
# made here if need be. Used by cluster-demo.sh and soak.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
for py in target/interop-venv/bin/python target/demo-venv/bin/python; do
    if "$py" -c 'import websockets' 2>/dev/null; then
        echo "$PWD/$py"
        exit 0
    fi
done
python3 -m venv target/demo-venv
target/demo-venv/bin/pip install --quiet --disable-pip-version-check websockets >&2
echo "$PWD/target/demo-venv/bin/python"
