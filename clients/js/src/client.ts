import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
import { chunkIds, uniq } from "./chunk.js";
import { decodeServerFrame, encodeClientFrame, MAX_FRAME_LEN, toUserStatus, type ClientFrameInit } from "./codec.js";
import { TypedEmitter } from "./emitter.js";
import { ClientErrorCode, isFinalKickReason, isFinalLoginCode, PresenceError } from "./errors.js";
import { Platform, type ServerFrame, type UserStatus as UserStatusPb } from "./gen/presence/v1/client_pb.js";
import { RequestTracker, type RequestKind } from "./requests.js";
import { defaultWebSocketFactory, isOpen, messageBytes, type WebSocketFactory, type WebSocketLike } from "./transport.js";
import {
  platformName,
  toPlatform,
  type ConnectionState,
  type KickedInfo,
  type LoginOkInfo,
  type PlatformName,
  type UserStatus,
} from "./types.js";
import { StatusStore } from "./versions.js";

export const CLIENT_VERSION = "presence-js/0.1.0";

/** Longest custom status, in UTF-8 bytes (protocol limit). */
export const MAX_CUSTOM_STATUS_BYTES = 256;

/** Used when LoginOk leaves them 0. */
const DEFAULT_HEARTBEAT_INTERVAL_S = 120;
const DEFAULT_HEARTBEAT_TIMEOUT_S = 400;

export interface PresenceClientOptions {
  /** Gateway WebSocket URL, e.g. `ws://127.0.0.1:7101/v1/connect` or `wss://.../v1/connect`. */
  url: string;
  /** The app id; "" means the gateway's "default" app. */
  appId?: string;
  userId: string;
  /** Stable per install: a re-login of the same device replaces its previous session. */
  deviceId: string;
  /** Default WEB. */
  platform?: Platform | PlatformName;
  /** A JWT, or a function called on every (re)connect to mint a fresh one. */
  token: string | (() => string | Promise<string>);
  /** Device receives offline push: it stays "push_online" after a disconnect. Default false. */
  pushEnabled?: boolean;
  /** Default "presence-js/<version>". */
  clientVersion?: string;
  /** Creates the socket; default: the global WebSocket. */
  webSocket?: WebSocketFactory;
  /** Reconnect delays; default {initialMs: 500, maxMs: 30000, jitter: "full"}. */
  backoff?: Partial<BackoffOptions>;
  /** A request without an answer after this long rejects with code "timeout". Default 10000; 0 = never. */
  requestTimeoutMs?: number;
  /** close() waits this long for LogoutOk. Default 3000. */
  closeTimeoutMs?: number;
  /** From opening the socket to LoginOk at most this long, else a retry. Default 15000. */
  handshakeTimeoutMs?: number;
  /** Random source in [0, 1) for the jitter (tests). */
  random?: () => number;
}

/** The client's events and their listener arguments. */
export interface PresenceEvents {
  /** The connection state changed; `reason` says why (e.g. "login_ok", "link_closed", "watchdog"). */
  state: [state: ConnectionState, reason: string];
  /** Each successful login (the first and every reconnect). */
  loginOk: [info: LoginOkInfo];
  /** A subscribed user's status, only when newer (user_version) than the one held. */
  status: [status: UserStatus];
  /** The gateway forced this device offline. */
  kicked: [info: KickedInfo];
  /** Login errors, server errors, failed re-subscriptions, transport trouble. */
  error: [error: PresenceError];
  /** A connection attempt failed or a link dropped: the next attempt starts in `delayMs`. */
  retry: [info: RetryInfo];
}

export interface RetryInfo {
  /** 1 for the first retry since the last LoginOk (or connect()). */
  attempt: number;
  delayMs: number;
  /** Why the previous link ended, e.g. "link_closed", "watchdog", "login_error:unavailable". */
  reason: string;
}

/** One socket and what belongs to it. */
interface Link {
  ws: WebSocketLike;
  loggedIn: boolean;
  /** Received data waiting for a Blob read, to keep frames in order. */
  queue: Promise<void>;
  lastRxMs: number;
  timeoutMs: number;
  handshakeTimer?: ReturnType<typeof setTimeout>;
  heartbeatTimer?: ReturnType<typeof setInterval>;
  watchdogTimer?: ReturnType<typeof setTimeout>;
  /** Called when LogoutOk arrives or the link goes. */
  onEnd: Array<() => void>;
}

interface Waiter {
  resolve: (info: LoginOkInfo) => void;
  reject: (err: PresenceError) => void;
}

