#!/usr/bin/env node
// Demo server of the presence JS client: serves the page and the bundle, and mints DEV login
// tokens. No dependencies: node >= 20.
//
//   GET /                     the demo page (demo/index.html)
//   GET /app.js               the page's script
//   GET /presence-client.js   the bundle (npm run build)
//   GET /config.json          {"gatewayWs": ..., "appId": ...}
//   GET /token?user=ID        {"token": JWT HS256 {sub, exp = now + 1 h, app}, "expiresAt": unix s}
//
// Environment:
//   DEMO_LISTEN        host:port to listen on (default 127.0.0.1:8090; port 0 = any free port)
//   DEMO_ALLOW_REMOTE  1 to allow a non-loopback address (this server mints tokens for anyone!)
//   DEMO_GATEWAY_WS    gateway WebSocket URL for the page (default ws://127.0.0.1:7101/v1/connect)
//   DEMO_TOKEN_SECRET  HS256 secret of the app (default dev-token-secret, the dev app's)
//   DEMO_APP_ID        app id (default "default")
import { createHmac } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { isIP } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "..", "dist");

const listen = process.env.DEMO_LISTEN || "127.0.0.1:8090";
const gatewayWs = process.env.DEMO_GATEWAY_WS || "ws://127.0.0.1:7101/v1/connect";
const secret = process.env.DEMO_TOKEN_SECRET || "dev-token-secret";
const appId = process.env.DEMO_APP_ID || "default";
const allowRemote = process.env.DEMO_ALLOW_REMOTE === "1";
const TOKEN_TTL_S = 3600;
const MAX_USER_ID_BYTES = 256;

/** Splits "host:port", "[v6]:port" or ":port"; exits on anything else. */
export function parseListen(value) {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  if (!m) return undefined;
  const host = m[1] ?? (m[2] || "0.0.0.0");
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host, port };
}

/** Loopback: 127.0.0.0/8, ::1, "localhost" (and ::ffff:127.x). */
export function isLoopback(host) {
  const h = host.toLowerCase();
  if (h === "localhost") return true;
  if (isIP(h) === 4) return h.startsWith("127.");
  if (isIP(h) === 6) return h === "::1" || h === "0:0:0:0:0:0:0:1" || /^::ffff:127\./.test(h);
  return false;
}

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** A JWT HS256 with the claims the gateway checks: sub, exp, app. */
export function mintToken(user, nowS = Math.floor(Date.now() / 1000)) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = b64url(JSON.stringify({ sub: user, exp: nowS + TOKEN_TTL_S, app: appId }));
  const sig = b64url(createHmac("sha256", secret).update(`${header}.${payload}`).digest());
  return { token: `${header}.${payload}.${sig}`, expiresAt: nowS + TOKEN_TTL_S };
}

const files = {
  "/": [join(here, "index.html"), "text/html; charset=utf-8"],
  "/index.html": [join(here, "index.html"), "text/html; charset=utf-8"],
  "/app.js": [join(here, "app.js"), "text/javascript; charset=utf-8"],
  "/presence-client.js": [join(dist, "presence-client.js"), "text/javascript; charset=utf-8"],
  "/presence-client.js.map": [join(dist, "presence-client.js.map"), "application/json"],
};

function send(res, status, type, body) {
  res.writeHead(status, { "content-type": type, "cache-control": "no-store", "x-content-type-options": "nosniff" });
  res.end(res.req.method === "HEAD" ? undefined : body);
}
const json = (res, status, value) => send(res, status, "application/json", JSON.stringify(value));

async function handle(req, res) {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    return json(res, 405, { error: "method not allowed" });
  }
  const url = new URL(req.url ?? "/", "http://demo.invalid");
  if (url.pathname === "/config.json") return json(res, 200, { gatewayWs, appId });
  if (url.pathname === "/token") {
    const user = url.searchParams.get("user") ?? "";
    if (user === "" || Buffer.byteLength(user) > MAX_USER_ID_BYTES || /[\u0000-\u001f\u007f-\u009f]/.test(user)) {
      return json(res, 400, { error: "user: 1 to 256 bytes, no control characters" });
    }
    return json(res, 200, mintToken(user));
  }
  const file = files[url.pathname];
  if (!file) return json(res, 404, { error: "not found" });
  try {
    return send(res, 200, file[1], await readFile(file[0]));
  } catch {
    const hint = file[0].startsWith(dist) ? " (run `npm run build` in clients/js)" : "";
    return json(res, 500, { error: `cannot read ${url.pathname}${hint}` });
  }
}

function main() {
  const addr = parseListen(listen);
  if (!addr) {
    console.error(`demo: DEMO_LISTEN=${listen} is not host:port`);
    process.exit(2);
  }
  if (!isLoopback(addr.host) && !allowRemote) {
    console.error(`demo: refusing to listen on ${addr.host}: this server mints login tokens for any user. Use a loopback address, or set DEMO_ALLOW_REMOTE=1.`);
    process.exit(2);
  }
  const server = createServer((req, res) => {
    handle(req, res).catch((err) => {
      console.error("demo:", err);
      if (!res.headersSent) json(res, 500, { error: "internal error" });
      else res.destroy();
    });
  });
  server.on("error", (err) => {
    console.error(`demo: cannot listen on ${listen}: ${err.message}`);
    process.exit(1);
  });
  server.listen(addr.port, addr.host, () => {
    const a = server.address();
    const host = a.family === "IPv6" || a.family === 6 ? `[${a.address}]` : a.address;
    console.log(`presence demo: http://${host}:${a.port}/  (gateway ${gatewayWs}, app ${appId})`);
  });
  const stop = (signal) => {
    console.log(`demo: ${signal}, stopping`);
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
