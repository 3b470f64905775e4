/** Login error codes after which retrying cannot help: the client stops (state "closed"). */
export const FINAL_LOGIN_CODES: readonly string[] = ["bad_token", "token_expired", "bad_request"];

/** Kick reasons after which the client must not reconnect by itself. */
export const FINAL_KICK_REASONS: readonly string[] = ["replaced_by_login", "admin"];

/** True when a LoginError code is final; any other (also unknown) code means retry later with backoff. */
export function isFinalLoginCode(code: string): boolean {
  return FINAL_LOGIN_CODES.includes(code);
}

export function isFinalKickReason(reason: string): boolean {
  return FINAL_KICK_REASONS.includes(reason);
}

/**
 * Where an error came from:
 * - "request": a RequestError answer (or `disconnected` / `timeout` of a pending request),
 * - "login": a LoginError answer,
 * - "server": a ServerFrame.error,
 * - "transport": the socket, the token provider, an undecodable frame.
 */
export type PresenceErrorKind = "request" | "login" | "server" | "transport";

/** Every error the client reports or rejects with. `code` is the protocol code or a client code. */
export class PresenceError extends Error {
  readonly code: string;
  readonly kind: PresenceErrorKind;
  /** For login errors: true when the client gave up (bad_token, token_expired, bad_request). */
  readonly final: boolean;
  constructor(kind: PresenceErrorKind, code: string, message?: string, final = false) {
    super(message ? `${code}: ${message}` : code);
    this.name = "PresenceError";
    this.kind = kind;
    this.code = code;
    this.final = final;
  }
}

/** Codes produced by the client itself (the others come from the gateway). */
export const ClientErrorCode = {
  /** The link dropped (or close() was called) while the request was pending. */
  Disconnected: "disconnected",
  /** No answer within requestTimeoutMs. */
  Timeout: "timeout",
  /** An answer of the wrong type for the request_id. */
  Protocol: "protocol_error",
} as const;
