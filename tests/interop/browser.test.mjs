// Headless Chromium (Debian's, driven by playwright-core) against the
// sockwave binary: the demo page's own UI, then the WebSocket API in detail,
// then two pages in broadcast mode, and a refused Origin.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { startServer, makeCertificate } from "./server.mjs";

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});
after(async () => { await browser?.close(); });

const waitFor = (page, fn, arg) => page.waitForFunction(fn, arg, { timeout: 10000 });

test("the demo page connects, negotiates a subprotocol, echoes text, ArrayBuffer and Blob, and closes cleanly", async () => {
  const server = await startServer(["--subprotocol", "chat", "--subprotocol", "superchat"]);
  const page = await browser.newPage();
  try {
    await page.goto(`${server.http}/`);
    assert.equal(await page.title(), "sockwave demo");
    await page.fill("#protocols", "superchat, chat");
    await page.fill("#message", "Grüße, κόσμε ✓ 😀");
    await page.click("#connect");
    await waitFor(page, () => document.getElementById("ready-state").textContent === "OPEN");
    // The client's first preference that the server speaks.
    assert.equal(await page.textContent("#protocol"), "superchat");
    await page.click("#send-text");
    await page.click("#send-binary");
    await page.click("#send-blob");
    await waitFor(page, () => window.sockwaveDemo.messages.length === 3);
    const seen = await page.evaluate(() => window.sockwaveDemo.messages);
    const bytes = Array.from(Buffer.from("Grüße, κόσμε ✓ 😀", "utf8"));
    assert.deepEqual(seen, [
      { type: "text", data: "Grüße, κόσμε ✓ 😀" },
      { type: "binary", data: bytes },
      { type: "binary", data: bytes },
    ]);
    assert.match(await page.textContent("#buffered"), /^\d+$/);
    await page.fill("#close-code", "4001");
    await page.fill("#close-reason", "done here");
    await page.click("#close");
    await waitFor(page, () => window.sockwaveDemo.close !== null);
    const observed = await page.evaluate(() => window.sockwaveDemo);
    assert.deepEqual(observed.close, { code: 4001, reason: "done here", wasClean: true });
    assert.equal(observed.states[0], "CONNECTING");
    assert.equal(observed.states.at(-1), "CLOSED");
    assert.ok(observed.states.includes("OPEN"));
    assert.equal(observed.errors, 0);
  } finally {
    await page.close();
    assert.equal(await server.stop(), 0);
  }
});

test("the WebSocket API in detail: readyState events, data types, bufferedAmount, server-side close codes", async () => {
  const server = await startServer(["--max-message-size", "64K", "--subprotocol", "v1"]);
  const page = await browser.newPage();
  try {
    await page.goto(`${server.http}/`);
    const r = await page.evaluate(async (url) => {
      const out = { states: [] };
      const ws = new WebSocket(`${url}/api`, ["v0", "v1"]);
      out.states.push(ws.readyState);
      const next = () => new Promise((res) => { ws.onmessage = (e) => res(e.data); });
      await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
      out.states.push(ws.readyState);
      out.protocol = ws.protocol;
      out.extensions = ws.extensions;
      ws.send("κόσμε 😀");
      out.text = await next();
      ws.binaryType = "arraybuffer";
      ws.send(new Uint8Array([...Array(256).keys()]).buffer);
      out.arraybuffer = Array.from(new Uint8Array(await next()));
      ws.binaryType = "blob";
      ws.send(new Blob([new Uint8Array([1, 2, 3])]));
      const blob = await next();
      out.blobType = blob.constructor.name;
      out.blob = Array.from(new Uint8Array(await blob.arrayBuffer()));
      // Over the 64 KiB limit: the server closes with 1009 and the browser sees it.
      ws.send(new Uint8Array(100 * 1024));
      out.bufferedAfterBigSend = ws.bufferedAmount;
      const close = await new Promise((res) => { ws.onclose = (e) => res({ code: e.code, reason: e.reason, wasClean: e.wasClean }); });
      out.states.push(ws.readyState);
      out.close = close;
      return out;
    }, server.url);
    assert.deepEqual(r.states, [0, 1, 3]);
    assert.equal(r.protocol, "v1");
    assert.equal(r.text, "κόσμε 😀");
    assert.deepEqual(r.arraybuffer, [...Array(256).keys()]);
    assert.equal(r.blobType, "Blob");
    assert.deepEqual(r.blob, [1, 2, 3]);
    assert.ok(r.bufferedAfterBigSend >= 0);
    assert.equal(r.close.code, 1009);
    assert.match(r.close.reason, /too big/);
    assert.equal(r.close.wasClean, true);
  } finally {
    await page.close();
    assert.equal(await server.stop(), 0);
  }
});

