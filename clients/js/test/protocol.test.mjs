// Protocol additions the server is gaining (stream state: positions,
// `since`, `recovered`, snapshots; identity: in-band token refresh), played
// by a scripted stand-in server so the client's side is pinned down now.
// Everything the real server already does is tested in live.test.mjs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocketServer } from "ws";

import { WsRealtime } from "../dist/index.js";
import { eventually, waitFor } from "./server.mjs";

/** A stand-in server that runs `script(socket, frames, url)` for each connection. */
async function scripted(script) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((ok) => wss.once("listening", ok));
  let connections = 0;
  wss.on("connection", (socket, request) => {
    connections += 1;
    const frames = [];
    const waiting = [];
    socket.on("message", (raw) => {
      const frame = JSON.parse(String(raw));
      const waiter = waiting.shift();
      if (waiter) waiter(frame);
      else frames.push(frame);
    });
    const next = () => (frames.length > 0 ? Promise.resolve(frames.shift()) : new Promise((ok) => waiting.push(ok)));
    const send = (frame) => socket.send(JSON.stringify(frame));
    send({ type: "connected", connectionId: `c${connections}`, userId: "u", serverId: "s", timestamp: "t" });
    script({ socket, next, send, number: connections, url: request.url });
  });
  return { url: `ws://127.0.0.1:${wss.address().port}/ws`, close: () => wss.close() };
}

test("resubscribes from the channel's cursor with since and surfaces recovered", async () => {
  const seen = [];
  const server = await scripted(async ({ socket, next, send, number }) => {
    const sub = await next();
    seen.push(sub);
    if (number === 1) {
      send({ type: "subscribed", id: sub.id, channels: ["lines"], current: ["lines"], positions: { lines: "lines:0:4" } });
      send({ type: "message", channel: "lines", pos: "lines:0:3", data: { old: true }, snapshot: true });
      send([
        { type: "message", channel: "lines", pos: "lines:0:5", data: { n: 5 } },
        { type: "message", channel: "lines", pos: "lines:1:9", data: { n: 9 } },
      ]);
      setTimeout(() => socket.terminate(), 50);
    } else if (number === 2) {
      send({
        type: "subscribed",
        id: sub.id,
        channels: ["lines"],
        current: ["lines"],
        positions: { lines: "lines:0:8,lines:1:9" },
        recovered: { lines: true },
      });
      send({ type: "message", channel: "lines", pos: "lines:0:6", data: { n: 6 } });
      setTimeout(() => socket.close(1001, "going away"), 50);
    } else {
      send({ type: "subscribed", id: sub.id, channels: ["lines"], current: ["lines"], positions: { lines: "lines:0:99" }, recovered: { lines: false } });
    }
  });
  const client = new WsRealtime(server.url, { token: "t", backoff: { baseMs: 10, capMs: 20 } });
  const infos = [];
  const messages = [];
  client.subscribe("lines", { snapshot: true, onSubscribed: (i) => infos.push(i), onMessage: (m) => messages.push(m) });
  await client.connect();
  await eventually(() => infos.length === 3, 5000, "three acks");
  assert.equal(seen[0].snapshot, true);
  assert.equal(seen[0].since, undefined);
  assert.deepEqual(seen[1].since, { lines: "lines:0:5,lines:1:9" }, "snapshot messages do not move the cursor");
  assert.equal(seen[1].snapshot, undefined, "a channel resuming from a cursor asks no snapshot");
  assert.deepEqual(seen[2].since, { lines: "lines:0:6,lines:1:9" }, "recovered channels keep their own cursor");
  assert.deepEqual(
    infos.map((i) => [i.resubscribed, i.recovered]),
    [
      [false, undefined],
      [true, true],
      [true, false],
    ],
  );
  assert.equal(client.cursor("lines"), "lines:0:99", "after a failed recovery the server's position is the start");
  assert.equal(messages[0].snapshot, true);
  assert.equal(messages[1].pos, "lines:0:5");
  client.close();
  server.close();
});

