"""``autorec-bench run``: train and evaluate one model on one dataset/split for several seeds.

Each (run, seed) runs in a fresh worker subprocess and writes ONE raw JSON file under ``--out``
(see :mod:`benchmarks.harness`).  Everything (dataset name, split, model, backend, optional
framework, every parameter, devices) is validated for every seed before the first one trains.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import harness

HELP = "train + evaluate one model for several seeds; one raw JSON result per (run, seed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True,
                   help="ml-100k, ml-1m, ..., or synthetic:NU,NI,NR[,SEED] / synthetic:ml-1m@0.01[,SEED]")
    p.add_argument("--split", default="random",
                   help="KIND[:ARGS]: random[:test_ratio=0.1], d2l-random, seq-aware, canonical:u1, "
                        "kfold:k=5,fold=0, files:TRAIN.csv,TEST.csv (default: random)")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2 or 0-4 (default: 0)")
    p.add_argument("--model", required=True, help="i-autorec, u-autorec, autorec, als, biased-mf, d2l-mf, "
                                                  "bias-only, global-mean, surprise-svd, ... or module:Class")
    p.add_argument("--backend", default=None, help="torch, mxnet, numpy, surprise (default: the model's first)")
    p.add_argument("--devices", default=None,
                   help="cpu (default), cuda:0, cpu(0),cpu(1) (MXNet contexts), cpu,cpu (torch DDP, 2 procs)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a model parameter (TOML value), repeatable: --set lr=0.001 --set hidden=[500]")
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="model parameters from a TOML file (e.g. benchmarks/configs/*.toml); --set wins")
    p.add_argument("--valid-ratio", type=float, default=0.05, help="validation share of train (default 0.05)")
    p.add_argument("--cold-start", default="global-mean",
                   help="test cold-start policy: global-mean (default), constant (3), constant:V")
    p.add_argument("--threads", type=int, default=None, help="threads per run (default: all cores)")
    p.add_argument("--timeout", type=float, default=None, help="kill a run after this many seconds")
    p.add_argument("--label", default=None, help="a label shown in tables instead of the model name")
    p.add_argument("--data-dir", default=None, help="folder holding the datasets (else the usual resolution)")
    p.add_argument("--offline", action="store_true", help="never download")
    p.add_argument("--out", default=str(harness.DEFAULT_RAW), help="raw results folder (default results/raw)")
    p.add_argument("--force", action="store_true", help="rerun even when a result file exists")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs whose file records a failure")
    p.add_argument("-v", "--verbose", action="store_true", help="show the worker's own output")


def plan(args: argparse.Namespace) -> list[harness.RunSpec]:
    params = {}
    if args.config:
        params.update(harness.read_params_file(args.config, args.model))
    params.update(harness.parse_sets(args.sets))
    seeds = harness.parse_seeds(args.seeds)
    first = harness.plan_run(dataset=args.dataset, split=args.split, seed=seeds[0], model=args.model,
                             backend=args.backend, devices=args.devices, params=params,
                             valid_ratio=args.valid_ratio, cold_start=args.cold_start, label=args.label,
                             timeout_s=args.timeout)
    runs = [first]
    for s in seeds[1:]:
        runs.append(harness.plan_run(dataset=args.dataset, split=args.split, seed=s, model=args.model,
                                     backend=args.backend, devices=args.devices, params=params,
                                     valid_ratio=args.valid_ratio, cold_start=args.cold_start,
                                     label=args.label, timeout_s=args.timeout))
    return runs


def run(args: argparse.Namespace) -> int:
    runs = plan(args)  # every error before any training
    if args.threads is not None and args.threads <= 0:
        from autorec.errors import ConfigError
        raise ConfigError(f"--threads {args.threads} must be > 0")
    harness.prepare_data(runs, data_dir=args.data_dir, offline=args.offline)  # data errors before training
    failed = 0
    for r in runs:
        bar = [None]

        def on_event(ev, bar=bar):
            # a tqdm bar on a terminal; otherwise about ten lines per run
            if ev.get("event") != "epoch" or ev.get("epochs", 0) < 1:
                return
            n, e = int(ev["epochs"]), int(ev["epoch"])
            vr = ev.get("valid_rmse")
            text = f"valid_rmse={vr:.4f}" if isinstance(vr, (int, float)) else ""
            if sys.stderr.isatty():
                if bar[0] is None:
                    from tqdm import tqdm
                    bar[0] = tqdm(total=n, desc=f"seed {r.seed}", unit="ep", file=sys.stderr, leave=False)
                bar[0].n = e
                bar[0].set_postfix_str(text, refresh=True)
            elif e == 1 or e == n or e % max(1, n // 10) == 0:
                print(f"  epoch {e}/{n} {text}", file=sys.stderr)
        try:
            outcome = harness.execute(r, args.out, data_dir=args.data_dir, offline=args.offline,
                                      threads=args.threads, force=args.force, retry_failed=args.retry_failed,
                                      on_event=on_event, verbose=args.verbose)
        except harness.Interrupted:
            raise KeyboardInterrupt from None
        finally:
            if bar[0] is not None:
                bar[0].close()
        print(outcome.summary)
        print(f"  -> {outcome.path}")
        failed += outcome.status == "failed"
    return 1 if failed else 0
