// Node's ws client against the sockwave binary.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import WebSocket from "ws";
import { startServer, makeCertificate } from "./server.mjs";

function connect(url, protocols, options = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { maxPayload: 64 << 20, ...options });
    ws.inbox = [];
    ws.waiters = [];
    ws.on("message", (data, isBinary) => {
      const m = { data: isBinary ? Buffer.from(data) : data.toString(), isBinary };
      const w = ws.waiters.shift();
      w ? w(m) : ws.inbox.push(m);
    });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}
const next = (ws) => new Promise((res) => { const m = ws.inbox.shift(); m ? res(m) : ws.waiters.push(res); });
const closed = (ws) => new Promise((res) => ws.once("close", (code, reason) => res({ code, reason: reason.toString() })));
const quiet = (ws, ms) => new Promise((res) => setTimeout(() => res(ws.inbox.length), ms));

test("echo: text, binary, 8 MiB, client pings, close codes both ways", async () => {
  const server = await startServer(["--max-message-size", "16M"]);
  try {
    const ws = await connect(`${server.url}/echo`);
    ws.send("héllo ✓");
    assert.deepEqual(await next(ws), { data: "héllo ✓", isBinary: false });
    ws.send(Buffer.from([0, 1, 2, 255]));
    assert.deepEqual(await next(ws), { data: Buffer.from([0, 1, 2, 255]), isBinary: true });
    const big = Buffer.alloc(8 << 20, 7);
    for (let i = 0; i < big.length; i += 4093) big[i] = i & 0xff;
    ws.send(big);
    const echoed = await next(ws);
    assert.ok(echoed.isBinary && echoed.data.equals(big), "8 MiB echoed intact");
    // ws sends a fragmented message when told to.
    ws.send("frag", { fin: false });
    ws.send("mented", { fin: true });
    assert.deepEqual(await next(ws), { data: "fragmented", isBinary: false });
    const pong = new Promise((res) => ws.once("pong", (d) => res(d.toString())));
    ws.ping("are you there");
    assert.equal(await pong, "are you there");
    const c = closed(ws);
    ws.close(4321, "client says bye");
    assert.deepEqual(await c, { code: 4321, reason: "client says bye" });

    // The server closes with 1009 when a message passes the limit.
    const small = await startServer(["--max-message-size", "1K"]);
    const ws2 = await connect(small.url);
    const c2 = closed(ws2);
    ws2.send(Buffer.alloc(2000));
    assert.equal((await c2).code, 1009);
    assert.equal(await small.stop(), 0);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test("subprotocol: the client's first choice the server speaks", async () => {
  const server = await startServer(["--subprotocol", "v1.proto", "--subprotocol", "v2.proto"]);
  try {
    const ws = await connect(server.url, ["v3.proto", "v2.proto", "v1.proto"]);
    assert.equal(ws.protocol, "v2.proto");
    ws.close();
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test("broadcast: every other client, once, in order", async () => {
  const server = await startServer(["--mode", "broadcast"]);
  try {
    const clients = await Promise.all([1, 2, 3, 4].map(() => connect(server.url)));
    for (let i = 0; i < 20; i++) clients[0].send(`m${i}`);
    for (const c of clients.slice(1)) {
      for (let i = 0; i < 20; i++) assert.equal((await next(c)).data, `m${i}`);
    }
    assert.equal(await quiet(clients[0], 200), 0, "the sender gets nothing back");
    clients.forEach((c) => c.close());
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test("pub/sub: channels by URL path, isolated, across loops", async () => {
  const server = await startServer(["--mode", "pubsub"]);
  try {
    const lobby = await Promise.all([1, 2, 3, 4, 5, 6].map(() => connect(`${server.url}/chat/lobby`)));
    const other = await connect(`${server.url}/chat/other`);
    lobby[0].send("hello lobby");
    for (const c of lobby.slice(1)) assert.deepEqual(await next(c), { data: "hello lobby", isBinary: false });
    other.send(Buffer.from("other only"));
    assert.equal(await quiet(lobby[1], 200), 0, "no cross-channel leak");
    assert.equal(await quiet(other, 0), 0, "the publisher gets nothing back");
    lobby.forEach((c) => c.close());
    other.close();
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test("a client that vanishes mid-message does not disturb the others", async () => {
  const server = await startServer(["--mode", "broadcast"]);
  try {
    const a = await connect(server.url);
    const b = await connect(server.url);
    // A raw client: handshake, then half a masked 1000-byte frame, then gone.
    const raw = net.connect(server.port, "127.0.0.1");
    await new Promise((res) => raw.once("connect", res));
    raw.write("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    await new Promise((res) => raw.once("data", res));
    raw.write(Buffer.concat([Buffer.from([0x82, 0xfe, 0x03, 0xe8, 1, 2, 3, 4]), Buffer.alloc(300)]));
    raw.destroy();
    a.send("still flowing");
    assert.equal((await next(b)).data, "still flowing");
    b.send("both ways");
    assert.equal((await next(a)).data, "both ways");
    a.close();
    b.close();
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test("SIGTERM: every client sees 1001 and the server exits 0", async () => {
  const server = await startServer([]);
  const clients = await Promise.all([1, 2, 3].map(() => connect(server.url)));
  const closes = clients.map(closed);
  assert.equal(await server.stop(), 0);
  for (const c of await Promise.all(closes)) assert.deepEqual(c, { code: 1001, reason: "server shutting down" });
});

test("wss: echo over TLS with the server's certificate trusted, and close codes", async () => {
  const { cert, key, pem } = makeCertificate();
  const server = await startServer(["--tls-cert", cert, "--tls-key", key]);
  try {
    assert.ok(server.url.startsWith("wss://"));
    const ws = await connect(`${server.url}/secure`, [], { ca: pem });
    ws.send("über TLS ✓");
    assert.deepEqual(await next(ws), { data: "über TLS ✓", isBinary: false });
    const big = Buffer.alloc(4 << 20, 9);
    ws.send(big);
    const echoed = await next(ws);
    assert.ok(echoed.isBinary && echoed.data.equals(big), "4 MiB echoed intact over TLS");
    const c = closed(ws);
    ws.close(4002, "tls bye");
    assert.deepEqual(await c, { code: 4002, reason: "tls bye" });
    // Without trusting the certificate, the client refuses the server.
    await assert.rejects(connect(`${server.url}/`, []));
  } finally {
    assert.equal(await server.stop(), 0);
  }
});
