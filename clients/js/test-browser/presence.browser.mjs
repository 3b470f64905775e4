#!/usr/bin/env node
// Browser test of the JS client through the demo page, against a REAL gateway and registry:
//   DEMO_URL=http://127.0.0.1:8090/ npm run test:browser
// (the demo server, demo/serve.mjs, must point at a running gateway; see README.md).
//
// alice (contacts bob) and bob (contacts alice) log in in two browser contexts; it checks that
//   1. alice's page shows bob online within 1 s of bob's login (LoginOk on bob's page),
//   2. bob sets the custom status "in a meeting": alice's page shows it within 1 s,
//   3. bob closes his page (no Logout): alice's page shows bob offline within 3 s.
// Latencies come from Date.now() stamps the pages record when things happen (same clock).
// Env: DEMO_URL (required), CHROMIUM_PATH (default /usr/bin/chromium), BROWSER_TEST_USER_PREFIX
// (default: a random prefix, so reruns against one registry do not see each other's users).
import { chromium } from "playwright-core";
import { existsSync } from "node:fs";

const LIMIT_ONLINE_MS = 1000;
const LIMIT_CUSTOM_MS = 1000;
const LIMIT_OFFLINE_MS = 3000;
/** How long to wait for something at all before calling it a failure (beyond the limits above). */
const WAIT_MS = 15_000;

const demoUrl = process.env.DEMO_URL;
if (!demoUrl) {
  console.error("presence.browser: DEMO_URL is required, e.g. DEMO_URL=http://127.0.0.1:8090/ (start demo/serve.mjs against a running gateway)");
  process.exit(2);
}
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
if (!existsSync(chromiumPath)) {
  console.error(`presence.browser: no Chromium at ${chromiumPath} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  process.exit(2);
}
const prefix = process.env.BROWSER_TEST_USER_PREFIX ?? `bt${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}-`;
const alice = `${prefix}alice`;
const bob = `${prefix}bob`;

class Failure extends Error {}
const results = [];
function check(name, rawMs, limit) {
  // Two pages, one clock: a few ms below 0 means the watcher got the event before the actor's
  // page handled its own answer; counted as 0.
  const ms = Math.max(0, rawMs);
  const ok = ms <= limit;
  results.push({ name, ms, limit, ok });
  console.log(`${ok ? "ok  " : "FAIL"} ${name}: ${ms} ms${rawMs < 0 ? ` (raw ${rawMs})` : ""} (limit ${limit} ms)`);
  if (!ok) throw new Failure(`${name} took ${ms} ms, over the ${limit} ms limit`);
}

function pageUrl(user, contact) {
  const u = new URL(demoUrl);
  u.searchParams.set("user", user);
  u.searchParams.set("contacts", contact);
  return u.toString();
}

/** Waits until `fn(arg)` is truthy in the page; fails with `what` after WAIT_MS. */
async function waitIn(page, what, fn, arg) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 10 });
    return await handle.jsonValue();
  } catch (err) {
    const state = await page.locator('[data-testid="state"]').textContent().catch(() => "?");
    const log = await page.locator('[data-testid="log"]').textContent().catch(() => "");
    throw new Failure(`${what}: not within ${WAIT_MS} ms (page state "${state}")\n--- page log (newest first) ---\n${(log ?? "").slice(0, 2000)}\n(${err.message.split("\n")[0]})`);
  }
}

/** The contact row's data-* once `key` has `value`. */
const rowData = ({ id, key, value }) => {
  const li = document.querySelector(`[data-testid="contact-${CSS.escape(id)}"]`);
  return li && li.dataset[key] === value ? { ...li.dataset } : false;
};
const onlineAt = () => {
  const el = document.querySelector('[data-testid="state"]');
  return el?.dataset.state === "online" && el.dataset.onlineAt ? Number(el.dataset.onlineAt) : false;
};

let browser;
let exitCode = 0;
try {
  const args = typeof process.getuid === "function" && process.getuid() === 0 ? ["--no-sandbox"] : [];
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args });
  const aliceCtx = await browser.newContext();
  const bobCtx = await browser.newContext();
  const alicePage = await aliceCtx.newPage();
  const bobPage = await bobCtx.newPage();
  for (const [name, page] of [["alice", alicePage], ["bob", bobPage]]) {
    page.on("pageerror", (err) => console.error(`[${name} page error] ${err.message}`));
  }
  console.log(`demo ${demoUrl}; users ${alice}, ${bob}; chromium ${browser.version()}`);

  // alice logs in first and sees bob offline (never seen, or left over from nothing).
  await alicePage.goto(pageUrl(alice, bob));
  await waitIn(alicePage, "alice online", onlineAt);
  await waitIn(alicePage, "alice sees bob offline first", rowData, { id: bob, key: "status", value: "offline" });

  // 1. bob logs in: alice sees him online.
  await bobPage.goto(pageUrl(bob, alice));
  const bobOnlineAt = await waitIn(bobPage, "bob online", onlineAt);
  const seenOnline = await waitIn(alicePage, "alice sees bob online", rowData, { id: bob, key: "status", value: "online" });
  check("bob online on alice's page after bob's login", Number(seenOnline.statusAt) - bobOnlineAt, LIMIT_ONLINE_MS);

  // bob sees alice online too (sanity of the other direction; not timed).
  await waitIn(bobPage, "bob sees alice online", rowData, { id: alice, key: "status", value: "online" });

  // 2. bob sets a custom status.
  await bobPage.getByTestId("my-status-input").fill("in a meeting");
  const clickedAt = await bobPage.evaluate(() => Date.now());
  await bobPage.getByTestId("my-status-button").click();
  const seenCustom = await waitIn(alicePage, "alice sees bob's custom status", rowData, { id: bob, key: "custom", value: "in a meeting" });
  const setAt = Number((await bobPage.getByTestId("my-status").getAttribute("data-set-at")) ?? clickedAt);
  check('bob\'s custom status "in a meeting" on alice\'s page', Number(seenCustom.customAt) - setAt, LIMIT_CUSTOM_MS);
  const shown = await alicePage.getByTestId(`contact-${bob}-custom`).textContent();
  if (shown !== "in a meeting") throw new Failure(`alice's page shows bob's custom status as ${JSON.stringify(shown)}`);

  // 3. bob closes his page without logging out: the gateway must notice the closed link.
  const closedAt = Date.now();
  await bobPage.close();
  const seenOffline = await waitIn(alicePage, "alice sees bob offline", rowData, { id: bob, key: "status", value: "offline" });
  check("bob offline on alice's page after bob closed his page", Number(seenOffline.statusAt) - closedAt, LIMIT_OFFLINE_MS);
  const custom = await alicePage.getByTestId(`contact-${bob}-custom`).textContent();
  if (custom !== "") throw new Failure(`bob's custom status is still shown after he went offline: ${JSON.stringify(custom)}`);

  await alicePage.getByTestId("logout-button").click();
  await waitIn(alicePage, "alice closed", () => document.querySelector('[data-testid="state"]')?.dataset.state === "closed");
} catch (err) {
  exitCode = 1;
  console.error(`presence.browser: FAILED: ${err instanceof Failure ? err.message : err?.stack ?? err}`);
} finally {
  await browser?.close().catch(() => {});
}
// A failure outside a timed check (a step that never happened) counts as one failed check.
const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed + (exitCode !== 0 && passed === results.length ? 1 : 0);
console.log(`${passed} passed, ${failed} failed`);
process.exit(exitCode);
