"""``autorec-bench run``: train and evaluate one model on one dataset/split for several seeds.

Each (run, seed) runs in a fresh worker process and writes ONE record under ``--out`` (see
:mod:`benchmarks.harness`).  Everything (dataset, data, split, model, backend, optional framework,
every parameter, devices, the output folder) is checked for every seed before the first one
trains.  A finished run is skipped; a failed one is tried again.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from autorec.env import check_threads
from autorec.models.config import parse_assignments
from benchmarks import harness
from benchmarks.sweep import parse_seeds, read_params_file

HELP = "train + evaluate one model for several seeds; one raw JSON result per (run, seed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        required=True,
        help="ml-100k, ml-1m, ..., or synthetic:NU,NI,NR[,SEED] / synthetic:ml-1m@0.01[,SEED]",
    )
    p.add_argument(
        "--split",
        default="random",
        help="KIND[:ARGS]: random[:test_ratio=0.1], d2l-random, seq-aware, canonical:u1, kfold:k=5,fold=0, "
        "files:TRAIN.csv,TEST.csv (default: random)",
    )
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2 or 0-4 (default: 0)")
    p.add_argument(
        "--model",
        required=True,
        help="i-autorec, u-autorec, autorec, als, biased-mf, d2l-mf, bias-only, global-mean, surprise-svd, ... "
        "or module:Class",
    )
    p.add_argument("--backend", default=None, help="torch, mxnet, numpy, surprise (default: the model's first)")
    p.add_argument(
        "--devices",
        default=None,
        help="cpu (default), cuda:0, cpu(0),cpu(1) (MXNet contexts), cpu,cpu (torch DDP, 2 processes)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model parameter (JSON value or plain text), repeatable: --set lr=0.001 --set hidden=[500]",
    )
    p.add_argument("--config", default=None, metavar="FILE.toml", help="model parameters from a TOML file; --set wins")
    p.add_argument("--valid-ratio", type=float, default=0.05, help="validation share of train (default 0.05)")
    p.add_argument(
        "--cold-start",
        default="global-mean",
        help="test cold-start policy: global-mean (default), constant (3), constant:V",
    )
    p.add_argument(
        "--refit", action="store_true", help="also retrain the configuration on train + validation, score it on test"
    )
    p.add_argument(
        "--rating-scale", default=None, metavar="LOW,HIGH[,STEP]", help="the scale of a custom (files:) dataset"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per run (default: $AUTOREC_THREADS or $OMP_NUM_THREADS, "
        "else the cores left idle when a fit starts)",
    )
    p.add_argument("--timeout", type=float, default=None, help="kill a run after this many seconds (a failure)")
    p.add_argument("--label", default=None, help="a label shown in tables instead of the model name")
    p.add_argument("--data-dir", default=None, help="folder holding the datasets (else the usual resolution)")
    p.add_argument("--offline", action="store_true", help="never download")
    p.add_argument("--out", default=str(harness.DEFAULT_RAW), help="raw results folder (default results/raw)")
    p.add_argument("--force", action="store_true", help="rerun even when a successful record exists")
    p.add_argument("--dry-run", action="store_true", help="check everything, list the runs, train nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="show the worker's own output")


def plan(args: argparse.Namespace) -> list[harness.RunPlan]:
    """One plan per seed; every problem raised before anything trains."""
    check_threads(args.threads)
    params = read_params_file(args.config, args.model) if args.config else {}
    params.update(parse_assignments(args.sets))
    return [
        harness.plan_run(
            dataset=args.dataset,
            split=args.split,
            seed=seed,
            model=args.model,
            backend=args.backend,
            devices=args.devices,
            params=params,
            valid_ratio=args.valid_ratio,
            cold_start=args.cold_start,
            refit=args.refit,
            label=args.label,
            timeout_s=args.timeout,
            data_dir=args.data_dir,
            offline=args.offline,
            rating_scale=args.rating_scale,
            download=not args.dry_run,
        )
        for seed in parse_seeds(args.seeds)
    ]


class EpochBar:
    """Per-epoch progress of one run: a tqdm bar on a terminal, else about ten lines."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.bar: Any = None

    def __call__(self, ev: dict) -> None:
        if ev.get("event") != "epoch" or ev.get("epochs", 0) < 1:
            return
        n, e = int(ev["epochs"]), int(ev["epoch"])
        vr = ev.get("valid_rmse")
        text = f"valid_rmse={vr:.4f}" if isinstance(vr, (int, float)) else ""
        if sys.stderr.isatty():
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=n, desc=f"seed {self.seed}", unit="ep", file=sys.stderr, leave=False)
            self.bar.n = e
            self.bar.set_postfix_str(text, refresh=True)
        elif e == 1 or e == n or e % max(1, n // 10) == 0:
            print(f"  epoch {e}/{n} {text}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    harness.check_writable(args.out, create=not args.dry_run)
    plans = plan(args)
    if args.dry_run:
        for p in plans:
            path = harness.path_for(args.out, p)
            done = p.materialised and harness.is_finished(path, p.run_id)
            state = "done" if done else ("todo" if p.materialised else "todo (downloads the data first)")
            print(f"{state:<5} {p.describe()}\n      -> {path}")
        return 0
    tally = harness.Tally()
    for p in plans:
        bar = EpochBar(p.identity.split.seed)
        try:
            outcome = harness.execute(
                p, args.out, threads=args.threads, force=args.force, on_event=bar, verbose=args.verbose
            )
        except harness.Interrupted:
            raise KeyboardInterrupt from None
        finally:
            bar.close()
        tally.add(outcome)
        print(outcome.summary)
        print(f"  -> {outcome.path}")
    for line in tally.closing_lines():
        print(line)
    return 1 if tally.failed else 0
