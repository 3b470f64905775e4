#!/usr/bin/env bash
# Renders docs/img/*.png from raw benchmark results (matplotlib in a private virtualenv under
# target/, installed on first use; the code is scripts/plots.py). Usage:
#   scripts/plots.sh [SOAK_CSV [PNG_NAME]]  the soak's RSS and callback lag over time
#                                           (target/bench/soak.csv from scripts/soak.sh; soak.png)
#   scripts/plots.sh login-sweep [CSV]      login-latency.png (target/bench/login-sweep.csv from
#                                           scripts/bench-login-sweep.sh)
#   scripts/plots.sh idle-sweep [CSV]       memory-per-device.png (target/bench/idle-sweep.csv from
#                                           scripts/bench-idle-sweep.sh)
#   scripts/plots.sh dashboard [DIR]        dashboard.png (target/bench/dashboard from
#                                           scripts/dashboard-render.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/plots-venv
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet matplotlib
fi
mkdir -p docs/img
plots=("$venv/bin/python" scripts/plots.py --out docs/img)
case "${1:-}" in
  login-sweep) "${plots[@]}" --login-sweep "${2:-target/bench/login-sweep.csv}" ;;
  idle-sweep) "${plots[@]}" --idle-sweep "${2:-target/bench/idle-sweep.csv}" ;;
  dashboard) "${plots[@]}" --dashboard "${2:-target/bench/dashboard}" ;;
  *) "${plots[@]}" --soak "${1:-target/bench/soak.csv}" --soak-name "${2:-soak.png}" ;;
esac
