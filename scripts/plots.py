"""Plots for docs/benchmarks.md from raw benchmark results (run through scripts/plots.sh)."""
import argparse
import csv
import json
import math
import pathlib
import re
import statistics
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402


def soak(path: pathlib.Path, out: pathlib.Path, name: str) -> None:
    rows = [r for r in csv.DictReader(path.open()) if r["minute"] != "end"]
    minutes = [int(r["minute"]) for r in rows]
    services = [c[: -len("_rss_kib")] for c in rows[0] if c.endswith("_rss_kib")]
    fig, (rss, lag) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=[3, 1])
    for s in services:
        rss.plot(minutes, [int(r[f"{s}_rss_kib"]) / 1024 for r in rows], marker=".", label=s)
    rss.set_ylabel("RSS (MiB)")
    rss.set_ylim(bottom=0)
    rss.legend(loc="upper left", ncol=3, fontsize="small")
    rss.grid(alpha=0.3)
    rss.set_title("Soak run (scripts/soak.sh): memory and callback lag, sampled each minute")
    lag.plot(minutes, [max(int(r["lag"]), 0) for r in rows], marker=".", color="tab:red")
    lag.set_ylabel("callback lag (events)")
    lag.set_xlabel("minute")
    lag.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    print(f"wrote {out / name}")


def medians_by(rows: list[dict], key: str, fields: list[str]) -> list[dict]:
    """One row per value of `key` (first-seen order), each field the median over its rows."""
    out = []
    for value in dict.fromkeys(r[key] for r in rows):
        mine = [r for r in rows if r[key] == value]
        out.append({key: float(value), **{f: statistics.median(float(r[f]) for r in mine) for f in fields}})
    return out


def login_sweep(path: pathlib.Path, out: pathlib.Path, name: str) -> None:
    """Login latency percentiles and achieved rate against offered rate (bench-login-sweep.sh)."""
    rows = list(csv.DictReader(path.open()))
    runs = len({r["run"] for r in rows})
    steps = medians_by(rows, "offered_per_s", ["achieved_per_s", "p50_ms", "p90_ms", "p99_ms", "devices"])
    paced = [s for s in steps if s["offered_per_s"] > 0]
    sat = next((s for s in steps if s["offered_per_s"] == 0), None)
    fig, (lat, got) = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True, height_ratios=[3, 2])
    offered = [s["offered_per_s"] for s in paced]
    for field, style in (("p50_ms", "o-"), ("p90_ms", "s-"), ("p99_ms", "^-")):
        line, = lat.plot(offered, [s[field] for s in paced], style, label=field[:3])
        if sat:
            lat.plot([sat["achieved_per_s"]], [sat[field]], style[0], color=line.get_color(), mfc="none", ms=9)
    if sat:
        lat.plot([], [], "o", color="grey", mfc="none", ms=9, label=f"unpaced storm ({sat['devices']:.0f} devices), at its achieved rate")
        for ax in (lat, got):
            ax.axvspan(sat["achieved_per_s"], max(offered) * 1.05, color="tab:red", alpha=0.06, lw=0)
        lat.text(0.98, 0.04, "shaded: offered > the unpaced storm's rate;\na step queues for its whole length",
                 ha="right", va="bottom", fontsize="small", color="tab:red", transform=lat.transAxes)
    lat.set_yscale("log")
    lat.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lat.set_ylabel("connect + login latency (ms, log scale)")
    lat.grid(alpha=0.3, which="both")
    lat.legend(loc="upper left", fontsize="small")
    lat.set_title(f"Login latency against offered load (scripts/bench-login-sweep.sh, {'median of ' + str(runs) + ' runs' if runs > 1 else '1 run'})\n"
                  "gateways, registry, Postgres, notifier and the load generator on the same 2 cores", fontsize="medium")
    got.plot(offered, [s["achieved_per_s"] for s in paced], "o-", color="tab:green", label="achieved")
    top = max(offered + [sat["achieved_per_s"] if sat else 0])
    got.plot([0, top], [0, top], ":", color="grey", label="achieved = offered")
    if sat:
        got.axhline(sat["achieved_per_s"], ls="--", color="tab:red", label=f"saturation (unpaced): {sat['achieved_per_s']:.0f}/s")
    got.set_ylabel("achieved logins/s")
    got.set_xlabel("offered logins/s (paced)")
    got.set_xlim(0, max(offered) * 1.05)
    got.set_ylim(bottom=0)
    got.grid(alpha=0.3)
    got.legend(loc="upper left", fontsize="small")
    save(fig, out / name)


