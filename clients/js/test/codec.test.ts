import { test } from "node:test";
import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { decodeServerFrame, encodeClientFrame, toUserStatus, varintLen, encodedIdLen, type ClientFrameInit } from "../src/codec.js";
import {
  ClientFrameSchema,
  Platform,
  ServerFrameSchema,
  UserStatusSchema,
  type ServerFrame,
} from "../src/gen/presence/v1/client_pb.js";
import { messageBytes } from "../src/transport.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

test("every ClientFrame kind survives encode -> decode", () => {
  const frames: ClientFrameInit[] = [
    {
      kind: {
        case: "login",
        value: { appId: "default", userId: "alice", platform: Platform.WEB, deviceId: "web-1", token: "a.b.c", clientVersion: "js/1", pushEnabled: true },
      },
    },
    { kind: { case: "heartbeat", value: { clientTimeMs: 1_700_000_000_123n } } },
    { kind: { case: "logout", value: {} } },
    { kind: { case: "setStatus", value: { requestId: 4_000_000_000, customStatus: "in a meeting ☕" } } },
    { kind: { case: "setStatus", value: { requestId: 1, customStatus: "" } } },
    { kind: { case: "subscribe", value: { requestId: 2, userIds: ["bob", "carol", "ünï"] } } },
    { kind: { case: "unsubscribe", value: { requestId: 3, userIds: [] } } },
  ];
  for (const init of frames) {
    const bytes = encodeClientFrame(init);
    assert.ok(bytes.length > 0, "no frame is empty (an empty message is a protocol error)");
    const back = fromBinary(ClientFrameSchema, bytes);
    assert.equal(back.kind.case, init.kind!.case);
    assert.deepEqual(back, create(ClientFrameSchema, init));
  }
});

test("every ServerFrame kind survives encode -> decodeServerFrame", () => {
  const status = { userId: "bob", status: "online", platforms: [Platform.IOS, Platform.WEB], customStatus: "hi", userVersion: 42n, changedAtMs: 1_700_000_000_000n };
  const inits: Parameters<typeof create<typeof ServerFrameSchema>>[1][] = [
    { kind: { case: "loginOk", value: { sessionId: "s1", heartbeatIntervalS: 120, heartbeatTimeoutS: 400, kickedDevices: [{ platform: Platform.WEB, deviceId: "old" }] } } },
    { kind: { case: "loginError", value: { code: "bad_token", message: "expired" } } },
    { kind: { case: "heartbeatAck", value: { serverTimeMs: 99n } } },
    { kind: { case: "kicked", value: { reason: "replaced_by_login", byPlatform: Platform.MAC, byDeviceId: "mac-1" } } },
    { kind: { case: "logoutOk", value: {} } },
    { kind: { case: "error", value: { code: "too_many_connections", message: "" } } },
    { kind: { case: "setStatusOk", value: { requestId: 9 } } },
    { kind: { case: "subscribeOk", value: { requestId: 10, statuses: [status, { userId: "ghost", status: "offline" }] } } },
    { kind: { case: "unsubscribeOk", value: { requestId: 11 } } },
    { kind: { case: "statusChanged", value: { status } } },
    { kind: { case: "requestError", value: { requestId: 12, code: "rate_limited", message: "slow down" } } },
  ];
  for (const init of inits) {
    const msg = create(ServerFrameSchema, init);
    const back = decodeServerFrame(toBinary(ServerFrameSchema, msg));
    assert.equal(back.kind.case, init!.kind!.case);
    assert.deepEqual(back, msg);
  }
});

test("field numbers match the contract (hand-encoded bytes)", () => {
  // ClientFrame.heartbeat = 2 { client_time_ms = 1 }
  assert.equal(hex(encodeClientFrame({ kind: { case: "heartbeat", value: { clientTimeMs: 1n } } })), "12020801");
  // ClientFrame.subscribe = 5 { request_id = 1: 7, user_ids = 2: "ab" }
  assert.equal(hex(encodeClientFrame({ kind: { case: "subscribe", value: { requestId: 7, userIds: ["ab"] } } })), "2a06080712026162");
  // ClientFrame.set_status = 4 { request_id = 1: 1, custom_status = 2: "x" }
  assert.equal(hex(encodeClientFrame({ kind: { case: "setStatus", value: { requestId: 1, customStatus: "x" } } })), "22050801120178");
  // ClientFrame.unsubscribe = 6 {}, logout = 3 {}
  assert.equal(hex(encodeClientFrame({ kind: { case: "unsubscribe", value: {} } })), "3200");
  assert.equal(hex(encodeClientFrame({ kind: { case: "logout", value: {} } })), "1a00");
  // ClientFrame.login = 1 { app_id 1, user_id 2, platform 3 (WEB = 6), device_id 4, token 5, client_version 6, push_enabled 7 }
  const login = encodeClientFrame({
    kind: { case: "login", value: { appId: "a", userId: "u", platform: Platform.WEB, deviceId: "d", token: "t", clientVersion: "v", pushEnabled: true } },
  });
  assert.equal(hex(login), "0a13" + "0a0161" + "120175" + "1806" + "220164" + "2a0174" + "320176" + "3801");
});

