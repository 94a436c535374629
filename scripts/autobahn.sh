#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (../shared/autobahn) against the
# release `sockwave` echo server and compares every case's grade with
# autobahn/expected-results.json: the run fails when any case gets worse.
#   scripts/autobahn.sh                 # sections 1-10 (12-13 come with permessage-deflate)
#   UPDATE=1 scripts/autobahn.sh        # rewrite expected-results.json from this run
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
shared="${SHARED_DIR:-$root/../shared}"
runner="$shared/autobahn/run.sh"
[ -x "$runner" ] || { echo "autobahn: $runner not found (../shared missing?)" >&2; exit 2; }
out="${OUTDIR:-$root/target/autobahn}"
port="${PORT:-9471}"
cargo build --release --quiet --bin sockwave
rm -rf "$out"
./target/release/sockwave --listen "127.0.0.1:$port" 2>"$root/target/autobahn-server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
EXCLUDE="${EXCLUDE:-12.*,13.*}" "$runner" "ws://127.0.0.1:$port" "$out"
kill -TERM $server
wait $server || { echo "autobahn: server did not exit cleanly after SIGTERM" >&2; exit 1; }
trap - EXIT
if [ "${UPDATE:-0}" = 1 ]; then
    python3 scripts/autobahn_compare.py --update "$out/index.json" autobahn/expected-results.json
else
    python3 scripts/autobahn_compare.py "$out/index.json" autobahn/expected-results.json
fi
