import { test } from "node:test";
import assert from "node:assert/strict";
import { isNewer, StatusStore } from "../src/versions.js";
import type { UserStatus } from "../src/types.js";

function st(userId: string, userVersion: bigint, status = "online", customStatus = ""): UserStatus {
  return { userId, status, platforms: ["WEB"], customStatus, userVersion, changedAtMs: 0 };
}

test("isNewer: anything beats nothing, then only strictly greater versions", () => {
  assert.equal(isNewer(undefined, 0n), true);
  assert.equal(isNewer(undefined, 7n), true);
  assert.equal(isNewer(3n, 4n), true);
  assert.equal(isNewer(3n, 3n), false, "equal version is dropped");
  assert.equal(isNewer(3n, 2n), false, "older version is dropped");
  assert.equal(isNewer(0n, 0n), false);
});

test("isNewer compares exactly beyond 2^53", () => {
  const big = 2n ** 60n;
  assert.equal(isNewer(big, big + 1n), true);
  assert.equal(isNewer(big + 1n, big), false);
});

test("StatusStore keeps the highest version per user and reports what it accepted", () => {
  const s = new StatusStore();
  assert.equal(s.apply(st("bob", 0n, "offline")), true, "never-seen user (version 0) accepted");
  assert.equal(s.apply(st("bob", 5n, "online")), true);
  assert.equal(s.apply(st("bob", 4n, "offline")), false, "late older event dropped");
  assert.equal(s.apply(st("bob", 5n, "offline")), false, "duplicate version dropped");
  assert.equal(s.get("bob")?.status, "online");
  assert.equal(s.apply(st("bob", 6n, "online", "in a meeting")), true);
  assert.equal(s.get("bob")?.customStatus, "in a meeting");
  assert.equal(s.apply(st("carol", 1n)), true, "users are independent");
  assert.equal(s.size, 2);
  s.delete("bob");
  assert.equal(s.get("bob"), undefined);
  assert.equal(s.apply(st("bob", 1n)), true, "after delete, anything is accepted again");
  s.clear();
  assert.equal(s.size, 0);
});
