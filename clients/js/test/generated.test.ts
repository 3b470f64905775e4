import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

// Fails when src/gen is stale relative to ../../proto/presence/v1/client.proto.
test("src/gen matches what `npm run generate` writes from the .proto", () => {
  const script = fileURLToPath(new URL("../../scripts/check-generated.mjs", import.meta.url));
  const res = spawnSync(process.execPath, [script], { encoding: "utf8" });
  assert.equal(res.status, 0, `${res.stdout}${res.stderr}`);
});