test("a cursor the server cannot read is dropped and the subscribe retried without it", async () => {
  const seen = [];
  const server = await scripted(async ({ socket, next, send, number }) => {
    let sub = await next();
    seen.push(sub);
    if (number === 1) {
      send({ type: "subscribed", id: sub.id, channels: ["a"], current: ["a"], positions: { a: "x:1" } });
      setTimeout(() => socket.close(1001, "bye"), 20);
      return;
    }
    send({ type: "error", id: sub.id, code: "bad_position", message: "channel a: bad cursor" });
    sub = await next();
    seen.push(sub);
    send({ type: "subscribed", id: sub.id, channels: ["a"], current: ["a"], positions: { a: "~e:1" } });
  });
  const client = new WsRealtime(server.url, { token: "t" });
  const sub = client.subscribe("a");
  await client.connect();
  await sub.ready;
  await waitFor(client, "subscribed", (s) => s.resubscribed, 5000);
  assert.deepEqual(seen[1].since, { a: "x:1" });
  assert.equal(seen[2].since, undefined);
  assert.deepEqual(client.channels(), ["a"]);
  client.close();
  server.close();
});

test("refresh_required is answered through getToken; a forbidden channel is dropped", async () => {
  let refresh;
  const server = await scripted(async ({ next, send }) => {
    const sub = await next();
    send({ type: "subscribed", id: sub.id, channels: ["a", "b"], current: ["a", "b"], maxRate: { a: 5 } });
    send({ type: "refresh_required", expiresAt: Date.now() + 30_000 });
    refresh = await next();
    send({ type: "refreshed", id: refresh.id, expiresAt: Date.now() + 3_600_000 });
    send({ type: "unsubscribed", channels: ["b"], current: ["a"], reason: "forbidden" });
  });
  const tokens = ["first", "second"];
  const client = new WsRealtime(server.url, { getToken: () => tokens.shift() });
  const dropped = [];
  const sub = client.subscribe(["a", "b"], { maxRate: 5, onUnsubscribed: (c, r) => dropped.push([c, r]) });
  const refreshed = waitFor(client, "refreshed", () => true, 5000);
  await client.connect();
  const infos = await sub.ready;
  assert.equal(infos.find((i) => i.channel === "a").maxRate, 5);
  await refreshed;
  assert.equal(refresh.type, "refresh");
  assert.equal(refresh.token, "second");
  await eventually(() => dropped.length === 1, 5000, "the forbidden channel dropped");
  assert.deepEqual(dropped, [["b", "forbidden"]]);
  assert.deepEqual(client.channels(), ["a"]);
  client.close();
  server.close();
});

test("the server's app-level ping is answered with pong", async () => {
  let answer;
  const server = await scripted(async ({ next, send }) => {
    send({ type: "ping", timestamp: 1 });
    answer = await next();
  });
  const client = new WsRealtime(server.url, { token: "t" });
  await client.connect();
  await eventually(() => answer !== undefined, 5000, "a pong");
  assert.deepEqual(answer, { type: "pong" });
  client.close();
  server.close();
});

test("with pingIntervalMs, a server that stops answering pings is left for a new connection", async () => {
  const server = await scripted(async ({ next, send, number }) => {
    for (;;) {
      const frame = await next();
      // The first connection goes deaf after its first pong; the second answers.
      if (frame.type === "ping" && (number > 1 || frame.id === 1)) send({ type: "pong", id: frame.id, timestamp: 0 });
    }
  });
  const client = new WsRealtime(server.url, { token: "t", pingIntervalMs: 60, backoff: { baseMs: 10, capMs: 20 } });
  const lost = waitFor(client, "disconnected", () => true, 5000);
  await client.connect();
  const disconnected = await lost;
  assert.match(disconnected.reason, /no pong within 60 ms/);
  const again = await waitFor(client, "connected", () => true, 5000);
  assert.equal(again.reconnect, true);
  assert.equal(again.frame.connectionId, "c2");
  client.close();
  server.close();
});
