import { test } from "node:test";
import assert from "node:assert/strict";
import { isFinalKickReason, isFinalLoginCode, PresenceError } from "../src/errors.js";

test("login codes: bad_token, token_expired, bad_request are final; anything else retries", () => {
  for (const c of ["bad_token", "token_expired", "bad_request"]) assert.equal(isFinalLoginCode(c), true, c);
  for (const c of ["unavailable", "rate_limited", "something_new", ""]) assert.equal(isFinalLoginCode(c), false, c);
});

test("kicks by replaced_by_login or admin stop the client; other reasons reconnect", () => {
  assert.equal(isFinalKickReason("replaced_by_login"), true);
  assert.equal(isFinalKickReason("admin"), true);
  assert.equal(isFinalKickReason("maintenance"), false);
});

test("PresenceError carries kind, code and finality", () => {
  const e = new PresenceError("request", "too_many_subscriptions", "limit 1000");
  assert.ok(e instanceof Error);
  assert.equal(e.code, "too_many_subscriptions");
  assert.equal(e.kind, "request");
  assert.equal(e.final, false);
  assert.match(e.message, /too_many_subscriptions: limit 1000/);
});