test("broadcast mode: two pages see each other's messages, not their own", async () => {
  const server = await startServer(["--mode", "broadcast"]);
  const [a, b] = [await browser.newPage(), await browser.newPage()];
  try {
    for (const p of [a, b]) {
      await p.goto(`${server.http}/`);
      await p.click("#connect");
      await waitFor(p, () => document.getElementById("ready-state").textContent === "OPEN");
    }
    await a.fill("#message", "from page A");
    await a.click("#send-text");
    await waitFor(b, () => window.sockwaveDemo.messages.length === 1);
    await b.fill("#message", "from page B");
    await b.click("#send-text");
    await waitFor(a, () => window.sockwaveDemo.messages.length === 1);
    assert.deepEqual(await b.evaluate(() => window.sockwaveDemo.messages), [{ type: "text", data: "from page A" }]);
    assert.deepEqual(await a.evaluate(() => window.sockwaveDemo.messages), [{ type: "text", data: "from page B" }]);
  } finally {
    await a.close();
    await b.close();
    assert.equal(await server.stop(), 0);
  }
});

test("SIGTERM closes the page's connection with 1001", async () => {
  const server = await startServer([]);
  const page = await browser.newPage();
  await page.goto(`${server.http}/`);
  await page.click("#connect");
  await waitFor(page, () => document.getElementById("ready-state").textContent === "OPEN");
  const stopped = server.stop();
  await waitFor(page, () => window.sockwaveDemo.close !== null);
  assert.deepEqual(await page.evaluate(() => window.sockwaveDemo.close),
    { code: 1001, reason: "server shutting down", wasClean: true });
  assert.equal(await stopped, 0);
  await page.close();
});

test("a disallowed Origin is refused: the page's WebSocket fails with 1006", async () => {
  const server = await startServer(["--allowed-origin", "https://example.com"]);
  const page = await browser.newPage();
  try {
    await page.goto(`${server.http}/`);
    const r = await page.evaluate((url) => new Promise((res) => {
      const ws = new WebSocket(url);
      let error = false;
      ws.onerror = () => { error = true; };
      ws.onclose = (e) => res({ error, code: e.code, wasClean: e.wasClean });
    }), server.url);
    assert.deepEqual(r, { error: true, code: 1006, wasClean: false });
    assert.match(server.log(), /listening/);
  } finally {
    await page.close();
    assert.equal(await server.stop(), 0);
  }
});

test("permessage-deflate: Chromium negotiates it and exchanges compressed messages both ways", async () => {
  for (const [args, expected] of [
    [[], "permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
    [["--deflate", "dedicated", "--deflate-window-bits", "11", "--deflate-mem-level", "4"], "permessage-deflate; client_max_window_bits=11"],
  ]) {
    const server = await startServer(args);
    const page = await browser.newPage();
    try {
      await page.goto(`${server.http}/`);
      const r = await page.evaluate(async (url) => {
        const ws = new WebSocket(url);
        ws.binaryType = "arraybuffer";
        await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
        const next = () => new Promise((res) => { ws.onmessage = (e) => res(e.data); });
        const out = { extensions: ws.extensions, ok: 0 };
        for (let i = 0; i < 50; i++) {
          const text = JSON.stringify({ i, kind: "quote", bid: 100 + i, ask: 101 + i, pad: "κόσμε ".repeat(50 * (i + 1)) });
          ws.send(text);
          if ((await next()) === text) out.ok++;
        }
        const bin = new Uint8Array(200000).map((_, i) => i % 7);
        ws.send(bin.buffer);
        const back = new Uint8Array(await next());
        out.binary = back.length === bin.length && back.every((v, i) => v === bin[i]);
        ws.close(1000, "done");
        out.close = await new Promise((res) => { ws.onclose = (e) => res([e.code, e.wasClean]); });
        return out;
      }, server.url);
      assert.equal(r.extensions, expected);
      assert.equal(r.ok, 50);
      assert.equal(r.binary, true);
      assert.deepEqual(r.close, [1000, true]);
    } finally {
      await page.close();
      assert.equal(await server.stop(), 0);
    }
  }
});

test("https and wss: the demo page over https and the WebSocket API over wss on the same port", async () => {
  const { cert, key } = makeCertificate();
  const server = await startServer(["--tls-cert", cert, "--tls-key", key]);
  // The test's own certificate, accepted for this context only.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  try {
    await page.goto(`${server.http}/`);
    assert.equal(await page.title(), "sockwave demo");
    const r = await page.evaluate(async (url) => {
      const ws = new WebSocket(`${url}/browser`);
      ws.binaryType = "arraybuffer";
      await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
      const got = new Promise((res) => { ws.onmessage = (e) => res(e.data); });
      ws.send("secure hello");
      const text = await got;
      const closed = new Promise((res) => { ws.onclose = (e) => res({ code: e.code, reason: e.reason, wasClean: e.wasClean }); });
      ws.close(4003, "browser bye");
      return { protocol: location.protocol, text, close: await closed };
    }, server.url);
    assert.deepEqual(r, {
      protocol: "https:",
      text: "secure hello",
      close: { code: 4003, reason: "browser bye", wasClean: true },
    });
  } finally {
    await context.close();
    assert.equal(await server.stop(), 0);
  }
});
