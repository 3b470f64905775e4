#!/usr/bin/env bash
# Renders docs/img/*.png from raw benchmark results (matplotlib in a private virtualenv under
# target/, installed on first use). Today: the soak run's RSS and callback lag over time, from
# target/bench/soak.csv (scripts/soak.sh). Usage: scripts/plots.sh [SOAK_CSV [PNG_NAME]]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/plots-venv
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet matplotlib
fi
mkdir -p docs/img
"$venv/bin/python" scripts/plots.py --soak "${1:-target/bench/soak.csv}" --soak-name "${2:-soak.png}" --out docs/img