def idle_sweep(path: pathlib.Path, out: pathlib.Path, name: str) -> None:
    """RSS bytes per idle device against devices held, with Mosquitto's per connection (bench-idle-sweep.sh)."""
    rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(path.open())]
    held = [r["held"] for r in rows]
    gw = [r["gateway_bytes_per_device"] for r in rows]
    both = [r["gateway_bytes_per_device"] + r["registry_bytes_per_device"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(held, both, "s-", color="tab:purple", label="gateways + registry")
    ax.plot(held, gw, "o-", color="tab:blue", label="gateways (sum of processes)")
    # Mosquitto holds min(N, 15k): the sizes above 15k measure it again at 15k (their median here).
    mqtt = [(m["mqtt_connections"], m["mqtt_bytes_per_connection"])
            for m in medians_by(rows, "mqtt_connections", ["mqtt_bytes_per_connection"])]
    ax.plot(*zip(*mqtt), "^-", color="tab:orange", label="Mosquitto 2 (one process, at most 15k connections)")
    for points, color in ((zip(held, gw), "tab:blue"), (mqtt, "tab:orange")):
        for x, y in points:
            ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, -14), ha="center",
                        fontsize="small", color=color)
    ax.axhline(2048, ls="--", color="grey", lw=1, label="target: 2 KiB per device in the gateways")
    ax.set_xscale("log")
    ax.set_xticks(held, [f"{x / 1000:g}k\n{r['gateways']:.0f} gateways" for x, r in zip(held, rows)], fontsize="small")
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    ax.set_xlabel("idle devices (connections) held, log scale")
    ax.set_ylabel("user-space RSS per device (bytes)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize="small")
    runs = int(rows[0]["runs"]) if rows else 0
    ax.set_title(f"Memory per idle device (scripts/bench-idle-sweep.sh, {runs} run(s) per size)\n"
                 "RSS with the devices minus RSS before, per device; one machine, 2 cores", fontsize="medium")
    save(fig, out / name)


def save(fig, path: pathlib.Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


# The dashboard: each panel of the Grafana JSON where its gridPos puts it (24 columns), drawn from
# the Prometheus answers that scripts/dashboard-query.py saved.
def si(value: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}" if value else "0"


def fmt_value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == "s":
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    return si(value) + (" /s" if unit == "reqps" else "")


def legend(fmt: str, metric: dict) -> str:
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in metric.items()) + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def series(result: dict, t0: float):
    """(label, minutes since t0, values) of each series a target's query returned."""
    for s in result["series"]:
        xs = [(float(t) - t0) / 60 for t, _ in s["values"]]
        ys = [float(v) for _, v in s["values"]]
        yield legend(result["legendFormat"], s["metric"]), xs, ys


def all_panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


# Layout in inches: a Grafana grid unit is WIDTH / 24 wide and UNIT tall; each panel keeps a band
# for its title, a margin for the y tick labels and a band below for the x ticks and the legend.
WIDTH, UNIT, HEADER = 20.0, 0.42, 1.6


def fig_rect(fig, left: float, top: float, width: float, height: float) -> list[float]:
    """[left, bottom, width, height] in figure fractions of a rectangle given in inches from the top left."""
    w, h = fig.get_size_inches()
    return [left / w, 1 - (top + height) / h, width / w, height / h]


def panel_rect(fig, grid: dict, axes: bool) -> list[float]:
    left, top = grid["x"] / 24 * WIDTH + 0.1, HEADER + grid["y"] * UNIT + 0.05
    width, height = grid["w"] / 24 * WIDTH - 0.2, grid["h"] * UNIT - 0.1
    if not axes:
        return fig_rect(fig, left, top + 0.3, width, height - 0.3)
    return fig_rect(fig, left + 0.65, top + 0.3, width - 0.75, height - 0.3 - 0.75)


def draw_row(fig, panel: dict) -> None:
    _, bottom, _, height = fig_rect(fig, 0, HEADER + panel["gridPos"]["y"] * UNIT, 1, UNIT)
    fig.text(0.006, bottom + height / 2, panel["title"], fontsize=14, fontweight="bold", va="center")
    fig.add_artist(plt.Line2D([0.006, 0.994], [bottom, bottom], color="#bbbbbb", lw=0.8))


def draw_stat(fig, panel: dict, data: dict, t0: float) -> None:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    found = [(label, xs, ys) for r in data["results"] for label, xs, ys in series(r, t0)]
    box = panel_rect(fig, panel["gridPos"], axes=False)
    frame = fig.add_axes(box)
    frame.set_xticks([])
    frame.set_yticks([])
    frame.set_title(panel["title"], fontsize=11, loc="left")
    if not found:
        frame.text(0.5, 0.5, "No data", ha="center", va="center", color="grey", transform=frame.transAxes)
        return
    width = box[2] / len(found)
    for i, (label, xs, ys) in enumerate(found):
        ax = fig.add_axes([box[0] + i * width, box[1], width, box[3]], frameon=False)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.fill_between(xs, ys, color="tab:green", alpha=0.15, lw=0)
        ax.set_ylim(bottom=min(0, min(ys)), top=max(max(ys), 1e-9) * 2.2)
        last = next((y for y in reversed(ys) if not math.isnan(y)), float("nan"))
        ax.text(0.5, 0.62, fmt_value(last, unit), ha="center", va="center", fontsize=17, fontweight="bold",
                color="tab:green", transform=ax.transAxes)
        ax.text(0.5, 0.22, label.replace(" ", "\n") if len(found) > 2 else label, ha="center", va="center",
                fontsize=8, transform=ax.transAxes)


def draw_timeseries(fig, panel: dict, data: dict, t0: float, run: dict) -> None:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    ax = fig.add_axes(panel_rect(fig, panel["gridPos"], axes=True))
    ax.set_title(panel["title"], fontsize=11, loc="left", x=-0.04 * 24 / panel["gridPos"]["w"])
    drawn = 0
    for label, xs, ys in (item for r in data["results"] for item in series(r, t0)):
        ax.plot(xs, ys, lw=1.2, label=label)
        drawn += 1
    for start, end in run.get("marks", {}).values():
        ax.axvspan((start - t0) / 60, (end - t0) / 60, color="tab:red", alpha=0.08, lw=0)
    ax.set_xlim((run["start"] - t0) / 60, (run["end"] - t0) / 60)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_value(v, unit)))
    if not drawn:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", color="grey", transform=ax.transAxes)
        return
    ax.set_ylim(bottom=min(0, ax.get_ylim()[0]))
    ax.legend(loc="upper left", bbox_to_anchor=(-0.04 * 24 / panel["gridPos"]["w"], -0.1), ncol=4, fontsize=8,
              frameon=False, handlelength=1.2, columnspacing=1.2)


