import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffCap, backoffDelay, DEFAULT_BACKOFF } from "../src/backoff.js";

test("defaults are 500 ms initial, 30 s max, full jitter", () => {
  assert.deepEqual(DEFAULT_BACKOFF, { initialMs: 500, maxMs: 30_000, jitter: "full" });
});

test("cap doubles from initialMs and stops at maxMs", () => {
  const caps = Array.from({ length: 9 }, (_, i) => backoffCap(i));
  assert.deepEqual(caps, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(backoffCap(10_000), 30_000, "huge attempt numbers stay finite");
  assert.equal(backoffCap(-3), 500);
});

test("full jitter: delay in [0, cap) at the extremes of random()", () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const cap = backoffCap(attempt);
    assert.equal(backoffDelay(attempt, DEFAULT_BACKOFF, () => 0), 0);
    const top = backoffDelay(attempt, DEFAULT_BACKOFF, () => 0.999_999_9);
    assert.ok(top < cap && top >= cap - 1, `attempt ${attempt}: ${top} vs cap ${cap}`);
    assert.equal(backoffDelay(attempt, DEFAULT_BACKOFF, () => 0.5), Math.floor(cap / 2));
  }
});

test("full jitter with Math.random stays within bounds and actually spreads", () => {
  const samples = Array.from({ length: 2000 }, () => backoffDelay(6));
  for (const d of samples) assert.ok(d >= 0 && d < 30_000 && Number.isInteger(d), `out of bounds: ${d}`);
  const min = Math.min(...samples);
  const max = Math.max(...samples);
  assert.ok(min < 3_000 && max > 27_000, `not spread over [0, 30000): ${min}..${max}`);
});

test("jitter none returns the cap; a misbehaving random() is clamped", () => {
  assert.equal(backoffDelay(3, { ...DEFAULT_BACKOFF, jitter: "none" }), 4000);
  assert.equal(backoffDelay(3, DEFAULT_BACKOFF, () => 5), 4000);
  assert.equal(backoffDelay(3, DEFAULT_BACKOFF, () => -1), 0);
  assert.equal(backoffDelay(2, { initialMs: 100, maxMs: 250, jitter: "none" }), 250);
});