test("hand-encoded ServerFrames decode to the right cases and fields", () => {
  // ServerFrame.status_changed = 10 { status = 1: UserStatus { user_id = 1: "b", status = 2: "online", platforms = 3: [WEB], custom_status = 4: "m", user_version = 5: 3, changed_at_ms = 6: 5 } }
  const us = "0a0162" + "12066f6e6c696e65" + "1a0106" + "22016d" + "2803" + "3005";
  const sc = "0a" + (us.length / 2).toString(16).padStart(2, "0") + us;
  const frame = "52" + (sc.length / 2).toString(16).padStart(2, "0") + sc;
  const f = decodeServerFrame(Buffer.from(frame, "hex"));
  assert.equal(f.kind.case, "statusChanged");
  const s = toUserStatus((f as ServerFrame & { kind: { case: "statusChanged" } }).kind.value.status!);
  assert.deepEqual(s, { userId: "b", status: "online", platforms: ["WEB"], customStatus: "m", userVersion: 3n, changedAtMs: 5 });

  // ServerFrame.request_error = 11 { request_id = 1: 5, code = 2: "bad_request" }
  const re = decodeServerFrame(Buffer.from("5a0f" + "0805" + "120b6261645f72657175657374", "hex"));
  assert.equal(re.kind.case, "requestError");
  assert.equal(re.kind.value?.requestId, 5);
  assert.equal((re.kind.value as { code: string }).code, "bad_request");

  // ServerFrame.login_ok = 1 { session_id 1: "s", heartbeat_interval_s 2: 120, heartbeat_timeout_s 3: 400 }
  const lo = decodeServerFrame(Buffer.from("0a08" + "0a0173" + "1078" + "189003", "hex"));
  assert.equal(lo.kind.case, "loginOk");
  assert.deepEqual(
    { i: (lo.kind.value as { heartbeatIntervalS: number }).heartbeatIntervalS, t: (lo.kind.value as { heartbeatTimeoutS: number }).heartbeatTimeoutS },
    { i: 120, t: 400 },
  );
});

test("undecodable bytes throw", () => {
  assert.throws(() => decodeServerFrame(Uint8Array.of(0x0a, 0x05, 0x01)));
  assert.throws(() => decodeServerFrame(Uint8Array.of(0xff)));
});

test("toUserStatus names platforms and converts numbers", () => {
  const pb = create(UserStatusSchema, { userId: "x", status: "push_online", platforms: [Platform.IOS, Platform.ANDROID_PAD], userVersion: 2n ** 60n, changedAtMs: 1_700_000_000_000n });
  const s = toUserStatus(pb);
  assert.deepEqual(s.platforms, ["IOS", "ANDROID_PAD"]);
  assert.equal(s.userVersion, 2n ** 60n);
  assert.equal(s.changedAtMs, 1_700_000_000_000);
  assert.equal(s.customStatus, "");
});

test("size helpers", () => {
  assert.equal(varintLen(0), 1);
  assert.equal(varintLen(127), 1);
  assert.equal(varintLen(128), 2);
  assert.equal(varintLen(16383), 2);
  assert.equal(varintLen(16384), 3);
  assert.equal(encodedIdLen("ab"), 4);
  assert.equal(encodedIdLen("é"), 4);
  const frame = encodeClientFrame({ kind: { case: "subscribe", value: { requestId: 1, userIds: ["ab", "é"] } } });
  assert.equal(frame.length, 2 + 2 + encodedIdLen("ab") + encodedIdLen("é"));
});

test("messageBytes accepts ArrayBuffer, views and Blobs, flags text", async () => {
  const buf = Uint8Array.of(1, 2, 3);
  assert.deepEqual(messageBytes(buf.buffer), buf);
  const big = Uint8Array.of(9, 1, 2, 3, 9);
  assert.deepEqual(messageBytes(big.subarray(1, 4)), buf);
  assert.deepEqual(messageBytes(Buffer.from([1, 2, 3])), buf);
  assert.deepEqual(await messageBytes(new Blob([buf])), buf);
  assert.equal(messageBytes("hello"), "text");
  assert.equal(messageBytes(42), undefined);
});
