#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (../shared/autobahn) against the
# release `sockwave` echo server and compares every case's grade with a
# checked-in expectation: the run fails when any case gets worse.
#   scripts/autobahn.sh                     # all 517 cases, STRICT_COMPRESSION=1,
#                                           # default server (deflate: shared)
#   scripts/autobahn.sh dedicated           # 12.* and 13.* with --deflate dedicated
#   scripts/autobahn.sh tls                 # all 517 cases over wss:// (a throwaway
#                                           # certificate), held to the plain run's grades
#   UPDATE=1 scripts/autobahn.sh [dedicated] # rewrite the expectation from this run
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
profile="${1:-default}"
case "$profile" in
    default)
        server_args=()
        cases="*"
        expected=autobahn/expected-results.json ;;
    dedicated)
        server_args=(--deflate dedicated --deflate-window-bits 15 --deflate-mem-level 8)
        cases="12.*,13.*"
        expected=autobahn/expected-results-dedicated.json ;;
    tls)
        certs=$(mktemp -d)
        scripts/make-test-cert.sh "$certs"
        server_args=(--tls-cert "$certs/cert.pem" --tls-key "$certs/key.pem")
        scheme=wss
        cases="*"
        expected=autobahn/expected-results.json ;;
    *) echo "autobahn: unknown profile $profile" >&2; exit 2 ;;
esac
if [ "$profile" = tls ] && [ "${UPDATE:-0}" = 1 ]; then
    echo "autobahn: the tls run is held to the plain run's grades; update those instead" >&2
    exit 2
fi
shared="${SHARED_DIR:-$root/../shared}"
runner="$shared/autobahn/run.sh"
[ -x "$runner" ] || { echo "autobahn: $runner not found (../shared missing?)" >&2; exit 2; }
out="${OUTDIR:-$root/target/autobahn-$profile}"
port="${PORT:-9471}"
cargo build --release --quiet --bin sockwave
rm -rf "$out"
./target/release/sockwave --listen "127.0.0.1:$port" "${server_args[@]}" 2>"$root/target/autobahn-$profile-server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
STRICT_COMPRESSION=1 "$runner" "${scheme:-ws}://127.0.0.1:$port" "$out" "$cases"
kill -TERM $server
wait $server || { echo "autobahn: server did not exit cleanly after SIGTERM" >&2; exit 1; }
trap - EXIT
if [ "${UPDATE:-0}" = 1 ]; then
    python3 scripts/autobahn_compare.py --update "$out/index.json" "$expected"
else
    python3 scripts/autobahn_compare.py "$out/index.json" "$expected"
fi
