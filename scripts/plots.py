"""Plots for docs/benchmarks.md from raw benchmark results (run through scripts/plots.sh)."""
import argparse
import csv
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--soak", type=pathlib.Path, help="soak.csv from scripts/soak.sh")
    parser.add_argument("--soak-name", default="soak.png", help="file name of the soak plot")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/img"))
    args = parser.parse_args()
    if args.soak:
        soak(args.soak, args.out, args.soak_name)


if __name__ == "__main__":
    main()
