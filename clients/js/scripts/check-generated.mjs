#!/usr/bin/env node
// Fails (exit 1) when src/gen differs from what `npm run generate` would write from
// ../../proto/presence/v1/client.proto: generates into a temporary folder with the same template
// (buf.gen.yaml, only `out` changed) and compares every file both ways.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, delimiter } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const genDir = join(root, "src", "gen");
const template = readFileSync(join(root, "buf.gen.yaml"), "utf8");
if (!/^\s*out: src\/gen\s*$/m.test(template)) {
  console.error("check-generated: buf.gen.yaml has no `out: src/gen` line to redirect");
  process.exit(2);
}

const tmp = mkdtempSync(join(tmpdir(), "presence-gen-"));
try {
  const out = join(tmp, "gen");
  const tmpTemplate = join(tmp, "buf.gen.yaml");
  writeFileSync(tmpTemplate, template.replace(/^(\s*)out: src\/gen\s*$/m, `$1out: ${JSON.stringify(out)}`));
  const bin = join(root, "node_modules", ".bin");
  const res = spawnSync(
    join(bin, "buf"),
    ["generate", "../../proto", "--path", "../../proto/presence/v1/client.proto", "--template", tmpTemplate],
    { cwd: root, encoding: "utf8", env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` } },
  );
  if (res.status !== 0) {
    console.error(`check-generated: buf generate failed (${res.error?.message ?? `exit ${res.status}`})\n${res.stderr ?? ""}`);
    process.exit(2);
  }
  const want = listFiles(out);
  const have = listFiles(genDir);
  const problems = [];
  for (const f of want) {
    if (!have.includes(f)) problems.push(`missing: src/gen/${f}`);
    else if (readFileSync(join(out, f), "utf8") !== readFileSync(join(genDir, f), "utf8")) problems.push(`differs: src/gen/${f}`);
  }
  for (const f of have) if (!want.includes(f)) problems.push(`extra: src/gen/${f}`);
  if (problems.length > 0) {
    console.error(`check-generated: src/gen is stale relative to the .proto; run \`npm run generate\`\n  ${problems.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`check-generated: src/gen is up to date (${want.length} file${want.length === 1 ? "" : "s"})`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

function listFiles(dir) {
  const files = [];
  const walk = (d) => {
    let entries;
    try {
      entries = readdirSync(d);
    } catch {
      return;
    }
    for (const name of entries) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else files.push(relative(dir, p).split("\\").join("/"));
    }
  };
  walk(dir);
  return files.sort();
}
