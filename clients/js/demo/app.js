// The presence demo page: log in, watch contacts, set a custom status. Uses the ES module bundle.
// Elements carry data-testid attributes for browser tests; timestamps (Date.now()) of the changes
// are kept in data-* attributes so that a test can measure latencies without polling delays.
import { PresenceClient } from "/presence-client.js";

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const params = new URLSearchParams(location.search);
const config = await fetch("/config.json").then((r) => r.json());

/** @type {PresenceClient | undefined} */
let client;
const rows = new Map(); // user id -> <li>

function log(text) {
  const el = $("log");
  const line = `${new Date().toISOString().slice(11, 23)} ${text}\n`;
  el.textContent = (line + el.textContent).slice(0, 20_000);
}

/** One device id per tab and user: a reload re-logs the same device (which replaces its session). */
function deviceIdFor(user) {
  const key = `presence-demo-device:${user}`;
  let id = sessionStorage.getItem(key);
  if (!id) {
    id = `web-${crypto.getRandomValues(new Uint32Array(2)).join("")}`;
    sessionStorage.setItem(key, id);
  }
  return id;
}

async function fetchToken(user) {
  const res = await fetch(`/token?user=${encodeURIComponent(user)}`);
  if (!res.ok) throw new Error(`token: HTTP ${res.status}`);
  return (await res.json()).token;
}

function setState(state, reason) {
  const el = $("state");
  el.textContent = state;
  el.dataset.state = state;
  el.dataset.changedAt = String(Date.now());
  if (state === "online") el.dataset.onlineAt = String(Date.now());
  log(`state ${state} (${reason})`);
}

function splitIds(text) {
  return [...new Set(text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean))];
}

function contactRow(id) {
  let li = rows.get(id);
  if (li) return li;
  li = document.createElement("li");
  li.dataset.testid = `contact-${id}`;
  li.dataset.status = "unknown";
  const dot = document.createElement("span");
  dot.className = "dot";
  const name = document.createElement("span");
  name.textContent = id;
  const status = document.createElement("span");
  status.dataset.testid = `contact-${id}-status`;
  status.textContent = "unknown";
  const detail = document.createElement("span");
  const platforms = document.createElement("span");
  platforms.className = "muted";
  platforms.dataset.testid = `contact-${id}-platforms`;
  const custom = document.createElement("span");
  custom.className = "custom";
  custom.dataset.testid = `contact-${id}-custom`;
  detail.append(platforms, " ", custom);
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "×";
  remove.title = "stop watching";
  remove.dataset.testid = `contact-${id}-remove`;
  remove.onclick = () => {
    rows.delete(id);
    li.remove();
    client?.unsubscribe([id]).catch((e) => log(`unsubscribe ${id}: ${e.code}`));
  };
  li.append(dot, name, status, detail, remove);
  $("contacts").append(li);
  rows.set(id, li);
  return li;
}

function renderStatus(s) {
  const li = contactRow(s.userId);
  const now = String(Date.now());
  if (li.dataset.status !== s.status) {
    li.dataset.status = s.status;
    li.dataset.statusAt = now;
  }
  if ((li.dataset.custom ?? "") !== s.customStatus) {
    li.dataset.custom = s.customStatus;
    li.dataset.customAt = now;
  }
  li.dataset.version = String(s.userVersion);
  li.querySelector(`[data-testid="contact-${CSS.escape(s.userId)}-status"]`).textContent = s.status;
  li.querySelector(`[data-testid="contact-${CSS.escape(s.userId)}-platforms"]`).textContent = s.platforms.join(", ");
  li.querySelector(`[data-testid="contact-${CSS.escape(s.userId)}-custom"]`).textContent = s.customStatus;
}

async function watch(ids) {
  const fresh = ids.filter((id) => !rows.has(id));
  for (const id of fresh) contactRow(id);
  if (!client || fresh.length === 0) return;
  try {
    const statuses = await client.subscribe(fresh);
    for (const s of statuses) renderStatus(s);
  } catch (e) {
    // "disconnected": the ids are remembered and subscribed at the next login.
    if (e.code !== "disconnected") log(`subscribe: ${e.code} ${e.message}`);
  }
}

function login(user) {
  const deviceId = deviceIdFor(user);
  client = new PresenceClient({
    url: config.gatewayWs,
    appId: config.appId,
    userId: user,
    deviceId,
    platform: "WEB",
    token: () => fetchToken(user),
  });
  client.on("state", setState);
  client.on("retry", (r) => log(`retry #${r.attempt} in ${r.delayMs} ms (${r.reason})`));
  client.on("loginOk", (info) => log(`loginOk session ${info.sessionId}, heartbeat ${info.heartbeatIntervalS}s`));
  client.on("status", (s) => {
    renderStatus(s);
    log(`status ${s.userId} ${s.status} [${s.platforms.join(",")}] "${s.customStatus}" v${s.userVersion}`);
  });
  client.on("kicked", (k) => {
    const banner = $("kicked");
    banner.hidden = false;
    banner.dataset.reason = k.reason;
    banner.textContent = `This device was kicked (${k.reason}) by ${k.byPlatform} ${k.byDeviceId}.`;
    log(`kicked ${k.reason}`);
  });
  client.on("error", (e) => log(`error ${e.kind} ${e.code}${e.final ? " (final)" : ""}: ${e.message}`));

  $("me").textContent = user;
  $("device-id").textContent = deviceId;
  document.getElementById("login-panel").hidden = true;
  document.getElementById("main-panel").hidden = false;
  document.getElementById("contacts-panel").hidden = false;
  document.title = `${user} – presence demo`;

  client.connect().catch((e) => log(`connect failed: ${e.code} ${e.message}`));
  void watch(splitIds(params.get("contacts") ?? ""));
}

document.getElementById("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const user = $("login-user").value.trim();
  if (user) login(user);
});

document.getElementById("contact-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $("contact-input");
  void watch(splitIds(input.value));
  input.value = "";
});

document.getElementById("my-status-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!client) return;
  const text = $("my-status-input").value;
  const el = $("my-status");
  el.dataset.setAt = String(Date.now());
  try {
    await client.setStatus(text);
    el.textContent = text;
    el.dataset.ackedAt = String(Date.now());
    log(`custom status set: "${text}"`);
  } catch (e) {
    log(`setStatus: ${e.code} ${e.message}`);
  }
});

document.getElementById("logout-button").addEventListener("click", async () => {
  await client?.close();
  client = undefined;
  for (const li of rows.values()) li.remove();
  rows.clear();
  document.getElementById("main-panel").hidden = true;
  document.getElementById("contacts-panel").hidden = true;
  document.getElementById("login-panel").hidden = false;
});

const autoUser = params.get("user");
if (autoUser) {
  $("login-user").value = autoUser;
  login(autoUser);
}
