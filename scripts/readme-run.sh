#!/usr/bin/env bash
# Runs the README's first command exactly as written (its first ```sh block,
# first line), connects to the address that line names, echoes through it
# with sockwave-bench, sends SIGTERM, and expects exit status 0.
set -euo pipefail
cd "$(dirname "$0")/.."
line=$(awk '/^```sh/ { getline; print; exit }' README.md)
cmd=${line%%#*}
addr=$(grep -o 'ws://[0-9.]*:[0-9]*' <<<"$line" | sed 's#ws://##')
echo "readme-run: '$cmd' (serving $addr)"
host=${addr%:*} port=${addr##*:}
cargo build --release --quiet --bin sockwave-bench
# cargo run replaces itself with the server (exec), so $! is the server.
bash -c "exec $cmd" >/tmp/readme-run.$$.log 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true; rm -f /tmp/readme-run.$$.log' EXIT
for _ in $(seq 600); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat /tmp/readme-run.$$.log; echo "readme-run: the server exited"; exit 1; }
    sleep 0.5
done
out=$(target/release/sockwave-bench --addr "$addr" -c 2 -d 1 --duration 1 --warmup 0 --json)
echo "readme-run: $out"
python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["errors"] == 0 and r["messages_per_sec"] > 0, r
PY
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
if [ "$status" -ne 0 ]; then
    cat /tmp/readme-run.$$.log
    echo "readme-run: exit status $status after SIGTERM"
    exit 1
fi
echo "readme-run: echoed, and SIGTERM ended the server with 0"
