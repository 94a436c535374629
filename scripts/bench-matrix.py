#!/usr/bin/env python3
"""Every echo server through the same matrix, side by side.

Servers: sockwave (default worker dispatch), sockwave with --dispatch inline,
and echo servers on tokio-tungstenite and fastwebsockets (benches/peers),
each written as its own examples write one; with --uws-echo PATH, an
uWebSockets EchoServer built outside this repository as one more column.

With --fanout, a pub/sub table too: one publisher and S subscribers on one
topic (S in 100, 1,000, 5,000; 20 B and 1 KiB), and 5,000 subscribers over
10 topics, 16 messages in flight (`sockwave-bench --mode fanout`, every
delivery checked), against sockwave's pubsub mode, a tokio-tungstenite
pub/sub server written like that crate's chat example, and with
--uws-pubsub PATH an uWebSockets ws->publish server.
Each server runs pinned to core 0 (taskset) with one event loop; the load
generator, sockwave-bench, runs pinned to core 1. Cells are run in turns
(every server on cell 1, then every server on cell 2, ...) so drift on this
noisy machine hits all servers alike; with --rounds N the whole sequence is
repeated N times and each cell reports the median run (by messages/s).

With --shared-core, a CPU-bound process runs on core 0 beside every server
for the whole matrix: how each server fares when its core is not its own
(other services, a busy neighbour), not only when it has the core alone.

    scripts/bench-matrix.py [--quick] [--rounds N] [--cells 100x1024x1,...] [--fanout] [--no-echo]
                            [--uws-echo PATH] [--uws-pubsub PATH] [--shared-core] [--out benches/results]

Writes OUT.json, OUT.md (the table) and OUT.svg (a chart), and prints the table.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BENCH = os.path.join(ROOT, "target/release/sockwave-bench")
SOCKWAVE = os.path.join(ROOT, "target/release/sockwave")
PEERS = os.path.join(ROOT, "benches/peers/target/release")
PORT = 9700


UWS_ECHO = None
UWS_PUBSUB = None


def servers(addr):
    out = {
        "sockwave": [SOCKWAVE, "--listen", addr, "--threads", "1", "--workers", "1", "--log-level", "warn"],
        "sockwave-inline": [SOCKWAVE, "--listen", addr, "--threads", "1", "--dispatch", "inline", "--log-level", "warn"],
        "tokio-tungstenite": [os.path.join(PEERS, "tungstenite-echo"), addr],
        "fastwebsockets": [os.path.join(PEERS, "fastwebsockets-echo"), addr],
    }
    if UWS_ECHO:
        # Built outside the repository; it takes the port as its argument.
        out["uWebSockets"] = [UWS_ECHO, addr.rsplit(":", 1)[1]]
    return out


def pubsub_servers(addr):
    out = {
        "sockwave": [SOCKWAVE, "--listen", addr, "--threads", "1", "--workers", "1", "--mode", "pubsub",
                     "--log-level", "warn"],
        "sockwave-inline": [SOCKWAVE, "--listen", addr, "--threads", "1", "--dispatch", "inline", "--mode", "pubsub",
                            "--log-level", "warn"],
        "tokio-tungstenite": [os.path.join(PEERS, "tungstenite-pubsub"), addr],
    }
    if UWS_PUBSUB:
        out["uWebSockets"] = [UWS_PUBSUB, addr.rsplit(":", 1)[1]]
    return out


# (subscribers, topics, payload), one publisher per topic.
FANOUT_CELLS = [(100, 1, 20), (1000, 1, 20), (5000, 1, 20), (100, 1, 1024), (1000, 1, 1024), (5000, 1, 1024),
                (5000, 10, 20)]


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "sockwave", "--bin", "sockwave-bench"],
                   cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=os.path.join(ROOT, "benches/peers"), check=True)


def start(cmd, port):
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.025)
    proc.kill()
    raise RuntimeError(f"server did not start: {cmd}")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench(args, port, pid):
    cmd = ["taskset", "-c", "1", BENCH, "--addr", f"127.0.0.1:{port}", "--server-pid", str(pid), "--json", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.strip()}
    return json.loads(out.stdout)


def cells(quick, only=None):
    if only:
        return [tuple(int(x) for x in cell.split("x")) for cell in only.split(",")]
    conns = [1, 100, 1000]
    out = []
    for c in conns:
        for p in [20, 1024, 65536]:
            for d in ([1, 16] if p <= 1024 else [1]):
                out.append((c, p, d))
    return out[:4] if quick else out


def median_run(runs, key):
    """The run with the median `key` (an error if every run failed)."""
    ok = sorted((r for r in runs if key in r), key=lambda r: r[key])
    if not ok:
        return runs[-1]
    best = dict(ok[(len(ok) - 1) // 2])
    best["runs"] = [r.get(key) for r in runs]
    return best


def fmt(n):
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a few cells, short runs")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=None, help="repeat everything N times, report medians")
    ap.add_argument("--cells", default=None, help="only these echo cells, e.g. 100x1024x1,1000x20x16")
    ap.add_argument("--no-extra", action="store_true", help="echo cells only (no connect rate, no idle memory)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benches/results"))
    ap.add_argument("--replot", action="store_true", help="redraw OUT.md and OUT.svg from OUT.json")
    ap.add_argument("--fanout", action="store_true", help="also the pub/sub fan-out table")
    ap.add_argument("--no-echo", action="store_true", help="no echo cells (with --fanout: that table only)")
    ap.add_argument("--uws-echo", default=None, help="an uWebSockets EchoServer binary (built outside the repository)")
    ap.add_argument("--uws-pubsub", default=None, help="an uWebSockets ws->publish server binary")
    ap.add_argument("--shared-core", action="store_true",
                    help="a CPU-bound process on the servers' core throughout")
    a = ap.parse_args()
    global UWS_ECHO, UWS_PUBSUB
    UWS_ECHO, UWS_PUBSUB = a.uws_echo, a.uws_pubsub
    if a.replot:
        with open(a.out + ".json") as f:
            results = json.load(f)
        names = list(results["echo"][0].keys())[3:] if results["echo"] else []
        with open(a.out + ".md", "w") as f:
            f.write(markdown(results, names))
        with open(a.out + ".svg", "w") as f:
            f.write(chart(results, names))
        return 0
    duration = a.duration or (1.0 if a.quick else 2.0)
    warmup = 0.5 if a.quick else 1.0
    rounds = a.rounds or (1 if a.quick else 3)
    build()
    neighbour = None
    if a.shared_core:
        neighbour = subprocess.Popen(["taskset", "-c", "0", "sh", "-c", "while :; do :; done"])
    try:
        return run(a, duration, warmup, rounds, a.shared_core)
    finally:
        if neighbour:
            neighbour.kill()
            neighbour.wait()


def run(a, duration, warmup, rounds, shared_core):
    addr = f"127.0.0.1:{PORT}"
    names = list(servers(addr))
    results = {"echo": [], "connect": {}, "idle": {}, "fanout": [], "duration": duration, "rounds": rounds,
               "shared_core": shared_core}
    runs = {}
    echo_cells = [] if a.no_echo else cells(a.quick, a.cells)
    for round_ in range(rounds):
        for (s_, t, p) in (FANOUT_CELLS if a.fanout else []):
            for name, cmd in pubsub_servers(addr).items():
                proc = start(cmd, PORT)
                r = bench(["--mode", "fanout", "--subscribers", str(s_), "--topics", str(t), "--publishers", "1",
                           "--window", "16", "-p", str(p), "--duration", str(duration), "--warmup", str(warmup)],
                          PORT, proc.pid)
                stop(proc)
                runs.setdefault(("fanout", s_, t, p, name), []).append(r)
                print(f"[{round_ + 1}/{rounds}] fan-out {s_:>5} subs {t:>2} topics {p:>5} B  {name:<18} "
                      f"{fmt(r.get('deliveries_per_sec')):>8} deliveries/s  "
                      f"{fmt(r.get('deliveries_per_server_cpu_sec')):>8} per CPU-s  "
                      f"p99 {r.get('p99_us', '-')} us {r.get('error', '')}{r.get('first_error') or ''}", flush=True)
        for (c, p, d) in echo_cells:
            for name, cmd in servers(addr).items():
                proc = start(cmd, PORT)
                r = bench(["-c", str(c), "-p", str(p), "-d", str(d), "--duration", str(duration),
                           "--warmup", str(warmup)], PORT, proc.pid)
                stop(proc)
                runs.setdefault((c, p, d, name), []).append(r)
                print(f"[{round_ + 1}/{rounds}] {c:>5} conns {p:>6} B depth {d:>2}  {name:<18} "
                      f"{fmt(r.get('messages_per_sec')):>8} msgs/s  "
                      f"{fmt(r.get('messages_per_server_cpu_sec')):>8} per CPU-s  "
                      f"p99 {r.get('p99_us', '-')} us {r.get('error', '')}", flush=True)
        if a.no_extra or a.no_echo:
            continue
        for name, cmd in servers(addr).items():
            # 100 handshake + close cycles in flight from one client thread.
            proc = start(cmd, PORT)
            r = bench(["--mode", "connect", "-c", "100", "--duration", str(duration), "--warmup", str(warmup)],
                      PORT, proc.pid)
            stop(proc)
            runs.setdefault(("connect", name), []).append(r)
            proc = start(cmd, PORT)
            time.sleep(0.3)
            r = bench(["--mode", "idle", "-c", "1000" if a.quick else "10000"], PORT, proc.pid)
            stop(proc)
            runs.setdefault(("idle", name), []).append(r)
            print(f"[{round_ + 1}/{rounds}] {name:<18} connect {fmt(runs[('connect', name)][-1].get('connections_per_sec'))}/s "
                  f"({fmt(runs[('connect', name)][-1].get('connections_per_server_cpu_sec'))} per CPU-s), "
                  f"idle {r.get('rss_bytes_per_connection', '-')} B/conn", flush=True)
    for (s_, t, p) in (FANOUT_CELLS if a.fanout else []):
        row = {"subscribers": s_, "topics": t, "payload": p}
        for name in pubsub_servers(addr):
            row[name] = median_run(runs[("fanout", s_, t, p, name)], "deliveries_per_sec")
        results["fanout"].append(row)
    for (c, p, d) in echo_cells:
        row = {"connections": c, "payload": p, "depth": d}
        for name in names:
            row[name] = median_run(runs[(c, p, d, name)], "messages_per_sec")
        results["echo"].append(row)
    if not (a.no_extra or a.no_echo):
        for name in names:
            results["connect"][name] = median_run(runs[("connect", name)], "connections_per_sec")
            results["idle"][name] = median_run(runs[("idle", name)], "rss_bytes_per_connection")
    with open(a.out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    table = markdown(results, names)
    with open(a.out + ".md", "w") as f:
        f.write(table)
    if results["echo"]:
        with open(a.out + ".svg", "w") as f:
            f.write(chart(results, names))
    print(table)


def fanout_markdown(results):
    if not results.get("fanout"):
        return ""
    names = list(results["fanout"][0].keys())[3:]
    lines = ["", "| subscribers | topics | payload | " + " | ".join(
        f"{n} deliveries/s (per server CPU-s), p99" for n in names) + " |",
             "|" + " --- |" * (3 + len(names))]
    for row in results["fanout"]:
        cells_ = []
        for n in names:
            r = row[n]
            cells_.append(f"{fmt(r.get('deliveries_per_sec'))} ({fmt(r.get('deliveries_per_server_cpu_sec'))}), "
                          f"{r.get('p99_us', '-')} us" if r.get("errors", 1) == 0 else "error")
        lines.append(f"| {row['subscribers']} | {row['topics']} | {row['payload']} | " + " | ".join(cells_) + " |")
    return "\n".join(lines) + "\n"


def markdown(results, names):
    note = ("With a CPU-bound process on the servers' core throughout (--shared-core).\n\n"
            if results.get("shared_core") else "")
    return note + tables(results, names)


def tables(results, names):
    if not results["echo"]:
        return fanout_markdown(results)
    lines = ["| connections | payload | depth | " + " | ".join(f"{n} msgs/s (per server CPU-s)" for n in names) + " |",
             "|" + " --- |" * (3 + len(names))]
    for row in results["echo"]:
        cells_ = []
        for n in names:
            r = row[n]
            cells_.append(f"{fmt(r.get('messages_per_sec'))} ({fmt(r.get('messages_per_server_cpu_sec'))})"
                          if "error" not in r else "error")
        lines.append(f"| {row['connections']} | {row['payload']} | {row['depth']} | " + " | ".join(cells_) + " |")
    if not results["connect"]:
        return "\n".join(lines) + "\n" + fanout_markdown(results)
    lines.append("")
    lines.append("| | " + " | ".join(names) + " |")
    lines.append("|" + " --- |" * (1 + len(names)))
    lines.append("| connect rate, 100 in flight (handshake + close per s) | " + " | ".join(
        fmt(results["connect"][n].get("connections_per_sec")) for n in names) + " |")
    lines.append("| handshake + close per server CPU-second | " + " | ".join(
        fmt(results["connect"][n].get("connections_per_server_cpu_sec")) for n in names) + " |")
    lines.append("| idle server RSS per connection (bytes) | " + " | ".join(
        str(results["idle"][n].get("rss_bytes_per_connection", "-")) for n in names) + " |")
    return "\n".join(lines) + "\n" + fanout_markdown(results)


def chart(results, names):
    """Grouped bars: messages/s of each server relative to the best peer, per cell."""
    colors = ["#1f6feb", "#6cb6ff", "#d29922", "#8b949e"]
    rows = results["echo"]
    w, h, left, top, bottom = 110 + 46 * len(rows), 360, 50, 30, 95
    bar = 36 / len(names)
    peak = 0.0
    rel = []
    for row in rows:
        peers = [row[n].get("messages_per_sec") or 0 for n in names if not n.startswith("sockwave")]
        best = max(peers) or 1
        vals = [(row[n].get("messages_per_sec") or 0) / best for n in names]
        rel.append(vals)
        peak = max(peak, *vals)
    peak = max(peak, 1.0) * 1.1
    y = lambda v: top + (h - top - bottom) * (1 - v / peak)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="10">',
           f'<text x="{left}" y="16" font-size="12">messages/s relative to the best peer (1.0 = best of tokio-tungstenite, fastwebsockets)</text>']
    for t in [0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0]:
        if t < peak:
            svg.append(f'<line x1="{left}" x2="{w - 10}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>'
                       f'<text x="{left - 6}" y="{y(t) + 3:.1f}" text-anchor="end">{t}</text>')
    for i, (row, vals) in enumerate(zip(rows, rel)):
        x0 = left + 10 + i * 46
        for j, v in enumerate(vals):
            svg.append(f'<rect x="{x0 + j * bar:.1f}" y="{y(v):.1f}" width="{bar - 1:.1f}" '
                       f'height="{y(0) - y(v):.1f}" fill="{colors[j % len(colors)]}"/>')
        label = f"{row['connections']}c {row['payload']}B d{row['depth']}"
        svg.append(f'<text transform="translate({x0 + 18},{h - bottom + 8}) rotate(60)">{label}</text>')
    for j, n in enumerate(names):
        svg.append(f'<rect x="{left + j * 150}" y="{h - 16}" width="10" height="10" fill="{colors[j % len(colors)]}"/>'
                   f'<text x="{left + j * 150 + 14}" y="{h - 7}">{n}</text>')
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


if __name__ == "__main__":
    sys.exit(main())