/**
 * A presence client over the WebSocket transport: logs in, keeps the session alive with
 * heartbeats, reconnects with backoff, re-subscribes after every reconnect, and keeps the last
 * known status of each subscribed user by the user_version rule.
 */
export class PresenceClient extends TypedEmitter<PresenceEvents> {
  private readonly opts: PresenceClientOptions;
  private readonly backoff: BackoffOptions;
  private readonly factory: WebSocketFactory;
  private readonly requests: RequestTracker;
  private readonly statuses = new StatusStore();
  private readonly subscribed = new Set<string>();

  private currentState: ConnectionState = "idle";
  private link: Link | undefined;
  /** Bumped whenever a connection attempt starts or the client stops: stale async work checks it. */
  private generation = 0;
  private attempt = 0;
  private stopped = true;
  private everOnline = false;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private waiters: Waiter[] = [];
  private lastLogin: LoginOkInfo | undefined;

  constructor(options: PresenceClientOptions) {
    super();
    if (!options.url) throw new TypeError("options.url is required");
    if (!options.userId) throw new TypeError("options.userId is required");
    if (!options.deviceId) throw new TypeError("options.deviceId is required");
    if (options.token === undefined || options.token === "") throw new TypeError("options.token is required");
    toPlatform(options.platform ?? Platform.WEB); // validates
    this.opts = options;
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.factory = options.webSocket ?? defaultWebSocketFactory;
    this.requests = new RequestTracker(options.requestTimeoutMs ?? 10_000);
  }

  /** The connection state. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** The last LoginOk of the current session, if online. */
  get session(): LoginOkInfo | undefined {
    return this.currentState === "online" ? this.lastLogin : undefined;
  }

  /** The user ids this client holds subscriptions for (re-sent after every reconnect). */
  subscriptions(): string[] {
    return [...this.subscribed];
  }

  /** Last known status of a subscribed user. */
  status(userId: string): UserStatus | undefined {
    return this.statuses.get(userId);
  }

  /**
   * Starts the connection (and keeps it up). Resolves at the first LoginOk; rejects on a final
   * login error (bad_token, token_expired, bad_request), a final kick, or close(). Retryable
   * failures (gateway down, "unavailable", "rate_limited", ...) are retried with backoff.
   */
  connect(): Promise<LoginOkInfo> {
    if (this.currentState === "online" && this.lastLogin) return Promise.resolve(this.lastLogin);
    const promise = new Promise<LoginOkInfo>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (this.stopped) {
      this.stopped = false;
      this.attempt = 0;
      this.everOnline = false;
      this.setState("connecting", "connect");
      void this.openLink();
    }
    return promise;
  }

