#!/usr/bin/env bash
# Installs Schemathesis (pinned, from PyPI) into a venv under the cargo target dir and prints the
# path of its `schemathesis` executable. scripts/test.sh exports it as SCHEMATHESIS for the
# conformance test (services/testkit/tests/openapi_conformance.rs). Idempotent: a venv that
# already holds the pinned version is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
venv="${CARGO_TARGET_DIR:-target}/venv-schemathesis"
exe="$venv/bin/schemathesis"

if ! "$venv/bin/python" -m pip show schemathesis 2>/dev/null | grep -qx "Version: $VERSION"; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
fi
# Absolute, so the test finds it whatever its working directory.
realpath "$exe"
