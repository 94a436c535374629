#!/usr/bin/env python3
"""Server RSS per open idle WebSocket connection, and a connect burst.

Starts `target/release/sockwave`, opens N TCP connections as fast as possible
(a burst that must all be accepted), upgrades each one, then reads the
server's VmRSS from /proc before and after. Before the first reading one
connection is upgraded and closed, so what the first upgrade faults in once
(the code of the upgrade path, first-use statics) is not counted against
every connection. Stdlib only.
    scripts/idle_memory.py [N] [--deflate] [-- SERVER ARGS...]
      N          connections (default 10000; needs ~N+100 file descriptors)
      --deflate  offer permessage-deflate like a browser and exchange one
                 compressed message per connection before going idle, so a
                 dedicated compressor and inflater exist for each
      --max-bytes-per-conn B   fail (exit 1) when the server's RSS per
                 connection is above B
      --tls      serve wss:// with a throwaway self-signed certificate (made
                 with the openssl command) and open the N connections over
                 TLS, one handshake after another
"""
import os
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import zlib

ARGS = sys.argv[1:]
SERVER_ARGS = ARGS[ARGS.index("--") + 1:] if "--" in ARGS else []
ARGS = ARGS[:ARGS.index("--")] if "--" in ARGS else ARGS
DEFLATE = "--deflate" in ARGS
TLS = "--tls" in ARGS
MAX_PER_CONN = None
if "--max-bytes-per-conn" in ARGS:
    i = ARGS.index("--max-bytes-per-conn")
    MAX_PER_CONN = int(ARGS[i + 1])
    del ARGS[i:i + 2]
N = int(next((a for a in ARGS if a.isdigit()), "10000"))
PORT = int(os.environ.get("PORT", "9472"))
REQ = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
       + (b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if DEFLATE else b"")
       + b"\r\n")
MESSAGE = (b'{"type":"quote","symbol":"ACME","bid":101.25,"ask":101.5,"levels":[[101.2,300],[101.1,900]]}' * 12)


def compressed_frame(payload):
    """A masked text frame with RSV1, compressed as RFC 7692 says."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    body = body[:-4]
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(body))
    assert len(body) < 65536
    head = bytes([0xC1, 0x80 | 126]) + len(body).to_bytes(2, "big") if len(body) >= 126 else bytes([0xC1, 0x80 | len(body)])
    return head + key + masked


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def throwaway_certificate(directory):
    subprocess.run(["scripts/make-test-cert.sh", directory], check=True)
    return os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")


def open_tls(n, cert):
    """N wss connections, upgraded, one after another (the server's loop is
    what is measured, not the client's speed)."""
    ctx = ssl.create_default_context(cafile=cert)
    socks = []
    for _ in range(n):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", PORT)), server_hostname="localhost")
        upgrade(s)
        socks.append(s)
    return socks


def upgrade(s):
    """Sends the upgrade request on the blocking socket `s` and reads the 101."""
    s.sendall(REQ)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head[:80])


def warm_up(cert):
    """One connection upgraded and closed, before anything is measured."""
    if TLS:
        open_tls(1, cert)[0].close()
    else:
        s = socket.create_connection(("127.0.0.1", PORT))
        upgrade(s)
        s.close()


def report(server, before, socks, done, elapsed, clients, how):
    """Prints the server's RSS per open connection; the exit status."""
    time.sleep(1.0)
    after = rss_kib(server.pid)
    per_conn = (after - before) * 1024 / max(done, 1)
    print(f"server: {' '.join(SERVER_ARGS) or 'defaults'}; clients: {clients}")
    print(f"connections upgraded: {done}/{N} in {elapsed:.2f}s ({done / elapsed:.0f}/s, {how})")
    print(f"server RSS: {before} KiB idle, {after} KiB with {done} open -> {per_conn:.0f} bytes per connection")
    for s in socks:
        s.close()
    if MAX_PER_CONN is not None and per_conn > MAX_PER_CONN:
        print(f"FAIL: {per_conn:.0f} bytes per connection, over the budget of {MAX_PER_CONN}")
        return 1
    return 0 if done == N else 1


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tls_args, cert = [], None
    if TLS:
        cert, key = throwaway_certificate(tempfile.mkdtemp(prefix="sockwave-idle-tls-"))
        tls_args = ["--tls-cert", cert, "--tls-key", key]
    server = subprocess.Popen(["target/release/sockwave", "--listen", f"127.0.0.1:{PORT}", *tls_args, *SERVER_ARGS],
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", PORT)).close()
                break
            except OSError:
                time.sleep(0.05)
        warm_up(cert)
        time.sleep(0.3)
        before = rss_kib(server.pid)
        t0 = time.time()
        if TLS:
            socks = open_tls(N, cert)
            return report(server, before, socks, N, time.time() - t0, "TLS", "one after another")
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
        sent_message = set()
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
                data = s.recv(65536)
                answers[s] += data
                head, sep, rest = answers[s].partition(b"\r\n\r\n")
                if not sep:
                    continue
                if not head.startswith(b"HTTP/1.1 101"):
                    raise RuntimeError(head[:80])
                if DEFLATE:
                    if b"permessage-deflate" not in head:
                        raise RuntimeError("deflate not negotiated")
                    if s not in sent_message:
                        s.setblocking(True)
                        s.sendall(compressed_frame(MESSAGE))
                        s.setblocking(False)
                        sent_message.add(s)
                    if len(rest) < 2:
                        continue  # wait for the (compressed) echo
                sel.unregister(s)
                done += 1
        clients = "permessage-deflate + one compressed message each" if DEFLATE else "plain"
        return report(server, before, socks, done, time.time() - t0, clients, f"burst of {N} connects")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
