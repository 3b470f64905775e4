#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for a bounded time: scripts/fuzz.sh [seconds per target, default 60].
# Works on a stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the nightly-only flags cargo fuzz passes);
# installs cargo-fuzz when it is missing. Exits non-zero on the first crash (artifact in fuzz/artifacts/).
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in frame_decoder login_frame; do
  echo "fuzz: $target for ${seconds}s" >&2
  cargo fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1
done
