/**
 * The little of the WebSocket API the client uses. A browser `WebSocket`, Node's global
 * `WebSocket` (Node >= 22) and the `ws` package fit as they are; a mini-program socket
 * (e.g. `wx.connectSocket`) needs a small adapter that maps its callbacks onto these handlers.
 */
export interface WebSocketLike {
  /** Set to "arraybuffer" by the client when the property exists. */
  binaryType?: string;
  /** 0 connecting, 1 open, 2 closing, 3 closed (optional for adapters). */
  readonly readyState?: number;
  onopen: ((ev?: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev?: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev?: unknown) => void) | null;
  /** Sends one binary message. */
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketFactory = (url: string) => WebSocketLike;

/** Uses the global `WebSocket` (browsers, Deno, Node >= 22). */
export const defaultWebSocketFactory: WebSocketFactory = (url) => {
  const WS = (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
  if (typeof WS !== "function") {
    throw new Error("no global WebSocket here: pass options.webSocket, e.g. (url) => new WebSocket(url) from the 'ws' package");
  }
  return new WS(url);
};

const OPEN = 1;

export function isOpen(ws: WebSocketLike): boolean {
  return ws.readyState === undefined || ws.readyState === OPEN;
}

/**
 * The bytes of one received message: an ArrayBuffer, a typed array / Buffer, or a Blob (read
 * asynchronously). Returns "text" for a text message (never sent by the gateway).
 */
export function messageBytes(data: unknown): Uint8Array | Promise<Uint8Array> | "text" | undefined {
  if (typeof data === "string") return "text";
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data && typeof (data as Blob).arrayBuffer === "function") {
    return (data as Blob).arrayBuffer().then((b) => new Uint8Array(b));
  }
  return undefined;
}
