// Pure parts of the client: back-off and cursors.
import assert from "node:assert/strict";
import { test } from "node:test";

import { advanceCursor, backoffDelay, streamOf } from "../dist/index.js";

test("back-off is full jitter under an exponential ceiling", () => {
  const top = () => 0.999999;
  assert.equal(backoffDelay(0, { baseMs: 100, capMs: 10_000 }, top), 99);
  assert.equal(backoffDelay(3, { baseMs: 100, capMs: 10_000 }, top), 799);
  assert.equal(backoffDelay(5, { baseMs: 100, capMs: 10_000 }, () => 0.5), 1600);
  assert.equal(backoffDelay(4, { baseMs: 100, capMs: 10_000 }, () => 0), 0);
});

test("back-off never exceeds its cap, even after very many attempts", () => {
  for (const attempt of [10, 40, 1100]) {
    const delay = backoffDelay(attempt, { baseMs: 500, capMs: 30_000 }, () => 0.999999);
    assert.ok(delay <= 30_000 && delay >= 29_999, `${attempt}: ${delay}`);
  }
});

test("a cursor keeps one pos per stream", () => {
  assert.equal(streamOf("lines:0:1234"), "lines:0");
  assert.equal(streamOf("~9f3a2c1d:17"), "~9f3a2c1d");
  let cursor = "";
  cursor = advanceCursor(cursor, "lines:0:5");
  cursor = advanceCursor(cursor, "lines:1:7");
  cursor = advanceCursor(cursor, "lines:0:6");
  assert.equal(cursor, "lines:0:6,lines:1:7");
  assert.equal(advanceCursor(cursor, "~ab:3"), "lines:0:6,lines:1:7,~ab:3");
});

import { nextStep } from "../dist/policy.js";

const base = { code: 1006, reason: "", canRenewToken: true, authRetried: false };

test("a 401 at the handshake asks getToken once, then stops; without getToken it stops at once", () => {
  const refusal = { status: 401, error: "invalid_token", message: "bad signature" };
  assert.deepEqual(nextStep({ ...base, opened: false, refusal }), {
    kind: "now",
    freshToken: true,
    reason: "HTTP 401 invalid_token: bad signature",
  });
  const again = nextStep({ ...base, opened: false, refusal, authRetried: true });
  assert.equal(again.kind, "stop");
  assert.equal(again.error.code, "unauthorized");
  assert.match(again.error.message, /even after getToken/);
  const fixed = nextStep({ ...base, opened: false, refusal, canRenewToken: false });
  assert.equal(fixed.kind, "stop");
  assert.equal(fixed.error.serverCode, "invalid_token");
});

test("a 403 stops; 429, 503 and an unreachable server back off", () => {
  const forbidden = nextStep({ ...base, opened: false, refusal: { status: 403, error: "origin_not_allowed" } });
  assert.equal(forbidden.kind, "stop");
  assert.equal(forbidden.error.code, "forbidden");
  assert.equal(forbidden.error.status, 403);
  for (const status of [429, 503, 426]) {
    assert.equal(nextStep({ ...base, opened: false, refusal: { status } }).kind, "backoff", String(status));
  }
  assert.equal(nextStep({ ...base, opened: false }).kind, "backoff");
});

test("close 1001 reconnects at once; 1008 token expired renews the token; other closes back off", () => {
  assert.deepEqual(nextStep({ ...base, opened: true, code: 1001, reason: "server shutting down" }), {
    kind: "now",
    freshToken: false,
    reason: "server shutting down",
  });
  assert.equal(nextStep({ ...base, opened: true, code: 1008, reason: "token expired" }).freshToken, true);
  const noRenew = nextStep({ ...base, opened: true, code: 1008, reason: "token expired", canRenewToken: false });
  assert.equal(noRenew.kind, "stop");
  assert.equal(noRenew.error.code, "token_expired");
  for (const [code, reason] of [
    [1008, "slow consumer"],
    [1008, "rate limit exceeded"],
    [1006, ""],
    [1009, ""],
    [1011, ""],
    [1000, ""],
  ]) {
    assert.equal(nextStep({ ...base, opened: true, code, reason }).kind, "backoff", `${code} ${reason}`);
  }
});
