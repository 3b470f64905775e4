import { ClientErrorCode, PresenceError } from "./errors.js";

/** Requests that carry a request_id, named after their ClientFrame case. */
export type RequestKind = "setStatus" | "subscribe" | "unsubscribe";

/** The ServerFrame case that answers each request kind. */
export const ANSWER_OF: Readonly<Record<RequestKind, string>> = {
  setStatus: "setStatusOk",
  subscribe: "subscribeOk",
  unsubscribe: "unsubscribeOk",
};

/** The request kind that an answer case belongs to, if it is an answer. */
export function requestKindOfAnswer(answerCase: string): RequestKind | undefined {
  for (const [kind, answer] of Object.entries(ANSWER_OF)) if (answer === answerCase) return kind as RequestKind;
  return undefined;
}

interface Pending {
  kind: RequestKind;
  resolve: (value: unknown) => void;
  reject: (err: PresenceError) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const MAX_REQUEST_ID = 0xffff_ffff; // request_id is a uint32

/**
 * Matches answers to requests by request_id. Ids run 1, 2, ... 2^32-1 then wrap to 1, skipping
 * ids still pending (0 is never used: it is the proto3 default and would match a missing field).
 */
export class RequestTracker {
  private next = 1;
  private readonly pending = new Map<number, Pending>();

  /** timeoutMs <= 0 disables the per-request timeout. */
  constructor(private readonly timeoutMs: number) {}

  /** The next free request id. */
  allocate(): number {
    for (;;) {
      const id = this.next;
      this.next = id >= MAX_REQUEST_ID ? 1 : id + 1;
      if (!this.pending.has(id)) return id;
    }
  }

  /** Sets where the next allocation starts (tests of the wrap-around). */
  seed(next: number): void {
    this.next = Math.min(Math.max(1, Math.floor(next)), MAX_REQUEST_ID);
  }

  /** Registers request `id`; the promise settles with its answer, an error, or a timeout. */
  track<T>(id: number, kind: RequestKind): Promise<T> {
    if (this.pending.has(id)) throw new Error(`request id ${id} is already pending`);
    return new Promise<T>((resolve, reject) => {
      const entry: Pending = { kind, resolve: resolve as (v: unknown) => void, reject, timer: undefined };
      if (this.timeoutMs > 0) {
        entry.timer = setTimeout(() => {
          this.fail(id, new PresenceError("request", ClientErrorCode.Timeout, `no answer to ${kind} #${id} in ${this.timeoutMs} ms`));
        }, this.timeoutMs);
      }
      this.pending.set(id, entry);
    });
  }

  /** The kind of pending request `id`, if any. */
  kindOf(id: number): RequestKind | undefined {
    return this.pending.get(id)?.kind;
  }

  /**
   * Settles request `id` with an answer of kind `answeredKind`. An answer of another kind rejects
   * the request with `protocol_error`. Returns false when no such request is pending (a late or
   * unknown answer, to be ignored).
   */
  settle(id: number, answeredKind: RequestKind, value: unknown): boolean {
    const entry = this.take(id);
    if (!entry) return false;
    if (entry.kind !== answeredKind) {
      entry.reject(new PresenceError("request", ClientErrorCode.Protocol, `${answeredKind} answer to ${entry.kind} request #${id}`));
    } else {
      entry.resolve(value);
    }
    return true;
  }

  /** Rejects request `id`; returns false when it is not pending. */
  fail(id: number, err: PresenceError): boolean {
    const entry = this.take(id);
    if (!entry) return false;
    entry.reject(err);
    return true;
  }

  /** Rejects every pending request (the link dropped). */
  failAll(makeError: () => PresenceError): number {
    const ids = [...this.pending.keys()];
    for (const id of ids) this.fail(id, makeError());
    return ids.length;
  }

  get size(): number {
    return this.pending.size;
  }

  private take(id: number): Pending | undefined {
    const entry = this.pending.get(id);
    if (!entry) return undefined;
    this.pending.delete(id);
    if (entry.timer !== undefined) clearTimeout(entry.timer);
    return entry;
  }
}
