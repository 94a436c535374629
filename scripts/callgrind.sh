#!/usr/bin/env bash
# Counts the instructions the server spends per message with callgrind,
# which does not drift the way time does on these machines.
#   scripts/callgrind.sh [LOAD] [-- SERVER FLAGS...]
#   scripts/callgrind.sh "-c 100 -p 1024 -d 16" -- --dispatch inline
#   scripts/callgrind.sh "--mode fanout --subscribers 5000 -p 20" -- --mode pubsub
# Runs the release `sockwave` (one loop, one worker, pinned to core 0) under
# `valgrind --tool=callgrind` while sockwave-bench loads it from core 1 for
# CALLGRIND_SECONDS (6), reads the messages it received and sent from its /metrics, and
# prints the instructions per message sent (an echoed message, a fan-out's
# delivery) and the output file (read it with
# `callgrind_annotate FILE`). Startup and shutdown are in the count, a few
# thousand messages' worth; compare runs of the same load only, or run
# twice with CALLGRIND_SECONDS=2 and 6 and take the difference (a fan-out's
# connect phase is a large fixed cost).
# Large messages: callgrind counts a `rep movsb` copy a byte at a time, so
# there the count says little about time.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a load <<<"${1:--c 100 -p 20 -d 16}"
shift || true
[ "${1:-}" = "--" ] && shift
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
cargo build --release --quiet --bin sockwave --bin sockwave-bench
port=9812
out=$(mktemp /tmp/sockwave-callgrind.XXXXXX)
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" \
    target/release/sockwave --listen "127.0.0.1:$port" --threads 1 --workers 1 \
    --log-level warn "$@" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 150); do
    curl -sf "http://127.0.0.1:$port/metrics" >/dev/null && break
    sleep 0.2
done
taskset -c 1 target/release/sockwave-bench --addr "127.0.0.1:$port" "${load[@]}" \
    --duration "${CALLGRIND_SECONDS:-6}" --warmup 0 >/dev/null
metrics=$(curl -sf "http://127.0.0.1:$port/metrics")
received=$(awk '$1 == "sockwave_messages_received_total" { print $2 }' <<<"$metrics")
sent=$(awk '$1 == "sockwave_messages_sent_total" { print $2 }' <<<"$metrics")
kill -INT $server
wait $server || true
trap - EXIT
# awk reads to the end: an early exit would fail the pipe (pipefail).
total=$(callgrind_annotate "$out" | awk '/PROGRAM TOTALS/ && !n++ { gsub(",", "", $1); print $1 }')
echo "received $received, sent $sent, instructions $total: $((total / sent)) per message sent ($out)"
