#!/usr/bin/env bash
# Installs the C library for C/C++ builds: header, shared and static library,
# and a pkg-config file.
#   scripts/install-c.sh PREFIX        (e.g. /usr/local, or $HOME/.local)
# Then: cc app.c $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs sockwave)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:?usage: scripts/install-c.sh PREFIX}"
cargo build --release --lib --quiet
version=$(sed -n 's/^#define SW_VERSION_STRING "\(.*\)"/\1/p' include/sockwave.h)
install -d "$prefix/include" "$prefix/lib/pkgconfig"
install -m 0644 include/sockwave.h "$prefix/include/sockwave.h"
install -m 0755 target/release/libsockwave.so "$prefix/lib/libsockwave.so"
install -m 0644 target/release/libsockwave.a "$prefix/lib/libsockwave.a"
cat > "$prefix/lib/pkgconfig/sockwave.pc" <<PC
prefix=$prefix
includedir=\${prefix}/include
libdir=\${prefix}/lib

Name: sockwave
Description: WebSocket server library (RFC 6455), callable from any thread
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lsockwave
Libs.private: -lpthread -ldl -lm -lgcc_s
PC
echo "installed sockwave $version into $prefix"
