#!/usr/bin/env bash
# The JavaScript client (clients/js): installs its packages from the lock file, checks that the
# generated protobuf code matches proto/, type-checks, runs its unit tests and builds the bundle
# that the demo page and the browser test (services/testkit/tests/web_client.rs) load. Installs
# Debian's chromium for that test when it is missing (as root with apt-get); playwright-core
# drives it and never downloads a browser of its own.
set -euo pipefail
cd "$(dirname "$0")/../clients/js"

command -v npm >/dev/null || { echo "check-js: node and npm are needed (Node.js 20 or later)" >&2; exit 1; }
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "chromium missing: apt-get install chromium (for the browser test)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
  [ -x /usr/bin/chromium ] || { echo "check-js: /usr/bin/chromium not found (Debian: apt-get install chromium)" >&2; exit 1; }
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm ci --no-audit --no-fund --loglevel=error
npm run --silent check:generated
npm run --silent typecheck
npm test --silent
npm run --silent build
echo "js client: OK"
