"""Python's websockets client (the asyncio implementation) against the sockwave binary."""
import asyncio
import os
import re
import signal
import socket
import subprocess

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("SOCKWAVE_BIN", os.path.join(ROOT, "target", "release", "sockwave"))


class Server:
    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [BIN, "--listen", "127.0.0.1:0", "--threads", "2", "--workers", "2", *args],
            stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self.url = f"ws://127.0.0.1:{self.port}"
                return
        raise RuntimeError("server did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
def server(request):
    s = Server(*getattr(request, "param", ()))
    yield s
    assert s.stop() == 0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_echo_text_binary_large_and_fragmented(server):
    async def go():
        async with websockets.connect(server.url + "/py", max_size=32 << 20) as ws:
            await ws.send("grüße ✓")
            assert await ws.recv() == "grüße ✓"
            await ws.send(bytes(range(256)))
            assert await ws.recv() == bytes(range(256))
            big = os.urandom(8 << 20)
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send(["frag", "men", "ted"])  # an iterable is sent fragmented
            assert await ws.recv() == "fragmented"
    run(go())


def test_client_ping_is_answered(server):
    async def go():
        async with websockets.connect(server.url) as ws:
            latency = await asyncio.wait_for(await ws.ping(b"py-ping"), 5)
            assert latency >= 0
    run(go())


def test_close_codes_seen_by_the_client(server):
    async def go():
        ws = await websockets.connect(server.url)
        await ws.close(4002, "from python")
        assert ws.close_code == 4002
        assert ws.close_reason == "from python"
    run(go())


@pytest.mark.parametrize("server", [("--max-message-size", "1K")], indirect=True)
def test_too_big_is_closed_with_1009(server):
    async def go():
        async with websockets.connect(server.url) as ws:
            await ws.send(b"x" * 2000)
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd.code == 1009
    run(go())


@pytest.mark.parametrize("server", [("--mode", "broadcast")], indirect=True)
def test_broadcast_reaches_the_others(server):
    async def go():
        clients = [await websockets.connect(server.url) for _ in range(4)]
        await clients[0].send("to all")
        for c in clients[1:]:
            assert await c.recv() == "to all"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(clients[0].recv(), 0.2)
        for c in clients:
            await c.close()
    run(go())


@pytest.mark.parametrize("server", [("--mode", "pubsub")], indirect=True)
def test_pubsub_channels_are_isolated(server):
    async def go():
        red = [await websockets.connect(server.url + "/red") for _ in range(3)]
        blue = await websockets.connect(server.url + "/blue")
        await red[0].send(b"\x01red")
        for c in red[1:]:
            assert await c.recv() == b"\x01red"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(blue.recv(), 0.2)
        for c in red + [blue]:
            await c.close()
    run(go())


@pytest.mark.parametrize("server", [("--mode", "broadcast")], indirect=True)
def test_abrupt_disconnect_mid_message_leaves_others_working(server):
    async def go():
        a = await websockets.connect(server.url)
        b = await websockets.connect(server.url)
        raw = socket.create_connection(("127.0.0.1", server.port))
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 101")
        raw.sendall(bytes([0x81, 0xFE, 0x10, 0x00, 9, 9, 9, 9]) + b"z" * 100)
        raw.close()
        await a.send("after the crash")
        assert await b.recv() == "after the crash"
        await a.close()
        await b.close()
    run(go())


def test_sigterm_closes_with_1001():
    s = Server()

    async def go():
        ws = await websockets.connect(s.url)
        loop = asyncio.get_running_loop()
        stopping = loop.run_in_executor(None, s.stop)
        with pytest.raises(ConnectionClosed) as e:
            await ws.recv()
        assert e.value.rcvd.code == 1001
        assert await stopping == 0
    run(go())


def make_certificate(directory):
    """A throwaway self-signed certificate for localhost, made now."""
    subprocess.run([os.path.join(ROOT, "scripts", "make-test-cert.sh"), directory], check=True)
    return os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")


def test_wss_echo_close_and_subprotocol_over_tls(tmp_path):
    import ssl
    cert, key = make_certificate(str(tmp_path))
    proc = subprocess.Popen(
        [BIN, "--listen", "127.0.0.1:0", "--threads", "2", "--tls-cert", cert, "--tls-key", key,
         "--subprotocol", "chat.v1"],
        stderr=subprocess.PIPE, text=True)
    port = None
    for line in proc.stderr:
        m = re.search(r"listening on wss://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    assert port, "the server did not start with TLS"
    ctx = ssl.create_default_context(cafile=cert)

    async def go():
        async with websockets.connect(f"wss://127.0.0.1:{port}/secure", ssl=ctx, server_hostname="localhost",
                                      subprotocols=["chat.v1"], max_size=32 << 20) as ws:
            assert ws.subprotocol == "chat.v1"
            await ws.send("über TLS")
            assert await ws.recv() == "über TLS"
            big = os.urandom(4 << 20)
            await ws.send(big)
            assert await ws.recv() == big
            await ws.close(4000, "bye")
        assert ws.close_code == 4000
        # Plain ws:// to the TLS port is refused at the TLS layer, not served.
        with pytest.raises(Exception):
            async with websockets.connect(f"ws://127.0.0.1:{port}/", open_timeout=5):
                pass
    try:
        run(go())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
