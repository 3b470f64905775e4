#!/usr/bin/env bash
# Runs every check and test: the one test command of the README (and of CI).
#   scripts/test.sh            fmt, clippy, all tests
#   scripts/test.sh <filter>   only tests matching <filter> (still after fmt and clippy)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh

ensure_postgres
drop_test_databases

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== rust-version"
scripts/check-rust-version.sh
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
if docker compose version >/dev/null 2>&1; then
  echo "== docker compose config"; docker compose config -q
elif command -v docker-compose >/dev/null; then
  echo "== docker-compose config"; docker-compose config -q
fi
echo "== monitoring: promtool check config/rules, alert unit tests, dashboard against the metric names"
scripts/check-monitoring.sh
echo "== JS client: generated code, types, unit tests, bundle (clients/js; the browser test runs below)"
scripts/check-js.sh
echo "== build the service binaries (the system tests in services/testkit run them as processes)"
cargo build --workspace --bins --locked
echo "== schemathesis (for the OpenAPI conformance test, services/testkit/tests/openapi_conformance.rs)"
SCHEMATHESIS="$(scripts/api-conformance.sh)"
export SCHEMATHESIS
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --workspace --locked --doc --quiet
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
drop_test_databases
