#!/usr/bin/env bash
# Installs redis-server (Debian's package) for the broker tests, idempotently.
# The tests start their own servers on free loopback ports; nothing is
# started here, and the package's own service is left as the system has it.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "setup-redis: redis-server is missing (install Debian's redis-server, or run as root)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# Debian's package may start its own service; the tests do not use it.
if command -v service >/dev/null 2>&1; then
    service redis-server stop >/dev/null 2>&1 || true
fi
echo "setup-redis: $(redis-server --version | awk '{print $3}')"
