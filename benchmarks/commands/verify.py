"""``autorec-bench verify``: per dataset, the best AutoRec vs the best MF (both chosen on validation
RMSE), paired over the same splits, Holm-corrected across datasets (:mod:`benchmarks.verify`).

Exit status: 0 only when AutoRec is significantly better on every dataset verified, 1 otherwise, 2
when a dataset cannot be decided (too few pairs, a missing side, mismatched splits) or on an error.
Each verdict goes to ``<out>/verdicts/<dataset>.json``.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.harness.store import DEFAULT_RAW
from benchmarks.report.tables import MIN_REPLICATES, pval

HELP = (
    "per dataset: best AutoRec vs best MF (chosen on validation RMSE), paired over splits, Holm-corrected; "
    "exit 0 (AutoRec better everywhere) / 1 / 2"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="only this dataset (default: every dataset with results)")
    p.add_argument("--raw", default=str(DEFAULT_RAW), help=f"raw results folder (default {DEFAULT_RAW})")
    p.add_argument("--out", default="results", help="verdicts go to OUT/verdicts/<dataset>.json (default results)")
    p.add_argument(
        "--select",
        default="valid",
        choices=["valid", "test"],
        help="choose each side's best configuration by mean valid RMSE (default, unbiased) or test (optimistic)",
    )
    p.add_argument(
        "--compare",
        default="selection",
        choices=["selection", "refit"],
        help="decide on the selection-time test RMSE (default) or on the refit (train + validation) test RMSE",
    )
    p.add_argument(
        "--split",
        default=None,
        help="only this split group / spec (e.g. random:test_ratio=0.1, canonical:u1-u5); default all",
    )
    p.add_argument(
        "--min-pairs",
        type=int,
        default=MIN_REPLICATES,
        help=f"fewest paired splits accepted (default {MIN_REPLICATES})",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm (default 0.05)")


def run(args: argparse.Namespace) -> int:
    from benchmarks.verify import TESTS_TEXT, verify

    code, results = verify(
        args.raw,
        args.dataset,
        out_dir=args.out,
        select=args.select,
        compare=args.compare,
        split=args.split,
        min_pairs=args.min_pairs,
        alpha=args.alpha,
    )
    for v in results:
        print(f"== {v.dataset}")
        if v.error:
            print(f"autorec-bench verify: {v.dataset}: error: {v.error}", file=sys.stderr)
            continue
        assert v.autorec and v.mf
        print(f"AutoRec: {v.autorec.name} (mean valid {v.autorec.valid_rmse_mean or float('nan'):.4f})")
        print(f"MF:      {v.mf.name} (mean valid {v.mf.valid_rmse_mean or float('nan'):.4f})")
        for p in v.pairs:
            print(
                f"  {p.split} seed {p.seed}: AutoRec {p.autorec_test_rmse:.4f}  MF {p.mf_test_rmse:.4f}"
                f"  diff {p.autorec_test_rmse - p.mf_test_rmse:+.4f}"
            )
        st = v.decisive
        if st is not None:
            print(f"Wilcoxon p = {pval(st.wilcoxon_pvalue)}, Nadeau-Bengio corrected p = {pval(st.nb_pvalue)}")
        for n in v.notes:
            print(f"note: {n}")
        print(v.sentence)
    if any(v.decisive for v in results):
        print(TESTS_TEXT)
    if not results:
        print(f"autorec-bench verify: error: no successful results in {args.raw}", file=sys.stderr)
    print(f"verdicts written to {args.out}/verdicts/; exit status {code}")
    return code
