#!/usr/bin/env bash
# Profiles the sockwave echo path with perf (software clock events: hardware
# counters are not available on these machines).
#   scripts/profile.sh [SECONDS] [-- SERVER FLAGS...]   e.g. scripts/profile.sh 10 -- --dispatch inline
# Builds the `profiling` profile (release + line tables) with frame pointers
# into target/fp, runs the server pinned to core 0 under
#   perf record -e cpu-clock -g --call-graph fp
# while sockwave-bench loads it from core 1 (default 100 connections x 20 B x
# depth 16; another load with e.g. LOAD="-c 1000 -p 1024 -d 1"),
# and writes target/fp/perf.data and the top of `perf report` to target/fp/profile.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
read -r -a load <<<"${LOAD:--c 100 -p 20 -d 16}"
shift || true
[ "${1:-}" = "--" ] && shift
command -v perf >/dev/null || { apt-get install -y -qq linux-perf >/dev/null; }
export CARGO_TARGET_DIR=target/fp RUSTFLAGS="-C force-frame-pointers=yes"
cargo build --profile profiling --quiet --bin sockwave --bin sockwave-bench
bin=target/fp/profiling
taskset -c 0 "$bin/sockwave" --listen 127.0.0.1:9790 --threads 1 --workers 1 --log-level warn "$@" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 0.5
perf record -e cpu-clock -F 1999 -g --call-graph fp -o target/fp/perf.data -p "$server" -- sleep "$((secs + 2))" 2>/dev/null &
recorder=$!
taskset -c 1 "$bin/sockwave-bench" --addr 127.0.0.1:9790 "${load[@]}" --duration "$secs" --warmup 1 --server-pid "$server"
wait $recorder || true
perf report -i target/fp/perf.data --no-children --percent-limit 0.7 --stdio 2>/dev/null \
    | grep -v '^$' | head -120 > target/fp/profile.txt || true
perf report -i target/fp/perf.data --no-children --sort symbol --percent-limit 1 --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9]' | head -40 || true
echo "full report: target/fp/profile.txt (perf report -i target/fp/perf.data)"
