#!/usr/bin/env python3
"""Server RSS per open idle WebSocket connection, and a connect burst.

Starts `target/release/sockwave`, opens N TCP connections as fast as possible
(a burst that must all be accepted), upgrades each one, then reads the
server's VmRSS from /proc before and after. Stdlib only.
    scripts/idle_memory.py [N]    (default 10000; needs ~N+100 file descriptors)
"""
import os
import resource
import selectors
import socket
import subprocess
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
PORT = int(os.environ.get("PORT", "9472"))
REQ = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = subprocess.Popen(["target/release/sockwave", "--listen", f"127.0.0.1:{PORT}"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", PORT)).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)
        before = rss_kib(server.pid)
        t0 = time.time()
        socks = []
        for _ in range(N):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", PORT))
            socks.append(s)
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_WRITE)
        pending_write = set(socks)
        answers = {s: b"" for s in socks}
        done = 0
        deadline = time.time() + 60
        while done < N and time.time() < deadline:
            for key, ev in sel.select(timeout=1):
                s = key.fileobj
                if s in pending_write:
                    s.send(REQ)
                    pending_write.discard(s)
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                data = s.recv(4096)
                answers[s] += data
                if b"\r\n\r\n" in answers[s]:
                    if not answers[s].startswith(b"HTTP/1.1 101"):
                        raise RuntimeError(answers[s][:80])
                    sel.unregister(s)
                    done += 1
        elapsed = time.time() - t0
        time.sleep(1.0)
        after = rss_kib(server.pid)
        per_conn = (after - before) * 1024 / max(done, 1)
        print(f"connections upgraded: {done}/{N} in {elapsed:.2f}s ({done / elapsed:.0f}/s, burst of {N} connects)")
        print(f"server RSS: {before} KiB idle, {after} KiB with {done} open -> {per_conn:.0f} bytes per connection")
        for s in socks:
            s.close()
        return 0 if done == N else 1
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
