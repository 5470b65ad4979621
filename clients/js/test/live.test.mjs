// The client against a real ws-realtime server: connect, subscribe,
// receive, batches, restarts, refusals and token expiry.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { WsRealtime } from "../dist/index.js";
import { eventually, mintToken, sleep, startServer, waitFor } from "./server.mjs";

const servers = [];
const clients = [];
after(async () => {
  for (const client of clients) client.close();
  for (const server of servers) await server.kill();
});

async function server(options) {
  const started = await startServer(options);
  servers.push(started);
  return started;
}

function client(url, options) {
  const made = new WsRealtime(url, { backoff: { baseMs: 50, capMs: 400 }, ...options });
  clients.push(made);
  return made;
}

test("connects, subscribes and receives messages with their pos", async () => {
  const srv = await server();
  const c = client(srv.url, { token: mintToken() });
  const received = [];
  const sub = c.subscribe("lines", { onMessage: (m) => received.push(m) });
  const connected = await c.connect();
  assert.equal(connected.userId, "tester");
  const [ack] = await sub.ready;
  assert.equal(ack.channel, "lines");
  assert.equal(ack.resubscribed, false);

  await srv.publish("lines", { symbol: "AAPL", price: 189.5 });
  await srv.publish("other", { ignored: true });
  await srv.publish("lines", { symbol: "MSFT", price: 411.2 });
  await eventually(() => received.length === 2, 5000, "two messages");
  assert.deepEqual(
    received.map((m) => m.data.symbol),
    ["AAPL", "MSFT"],
  );
  assert.ok(received.every((m) => m.channel === "lines" && typeof m.pos === "string" && !m.snapshot));
  assert.notEqual(received[0].pos, received[1].pos);
  c.close();
  assert.equal(c.state, "closed");
});

test("a subscribe the server refuses rejects ready with its error code", async () => {
  const srv = await server();
  const c = client(srv.url, { token: mintToken() });
  await c.connect();
  const errors = [];
  c.on("error", (e) => errors.push(e));
  const sub = c.subscribe(["lines", "bad channel!"]);
  await assert.rejects(sub.ready, (e) => e.code === "server_error" && e.serverCode === "invalid_channel");
  assert.deepEqual(c.channels(), []);
  assert.equal(errors.length, 1);
  c.close();
});

test("JSON-array batches are unpacked into single messages, in order", async () => {
  const srv = await server({ env: { WS_BATCH_MAX: "64", WS_BATCH_DELAY: "40ms" } });
  const c = client(srv.url, { token: mintToken() });
  const received = [];
  const sub = c.subscribe("ticks", { onMessage: (m) => received.push(m.data.n) });
  await c.connect();
  await sub.ready;
  const total = 200;
  // Sequential publishes in quick succession land within one batch window.
  for (let n = 0; n < total; n++) await srv.publish("ticks", { n });
  await eventually(() => received.length === total, 10_000, `${total} messages`);
  assert.deepEqual(received, [...Array(total).keys()]);
  assert.ok(c.stats.batches > 0, `expected at least one array frame, stats ${JSON.stringify(c.stats)}`);
  assert.ok(c.stats.frames < total, "batching put several messages in one frame");
  c.close();
});

test("a graceful server restart (1001) reconnects at once and resubscribes with no help", async () => {
  let srv = await server();
  const port = srv.port;
  const c = client(srv.url, { token: mintToken() });
  const received = [];
  const disconnects = [];
  c.on("disconnected", (d) => disconnects.push(d));
  const sub = c.subscribe(["lines", "analytics"], { onMessage: (m) => received.push(m.data) });
  await c.connect();
  await sub.ready;

  const resubscribed = waitFor(c, "subscribed", (s) => s.resubscribed && s.channel === "analytics", 20_000);
  await srv.stop();
  srv = await server({ port });
  await resubscribed;
  assert.equal(disconnects[0].code, 1001, JSON.stringify(disconnects));
  assert.equal(disconnects[0].delayMs, 0);
  assert.equal(disconnects[0].willReconnect, true);
  assert.equal(c.state, "connected");
  assert.deepEqual(c.channels().sort(), ["analytics", "lines"]);

  await srv.publish("analytics", { after: "restart" });
  await eventually(() => received.length === 1, 5000, "a message after the restart");
  assert.deepEqual(received, [{ after: "restart" }]);
  assert.equal(c.stats.connects, 2);
  c.close();
});

test("a crashed server is retried with capped, jittered back-off until it is back", async () => {
  let srv = await server();
  const port = srv.port;
  const c = client(srv.url, { token: mintToken(), backoff: { baseMs: 20, capMs: 200 } });
  const disconnects = [];
  c.on("disconnected", (d) => disconnects.push(d));
  const received = [];
  const sub = c.subscribe("lines", { onMessage: (m) => received.push(m.data) });
  await c.connect();
  await sub.ready;

  await srv.kill();
  // Let several attempts fail against the closed port.
  await eventually(() => disconnects.length >= 6, 10_000, "six failed attempts");
  // Listen before the server is back: the client may resubscribe before
  // startServer has seen /health answer.
  const resubscribed = waitFor(c, "subscribed", (s) => s.resubscribed, 15_000);
  srv = await server({ port });
  await resubscribed;
  await srv.publish("lines", { back: true });
  await eventually(() => received.length === 1, 5000, "a message after the crash");

  assert.equal(disconnects[0].code, 1006);
  for (const [i, d] of disconnects.entries()) {
    assert.equal(d.willReconnect, true);
    assert.equal(d.attempt, i, "attempts count up while failing");
    assert.ok(d.delayMs >= 0 && d.delayMs <= Math.min(200, 20 * 2 ** i), `delay ${d.delayMs} of attempt ${i}`);
  }
  const delays = disconnects.map((d) => d.delayMs);
  assert.ok(new Set(delays).size > 1, `jitter varies the delays: ${delays}`);
  c.close();
});

