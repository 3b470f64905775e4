#!/usr/bin/env python3
"""Checks the Grafana dashboard and the Prometheus rules against the code (stdlib only).

    deploy/grafana/check_dashboard.py [--emit-rules FILE]

- deploy/grafana/dashboards/presence.json is a Grafana dashboard: uid, title, panels with unique
  ids and a gridPos inside the 24 columns, targets with a refId and an expr, every datasource the
  provisioned one (deploy/grafana/provisioning/datasources/prometheus.yml);
- every metric name in the dashboard's exprs and in deploy/prometheus/alerts.yml is one the
  services export: the constants named in describe_*! calls under services/*/src (metric_names.rs,
  the facade's http_metrics.rs) and the lease metrics of lease_metric_names!("..."), as
  metrics-exporter-prometheus writes them (names verbatim; histograms as summaries: the name with
  a `quantile` label, `_sum`, `_count`, and `_bucket` only if buckets are configured), `up`, or a
  recording rule of alerts.yml; rate()/increase() only on counters, `_sum` or `_count`;
- the panels cover the required topics and the alerts the required faults; every alert has
  `for`, a severity label, a summary and a description, and alerts_test.yml has a case where it
  fires and one where it does not;
- the compose file, the scrape config and the provisioning agree (ports, mount path).

--emit-rules FILE writes the dashboard's exprs as recording rules, so that
`promtool check rules FILE` checks their PromQL syntax (scripts/check-monitoring.sh).
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/presence.json"
DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy/grafana/provisioning/dashboards/presence.yml"
RULES = ROOT / "deploy/prometheus/alerts.yml"
RULE_TESTS = ROOT / "deploy/prometheus/alerts_test.yml"
SCRAPE = ROOT / "deploy/prometheus/prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
TELEMETRY = ROOT / "services/common/src/telemetry.rs"
LEASE = ROOT / "services/common/src/partition_lease.rs"

# Series every scrape makes, whatever the target exports.
BUILTIN = {"up": "gauge"}

# topic: (panel title pattern, metrics the panel must all use, metrics it must use one of)
PANEL_TOPICS = {
    "online users/devices": (r"online", {"registry_online_users", "registry_online_devices"}, set()),
    "logins/s": (r"login", set(), {"gateway_logins_total", "registry_events_total"}),
    "kicks": (r"kick", set(), {"registry_kicks_sent_total", "gateway_kicks_delivered_total"}),
    "heartbeats/s": (r"heartbeat", {"gateway_heartbeats_total"}, set()),
    "callback lag": (r"callback lag", {"notifier_lag_seconds"}, set()),
    "callback failures": (r"callback failure", {"notifier_callback_retries_total"}, set()),
    "dead letters": (r"dead letter", {"notifier_dead_letters_total"}, set()),
    "registry partitions": (r"partition", {"registry_partitions_owned"}, set()),
    "failovers": (r"failover", {"registry_partitions_taken_total"}, set()),
    "gateway connections against their limit": (
        r"limit",
        {"gateway_connections_open", "gateway_connections_max"},
        set(),
    ),
}
# fault: metrics one alert's expr must all use
ALERT_TOPICS = {
    "a service down": {"up"},
    "callback lag": {"notifier_lag_seconds"},
    "dead letters": {"notifier_dead_letters_total"},
    "registry failovers": {"registry_partitions_taken_total"},
    "a gateway near its connection limit": {"gateway_connections_open", "gateway_connections_max"},
}
SEVERITIES = {"critical", "warning", "info"}
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "text", "row"}

PROMQL_WORDS = {
    "and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
    "group_right", "offset", "inf", "nan",
}
COUNTER_FUNCTIONS = ("rate", "irate", "increase", "resets")

errors: list[str] = []


def fail(message: str) -> None:
    errors.append(message)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------- metric names in the code


def rust_metric_names() -> dict[str, str]:
    """Exported series name -> kind (counter, gauge, summary, summary_part, bucket)."""
    kinds: dict[str, str] = {}  # Rust name -> counter | gauge | histogram
    for path in sorted(ROOT.glob("services/*/src/**/*.rs")):
        text = strip_comments(path.read_text())
        described = dict(
            (const, kind)
            for kind, const in re.findall(r"describe_(counter|gauge|histogram)!\(\s*([A-Z][A-Z0-9_]*)\s*,", text)
        )
        if not described and path.name != "metric_names.rs":
            continue
        for const, value in re.findall(r"\bconst\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:'static\s+)?str\s*=\s*\"([^\"]+)\"", text):
            if const in described or path.name == "metric_names.rs":
                add_kind(kinds, value, described.get(const, "gauge"), path)

    # Lease metrics: lease_metric_names!("<service>") names fields after the macro's suffixes.
    lease = strip_comments(LEASE.read_text())
    suffixes = dict(re.findall(r"(\w+):\s*concat!\(\s*\$service\s*,\s*\"(\w+)\"\s*\)", lease))
    field_kinds = dict(
        (field, kind) for kind, field in re.findall(r"describe_(counter|gauge|histogram)!\(\s*self\.(\w+)", lease)
    )
    if not suffixes or set(suffixes) != set(field_kinds):
        fail(f"{rel(LEASE)}: cannot read lease_metric_names! and LeaseMetricNames::describe (fields {sorted(suffixes)} vs described {sorted(field_kinds)})")
    services = set()
    for path in sorted(ROOT.glob("services/*/src/**/*.rs")):
        services.update(re.findall(r"lease_metric_names!\(\s*\"(\w+)\"\s*\)", strip_comments(path.read_text())))
    if not services:
        fail("no lease_metric_names!(\"...\") use found under services/*/src")
    for service in services:
        for field, suffix in suffixes.items():
            add_kind(kinds, service + suffix, field_kinds.get(field, "gauge"), LEASE)

    # metrics-exporter-prometheus: histograms are summaries unless buckets are set.
    buckets = "set_buckets" in TELEMETRY.read_text()
    exported: dict[str, str] = dict(BUILTIN)
    for name, kind in kinds.items():
        if kind == "histogram":
            exported[name] = "summary"
            exported[name + "_sum"] = "summary_part"
            exported[name + "_count"] = "summary_part"
            if buckets:
                exported[name + "_bucket"] = "bucket"
        else:
            exported[name] = kind
    return exported


def add_kind(kinds: dict[str, str], name: str, kind: str, path: Path) -> None:
    if kinds.get(name, kind) != kind:
        fail(f"{rel(path)}: {name} is described as both {kinds[name]} and {kind}")
    kinds[name] = kind


def strip_comments(rust: str) -> str:
    return re.sub(r"(?m)^\s*//.*$", "", rust)


# ---------------------------------------------------------------- PromQL


def strip_promql(expr: str) -> str:
    """The expr without strings, label matchers, ranges, grouping labels and offsets."""
    s = re.sub(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`", '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?[0-9a-zA-Z_$]+", " ", s)
    return s


def promql_metrics(expr: str) -> set[str]:
    names = set()
    for m in re.finditer(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", strip_promql(expr)):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in PROMQL_WORDS:
            continue
        names.add(name)
    return names


def check_expr(where: str, expr: str, exported: dict[str, str], recorded: set[str]) -> set[str]:
    names = promql_metrics(expr)
    if not names:
        fail(f"{where}: no metric in expr {expr!r}")
    for name in sorted(names):
        if name not in exported and name not in recorded:
            hint = ""
            if name.endswith("_bucket") and name[: -len("_bucket")] in exported:
                hint = " (histograms are exported as summaries: use {quantile=...}, _sum and _count)"
            fail(f"{where}: metric {name} is not exported by any service{hint}")
    stripped = strip_promql(expr)
    for func, name in re.findall(r"\b(" + "|".join(COUNTER_FUNCTIONS) + r")\s*\(\s*([a-zA-Z_:][\w:]*)", stripped):
        kind = exported.get(name)
        if kind is not None and kind not in ("counter", "summary_part", "bucket"):
            fail(f"{where}: {func}() of {name}, a {kind}, not a counter")
    if re.search(r"quantile\s*=", expr):
        if not any(exported.get(n) == "summary" for n in names):
            fail(f"{where}: a quantile label on something that is not a summary: {expr!r}")
    return names


# ---------------------------------------------------------------- small YAML readers


def read_rules(path: Path) -> list[dict]:
    """The rules of a Prometheus rules file written one key per line (as alerts.yml is)."""
    lines = path.read_text().splitlines()
    rules: list[dict] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)- (alert|record):\s*(\S+)\s*$", lines[i])
        i += 1
        if not m:
            continue
        indent = len(m.group(1)) + 2
        rule: dict = {"kind": m.group(2), "name": m.group(3), "labels": {}, "annotations": {}, "line": i}
        while i < len(lines):
            line = lines[i]
            if not line.strip() or line.lstrip().startswith("#"):
                i += 1
                continue
            depth = len(line) - len(line.lstrip())
            if depth < indent:
                break
            km = re.match(r"^\s*([a-z_]+):\s*(.*?)\s*$", line)
            if depth != indent or not km:
                fail(f"{rel(path)}:{i + 1}: cannot read {line.strip()!r}")
                i += 1
                continue
            key, value = km.groups()
            i += 1
            if key in ("labels", "annotations"):
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    sub = re.match(r"^\s*([a-z_]+):\s*(.*?)\s*$", lines[i])
                    if sub:
                        rule[key][sub.group(1)] = unquote(sub.group(2))
                    elif lines[i].strip():
                        fail(f"{rel(path)}:{i + 1}: cannot read {lines[i].strip()!r}")
                    i += 1
            elif key == "expr" and value in ("|", "|-", ">", ">-"):
                block = []
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                rule["expr"] = " ".join(part for part in block if part)
            elif key in ("expr", "for", "keep_firing_for"):
                rule[key] = unquote(value)
            else:
                fail(f"{rel(path)}:{i}: unexpected key {key!r} in rule {rule['name']}")
        rules.append(rule)
    return rules


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def rule_test_cases(path: Path) -> dict[str, dict[str, int]]:
    """alertname -> {"fires": n, "silent": n} over the alert_rule_test cases."""
    cases: dict[str, dict[str, int]] = {}
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*(?:- )?alertname:\s*(\S+)\s*$", line)
        if not m:
            continue
        for follow in lines[i + 1 : i + 4]:
            e = re.match(r"^\s*exp_alerts:\s*(.*?)\s*$", follow)
            if e:
                kind = "silent" if e.group(1) == "[]" else "fires"
                cases.setdefault(m.group(1), {"fires": 0, "silent": 0})[kind] += 1
                break
        else:
            fail(f"{rel(path)}:{i + 1}: alertname {m.group(1)} without exp_alerts")
    return cases


def yaml_scalar(path: Path, key: str) -> list[str]:
    return [unquote(v) for v in re.findall(rf"(?m)^\s*-?\s*{key}:\s*(\S+)\s*$", path.read_text())]


def compose_service(compose: str, name: str) -> str:
    m = re.search(rf"(?ms)^  {re.escape(name)}:\n(.*?)(?=^  \S|^\S|\Z)", compose)
    return m.group(1) if m else ""


# ---------------------------------------------------------------- the checks


def check_dashboard(exported: dict[str, str], recorded: set[str]) -> list[tuple[str, str]]:
    try:
        dash = json.loads(DASHBOARD.read_text())
    except (OSError, json.JSONDecodeError) as err:
        fail(f"{rel(DASHBOARD)}: not JSON: {err}")
        return []
    uids = yaml_scalar(DATASOURCES, "uid")
    if len(uids) != 1:
        fail(f"{rel(DATASOURCES)}: expected one datasource uid, found {uids}")
    ds_uid = uids[0] if uids else None

    for key, kind in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(dash.get(key), kind) or not dash.get(key):
            fail(f"{rel(DASHBOARD)}: `{key}` missing or not a {kind.__name__}")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", str(dash.get("uid", ""))):
        fail(f"{rel(DASHBOARD)}: uid {dash.get('uid')!r} is not a valid Grafana uid")

    panels = list(dash.get("panels") or [])
    for p in list(panels):
        panels.extend(p.get("panels") or [])  # panels of collapsed rows
    ids = [p.get("id") for p in panels]
    for dup in sorted({i for i in ids if ids.count(i) > 1}, key=str):
        fail(f"{rel(DASHBOARD)}: panel id {dup} used more than once")

    cells: dict[tuple[int, int], str] = {}
    exprs: list[tuple[str, str]] = []
    topics_seen = {topic: False for topic in PANEL_TOPICS}
    for p in panels:
        title = p.get("title") or ""
        where = f"{rel(DASHBOARD)}: panel {p.get('id')} {title!r}"
        if not isinstance(p.get("id"), int):
            fail(f"{where}: no integer id")
        if not title:
            fail(f"{where}: no title")
        if p.get("type") not in PANEL_TYPES:
            fail(f"{where}: type {p.get('type')!r} is not one of {sorted(PANEL_TYPES)}")
        grid = p.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in "xywh"):
            fail(f"{where}: gridPos needs integer x, y, w, h")
        elif grid["x"] < 0 or grid["y"] < 0 or grid["w"] < 1 or grid["h"] < 1 or grid["x"] + grid["w"] > 24:
            fail(f"{where}: gridPos {grid} is outside the 24 columns")
        else:
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    if (x, y) in cells:
                        fail(f"{where}: overlaps panel {cells[(x, y)]!r}")
                        break
                    cells[(x, y)] = title
                else:
                    continue
                break
        if p.get("type") in ("row", "text"):
            continue
        if (p.get("datasource") or {}).get("uid") != ds_uid:
            fail(f"{where}: datasource {p.get('datasource')} is not the provisioned uid {ds_uid!r}")
        targets = p.get("targets") or []
        if not targets:
            fail(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            fail(f"{where}: targets need unique refIds, got {refs}")
        used: set[str] = set()
        for t in targets:
            expr = (t.get("expr") or "").strip()
            if not expr:
                fail(f"{where}: target {t.get('refId')} has no expr")
                continue
            if "datasource" in t and (t["datasource"] or {}).get("uid") != ds_uid:
                fail(f"{where}: target {t.get('refId')} datasource is not the provisioned uid {ds_uid!r}")
            used |= check_expr(f"{where} target {t.get('refId')}", expr, exported, recorded)
            exprs.append((f"panel_{p.get('id')}_{t.get('refId')}", expr))
        for topic, (pattern, all_of, any_of) in PANEL_TOPICS.items():
            if re.search(pattern, title, re.I) and all_of <= used and (not any_of or any_of & used):
                topics_seen[topic] = True
    for topic, seen in topics_seen.items():
        if not seen:
            pattern, all_of, any_of = PANEL_TOPICS[topic]
            need = sorted(all_of) + ([f"one of {sorted(any_of)}"] if any_of else [])
            fail(f"{rel(DASHBOARD)}: no panel for {topic} (a title matching /{pattern}/i using {', '.join(need)})")
    return exprs


def check_rules(exported: dict[str, str]) -> set[str]:
    rules = read_rules(RULES)
    recorded = {r["name"] for r in rules if r["kind"] == "record"}
    alerts = [r for r in rules if r["kind"] == "alert"]
    if not alerts:
        fail(f"{rel(RULES)}: no alert rules found")
    cases = rule_test_cases(RULE_TESTS)
    names_by_alert = {}
    for r in rules:
        where = f"{rel(RULES)}:{r['line']}: {r['kind']} {r['name']}"
        if not r.get("expr"):
            fail(f"{where}: no expr")
            continue
        names = check_expr(where, r["expr"], exported, recorded - {r["name"]})
        if r["kind"] == "record":
            continue
        names_by_alert[r["name"]] = names
        if not r.get("for"):
            fail(f"{where}: no `for:`")
        if r["labels"].get("severity") not in SEVERITIES:
            fail(f"{where}: severity label {r['labels'].get('severity')!r} is not one of {sorted(SEVERITIES)}")
        for key in ("summary", "description"):
            if len(r["annotations"].get(key, "")) < 10:
                fail(f"{where}: no {key} annotation")
        seen = cases.get(r["name"], {"fires": 0, "silent": 0})
        if not seen["fires"] or not seen["silent"]:
            fail(f"{rel(RULE_TESTS)}: alert {r['name']} needs a case where it fires and one where it does not (has {seen})")
    for name in sorted(set(cases) - set(names_by_alert)):
        fail(f"{rel(RULE_TESTS)}: tests alert {name}, which {rel(RULES)} does not define")
    for topic, need in ALERT_TOPICS.items():
        if not any(need <= names for names in names_by_alert.values()):
            fail(f"{rel(RULES)}: no alert for {topic} (one using {sorted(need)})")
    print(f"{rel(RULES)}: {len(alerts)} alerts, {len(recorded)} recording rules", file=sys.stderr)
    print(f"RULES={len(rules)}")
    return recorded


def check_wiring() -> None:
    compose = COMPOSE.read_text()
    # Scrape targets: each job's DNS name is a compose service whose metrics port is the one scraped.
    scrape = SCRAPE.read_text()
    jobs = re.findall(r"-\s*names:\s*\[\s*([\w-]+)\s*\]\s*\n\s*type:\s*A\s*\n\s*port:\s*(\d+)", scrape)
    if len(jobs) < 4:
        fail(f"{rel(SCRAPE)}: expected DNS discovery (type A, port) for the four services, found {jobs}")
    for service, port in jobs:
        block = compose_service(compose, service)
        if not block:
            fail(f"{rel(SCRAPE)}: scrapes {service}, which is not a service of {rel(COMPOSE)}")
        elif not re.search(rf"_METRICS_ADDR:\s*\"?0\.0\.0\.0:{port}\b", block):
            fail(f"{rel(SCRAPE)}: scrapes {service} on port {port}, but its *_METRICS_ADDR in {rel(COMPOSE)} differs")
    # Grafana loads the dashboards from where compose mounts them.
    paths = yaml_scalar(DASHBOARD_PROVIDERS, "path")
    mounts = re.findall(r"\./deploy/grafana/dashboards:([^:\"\]\s,]+)", compose)
    if not paths or not mounts or any(p not in mounts for p in paths):
        fail(f"{rel(DASHBOARD_PROVIDERS)}: path {paths} is not where {rel(COMPOSE)} mounts deploy/grafana/dashboards ({mounts})")


def main() -> int:
    emit = None
    if len(sys.argv) == 3 and sys.argv[1] == "--emit-rules":
        emit = Path(sys.argv[2])
    elif len(sys.argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    exported = rust_metric_names()
    recorded = check_rules(exported)
    exprs = check_dashboard(exported, recorded)
    check_wiring()
    if emit:
        rules = [{"record": f"dashboard:{name}", "expr": fill_grafana_variables(expr)} for name, expr in exprs]
        emit.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1) + "\n")
    print(
        f"{rel(DASHBOARD)}: {len(exprs)} exprs; {len(exported)} exported series names known from services/*/src",
        file=sys.stderr,
    )
    for message in errors:
        print(f"FAIL {message}", file=sys.stderr)
    return 1 if errors else 0


def fill_grafana_variables(expr: str) -> str:
    return re.sub(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}", "1m", expr)


if __name__ == "__main__":
    sys.exit(main())
