"""``autorec-bench verify``: best AutoRec vs best tuned MF on the same splits, paired test.

Exit status: 0 when AutoRec is better with paired t-test p < alpha, 1 when it is not, 2 on an
error (missing results, too few pairs).  The verdict goes to ``results/verdict.json``.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import harness

HELP = "best AutoRec vs best tuned MF (selected on validation RMSE), paired over seeds/folds; exit 0/1/2"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="ml-100k", help="dataset (default ml-100k)")
    p.add_argument("--raw", default=str(harness.DEFAULT_RAW), help="raw results folder (default results/raw)")
    p.add_argument("--out", default="results", help="where verdict.json goes (default results)")
    p.add_argument("--select", default="valid", choices=["valid", "test"],
                   help="choose each side's best configuration by mean valid RMSE (default, unbiased) or test")
    p.add_argument("--split", default=None,
                   help="only this split group / spec (e.g. random:test_ratio=0.1, canonical:u1-u5); default all")
    from benchmarks.report import MIN_REPLICATES
    p.add_argument("--min-pairs", type=int, default=MIN_REPLICATES,
                   help=f"fewest paired splits accepted (default {MIN_REPLICATES})")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")


def run(args: argparse.Namespace) -> int:
    from benchmarks.verify import verify
    code, v = verify(args.raw, args.dataset, out_dir=args.out, select=args.select, split=args.split,
                     min_pairs=args.min_pairs, alpha=args.alpha)
    if code == 2:
        print(f"autorec-bench verify: error: {v.get('error')}", file=sys.stderr)
    else:
        print(f"AutoRec: {v['autorec']['name']} (mean valid {v['autorec']['valid_rmse_mean']:.4f})")
        print(f"MF:      {v['mf']['name']} (mean valid {v['mf']['valid_rmse_mean']:.4f})")
        for p in v["pairs"]:
            print(f"  {p['split']} seed {p['seed']}: AutoRec {p['autorec_test_rmse']:.4f}  MF {p['mf_test_rmse']:.4f}"
                  f"  diff {p['autorec_test_rmse'] - p['mf_test_rmse']:+.4f}")
        for n in v.get("notes", []):
            print(f"note: {n}")
        print(v["sentence"])
    print(f"verdict written to {args.out}/verdict.json")
    return code
