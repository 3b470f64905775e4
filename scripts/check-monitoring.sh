#!/usr/bin/env bash
# Checks the monitoring profile (docs/monitoring.md): the Prometheus config and alert rules with
# promtool, the alerts' unit tests, and the Grafana dashboard against the services' metric names.
# Needs promtool (Debian: the prometheus package); as root with apt-get it installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "promtool missing: apt-get install prometheus (its daemon is not needed, only promtool)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
  command -v promtool >/dev/null || {
    echo "check-monitoring: promtool not found; install it (Debian: apt-get install prometheus) and run again" >&2
    exit 1
  }
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "-- promtool check config deploy/prometheus/prometheus.yml"
promtool check config deploy/prometheus/prometheus.yml
echo "-- promtool check rules deploy/prometheus/alerts.yml"
promtool check rules deploy/prometheus/alerts.yml | tee "$tmp/rules.out"
echo "-- promtool test rules deploy/prometheus/alerts_test.yml"
promtool test rules deploy/prometheus/alerts_test.yml

echo "-- deploy/grafana/check_dashboard.py (dashboard, metric names, rule annotations and tests, compose wiring)"
python3 deploy/grafana/check_dashboard.py --emit-rules "$tmp/dashboard-rules.json" >"$tmp/check.out"
# The rules the checker read must be all the rules promtool found.
read_rules="$(sed -n 's/^RULES=//p' "$tmp/check.out")"
found_rules="$(sed -n 's/.*SUCCESS: \([0-9]*\) rules found.*/\1/p' "$tmp/rules.out" | head -n1)"
if [ -z "$read_rules" ] || [ "$read_rules" != "$found_rules" ]; then
  echo "check-monitoring: check_dashboard.py read ${read_rules:-no} rules, promtool found ${found_rules:-none}" >&2
  exit 1
fi
echo "-- promtool check rules on the dashboard's exprs (PromQL syntax)"
promtool check rules "$tmp/dashboard-rules.json"
echo "monitoring: OK"
