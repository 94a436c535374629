// Starts the sockwave binary on an ephemeral port and stops it with SIGTERM.
import { spawn, execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.SOCKWAVE_BIN || path.join(root, "target/release/sockwave");

export function startServer(args = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ["--listen", "127.0.0.1:0", "--threads", "2", "--workers", "2", "--log-level", "info", ...args], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    const timer = setTimeout(() => reject(new Error(`server did not start: ${log}`)), 10000);
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const m = log.match(/listening on (wss?):\/\/127\.0\.0\.1:(\d+)/);
      if (m && !proc.port) {
        proc.port = Number(m[2]);
        const tls = m[1] === "wss";
        clearTimeout(timer);
        resolve({
          port: proc.port,
          url: tls ? `wss://localhost:${proc.port}` : `ws://127.0.0.1:${proc.port}`,
          http: tls ? `https://localhost:${proc.port}` : `http://127.0.0.1:${proc.port}`,
          log: () => log,
          // SIGTERM; resolves with the exit code.
          stop: () => new Promise((res) => { proc.once("exit", (code) => res(code)); proc.kill("SIGTERM"); }),
        });
      }
    });
    proc.once("exit", (code) => { if (!proc.port) reject(new Error(`server exited ${code}: ${log}`)); });
  });
}

// A throwaway self-signed certificate for localhost, made now with openssl.
export function makeCertificate() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sockwave-interop-tls-"));
  const cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  execFileSync(path.join(root, "scripts/make-test-cert.sh"), [dir], { stdio: "ignore" });
  return { cert, key, pem: fs.readFileSync(cert) };
}
