#!/usr/bin/env bash
# Three sockwave nodes and one redis-server on this machine: a client on each
# node joins the channel /lobby, each says hello, and every message is seen
# crossing to the clients on the other two nodes. Exits 0 only if it did.
#
#   scripts/cluster-demo.sh            # ports picked free
#
# Needs redis-server (scripts/setup-redis.sh) and Python's websockets (in
# target/interop-venv from scripts/setup-interop.sh, or installed into
# target/demo-venv here).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-redis.sh
cargo build --release --quiet --bin sockwave

py=$(scripts/websockets-python.sh)
# GET a page (python3 rather than curl: nothing else to install).
get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end="")' "$1" 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
echo "redis-server on 127.0.0.1:$redis_port"

ports=()
for n in 1 2 3; do
    port=$(free_port)
    target/release/sockwave --mode pubsub --listen "127.0.0.1:$port" \
        --redis "redis://127.0.0.1:$redis_port/" 2>"target/cluster-node$n.log" &
    pids+=($!)
    ports+=("$port")
done
for port in "${ports[@]}"; do
    until get "http://127.0.0.1:$port/healthz" | grep -q 'broker: healthy'; do sleep 0.05; done
    echo "node on 127.0.0.1:$port: $(get "http://127.0.0.1:$port/healthz" | tr '\n' ' ')"
done

"$py" - "$redis_port" "${ports[@]}" <<'PY'
import asyncio, subprocess, sys
import websockets

redis_port, ports = sys.argv[1], sys.argv[2:]

async def main():
    clients = [await websockets.connect(f"ws://127.0.0.1:{p}/lobby") for p in ports]
    # Wait until every node has subscribed the channel at Redis.
    while True:
        out = subprocess.run(["redis-cli", "-p", redis_port, "pubsub", "numsub", "sockwave:topic:/lobby"],
                             capture_output=True, text=True).stdout.split()
        if out[-1] == str(len(ports)):
            break
        await asyncio.sleep(0.05)
    for i, c in enumerate(clients):
        await c.send(f"hello from a client of node {i + 1}")
    ok = True
    for i, c in enumerate(clients):
        got = sorted([await asyncio.wait_for(c.recv(), 5) for _ in range(len(clients) - 1)])
        want = sorted(f"hello from a client of node {j + 1}" for j in range(len(clients)) if j != i)
        print(f"client of node {i + 1} (port {ports[i]}) got: {got}")
        ok &= got == want
    for c in clients:
        await c.close()
    sys.exit(0 if ok else 1)

asyncio.run(main())
PY
for port in "${ports[@]}"; do
    echo "node $port: $(get "http://127.0.0.1:$port/metrics" | grep -E '^sockwave_broker_(published|received|lost)_total' | tr '\n' ' ')"
done
echo "cluster demo: every message crossed to the other nodes"
