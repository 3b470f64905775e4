"""Prometheus side of scripts/dashboard-render.sh (standard library only).

config: a Prometheus config made from deploy/prometheus/prometheus.yml for a run on loopback:
  the same jobs and rule files, each job's Docker DNS discovery replaced by static targets on
  the ports this run uses (--target JOB=HOST:PORT[,HOST:PORT...], one per job of the repo's file).
query: every panel of the Grafana dashboard, each target's own expression (Grafana's variables
  replaced by fixed values), over a time range through /api/v1/query_range; one JSON file per
  panel plus the dashboard and the run's description, for scripts/plots.py --dashboard.
"""
import argparse
import json
import pathlib
import re
import shutil
import sys
import time
import urllib.parse
import urllib.request


def repo_jobs(config: pathlib.Path) -> list[str]:
    return re.findall(r"^\s*-\s*job_name:\s*(\S+)\s*$", config.read_text(), re.M)


def parse_targets(pairs: list[str]) -> dict[str, list[str]]:
    targets = {}
    for pair in pairs:
        job, _, hosts = pair.partition("=")
        targets[job] = [h for h in hosts.split(",") if h]
    return targets


def config_text(source: pathlib.Path, targets: dict[str, list[str]], interval: str) -> str:
    jobs = repo_jobs(source)
    missing = [j for j in jobs if j not in targets]
    unknown = [j for j in targets if j not in jobs]
    if missing or unknown:
        sys.exit(f"jobs of {source} without --target: {missing}; --target for jobs it lacks: {unknown}")
    rules = re.findall(r"^rule_files:\s*\n((?:\s+-\s*\S+\s*\n)+)", source.read_text(), re.M)
    rule_files = [source.parent.resolve() / f for f in re.findall(r"-\s*(\S+)", rules[0])] if rules else []
    lines = [f"# Made by scripts/dashboard-query.py from {source}: its jobs and rules, static targets.",
             "global:", f"  scrape_interval: {interval}", f"  evaluation_interval: {interval}", "rule_files:"]
    lines += [f"  - {f}" for f in rule_files] or ["  []"]
    lines.append("scrape_configs:")
    for job in jobs:
        lines += [f"  - job_name: {job}", "    static_configs:", f"      - targets: [{', '.join(targets[job])}]"]
    return "\n".join(lines) + "\n"


def cmd_config(args: argparse.Namespace) -> None:
    args.out.write_text(config_text(args.source, parse_targets(args.target), args.scrape_interval))
    print(f"wrote {args.out}")


def expand(expr: str, rate_interval: str, step: int) -> str:
    """Grafana's variables as fixed values ($__rate_interval: 4 scrape intervals)."""
    for name, value in (("$__rate_interval", rate_interval), ("$__interval", f"{step}s"),
                        ("${__rate_interval}", rate_interval), ("${__interval}", f"{step}s")):
        expr = expr.replace(name, value)
    return expr


def query_range(url: str, expr: str, start: float, end: float, step: int) -> dict:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as answer:
        return json.load(answer)


def panels(dashboard: dict) -> list[dict]:
    """Every panel with targets, collapsed rows' panels included."""
    found = []
    for panel in dashboard["panels"]:
        found += [panel] if panel.get("targets") else []
        found += [p for p in panel.get("panels", []) if p.get("targets")]
    return found


def query_panel(args: argparse.Namespace, panel: dict) -> dict:
    results = []
    for target in panel["targets"]:
        expr = expand(target["expr"], args.rate_interval, args.step)
        answer = query_range(args.url, expr, args.start, args.end, args.step)
        if answer.get("status") != "success":
            sys.exit(f"panel {panel['title']!r}: {expr}: {answer}")
        results.append({"refId": target.get("refId"), "expr": target["expr"], "query": expr,
                        "legendFormat": target.get("legendFormat", ""), "series": answer["data"]["result"]})
    return {"id": panel["id"], "title": panel["title"], "results": results}


def cmd_query(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("panel-*.json"):
        old.unlink()
    shutil.copy(args.dashboard, args.out / "dashboard.json")
    dashboard = json.loads(args.dashboard.read_text())
    empty = []
    for panel in panels(dashboard):
        data = query_panel(args, panel)
        (args.out / f"panel-{panel['id']}.json").write_text(json.dumps(data))
        if not any(r["series"] for r in data["results"]):
            empty.append(panel["title"])
    run = {"start": args.start, "end": args.end, "load_start": args.load_start or args.start, "step": args.step,
           "rate_interval": args.rate_interval, "marks": json.loads(args.marks) if args.marks else {},
           "note": args.note, "queried_at": time.time()}
    (args.out / "run.json").write_text(json.dumps(run, indent=1))
    print(f"wrote {len(panels(dashboard))} panels to {args.out}; without data: {empty or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="a Prometheus config for this run")
    config.add_argument("--source", type=pathlib.Path, default=pathlib.Path("deploy/prometheus/prometheus.yml"))
    config.add_argument("--target", action="append", default=[], help="JOB=HOST:PORT[,HOST:PORT...]")
    config.add_argument("--scrape-interval", default="5s")
    config.add_argument("--out", type=pathlib.Path, required=True)
    config.set_defaults(func=cmd_config)
    query = sub.add_parser("query", help="every panel's expressions over a time range")
    query.add_argument("--url", default="http://127.0.0.1:19090")
    query.add_argument("--dashboard", type=pathlib.Path, default=pathlib.Path("deploy/grafana/dashboards/presence.json"))
    query.add_argument("--start", type=float, required=True, help="Unix seconds")
    query.add_argument("--end", type=float, required=True, help="Unix seconds")
    query.add_argument("--step", type=int, default=5, help="seconds")
    query.add_argument("--rate-interval", default="20s", help="value of $__rate_interval")
    query.add_argument("--load-start", type=float, help="Unix seconds: when the load started (the x axis' 0)")
    query.add_argument("--marks", help='JSON {"label": [start, end], ...}: phases of the load (Unix s)')
    query.add_argument("--note", default="", help="what the load was, for the picture's subtitle")
    query.add_argument("--out", type=pathlib.Path, required=True)
    query.set_defaults(func=cmd_query)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
