#!/usr/bin/env bash
# The workspace's rust-version must be at least every dependency's (cargo metadata knows them), so
# that the declared minimum is true; clippy's incompatible_msrv lint checks our own use of std.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --locked | python3 -c '
import json, sys, tomllib
meta = json.load(sys.stdin)
ours = tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["rust-version"]
version = lambda v: (tuple(int(x) for x in v.split(".")) + (0, 0))[:3]
used = {n["id"] for n in meta["resolve"]["nodes"]}
deps = [(p["rust_version"], p["name"], p["version"]) for p in meta["packages"]
        if p["id"] in used and p.get("rust_version") and p["source"]]
need, name, at = max(deps, key=lambda d: version(d[0]))
if version(need) > version(ours):
    sys.exit(f"rust-version {ours} is below {name} {at}, which needs {need}: raise it in Cargo.toml")
print(f"rust-version {ours} covers every dependency (highest: {name} {at} needs {need})")
'
