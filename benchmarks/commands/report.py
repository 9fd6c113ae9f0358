"""``autorec-bench report``: regenerate results/README.md, CSVs and plots from the raw files only."""

from __future__ import annotations

import argparse

from benchmarks.harness.store import DEFAULT_RAW

HELP = "regenerate results/README.md, *.csv and plots/*.png from the raw result files (pure function of them)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raw", default=str(DEFAULT_RAW), help=f"raw results folder (default {DEFAULT_RAW})")
    p.add_argument("--out", default="results", help="output folder (default results)")
    p.add_argument(
        "--recompute-splits",
        action="store_true",
        help="also recompute every split whose data is at hand and refuse files that do not match",
    )
    p.add_argument("--data-dir", default=None, help="where the datasets are (for --recompute-splits)")
    p.add_argument("--no-plots", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from benchmarks.report import build_report

    files = build_report(
        args.raw, args.out, plots=not args.no_plots, recompute=args.recompute_splits, data_dir=args.data_dir
    )
    print(
        f"report: wrote {len(files)} files under {args.out}/ (README.md, "
        f"{sum(f.suffix == '.csv' for f in files)} CSV, {sum(f.suffix == '.png' for f in files)} PNG)"
    )
    return 0
