#!/usr/bin/env python3
"""Pub/sub across nodes through Redis, measured: one redis-server and three
`sockwave --mode pubsub --redis` nodes (A, B, C), the publishers on A and the
subscribers on B and C, so every delivery crosses Redis. The same cells with
every subscriber on A (no Redis hop) give the baseline.

Redis and the three nodes run pinned to core 0 (this machine has two cores);
sockwave-bench runs pinned to core 1. Each cell runs --rounds times; the
table gives the median run (by deliveries/s) and the spread between rounds.

    scripts/bench-broker.py [--rounds 3] [--duration 4] [--out benches/broker]

Writes OUT.json and OUT.md, and prints the table.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BENCH = os.path.join(ROOT, "target/release/sockwave-bench")
SOCKWAVE = os.path.join(ROOT, "target/release/sockwave")

# (name, where subscribers are, extra sockwave-bench arguments)
CELLS = [
    ("latency, 1 subscriber, window 1", "remote", ["--subscribers", "1", "--window", "1"]),
    ("latency, 1 subscriber, window 1", "local", ["--subscribers", "1", "--window", "1"]),
    ("1,000 subscribers per node, window 64", "remote", ["--subscribers", "2000", "--window", "64"]),
    ("1,000 subscribers on A, window 64", "local", ["--subscribers", "1000", "--window", "64"]),
    ("10 topics x 1 subscriber, window 64", "remote", ["--subscribers", "10", "--topics", "10", "--window", "64"]),
    ("10 topics x 1 subscriber, window 64", "local", ["--subscribers", "10", "--topics", "10", "--window", "64"]),
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.025)
    raise RuntimeError(f"nothing listens on {port}")


def pinned(cmd):
    return subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "benches/broker"))
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "sockwave", "--bin", "sockwave-bench"],
                   cwd=ROOT, check=True)
    redis_port = free_port()
    redis = pinned(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no"])
    wait_port(redis_port)
    ports = [free_port() for _ in range(3)]
    nodes = [pinned([SOCKWAVE, "--mode", "pubsub", "--listen", f"127.0.0.1:{p}", "--threads", "1",
                     "--workers", "1", "--log-level", "warn", "--redis", f"redis://127.0.0.1:{redis_port}/"])
             for p in ports]
    for p in ports:
        wait_port(p)
    runs = {}
    try:
        for r in range(args.rounds):
            for name, where, extra in CELLS:
                subs = [f"127.0.0.1:{ports[0]}"] if where == "local" else [f"127.0.0.1:{p}" for p in ports[1:]]
                cmd = ["taskset", "-c", "1", BENCH, "--mode", "fanout", "--addr", f"127.0.0.1:{ports[0]}",
                       "--payload", "20", "--duration", str(args.duration), "--warmup", "1", "--settle", "1",
                       "--json", "--redis-pid", str(redis.pid)]
                for s in subs:
                    cmd += ["--sub-addr", s]
                cmd += ["--server-pid", str(nodes[0].pid), "--node-pid", str(nodes[1].pid),
                        "--node-pid", str(nodes[2].pid), *extra]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                result = json.loads(out)
                print(f"round {r + 1}: {name} ({where}): {out.strip()}", flush=True)
                runs.setdefault(f"{name}|{where}", []).append(result)
    finally:
        for p in [*nodes, redis]:
            p.send_signal(signal.SIGTERM)
            p.wait()
    rows = []
    for key, results in runs.items():
        name, where = key.split("|")
        results.sort(key=lambda x: x["deliveries_per_sec"])
        med = results[len(results) // 2]
        rates = [x["deliveries_per_sec"] for x in results]
        spread = (max(rates) - min(rates)) / med["deliveries_per_sec"] * 100 if med["deliveries_per_sec"] else 0
        rows.append({"cell": name, "where": where, **med, "spread_pct": round(spread, 1),
                     "errors_all_rounds": sum(x["errors"] for x in results)})
    lines = [
        "| cell | subscribers on | deliveries/s | publishes/s | p50 µs | p99 µs | p99.9 µs | redis CPU µs per publish | spread | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['cell']} | {'other nodes, via Redis' if r['where'] == 'remote' else 'the same node, no Redis hop'} "
            f"| {r['deliveries_per_sec']:,.0f} | {r['published_per_sec']:,.0f} | {r['p50_us']} | {r['p99_us']} "
            f"| {r['p999_us']} | {r['redis_cpu_us_per_publish']} "
            f"| ±{r['spread_pct'] / 2:.1f}% | {r['errors_all_rounds']} |")
    table = "\n".join(lines)
    with open(args.out + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
