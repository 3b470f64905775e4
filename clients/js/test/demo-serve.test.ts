import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";

// demo/serve.mjs only starts a server when run as a script; importing it gives its helpers.
const serveUrl = new URL("../../demo/serve.mjs", import.meta.url).href;
const demo = (await import(serveUrl)) as {
  mintToken: (user: string, nowS?: number) => { token: string; expiresAt: number };
  isLoopback: (host: string) => boolean;
  parseListen: (v: string) => { host: string; port: number } | undefined;
};

test("demo tokens are HS256 JWTs with sub, exp = now + 1 h, app, signed with the app secret", () => {
  const secret = process.env.DEMO_TOKEN_SECRET || "dev-token-secret";
  const app = process.env.DEMO_APP_ID || "default";
  const { token, expiresAt } = demo.mintToken("alice", 1_000_000);
  const [h, p, sig] = token.split(".");
  assert.deepEqual(JSON.parse(Buffer.from(h!, "base64url").toString()), { alg: "HS256", typ: "JWT" });
  assert.deepEqual(JSON.parse(Buffer.from(p!, "base64url").toString()), { sub: "alice", exp: 1_003_600, app });
  assert.equal(expiresAt, 1_003_600);
  const want = createHmac("sha256", secret).update(`${h}.${p}`).digest("base64url");
  assert.equal(sig, want);
});

test("demo server refuses non-loopback addresses", () => {
  for (const h of ["127.0.0.1", "127.3.2.1", "::1", "localhost", "::ffff:127.0.0.1"]) assert.equal(demo.isLoopback(h), true, h);
  for (const h of ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.com", "128.0.0.1"]) assert.equal(demo.isLoopback(h), false, h);
});

test("DEMO_LISTEN parsing", () => {
  assert.deepEqual(demo.parseListen("127.0.0.1:8090"), { host: "127.0.0.1", port: 8090 });
  assert.deepEqual(demo.parseListen("[::1]:0"), { host: "::1", port: 0 });
  assert.deepEqual(demo.parseListen(":8090"), { host: "0.0.0.0", port: 8090 });
  assert.equal(demo.parseListen("8090"), undefined);
  assert.equal(demo.parseListen("host:99999"), undefined);
});
