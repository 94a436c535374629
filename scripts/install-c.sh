#!/usr/bin/env bash
# Installs the C library for C/C++ builds: the headers (sockwave.h and the
# C++ wrapper sockwave.hpp), the shared library under its SONAME with the
# usual links, the static library, a pkg-config file and a CMake package.
#   scripts/install-c.sh PREFIX        (e.g. /usr/local, or $HOME/.local)
# Then either
#   cc app.c $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs sockwave)
# or, in CMake (cmake -DCMAKE_PREFIX_PATH=PREFIX):
#   find_package(sockwave 0.1 REQUIRED)
#   target_link_libraries(app PRIVATE sockwave::sockwave)   # or sockwave::sockwave_static
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:?usage: scripts/install-c.sh PREFIX}"
cargo build --release --lib --quiet
version=$(sed -n 's/^#define SW_VERSION_STRING "\(.*\)"/\1/p' include/sockwave.h)
major=${version%%.*}
minor=${version#*.}; minor=${minor%%.*}
# The ABI version in the SONAME: the major, or 0.MINOR before 1.0 (a 0.x
# minor release may change the ABI).
if [ "$major" = 0 ]; then abi="0.$minor"; else abi="$major"; fi
soname="libsockwave.so.$abi"
install -d "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/sockwave"
install -m 0644 include/sockwave.h include/sockwave.hpp "$prefix/include/"
# The shared library is linked here from the static one, so it gets a
# SONAME carrying its ABI version and exports the C API (sw_*) and nothing
# else; cargo's own libsockwave.so (no SONAME) stays what a build tree links.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '{\n  global: sw_*;\n  local: *;\n};\n' > "$tmp/sockwave.map"
cc -shared -o "$tmp/libsockwave.so" -Wl,-soname,"$soname" \
    -Wl,--version-script="$tmp/sockwave.map" -Wl,--gc-sections \
    -Wl,--whole-archive target/release/libsockwave.a -Wl,--no-whole-archive \
    -lpthread -ldl -lm -lgcc_s
install -m 0755 "$tmp/libsockwave.so" "$prefix/lib/libsockwave.so.$version"
ln -sf "libsockwave.so.$version" "$prefix/lib/$soname"
ln -sf "$soname" "$prefix/lib/libsockwave.so"
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
cat > "$prefix/lib/cmake/sockwave/sockwaveConfig.cmake" <<CMAKE
# sockwave $version: find_package(sockwave $major.$minor REQUIRED), then
# target_link_libraries(app PRIVATE sockwave::sockwave) (shared) or
# sockwave::sockwave_static.
get_filename_component(_sockwave_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET sockwave::sockwave)
  add_library(sockwave::sockwave SHARED IMPORTED)
  set_target_properties(sockwave::sockwave PROPERTIES
    IMPORTED_LOCATION "\${_sockwave_prefix}/lib/libsockwave.so.$version"
    IMPORTED_SONAME "$soname"
    INTERFACE_INCLUDE_DIRECTORIES "\${_sockwave_prefix}/include")
  add_library(sockwave::sockwave_static STATIC IMPORTED)
  set_target_properties(sockwave::sockwave_static PROPERTIES
    IMPORTED_LOCATION "\${_sockwave_prefix}/lib/libsockwave.a"
    INTERFACE_INCLUDE_DIRECTORIES "\${_sockwave_prefix}/include"
    INTERFACE_LINK_LIBRARIES "pthread;dl;m;gcc_s")
endif()
unset(_sockwave_prefix)
CMAKE
cat > "$prefix/lib/cmake/sockwave/sockwaveConfigVersion.cmake" <<CMAKE
# Compatible: the same ABI ($abi) and at least the version asked for.
set(PACKAGE_VERSION "$version")
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif(NOT PACKAGE_FIND_VERSION_MAJOR EQUAL $major)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif($major EQUAL 0 AND NOT PACKAGE_FIND_VERSION_MINOR EQUAL $minor)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
CMAKE
echo "installed sockwave $version ($soname) into $prefix"
