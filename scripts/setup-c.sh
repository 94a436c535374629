#!/usr/bin/env bash
# Installs what the C/C++ packaging tests need beside a C compiler: CMake
# (Debian's), to build a program through find_package(sockwave). Idempotent.
set -euo pipefail
if command -v cmake >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "setup-c: cmake is missing (install Debian's cmake, or run as root)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cmake >/dev/null
echo "setup-c: $(cmake --version | head -1)"
