#!/usr/bin/env bash
# ws:// and wss:// side by side, in turns, ROUNDS times (default 3): echo at
# 100 x 1 KiB x 16 in flight and 100 x 64 KiB x 1, handshake + close cycles
# (50 in flight, full TLS handshakes), each run on a fresh server pinned to
# core 0 with the load on core 1. Prints one line per run; take the medians.
#   scripts/bench-tls.sh [ROUNDS] [-- SERVER ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
[ "${1:-}" = "--" ] && shift
cargo build --release --quiet --bin sockwave --bin sockwave-bench
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
scripts/make-test-cert.sh "$dir"
port=9850
run() { # scheme, bench args...
    local scheme=$1; shift
    local tls=() client=()
    if [ "$scheme" = wss ]; then
        tls=(--tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem")
        client=(--tls-ca "$dir/cert.pem")
    fi
    port=$((port + 1))
    taskset -c 0 target/release/sockwave --listen "127.0.0.1:$port" --threads 1 --log-level warn \
        "${tls[@]}" "$@" "${SERVER_ARGS[@]}" &
    local pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.02; done
    echo "$scheme $(taskset -c 1 target/release/sockwave-bench --addr "127.0.0.1:$port" --server-pid "$pid" \
        --duration 2 --warmup 1 "${client[@]}" "${BENCH[@]}")"
    kill -TERM "$pid"; wait "$pid" || true
}
SERVER_ARGS=("$@")
for round in $(seq "$rounds"); do
    for cell in "-c 100 -p 1024 -d 16" "-c 100 -p 65536 -d 1" "--mode connect -c 50"; do
        read -ra BENCH <<<"$cell"
        for scheme in ws wss; do
            echo -n "round $round: "
            run "$scheme"
        done
    done
done
