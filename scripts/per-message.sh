#!/usr/bin/env bash
# Counts what one echoed message costs a server in system calls and TCP
# segments, so "one read and one write per message" is measured, not assumed.
#   scripts/per-message.sh [LOAD] [-- SERVER COMMAND...]
#   scripts/per-message.sh "-c 100 -p 20 -d 1"
#   scripts/per-message.sh "-c 100 -p 20 -d 1" -- benches/peers/target/release/fastwebsockets-echo 127.0.0.1:9794
# The server (default: sockwave --dispatch inline, one loop) listens on
# 127.0.0.1:9794, pinned to core 0; sockwave-bench loads it from core 1 for
# 4 s while `perf stat` counts the server's system calls (tracepoints) and
# `nstat` the host's TCP segments (both ends of the loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a load <<<"${1:--c 100 -p 20 -d 1}"
shift || true
[ "${1:-}" = "--" ] && shift
if [ $# -eq 0 ]; then
    set -- target/release/sockwave --listen 127.0.0.1:9794 --threads 1 --dispatch inline --log-level warn
fi
command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null
command -v nstat >/dev/null || apt-get install -y -qq iproute2 >/dev/null
cargo build --release --quiet --bin sockwave --bin sockwave-bench
counts=$(mktemp)
taskset -c 0 "$@" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$counts"' EXIT
sleep 0.5
calls=epoll_wait,recvfrom,read,sendto,write,writev,futex
events=$(tr , '\n' <<<"$calls" | sed 's/^/syscalls:sys_enter_/' | paste -sd,),raw_syscalls:sys_enter
perf stat -e "$events" -x, -o "$counts" -p "$server" -- sleep 4.5 &
stat=$!
nstat -n >/dev/null
result=$(taskset -c 1 target/release/sockwave-bench --addr 127.0.0.1:9794 "${load[@]}" \
    --duration 4 --warmup 0 --server-pid "$server" --json)
segments=$(nstat -z TcpOutSegs TcpExtTCPPureAcks | awk 'NR > 1 { printf "%s=%s ", $1, $2 }')
wait $stat
python3 - "$result" "$counts" "$segments" <<'EOF'
import json, sys
result, counts, segments = sys.argv[1:4]
r = json.loads(result)
messages = r["messages_per_sec"] * 4
print(f"{r['messages_per_sec'] / 1e3:.1f}k msgs/s, "
      f"{r['messages_per_server_cpu_sec'] / 1e3:.1f}k per server CPU-second; per message:")
for line in open(counts):
    fields = line.strip().split(",")
    if len(fields) > 3 and fields[0].replace(".", "").isdigit():
        name = fields[2].split(":")[-1].replace("sys_enter_", "").replace("sys_enter", "all system calls")
        print(f"  {name:<17} {float(fields[0]) / messages:6.2f}")
for pair in segments.split():
    name, value = pair.split("=")
    print(f"  {name:<17} {int(value) / messages:6.2f}  (TCP, both ends)")
EOF
