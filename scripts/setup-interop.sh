#!/usr/bin/env bash
# Installs what the interop and browser tests need, idempotently:
#   - Debian's chromium (headless browser; Playwright's own download does not work here)
#   - playwright-core and ws from npm (tests/interop/package-lock.json)
#   - Python websockets and pytest in target/interop-venv
set -euo pipefail
cd "$(dirname "$0")/.."
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "setup-interop: need $* (run as root, or install them)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v chromium >/dev/null 2>&1 || apt_install chromium
command -v node >/dev/null 2>&1 || apt_install nodejs npm
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3-venv
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
venv=target/interop-venv
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c 'import websockets' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
fi
echo "setup-interop: chromium $(chromium --version 2>/dev/null | awk '{print $2}'), node $(node --version), $("$venv/bin/python" -c 'import websockets; print("websockets", websockets.__version__)')"
