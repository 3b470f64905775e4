import { test } from "node:test";
import assert from "node:assert/strict";
import { chunk, chunkIds, uniq, MAX_IDS_PER_REQUEST } from "../src/chunk.js";
import { encodeClientFrame, MAX_FRAME_LEN } from "../src/codec.js";

const ids = (n: number, prefix = "u") => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

test("chunk keeps order and sizes", () => {
  assert.deepEqual(chunk([1, 2, 3, 4, 5], 2), [[1, 2], [3, 4], [5]]);
  assert.deepEqual(chunk([], 3), []);
  assert.throws(() => chunk([1], 0), RangeError);
});

test("chunkIds: at most 500 ids per request, nothing lost or reordered", () => {
  assert.equal(MAX_IDS_PER_REQUEST, 500);
  for (const n of [0, 1, 499, 500, 501, 1000, 1234]) {
    const all = ids(n);
    const chunks = chunkIds(all);
    assert.equal(chunks.length, Math.ceil(n / 500), `n=${n}`);
    for (const c of chunks) assert.ok(c.length >= 1 && c.length <= 500);
    assert.deepEqual(chunks.flat(), all);
  }
});

test("chunkIds: 500 ids of 256 bytes are split so that every frame fits in 64 KiB", () => {
  const long = ids(500).map((id) => id.padEnd(256, "x"));
  const chunks = chunkIds(long);
  assert.ok(chunks.length >= 2, "one frame of 500 x 256-byte ids would be ~130 KB");
  assert.deepEqual(chunks.flat(), long);
  for (const c of chunks) {
    const bytes = encodeClientFrame({ kind: { case: "subscribe", value: { requestId: 0xffff_ffff, userIds: c } } });
    assert.ok(bytes.length <= MAX_FRAME_LEN, `frame of ${bytes.length} bytes`);
  }
});

test("chunkIds counts UTF-8 bytes, not UTF-16 units", () => {
  // "é" is 2 bytes: 3 ids of 1+1+2 bytes = 4 bytes each -> a 10-byte budget holds 2.
  assert.deepEqual(chunkIds(["é", "é", "é"], 500, 10), [["é", "é"], ["é"]]);
  assert.throws(() => chunkIds(["x".repeat(100)], 500, 10), RangeError);
});

test("uniq keeps first-seen order", () => {
  assert.deepEqual(uniq(["b", "a", "b", "c", "a"]), ["b", "a", "c"]);
});
