// End-to-end check of the live page in a real headless Chromium: the page
// loads from `ws-realtime dev`, connects with the token the server put in
// it, and live rows appear and keep changing. Saves a screenshot.
//
// With --bin the script starts `dev` itself on a free loopback port, and
// then also restarts it: the page must come back live on its own.
//
//   node e2e/page.mjs --bin ../../target/debug/ws-realtime --out page.png
//   node e2e/page.mjs --url http://127.0.0.1:8080/ --out page.png
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

import { freePort } from "../test/server.mjs";

const { values } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:8080/" },
    bin: { type: "string" },
    out: { type: "string", default: "page.png" },
    chromium: { type: "string", default: process.env.CHROMIUM ?? "/usr/bin/chromium" },
    timeout: { type: "string", default: "30000" },
    // How long to let the sparkline fill before the screenshot.
    settle: { type: "string", default: "4000" },
  },
});
const timeout = Number(values.timeout);
const out = resolve(values.out);

/** A `ws-realtime dev` this script runs (with --bin). */
let dev;
async function startDev(port) {
  const child = spawn(values.bin, ["dev"], {
    env: { ...process.env, WS_BIND_ADDRESS: `127.0.0.1:${port}`, RUST_LOG: "warn" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const exited = new Promise((ok) => child.once("exit", ok));
  // Never leave a server behind, even when a timeout stops this script.
  process.once("exit", () => child.kill("SIGKILL"));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error("ws-realtime dev exited at start");
    const ready = await fetch(`http://127.0.0.1:${port}/ready`).then((r) => r.ok, () => false);
    if (ready) break;
    if (Date.now() > deadline) throw new Error("ws-realtime dev was not ready within 60 s");
    await new Promise((ok) => setTimeout(ok, 100));
  }
  return {
    async stop() {
      child.kill("SIGTERM");
      await exited;
    },
  };
}
for (const signal of ["SIGTERM", "SIGINT"]) process.once(signal, () => process.exit(1));
if (values.bin) {
  const port = await freePort();
  values.url = `http://127.0.0.1:${port}/`;
  dev = { port, server: await startDev(port) };
}

const profile = await mkdtemp(join(tmpdir(), "ws-realtime-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: values.chromium,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1360, height: 820 },
  deviceScaleFactor: 1,
  timeout,
});
const problems = [];
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  // Only the server itself may be reached: no CDN, no fonts.
  const origin = new URL(values.url).origin;
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(origin) && !url.startsWith(origin.replace(/^http/, "ws")) && !url.startsWith("data:")) {
      problems.push(`request outside the server: ${url}`);
    }
  });

  const started = Date.now();
  const response = await page.goto(values.url, { waitUntil: "load" });
  assert.equal(response?.status(), 200, "the page loads");
  await page.waitForSelector('#status[data-kind="live"]');
  await page.waitForFunction(() => document.querySelectorAll("#rows tr").length >= 3);
  const firstRows = Date.now() - started;
  const symbols = await page.$$eval("#rows tr td.sym", (cells) => cells.map((c) => c.textContent));
  const prices = () => page.$$eval("#rows tr td.price", (cells) => cells.map((c) => c.textContent).join(" "));
  const before = await prices();
  // Live, not a still picture: prices move and the counter climbs.
  await page.waitForFunction((old) => {
    const now = [...document.querySelectorAll("#rows tr td.price")].map((c) => c.textContent).join(" ");
    return now !== old;
  }, before);
  await page.waitForFunction(() => Number(document.getElementById("rate")?.textContent) > 0);
  await page.waitForFunction(() => Number(document.getElementById("connections")?.textContent) >= 1);
  await page.waitForFunction(() => /^\d+$/.test(document.getElementById("latency")?.textContent ?? ""));
  // Let the sparkline gather a few points for the picture.
  await page.waitForTimeout(Number(values.settle));
  const readout = await page.evaluate(() => ({
    rate: document.getElementById("rate")?.textContent,
    latencyP50: document.getElementById("latency")?.textContent,
    latencyP95: document.getElementById("latency-p95")?.textContent,
    connections: document.getElementById("connections")?.textContent,
    channels: document.getElementById("server-channels")?.textContent,
  }));
  await mkdir(dirname(out), { recursive: true });
  await page.screenshot({ path: out });
  assert.deepEqual(problems, [], "no errors in the page");

  let restart = "";
  if (dev) {
    // A restart: the page reconnects and resubscribes with no help.
    await dev.server.stop();
    await page.waitForSelector('#status[data-kind="wait"]');
    const stopped = Date.now();
    dev.server = await startDev(dev.port);
    await page.waitForFunction(() => document.getElementById("status-text")?.textContent === "live · reconnected");
    const stale = await prices();
    await page.waitForFunction((old) => {
      const now = [...document.querySelectorAll("#rows tr td.price")].map((c) => c.textContent).join(" ");
      return now !== old;
    }, stale);
    restart = `; live again ${Date.now() - stopped} ms after a restart`;
  }
  console.log(
    `page ok: rows ${symbols.join(", ")} after ${firstRows} ms; ` +
      `${readout.rate} msg/s, latency p50 ${readout.latencyP50} ms (${readout.latencyP95}), ` +
      `${readout.connections} connections, ${readout.channels} channels${restart}; screenshot ${out}`,
  );
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
  await dev?.server.stop();
}
