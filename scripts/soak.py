#!/usr/bin/env python3
"""Churn soak: connections opening and closing in waves, every way a client
can end, while steady clients echo and verify every byte.

    scripts/soak.py [SECONDS] [--churn N] [--wave N] [--steady N]

Starts the release `sockwave` (echo) on a free port with short timeouts, then:
- `--steady` clients (Python websockets, permessage-deflate offered) echo
  messages of 1 B to 70 KB, text and binary, each checked byte for byte;
- waves of `--wave` churn connections, at least `--churn` in all and waves
  until SECONDS have passed, each ending one of six ways: a close handshake,
  a reset after an echo, silent after the upgrade (the server's ping goes
  unanswered), a frame cut off mid-payload, a request head cut off by a
  reset, and a connection that never sends its request (handshake timeout).

Then it checks: the steady clients lost nothing; the server's descriptors
are back to what they were before the churn (exactly) and its RSS within a
margin of it; `/metrics` agrees with what the clients did (connections,
messages, handshake timeouts, nothing open at the end). Prints the figures;
exits non-zero on any failure.
"""
import argparse
import asyncio
import base64
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import websockets

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SERVER = os.path.join(ROOT, "target/release/sockwave")
KINDS = ["clean", "reset", "silent", "midframe", "cut_request", "no_request"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) * 1024


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = int(float(value))
    return out


