"""``autorec-bench tune``: equal-budget hyper-parameter search on the validation part, then one test
evaluation of the chosen configuration, written as a config file the harness can use."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import tomllib
from pathlib import Path

from autorec.errors import ConfigError

HELP = ("tune a model's hyper-parameters on the validation part (same trial budget for every model), "
        "then evaluate the chosen config once on test and write it as TOML")

AUTOREC = {"torch": "autorec.models.torch:AutoRecTorch", "mxnet": "autorec.models.mxnet:AutoRecMXNet"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="dataset name (ml-100k, ml-latest-small, ...)")
    p.add_argument("--split", default="random", metavar="KIND[:ARGS]", help="split spec (default random)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--valid-ratio", type=float, default=0.05,
                   help="share of train held out for validation: the only part the search sees (default 0.05)")
    p.add_argument("--model", required=True, help="model name (als, biased-mf, bias-only, d2l-mf, "
                                                   "surprise-svd, ..., autorec)")
    p.add_argument("--backend", default=None, help="backend (default: the model's first backend)")
    p.add_argument("--trials", type=int, default=20, help="trial budget, the same for every model (default 20)")
    p.add_argument("--method", choices=("random", "grid"), default="random", help="search method (default random)")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the parameter sampler (default 0)")
    p.add_argument("--space", default=None, metavar="FILE.toml",
                   help="search space ([space] table); default: the built-in space of the model")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a fixed parameter given to every trial (TOML value syntax); repeatable")
    p.add_argument("--cold-start", default="global-mean", help="cold-start policy of the RMSEs (default global-mean)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--out", default=None, metavar="FILE.toml", help="write the best config here")
    p.add_argument("--log", default=None, metavar="FILE.jsonl",
                   help="trial log (default: beside --out as .trials.jsonl, else none)")
    p.add_argument("--data-dir", default=None, help="folder holding the datasets")
    p.add_argument("--offline", action="store_true", help="never download")
    p.add_argument("--cache-dir", default=None, help="where splits are stored")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines")


def parse_set(items: list[str]) -> dict:
    """``key=value`` pairs, values in TOML syntax (``lr=0.01``, ``hidden=[500]``, ``name="x"``);
    a value that is not TOML is taken as a string."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text.strip()
    return out


def resolve(model: str, backend: str | None):
    """``(build, backend)``: the factory ``build(params) -> Recommender`` of ``model`` from the
    harness registry (:mod:`benchmarks.algorithms`: AutoRec names, every baseline, import strings),
    so that a tuned config and a run resolve a name the same way.  A missing optional framework
    raises :class:`~autorec.errors.MissingDependencyError` here, before any work."""
    try:
        from benchmarks import algorithms
    except ImportError:  # pragma: no cover - a checkout without the harness
        algorithms = None
    if algorithms is not None:
        algo = algorithms.get(model, backend)
        algo.check_dependencies()
        return algo.build, algo.backend
    import importlib
    if model == "autorec":
        backend = backend or "torch"
        if backend not in AUTOREC:
            raise ConfigError(f"autorec has backends {sorted(AUTOREC)}, not {backend!r}")
        module, _, attr = AUTOREC[backend].partition(":")
        cls = getattr(importlib.import_module(module), attr)
        return cls.from_params, backend
    import baselines
    cls = baselines.get(model, backend)
    return cls.from_params, cls.backend


