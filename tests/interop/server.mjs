// Starts the sockwave binary on an ephemeral port and stops it with SIGTERM.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
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
      const m = log.match(/listening on ws:\/\/127\.0\.0\.1:(\d+)/);
      if (m && !proc.port) {
        proc.port = Number(m[1]);
        clearTimeout(timer);
        resolve({
          port: proc.port,
          url: `ws://127.0.0.1:${proc.port}`,
          http: `http://127.0.0.1:${proc.port}`,
          log: () => log,
          // SIGTERM; resolves with the exit code.
          stop: () => new Promise((res) => { proc.once("exit", (code) => res(code)); proc.kill("SIGTERM"); }),
        });
      }
    });
    proc.once("exit", (code) => { if (!proc.port) reject(new Error(`server exited ${code}: ${log}`)); });
  });
}
