/** Reconnect delays: exponential backoff, capped, with optional full jitter. */
export interface BackoffOptions {
  /** Cap of the first retry's delay (ms). Default 500. */
  initialMs: number;
  /** Largest cap (ms). Default 30000. */
  maxMs: number;
  /** "full": uniform in [0, cap) (AWS "full jitter"); "none": exactly the cap. Default "full". */
  jitter: "full" | "none";
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000, jitter: "full" };

/** The cap for retry number `attempt` (0 = first retry): min(maxMs, initialMs * 2^attempt). */
export function backoffCap(attempt: number, opts: BackoffOptions = DEFAULT_BACKOFF): number {
  const a = Math.max(0, Math.floor(attempt));
  // 2^a overflows to Infinity for large a; min() keeps the cap finite.
  return Math.min(opts.maxMs, opts.initialMs * Math.pow(2, a));
}

/** The delay before retry number `attempt`. `random` returns a number in [0, 1). */
export function backoffDelay(
  attempt: number,
  opts: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const cap = backoffCap(attempt, opts);
  if (opts.jitter === "none") return cap;
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.floor(r * cap);
}