def dashboard(path: pathlib.Path, out: pathlib.Path, name: str) -> None:
    """docs/img/dashboard.png from a directory written by scripts/dashboard-query.py query."""
    board = json.loads((path / "dashboard.json").read_text())
    run = json.loads((path / "run.json").read_text())
    t0 = run.get("load_start", run["start"])
    panels = all_panels(board)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(WIDTH, HEADER + rows * UNIT + 0.1))
    below_top = lambda inches: 1 - inches / fig.get_size_inches()[1]  # noqa: E731
    fig.text(0.006, below_top(0.12), f"Grafana dashboard \"{board['title']}\" "
             "(deploy/grafana/dashboards/presence.json), drawn from a real run", fontsize=17, fontweight="bold", va="top")
    subtitle = [
        "Rendered by scripts/dashboard-render.sh from a private Prometheus' data, because Grafana cannot run here: "
        f"each panel's own PromQL ($__rate_interval = {run['rate_interval']}), matplotlib, not a Grafana screenshot.",
        f"Load: {run['note']}.",
        "x axis: minutes since the load started; the range ends as the load stops (stat panels: the last value). "
        f"Red band: {', '.join(run.get('marks', {})) or '-'}. Services, load generators and Prometheus on one machine, 2 cores.",
    ]
    fig.text(0.006, below_top(0.5), "\n".join(textwrap.fill(line.replace(" %", "\u00a0%"), 215) for line in subtitle),
             fontsize=11, color="#333333", va="top")
    for panel in panels:
        if panel["type"] == "row":
            draw_row(fig, panel)
            continue
        data = json.loads((path / f"panel-{panel['id']}.json").read_text())
        if panel["type"] == "stat":
            draw_stat(fig, panel, data, t0)
        else:
            draw_timeseries(fig, panel, data, t0, run)
    fig.savefig(out / name, dpi=80)
    plt.close(fig)
    print(f"wrote {out / name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--soak", type=pathlib.Path, help="soak.csv from scripts/soak.sh")
    parser.add_argument("--soak-name", default="soak.png", help="file name of the soak plot")
    parser.add_argument("--login-sweep", type=pathlib.Path, help="login-sweep.csv from scripts/bench-login-sweep.sh")
    parser.add_argument("--idle-sweep", type=pathlib.Path, help="idle-sweep.csv from scripts/bench-idle-sweep.sh")
    parser.add_argument("--dashboard", type=pathlib.Path, help="directory from scripts/dashboard-render.sh")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/img"))
    args = parser.parse_args()
    if args.soak:
        soak(args.soak, args.out, args.soak_name)
    if args.login_sweep:
        login_sweep(args.login_sweep, args.out, "login-latency.png")
    if args.idle_sweep:
        idle_sweep(args.idle_sweep, args.out, "memory-per-device.png")
    if args.dashboard:
        dashboard(args.dashboard, args.out, "dashboard.png")


if __name__ == "__main__":
    main()
