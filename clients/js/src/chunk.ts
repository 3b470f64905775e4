import { encodedIdLen, MAX_ID_BYTES_PER_REQUEST } from "./codec.js";

/** Subscribe and Unsubscribe carry at most this many user ids (protocol limit). */
export const MAX_IDS_PER_REQUEST = 500;

/** Splits `items` into consecutive chunks of at most `size` items, keeping order. */
export function chunk<T>(items: readonly T[], size: number = MAX_IDS_PER_REQUEST): T[][] {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`chunk size must be a positive integer, got ${size}`);
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Splits user ids into request-sized chunks, keeping order: at most `maxCount` ids per chunk
 * and at most `maxBytes` of encoded ids, so that no frame exceeds the 64 KiB limit even with
 * 500 long (up to 256-byte) ids.
 */
export function chunkIds(
  ids: readonly string[],
  maxCount: number = MAX_IDS_PER_REQUEST,
  maxBytes: number = MAX_ID_BYTES_PER_REQUEST,
): string[][] {
  if (!Number.isInteger(maxCount) || maxCount < 1) throw new RangeError(`maxCount must be a positive integer, got ${maxCount}`);
  const out: string[][] = [];
  let cur: string[] = [];
  let bytes = 0;
  for (const id of ids) {
    const len = encodedIdLen(id);
    if (len > maxBytes) throw new RangeError(`user id of ${len} bytes cannot fit in one frame`);
    if (cur.length >= maxCount || bytes + len > maxBytes) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(id);
    bytes += len;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/** The distinct values of `items`, in first-seen order. */
export function uniq<T>(items: Iterable<T>): T[] {
  return [...new Set(items)];
}