def command_line(args: argparse.Namespace) -> str:
    """The canonical command reproducing this run (every option explicit, the environment-only
    ones -- threads, data and cache folders -- included as they were given)."""
    parts = ["autorec-bench", "tune", "--dataset", args.dataset, "--split", args.split,
             "--seed", str(args.seed), "--valid-ratio", f"{args.valid_ratio:g}", "--model", args.model]
    if args.backend:
        parts += ["--backend", args.backend]
    parts += ["--trials", str(args.trials), "--method", args.method, "--search-seed", str(args.search_seed)]
    if args.space:
        parts += ["--space", args.space]
    for s in args.set:
        parts += ["--set", s]
    if args.cold_start != "global-mean":
        parts += ["--cold-start", args.cold_start]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    if args.data_dir:
        parts += ["--data-dir", args.data_dir]
    if args.offline:
        parts += ["--offline"]
    if args.cache_dir:
        parts += ["--cache-dir", args.cache_dir]
    if args.log:
        parts += ["--log", args.log]
    if args.out:
        parts += ["--out", args.out]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from autorec.env import environment, set_threads
    from autorec.splits import load_split
    from benchmarks import tuning

    build, backend = resolve(args.model, args.backend)
    fixed = parse_set(args.set)
    space = tuning.load_space(args.space) if args.space else tuning.default_space(args.model, backend)
    tuning.check_fixed(space, fixed)
    cands = tuning.candidates(space, args.trials, args.method, args.search_seed)  # validates early
    build({**fixed, **cands[0]})  # parameters checked before any work
    threads = set_threads(args.threads)
    data = load_split(args.dataset, args.split, seed=args.seed, valid_ratio=args.valid_ratio,
                      data_dir=args.data_dir, offline=args.offline, cache_dir=args.cache_dir)
    log = args.log
    if log is None and args.out:
        log = str(Path(args.out).with_suffix(".trials.jsonl"))

    def progress(rec: dict) -> None:
        if args.quiet:
            return
        score = f"valid RMSE {rec['valid_rmse']:.5f}" if rec["status"] == "ok" else f"FAILED {rec['error']}"
        print(f"trial {rec['trial']:>3}/{rec['n_trials']}  {score}  ({rec['seconds']:.1f} s)  "
              f"{rec['params']}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    result = tuning.tune(build, data, space, trials=args.trials, method=args.method,
                         seed=args.search_seed, fixed=fixed, log=log, cold_start=args.cold_start,
                         progress=progress)
    seconds = time.perf_counter() - t0
    test = result.test
    print(f"{args.model} ({backend}) on {args.dataset} {args.split} seed {args.seed}: best of "
          f"{result.n_trials} trials ({result.n_ok} ok) is trial {result.best_trial}, "
          f"validation RMSE {result.best_valid_rmse:.5f}; test RMSE {test['rmse']:.5f}, MAE {test['mae']:.5f} "
          f"(evaluated once, after choosing; {test['n_cold_start']} cold pairs, {test['cold_start_policy']})")
    print(f"best params: {result.best_params}")
    if args.out:
        env = environment()
        comments = [
            f"Tuned by: {command_line(args)}",
            f"Search: {args.method}, {result.n_trials} trials ({result.n_ok} ok), search seed "
            f"{args.search_seed}, scored on the validation part only ({args.valid_ratio:g} of train).",
            f"Best trial {result.best_trial}: validation RMSE {result.best_valid_rmse:.5f}; test RMSE "
            f"{test['rmse']:.5f}, MAE {test['mae']:.5f} (test read once, by this config, after the search).",
            f"Split sha256 {data.split.sha256}; {seconds:.0f} s on {env['cpu_model']} "
            f"(threads: {threads}); numpy {env['numpy']}, torch {env['torch']}, mxnet {env['mxnet']}.",
            f"Trial log: {log}" if log else "",
        ]
        tuning.write_config(
            args.out, model=args.model, backend=backend, params=result.best_params,
            comments=[c for c in comments if c],
            tuning={"dataset": args.dataset, "split": args.split, "seed": args.seed,
                    "valid_ratio": args.valid_ratio, "method": args.method, "trials": result.n_trials,
                    "trials_ok": result.n_ok, "search_seed": args.search_seed,
                    "best_trial": result.best_trial, "valid_rmse": result.best_valid_rmse,
                    "test_rmse": test["rmse"], "test_mae": test["mae"],
                    "cold_start": test["cold_start_policy"], "split_sha256": data.split.sha256,
                    "seconds": round(seconds, 1), "command": command_line(args),
                    "space": dict(space)})
        print(f"wrote {args.out}" + (f" (trials: {log})" if log else ""))
    return 0
