// Starts a real ws-realtime server (the binary cargo built) for the tests,
// and mints HS256 tokens for it.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");

export const SECRET = "client-js-test-secret-0123456789abcdef";
export const API_KEY = "client-js-test-key";

/** The server binary: $WS_REALTIME_BIN, else $CARGO_TARGET_DIR/debug/ws-realtime. */
export function serverBinary() {
  const bin =
    process.env.WS_REALTIME_BIN ??
    resolve(process.env.CARGO_TARGET_DIR ?? resolve(repo, "target"), "debug", "ws-realtime");
  if (!existsSync(bin)) {
    throw new Error(`no server binary at ${bin}: run \`cargo build --bin ws-realtime\` or set WS_REALTIME_BIN`);
  }
  return bin;
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

/** An HS256 JWT for the test secret. */
export function mintToken({ sub = "tester", ttlSeconds = 3600, secret = SECRET, exp } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, iat: now, exp: exp ?? now + ttlSeconds })}`;
  const signature = createHmac("sha256", secret).update(body).digest("base64url");
  return `${body}.${signature}`;
}

/** A running server; `stop()` (SIGTERM, graceful) or `kill()` (SIGKILL). */
export async function startServer({ port, env = {} } = {}) {
  port ??= await freePort();
  const child = spawn(serverBinary(), ["serve"], {
    env: {
      PATH: process.env.PATH,
      RUST_LOG: "warn",
      WS_BIND_ADDRESS: `127.0.0.1:${port}`,
      WS_AUTH_SECRET: SECRET,
      WS_API_KEY: API_KEY,
      WS_SOURCES: "http",
      ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((ok) => child.once("exit", (code, signal) => ok({ code, signal })));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited at start: ${stderr}`);
    try {
      const response = await fetch(`${base}/health`);
      if (response.ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`server did not start within 15 s: ${stderr}`);
    }
    await sleep(50);
  }
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    base,
    async publish(channel, data) {
      const response = await fetch(`${base}/api/publish`, {
        method: "POST",
        headers: { "X-API-Key": API_KEY, "Content-Type": "application/json" },
        body: JSON.stringify({ channel, data }),
      });
      if (!response.ok) throw new Error(`publish: HTTP ${response.status} ${await response.text()}`);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      return exited;
    },
  };
}

export function sleep(ms) {
  return new Promise((ok) => setTimeout(ok, ms));
}

/** Resolves with the first `event` of `client` for which `test` holds; fails after `ms`. */
export function waitFor(client, event, test = () => true, ms = 10_000) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => {
      off();
      fail(new Error(`no ${event} event within ${ms} ms`));
    }, ms);
    const off = client.on(event, (payload) => {
      if (!test(payload)) return;
      clearTimeout(timer);
      off();
      ok(payload);
    });
  });
}

/** Polls `check` until it returns true; fails after `ms`. */
export async function eventually(check, ms = 10_000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${ms} ms`);
    await sleep(20);
  }
}
