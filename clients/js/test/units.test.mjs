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