  /**
   * Ends the session: sends Logout, waits for LogoutOk (or closeTimeoutMs), closes the socket.
   * Pending requests reject with "disconnected"; subscriptions stay remembered for a later connect().
   */
  async close(): Promise<void> {
    if (this.stopped && !this.link) {
      if (this.currentState !== "idle") this.setState("closed", "closed");
      return;
    }
    this.stopped = true;
    this.generation++;
    this.clearReconnect();
    this.rejectWaiters(new PresenceError("transport", "closed", "close() was called"));
    const link = this.link;
    if (link?.loggedIn && isOpen(link.ws)) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const ended = new Promise<void>((resolve) => {
        link.onEnd.push(resolve);
        timer = setTimeout(resolve, this.opts.closeTimeoutMs ?? 3000);
      });
      try {
        this.send(link, { kind: { case: "logout", value: {} } });
        await ended;
      } catch {
        // the socket is gone: nothing to wait for
      } finally {
        clearTimeout(timer);
      }
    }
    if (link) this.dropLink(link, "closed");
    this.setState("closed", "closed");
  }

  /** Sets (or with "" clears) the user's custom status. Not re-sent after a reconnect. */
  async setStatus(text: string): Promise<void> {
    if (new TextEncoder().encode(text).length > MAX_CUSTOM_STATUS_BYTES) {
      throw new PresenceError("request", "bad_request", `custom status over ${MAX_CUSTOM_STATUS_BYTES} bytes`);
    }
    await this.request("setStatus", (requestId) => ({ kind: { case: "setStatus", value: { requestId, customStatus: text } } }));
  }

  /**
   * Subscribes to users and returns their current status, in the order of `userIds`. The ids
   * are remembered at once and re-subscribed after every reconnect, even when this call rejects
   * with "disconnected" or "timeout"; a RequestError (e.g. too_many_subscriptions) forgets the
   * ids that this call added. Large lists go in chunks of at most 500 ids.
   */
  async subscribe(userIds: readonly string[]): Promise<UserStatus[]> {
    const ids = uniq(userIds);
    for (const id of ids) if (typeof id !== "string" || id === "") throw new TypeError("user ids must be non-empty strings");
    if (ids.length === 0) return [];
    const added = new Set(ids.filter((id) => !this.subscribed.has(id)));
    for (const id of ids) this.subscribed.add(id);
    const answers = new Map<string, UserStatus>();
    const results = await Promise.allSettled(
      chunkIds(ids).map(async (chunk) => {
        const statuses = await this.request<UserStatusPb[]>("subscribe", (requestId) => ({
          kind: { case: "subscribe", value: { requestId, userIds: chunk } },
        })).catch((err: PresenceError) => {
          if (err.kind === "request" && err.code !== ClientErrorCode.Disconnected && err.code !== ClientErrorCode.Timeout) {
            // Refused by the gateway: it does not hold these, so neither do we.
            for (const id of chunk) if (added.has(id)) this.forget(id);
          }
          throw err;
        });
        for (const s of statuses) answers.set(s.userId, toUserStatus(s));
      }),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    return userIds.map((id) => this.statuses.get(id) ?? answers.get(id) ?? unknownStatus(id));
  }

  /**
   * Ends subscriptions: the given users, or every one when called without argument. An empty
   * array does nothing. Offline, only the local set changes (subscriptions end with the link).
   */
  async unsubscribe(userIds?: readonly string[]): Promise<void> {
    if (userIds !== undefined && userIds.length === 0) return;
    const all = userIds === undefined;
    const ids = all ? [] : uniq(userIds);
    if (all) {
      this.subscribed.clear();
      this.statuses.clear();
    } else {
      for (const id of ids) this.forget(id);
    }
    if (!this.link?.loggedIn) return;
    const chunks = all ? [[]] : chunkIds(ids);
    await Promise.all(
      chunks.map((chunk) =>
        this.request("unsubscribe", (requestId) => ({ kind: { case: "unsubscribe", value: { requestId, userIds: chunk } } })),
      ),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // connection

  private async openLink(): Promise<void> {
    const gen = ++this.generation;
    this.reconnectTimer = undefined;
    let token: string;
    try {
      token = typeof this.opts.token === "function" ? await this.opts.token() : this.opts.token;
      if (typeof token !== "string" || token === "") throw new Error("the token provider returned no token");
    } catch (err) {
      if (gen !== this.generation || this.stopped) return;
      this.emit("error", new PresenceError("transport", "token_unavailable", errorText(err)));
      this.scheduleReconnect("token_unavailable");
      return;
    }
    if (gen !== this.generation || this.stopped) return;

    let ws: WebSocketLike;
    try {
      ws = this.factory(this.opts.url);
    } catch (err) {
      this.emit("error", new PresenceError("transport", "socket_failed", errorText(err)));
      this.scheduleReconnect("socket_failed");
      return;
    }
    try {
      ws.binaryType = "arraybuffer";
    } catch {
      // an adapter with a read-only binaryType
    }
    const link: Link = { ws, loggedIn: false, queue: Promise.resolve(), lastRxMs: Date.now(), timeoutMs: 0, onEnd: [] };
    this.link = link;
    link.handshakeTimer = setTimeout(() => {
      this.emit("error", new PresenceError("transport", "handshake_timeout", "no LoginOk in time"));
      this.dropLink(link, "handshake_timeout");
    }, this.opts.handshakeTimeoutMs ?? 15_000);

    ws.onopen = () => {
      if (this.link !== link) return;
      try {
        this.send(link, {
          kind: {
            case: "login",
            value: {
              appId: this.opts.appId ?? "",
              userId: this.opts.userId,
              platform: toPlatform(this.opts.platform ?? Platform.WEB),
              deviceId: this.opts.deviceId,
              token,
              clientVersion: this.opts.clientVersion ?? CLIENT_VERSION,
              pushEnabled: this.opts.pushEnabled ?? false,
            },
          },
        });
      } catch {
        this.dropLink(link, "send_failed");
      }
    };
    ws.onmessage = (ev) => {
      if (this.link !== link) return;
      this.onData(link, ev.data);
    };
    ws.onclose = () => {
      if (this.link === link) this.dropLink(link, "link_closed");
    };
    ws.onerror = () => {
      // A close event follows in browsers and `ws`; dropping here too covers adapters that stop at error.
      if (this.link === link) this.dropLink(link, "link_error");
    };
  }

  /** Ends `link` (if still current): timers, pending requests; reconnects unless stopped. */
  private dropLink(link: Link, reason: string): void {
    if (this.link !== link) return;
    this.link = undefined;
    clearTimeout(link.handshakeTimer);
    clearInterval(link.heartbeatTimer);
    clearTimeout(link.watchdogTimer);
    for (const end of link.onEnd.splice(0)) end();
    try {
      link.ws.close(1000);
    } catch {
      // already closed
    }
    this.requests.failAll(() => new PresenceError("request", ClientErrorCode.Disconnected, reason));
    if (!this.stopped) this.scheduleReconnect(reason);
  }

  private scheduleReconnect(reason: string): void {
    this.clearReconnect();
    const delay = backoffDelay(this.attempt, this.backoff, this.opts.random);
    this.attempt++;
    this.setState(this.everOnline ? "reconnecting" : "connecting", reason);
    this.reconnectTimer = setTimeout(() => void this.openLink(), delay);
    this.emit("retry", { attempt: this.attempt, delayMs: delay, reason });
  }

  private clearReconnect(): void {
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
  }

  /** Stops for good (final login error, final kick): state "closed", no reconnect. */
  private stop(reason: string, err?: PresenceError): void {
    this.stopped = true;
    this.generation++;
    this.clearReconnect();
    if (this.link) this.dropLink(this.link, reason);
    this.rejectWaiters(err ?? new PresenceError("transport", "closed", reason));
    this.setState("closed", reason);
  }

  private setState(state: ConnectionState, reason: string): void {
    if (this.currentState === state) return;
    this.currentState = state;
    this.emit("state", state, reason);
  }

  private rejectWaiters(err: PresenceError): void {
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  private send(link: Link, init: ClientFrameInit): void {
    const bytes = encodeClientFrame(init);
    if (bytes.length > MAX_FRAME_LEN) {
      throw new PresenceError("request", "frame_too_large", `${bytes.length} bytes over ${MAX_FRAME_LEN}`);
    }
    if (!isOpen(link.ws)) throw new PresenceError("request", ClientErrorCode.Disconnected, "socket not open");
    link.ws.send(bytes);
  }

  private request<T>(kind: RequestKind, build: (requestId: number) => ClientFrameInit): Promise<T> {
    const link = this.link;
    if (!link?.loggedIn) {
      return Promise.reject(new PresenceError("request", ClientErrorCode.Disconnected, "not online"));
    }
    const id = this.requests.allocate();
    const answer = this.requests.track<T>(id, kind);
    try {
      this.send(link, build(id));
    } catch (err) {
      this.requests.fail(id, err instanceof PresenceError ? err : new PresenceError("request", ClientErrorCode.Disconnected, errorText(err)));
    }
    return answer;
  }

  // ---------------------------------------------------------------------------------------------
  // receiving

  private onData(link: Link, data: unknown): void {
    const bytes = messageBytes(data);
    if (bytes === "text" || bytes === undefined) {
      this.emit("error", new PresenceError("transport", "protocol_error", "a non-binary WebSocket message"));
      return;
    }
    if (bytes instanceof Uint8Array) {
      this.onBytes(link, bytes);
    } else {
      link.queue = link.queue.then(() => bytes).then(
        (b) => {
          if (this.link === link) this.onBytes(link, b);
        },
        () => undefined,
      );
    }
  }

  private onBytes(link: Link, bytes: Uint8Array): void {
    let frame: ServerFrame;
    try {
      frame = decodeServerFrame(bytes);
    } catch (err) {
      this.emit("error", new PresenceError("transport", "protocol_error", `undecodable frame: ${errorText(err)}`));
      this.dropLink(link, "protocol_error");
      return;
    }
    link.lastRxMs = Date.now();
    this.onFrame(link, frame);
  }

  private onFrame(link: Link, frame: ServerFrame): void {
    const k = frame.kind;
    switch (k.case) {
      case "loginOk":
        return this.onLoginOk(link, k.value.sessionId, k.value.heartbeatIntervalS, k.value.heartbeatTimeoutS, k.value.kickedDevices);
      case "loginError": {
        const final = isFinalLoginCode(k.value.code);
        const err = new PresenceError("login", k.value.code, k.value.message, final);
        this.emit("error", err);
        if (final) this.stop(`login_error:${k.value.code}`, err);
        else this.dropLink(link, `login_error:${k.value.code}`);
        return;
      }
      case "heartbeatAck":
        return;
      case "kicked": {
        const info: KickedInfo = {
          reason: k.value.reason,
          byPlatform: platformName(k.value.byPlatform),
          byDeviceId: k.value.byDeviceId,
          final: isFinalKickReason(k.value.reason),
        };
        this.emit("kicked", info);
        if (info.final) this.stop(`kicked:${info.reason}`);
        else this.dropLink(link, `kicked:${info.reason}`);
        return;
      }
      case "logoutOk":
        for (const end of link.onEnd.splice(0)) end();
        return;
      case "error":
        this.emit("error", new PresenceError("server", k.value.code, k.value.message));
        return;
      case "setStatusOk":
        this.requests.settle(k.value.requestId, "setStatus", undefined);
        return;
      case "subscribeOk": {
        for (const s of k.value.statuses) this.applyStatus(s);
        this.requests.settle(k.value.requestId, "subscribe", k.value.statuses);
        return;
      }
      case "unsubscribeOk":
        this.requests.settle(k.value.requestId, "unsubscribe", undefined);
        return;
      case "statusChanged":
        if (k.value.status) this.applyStatus(k.value.status);
        return;
      case "requestError":
        this.requests.fail(k.value.requestId, new PresenceError("request", k.value.code, k.value.message));
        return;
      default:
        return; // a frame kind newer than this client
    }
  }

  private onLoginOk(
    link: Link,
    sessionId: string,
    intervalS: number,
    timeoutS: number,
    kicked: ReadonlyArray<{ platform: Platform; deviceId: string }>,
  ): void {
    if (link.loggedIn) return;
    link.loggedIn = true;
    clearTimeout(link.handshakeTimer);
    this.attempt = 0;
    this.everOnline = true;
    const info: LoginOkInfo = {
      sessionId,
      heartbeatIntervalS: intervalS || DEFAULT_HEARTBEAT_INTERVAL_S,
      heartbeatTimeoutS: timeoutS || DEFAULT_HEARTBEAT_TIMEOUT_S,
      kickedDevices: kicked.map((d) => ({ platform: platformName(d.platform), deviceId: d.deviceId })),
    };
    this.lastLogin = info;
    link.heartbeatTimer = setInterval(() => {
      if (this.link !== link) return;
      try {
        this.send(link, { kind: { case: "heartbeat", value: { clientTimeMs: BigInt(Date.now()) } } });
      } catch {
        this.dropLink(link, "send_failed");
      }
    }, info.heartbeatIntervalS * 1000);
    link.timeoutMs = info.heartbeatTimeoutS * 1000;
    this.armWatchdog(link, link.timeoutMs);
    this.setState("online", "login_ok");
    for (const w of this.waiters.splice(0)) w.resolve(info);
    this.emit("loginOk", info);
    this.resubscribe(link);
  }

  /** Reconnects when nothing arrived for heartbeat_timeout_s. One timer, re-armed lazily. */
  private armWatchdog(link: Link, delayMs: number): void {
    link.watchdogTimer = setTimeout(() => {
      if (this.link !== link) return;
      const idle = Date.now() - link.lastRxMs;
      if (idle >= link.timeoutMs) {
        this.emit("error", new PresenceError("transport", "watchdog", `nothing received for ${idle} ms`));
        this.dropLink(link, "watchdog");
      } else {
        this.armWatchdog(link, link.timeoutMs - idle);
      }
    }, delayMs);
  }

  /** Subscriptions belong to the connection: send every held one again, in chunks. */
  private resubscribe(link: Link): void {
    const ids = [...this.subscribed];
    if (ids.length === 0 || this.link !== link) return;
    for (const chunk of chunkIds(ids)) {
      this.request<UserStatusPb[]>("subscribe", (requestId) => ({
        kind: { case: "subscribe", value: { requestId, userIds: chunk } },
      })).catch((err: PresenceError) => {
        if (err.code !== ClientErrorCode.Disconnected) this.emit("error", err);
      });
    }
  }

  /** The user_version rule; only for users still subscribed. */
  private applyStatus(pb: UserStatusPb): void {
    if (!this.subscribed.has(pb.userId)) return;
    const status = toUserStatus(pb);
    if (this.statuses.apply(status)) this.emit("status", status);
  }

  private forget(userId: string): void {
    this.subscribed.delete(userId);
    this.statuses.delete(userId);
  }
}

function unknownStatus(userId: string): UserStatus {
  return { userId, status: "offline", platforms: [], customStatus: "", userVersion: 0n, changedAtMs: 0 };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
