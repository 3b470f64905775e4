import { test } from "node:test";
import assert from "node:assert/strict";
import { RequestTracker, requestKindOfAnswer } from "../src/requests.js";
import { PresenceError } from "../src/errors.js";

test("answers are matched by request_id, whatever their order", async () => {
  const t = new RequestTracker(0);
  const a = t.allocate();
  const b = t.allocate();
  assert.notEqual(a, b);
  const pa = t.track<string>(a, "subscribe");
  const pb = t.track<string>(b, "subscribe");
  assert.equal(t.settle(b, "subscribe", "for b"), true);
  assert.equal(t.settle(a, "subscribe", "for a"), true);
  assert.equal(await pa, "for a");
  assert.equal(await pb, "for b");
  assert.equal(t.size, 0);
});

test("an unknown or already-settled id is ignored", async () => {
  const t = new RequestTracker(0);
  const id = t.allocate();
  const p = t.track(id, "setStatus");
  assert.equal(t.settle(id + 1000, "setStatus", undefined), false);
  assert.equal(t.settle(id, "setStatus", undefined), true);
  assert.equal(t.settle(id, "setStatus", undefined), false, "a duplicate answer is ignored");
  await p;
});

test("RequestError rejects with a typed error carrying the code", async () => {
  const t = new RequestTracker(0);
  const id = t.allocate();
  const p = t.track(id, "subscribe");
  t.fail(id, new PresenceError("request", "too_many_subscriptions", "limit"));
  await assert.rejects(p, (e: unknown) => e instanceof PresenceError && e.code === "too_many_subscriptions" && e.kind === "request");
});

test("an answer of the wrong kind rejects with protocol_error", async () => {
  const t = new RequestTracker(0);
  const id = t.allocate();
  const p = t.track(id, "setStatus");
  assert.equal(t.settle(id, "subscribe", []), true);
  await assert.rejects(p, (e: unknown) => e instanceof PresenceError && e.code === "protocol_error");
});

test("failAll rejects every pending request with disconnected", async () => {
  const t = new RequestTracker(0);
  const ps = [1, 2, 3].map(() => t.track(t.allocate(), "subscribe"));
  assert.equal(t.failAll(() => new PresenceError("request", "disconnected")), 3);
  for (const p of ps) await assert.rejects(p, (e: unknown) => (e as PresenceError).code === "disconnected");
  assert.equal(t.size, 0);
});

test("a request without answer times out with code timeout", async () => {
  const t = new RequestTracker(20);
  const p = t.track(t.allocate(), "unsubscribe");
  await assert.rejects(p, (e: unknown) => (e as PresenceError).code === "timeout");
});

test("ids are uint32, never 0, wrap around and skip pending ids", () => {
  const t = new RequestTracker(0);
  assert.equal(t.allocate(), 1);
  t.seed(0xffff_fffe);
  const x = t.allocate();
  assert.equal(x, 0xffff_fffe);
  void t.track(x, "setStatus").catch(() => {});
  assert.equal(t.allocate(), 0xffff_ffff);
  assert.equal(t.allocate(), 1, "wraps to 1, not 0");
  t.seed(0xffff_fffe);
  assert.equal(t.allocate(), 0xffff_ffff, "skips the pending 0xfffffffe");
  assert.throws(() => t.track(x, "setStatus"), /already pending/);
  t.failAll(() => new PresenceError("request", "disconnected"));
});

test("answer frame cases map to request kinds", () => {
  assert.equal(requestKindOfAnswer("setStatusOk"), "setStatus");
  assert.equal(requestKindOfAnswer("subscribeOk"), "subscribe");
  assert.equal(requestKindOfAnswer("unsubscribeOk"), "unsubscribe");
  assert.equal(requestKindOfAnswer("statusChanged"), undefined);
});