def frame(opcode, payload, fin=True):
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader):
    """(opcode, payload) of the next server frame (unmasked)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(n)


def request_head(port):
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /churn HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


async def upgrade(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_head(port))
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {head[:40]!r}")
    return reader, writer


def reset(writer):
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def until_eof(reader, limit):
    """Reads (pings, a close) until the server ends the connection."""
    async def drain():
        while await reader.read(4096):
            pass
    await asyncio.wait_for(drain(), limit)


async def echo_once(reader, writer, text):
    writer.write(frame(0x1, text))
    while True:
        op, payload = await read_frame(reader)
        if op == 0x9:  # a ping: answer it like any client
            writer.write(frame(0xA, payload))
            continue
        if (op, payload) != (0x1, text):
            raise RuntimeError(f"echo differs: {op} {payload[:20]!r}")
        return


async def churn_one(kind, port, tally):
    if kind == "clean":
        reader, writer = await upgrade(port)
        tally["upgraded"] += 1
        await echo_once(reader, writer, b"clean")
        tally["messages"] += 1
        writer.write(frame(0x8, struct.pack(">H", 1000)))
        while (await read_frame(reader))[0] != 0x8:
            pass
        await until_eof(reader, 10)
        writer.close()
    elif kind == "reset":
        reader, writer = await upgrade(port)
        tally["upgraded"] += 1
        await echo_once(reader, writer, b"reset")
        tally["messages"] += 1
        reset(writer)
    elif kind == "silent":
        reader, writer = await upgrade(port)
        tally["upgraded"] += 1
        await until_eof(reader, 15)  # the ping goes unanswered
        writer.close()
    elif kind == "midframe":
        reader, writer = await upgrade(port)
        tally["upgraded"] += 1
        writer.write(frame(0x2, bytes(100))[:20])
        await writer.drain()
        writer.close()
    elif kind == "cut_request":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_head(port)[:30])
        await writer.drain()
        reset(writer)
    elif kind == "no_request":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        tally["no_request"] += 1
        await until_eof(reader, 15)  # the handshake timeout
        writer.close()


async def steady_client(i, port, stop, tally, errors):
    rnd = random.Random(i)
    async with websockets.connect(f"ws://127.0.0.1:{port}/steady", max_size=None) as ws:
        n = 0
        while not stop.is_set():
            size = rnd.choice([1, 20, 200, 1500, 20_000, 70_000])
            body = struct.pack(">II", i, n) + rnd.randbytes(size)
            msg = body.hex()[:size] if n % 3 == 0 else body
            await ws.send(msg)
            echo = await ws.recv()
            if echo != msg:
                errors.append(f"steady {i}: echo {n} differs")
                return
            n += 1
        tally["steady_messages"] += n


async def soak(a, pid, port):
    tally = {"upgraded": 0, "messages": 0, "no_request": 0, "steady_messages": 0, "churned": 0}
    errors = []
    stop = asyncio.Event()

    async def wave(n, offset):
        results = await asyncio.gather(
            *(churn_one(KINDS[(offset + k) % len(KINDS)], port, tally) for k in range(n)),
            return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                errors.append(f"churn: {type(r).__name__}: {r}")
        tally["churned"] += n

    async def settled(expect_open, idle_fds):
        # Every churn connection released: only the steady clients are open
        # and the server holds exactly `idle_fds + expect_open` descriptors.
        # The count is read before each /metrics request: the server closes
        # that request's socket just after the client has its answer, so a
        # count read after it may still include it. Returns the last reading
        # if the server never settles; the checks then say what differs.
        for _ in range(1000):
            f = fds(pid)
            m = metrics(port)
            if m["sockwave_connections_open"] == expect_open and f == idle_fds + expect_open:
                break
            await asyncio.sleep(0.02)
        return m, f

    async def quiet_fds():
        # The descriptors of a server with no client. The readiness probe
        # connects as soon as the listeners are bound, before each loop
        # thread has opened its own files (its /proc schedstat), so wait
        # for nothing open by /metrics and five counts in a row, 20 ms
        # apart and each read before its request (as above), that agree.
        counts = []
        for _ in range(1000):
            counts = (counts + [fds(pid)])[-5:]
            if metrics(port)["sockwave_connections_open"] == 0 and len(counts) == 5 and len(set(counts)) == 1:
                return counts[0]
            await asyncio.sleep(0.02)
        raise RuntimeError(f"the server's descriptors did not settle: {counts}")

    idle_fds = await quiet_fds()
    steady = [asyncio.create_task(steady_client(i, port, stop, tally, errors)) for i in range(a.steady)]
    # Warm-up: the steady clients and one wave, so the baseline is the
    # allocator's steady state, not a fresh process.
    await wave(min(a.wave, a.churn), 0)
    _, base_fds = await settled(a.steady, idle_fds)
    base_rss = rss(pid)
    started = time.monotonic()
    peak_rss = base_rss
    while tally["churned"] < a.churn or time.monotonic() - started < a.seconds:
        await wave(a.wave, tally["churned"])
        peak_rss = max(peak_rss, rss(pid))
    _, end_fds = await settled(a.steady, idle_fds)
    end_rss = rss(pid)
    stop.set()
    await asyncio.gather(*steady)
    m, final_fds = await settled(0, idle_fds)
    elapsed = time.monotonic() - started
    timeouts = m['sockwave_handshake_failures_total{reason="timeout"}']
    checks = [
        ("steady clients lost nothing", not errors, "; ".join(errors[:5])),
        ("descriptors back to the baseline", end_fds == base_fds, f"{base_fds} -> {end_fds}"),
        ("RSS back within the margin", end_rss <= base_rss + a.rss_margin_mb * 2**20,
         f"{base_rss / 2**20:.1f} -> {end_rss / 2**20:.1f} MiB (peak {peak_rss / 2**20:.1f})"),
        ("connections_total matches the upgrades", m["sockwave_connections_total"] == tally["upgraded"] + a.steady,
         f"{m['sockwave_connections_total']} vs {tally['upgraded'] + a.steady}"),
        ("messages_received_total matches what was sent",
         m["sockwave_messages_received_total"] == tally["messages"] + tally["steady_messages"],
         f"{m['sockwave_messages_received_total']} vs {tally['messages'] + tally['steady_messages']}"),
        ("handshake timeouts match the silent connects", timeouts == tally["no_request"],
         f"{timeouts} vs {tally['no_request']}"),
        ("nothing open at the end", m["sockwave_connections_open"] == 0 and final_fds == idle_fds,
         f"open {m['sockwave_connections_open']}, fds {final_fds} (idle {idle_fds})"),
    ]
    print(f"soak: {elapsed:.0f} s, {tally['churned']} churn connections ({a.wave} a wave, "
          f"{tally['upgraded']} upgraded), {a.steady} steady clients echoed {tally['steady_messages']} "
          f"messages; server fds {base_fds} -> {end_fds}, RSS {base_rss / 2**20:.1f} -> "
          f"{end_rss / 2**20:.1f} MiB (peak {peak_rss / 2**20:.1f})")
    ok = True
    for name, good, detail in checks:
        print(f"  {'ok  ' if good else 'FAIL'} {name}: {detail}")
        ok &= good
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("seconds", nargs="?", type=float, default=60)
    ap.add_argument("--churn", type=int, default=10_000)
    ap.add_argument("--wave", type=int, default=500)
    ap.add_argument("--steady", type=int, default=100)
    ap.add_argument("--rss-margin-mb", type=float, default=16)
    a = ap.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [SERVER, "--listen", f"127.0.0.1:{port}", "--threads", "2", "--workers", "2", "--log-level", "error",
         "--handshake-timeout", "2s", "--ping-interval", "1s", "--pong-timeout", "1s", "--idle-timeout", "60s"],
        stdout=subprocess.DEVNULL)
    try:
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.025)
        ok = asyncio.run(soak(a, server.pid, port))
    finally:
        server.terminate()
        code = server.wait(timeout=20)
    if code != 0:
        print(f"soak: the server exited with {code}")
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