test("401 with a static token stops at once with a clear error", async () => {
  const srv = await server();
  const c = client(srv.url, { token: mintToken({ secret: "not-the-server-secret-0123456789abcdef" }) });
  const disconnects = [];
  c.on("disconnected", (d) => disconnects.push(d));
  await assert.rejects(c.connect(), (e) => {
    assert.equal(e.code, "unauthorized");
    assert.equal(e.status, 401);
    assert.equal(e.serverCode, "invalid_token");
    assert.match(e.message, /HTTP 401/);
    assert.equal(e.fatal, true);
    return true;
  });
  await sleep(300);
  assert.equal(c.state, "closed");
  assert.equal(disconnects.length, 1);
  assert.equal(disconnects[0].willReconnect, false);
});

test("401 asks getToken once more, then stops", async () => {
  const srv = await server();
  let calls = 0;
  const c = client(srv.url, {
    getToken: async () => {
      calls += 1;
      return mintToken({ secret: "not-the-server-secret-0123456789abcdef" });
    },
  });
  await assert.rejects(c.connect(), (e) => e.code === "unauthorized" && /even after getToken/.test(e.message));
  await sleep(300);
  assert.equal(calls, 2);
  assert.equal(c.state, "closed");
});

test("401 then a good token from getToken connects", async () => {
  const srv = await server();
  const tokens = [mintToken({ secret: "not-the-server-secret-0123456789abcdef" }), mintToken({ sub: "fresh" })];
  const c = client(srv.url, { getToken: () => tokens.shift() });
  const connected = await c.connect();
  assert.equal(connected.userId, "fresh");
  c.close();
});

test("1008 token expired fetches a new token and reconnects at once", async () => {
  // WS_AUTH_REFRESH_LEAD=0s: the server never asks for an in-band refresh,
  // so the token really runs out and the connection is closed with 1008.
  const srv = await server({ env: { WS_AUTH_LEEWAY: "0s", WS_AUTH_REFRESH_LEAD: "0s" } });
  const now = Math.floor(Date.now() / 1000);
  const tokens = [mintToken({ sub: "short", exp: now + 2 }), mintToken({ sub: "long" })];
  let calls = 0;
  const c = client(srv.url, {
    getToken: () => {
      calls += 1;
      return tokens.shift();
    },
  });
  const received = [];
  const sub = c.subscribe("lines", { onMessage: (m) => received.push(m.data) });
  assert.equal((await c.connect()).userId, "short");
  await sub.ready;
  const expired = await waitFor(c, "disconnected", () => true, 8000);
  assert.equal(expired.code, 1008);
  assert.match(expired.reason, /token expired/);
  assert.equal(expired.delayMs, 0);
  const again = await waitFor(c, "connected", () => true, 5000);
  assert.equal(again.frame.userId, "long");
  assert.equal(calls, 2);
  await waitFor(c, "subscribed", (s) => s.resubscribed, 5000);
  await srv.publish("lines", { renewed: true });
  await eventually(() => received.length === 1, 5000, "a message on the renewed connection");
  c.close();
});

test("refresh_required is answered in-band through getToken: the session outlives its first token", async () => {
  const srv = await server({ env: { WS_AUTH_LEEWAY: "0s" } });
  const now = Math.floor(Date.now() / 1000);
  const tokens = [mintToken({ sub: "day", exp: now + 2 }), mintToken({ sub: "day", exp: now + 3600 })];
  const c = client(srv.url, { getToken: () => tokens.shift() });
  const closes = [];
  const refreshed = [];
  // Listen before connecting: the server asks at once (the token lives less
  // than WS_AUTH_REFRESH_LEAD), so the answer may come before `ready`.
  c.on("disconnected", (d) => closes.push(d));
  c.on("refreshed", (r) => refreshed.push(r));
  const received = [];
  const sub = c.subscribe("lines", { onMessage: (m) => received.push(m.data) });
  assert.equal((await c.connect()).userId, "day");
  await sub.ready;
  await eventually(() => refreshed.length === 1, 5000, "a refreshed event");
  // Past the first token's exp: still the same connection.
  await new Promise((resolve) => setTimeout(resolve, 2500));
  await srv.publish("lines", { still: "here" });
  await eventually(() => received.length === 1, 5000, "a message after the first token's exp");
  assert.deepEqual(closes, []);
  c.close();
});

test("1008 token expired without getToken stops and says why", async () => {
  const srv = await server({ env: { WS_AUTH_LEEWAY: "0s" } });
  const c = client(srv.url, { token: mintToken({ exp: Math.floor(Date.now() / 1000) + 2 }) });
  // The server asks for an in-band refresh at once (the token is inside
  // WS_AUTH_REFRESH_LEAD), so a `refresh_unavailable` error may come first,
  // before or after connect() resolves; the close is what this test is about.
  await c.connect();
  const error = await waitFor(c, "error", (e) => e.code === "token_expired", 8000);
  assert.equal(error.code, "token_expired");
  assert.equal(c.state, "closed");
});

test("unsubscribe stops delivery on the server side", async () => {
  const srv = await server();
  const c = client(srv.url, { token: mintToken() });
  const received = [];
  const sub = c.subscribe("lines", { onMessage: (m) => received.push(m.data) });
  await c.connect();
  await sub.ready;
  sub.unsubscribe();
  assert.deepEqual(c.channels(), []);
  await sleep(100);
  await srv.publish("lines", { late: true });
  const rtt = await c.ping();
  assert.ok(rtt >= 0);
  await sleep(100);
  assert.deepEqual(received, []);
  c.close();
});
