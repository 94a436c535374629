#!/usr/bin/env bash
# What operators get besides the binary, checked with the tools they use:
# the man page renders (man), the bash completions load (bash), the systemd
# unit passes `systemd-analyze verify`. A tool this machine lacks is said,
# not skipped silently. The container recipe is not built here (no engine).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin sockwave
bin=$PWD/target/release/sockwave
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$bin" --print-man > "$tmp/sockwave.1"
if command -v man >/dev/null 2>&1; then
    MANPAGER=cat MANWIDTH=80 man -l "$tmp/sockwave.1" > "$tmp/man.txt" 2>/dev/null
    grep -q "^NAME" "$tmp/man.txt" && grep -q -- "--trusted-proxy" "$tmp/man.txt"
    echo "packaging: man page renders ($(wc -l < "$tmp/man.txt") lines)"
else
    echo "packaging: man not available here: the page was generated, not rendered"
fi

"$bin" --print-completions bash > "$tmp/sockwave.bash"
bash -c "source '$tmp/sockwave.bash' && complete -p sockwave" | grep -q _sockwave
echo "packaging: bash completions load"

if command -v systemd-analyze >/dev/null 2>&1; then
    # verify wants ExecStart's binary to exist: point it at this build.
    sed "s|/usr/local/bin/sockwave|$bin|" contrib/systemd/sockwave.service > "$tmp/sockwave.service"
    # The man page is generated, not installed: do not look it up.
    systemd-analyze verify --man=no "$tmp/sockwave.service"
    echo "packaging: systemd unit verified"
else
    echo "packaging: systemd-analyze not available here: the unit was not verified"
fi
