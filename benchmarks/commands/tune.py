"""``autorec-bench tune``: an Optuna study per model on the validation part of one split (the same
trial budget for every model), resumable, the chosen configuration written as a config file.

The study never reads the test part.  ``--evaluate`` then runs each chosen configuration once through
the harness (:func:`benchmarks.harness.plan_run` / :func:`~benchmarks.harness.execute`: a fresh worker,
a raw record under ``RESULTS/raw``), exactly as a spec run referencing the config file would.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from autorec.errors import ConfigError
from autorec.models import registry

if TYPE_CHECKING:
    from autorec.interactions import Interactions
    from autorec.splits import SplitData
    from benchmarks.harness import Outcome
    from benchmarks.tuning import StudySpec, TuneResult

HELP = (
    "tune models on the validation part with Optuna (seeded TPE, median pruning; the same trial "
    "budget for every model; resumable) and write each chosen config as TOML"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="dataset name (ml-100k, ml-latest-small, ...)")
    p.add_argument("--split", default="random", metavar="KIND[:ARGS]", help="split spec (default random)")
    p.add_argument("--seed", type=int, default=0, help="split seed, also every trial's model seed (default 0)")
    p.add_argument(
        "--valid-ratio",
        type=float,
        default=0.05,
        help="share of train held out for validation: the only part trials are scored on (default 0.05)",
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME[@BACKEND]",
        help="model to tune; repeat to tune several, each with the same --trials (e.g. --model als "
        "--model biased-mf@torch)",
    )
    p.add_argument("--backend", default=None, help="backend of models given without @BACKEND (default: their first)")
    p.add_argument("--trials", type=int, default=60, help="trial budget of every model (default 60)")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    p.add_argument(
        "--space", default=None, metavar="FILE.toml", help="search space ([space] table) instead of the model's SPACE"
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a parameter in every trial (taken out of the search); repeatable",
    )
    p.add_argument("--cold-start", default="global-mean", help="cold-start policy (default global-mean)")
    p.add_argument("--no-prune", action="store_true", help="no median pruning of iterative models' trials")
    p.add_argument(
        "--pruner",
        choices=("per-variant", "pooled"),
        default=None,
        help="in a space with variants (AutoRec's rprop / lbfgs / adam): compare a trial with the completed "
        "trials of its own variant (per-variant) or with all (pooled); default: what the study was created "
        "with, per-variant for a new study",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads (default: $AUTOREC_THREADS or $OMP_NUM_THREADS, "
        "else the cores left idle when a fit starts)",
    )
    p.add_argument(
        "--results", default="results", help="results folder: studies in RESULTS/tuning/DATASET/ (default results)"
    )
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="the studies' RDB (SQLAlchemy URL, e.g. postgresql://host/db, shared by several workers); "
        "default: one SQLite file per study under RESULTS/tuning/DATASET/",
    )
    p.add_argument("--study", default=None, help="study name (one model only; default: from model, backend, split)")
    p.add_argument(
        "--out", default=None, metavar="FILE.toml", help="chosen config (one model only; default: beside the study)"
    )
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="after each study, run the chosen config once through the harness: its test RMSE in RESULTS/raw",
    )
    p.add_argument(
        "--rating-scale", default=None, metavar="LOW,HIGH[,STEP]", help="the scale of a custom (files:) dataset"
    )
    p.add_argument("--data-dir", default=None, help="folder holding the datasets")
    p.add_argument("--offline", action="store_true", help="never download")
    p.add_argument("--cache-dir", default=None, help="where splits are stored")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines")
    p.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="where trials run: in this process (default) or in --workers tuner workers per study on a Dask "
        "cluster, sharing the study's storage (docs/cluster.md)",
    )
    p.add_argument("--address", default=None, metavar="tcp://HOST:PORT", help="the Dask scheduler (--executor dask)")
    p.add_argument("--workers", type=int, default=None, help="tuner workers per study on Dask (default 1)")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text).strip("_") or "x"


def study_name(model: str, backend: str, split: str, seed: int, valid_ratio: float) -> str:
    """The default study name: one study per (split, seed, validation share, model, backend)."""
    return f"{_slug(model)}-{backend}-{_slug(split)}-seed{seed}-valid{valid_ratio:g}"


def command_line(args: argparse.Namespace, model: str, pruner: str | None = None) -> str:
    """The canonical command that reproduces (or resumes) the study of ``model``: every option
    explicit, the environment-only ones (threads, folders) as they were given."""
    parts = ["autorec-bench", "tune", "--dataset", args.dataset, "--split", args.split, "--seed", str(args.seed)]
    parts += ["--valid-ratio", f"{args.valid_ratio:g}", "--model", model]
    if args.backend:
        parts += ["--backend", args.backend]
    parts += ["--trials", str(args.trials), "--search-seed", str(args.search_seed)]
    if args.space:
        parts += ["--space", args.space]
    for s in args.sets:
        parts += ["--set", s]
    if args.cold_start != "global-mean":
        parts += ["--cold-start", args.cold_start]
    if args.no_prune:
        parts += ["--no-prune"]
    if pruner is not None:
        parts += ["--pruner", pruner]
    if args.evaluate:
        parts += ["--evaluate"]
    for flag, value in (("--threads", args.threads), ("--storage", args.storage), ("--study", args.study)):
        if value is not None:
            parts += [flag, str(value)]
    if args.executor != "local":
        parts += ["--executor", args.executor, "--address", args.address, "--workers", str(args.workers or 1)]
    if args.results != "results":
        parts += ["--results", args.results]
    for flag, value in (
        ("--out", args.out),
        ("--rating-scale", args.rating_scale),
        ("--data-dir", args.data_dir),
        ("--cache-dir", args.cache_dir),
    ):
        if value is not None:
            parts += [flag, value]
    if args.offline:
        parts += ["--offline"]
    return shlex.join(parts)


def _targets(args: argparse.Namespace, fixed: dict) -> list[tuple[str, registry.ModelRef, dict]]:
    """``(model as given, ModelRef, space)`` per ``--model``, each space checked against its model
    (configurations taking every choice and both bounds, per variant, are built) before any work."""
    from benchmarks.tuning import space as spaces

    if len(args.model) > 1 and (args.space or args.study or args.out):
        raise ConfigError("--space, --study and --out name one model's search; tune several models without them")
    out = []
    for given in args.model:
        name, _, backend = given.partition("@")
        ref = registry.get(name, backend or args.backend)
        ref.check_dependencies()
        space = spaces.load(args.space) if args.space else ref.space()
        spaces.validate(space, where=args.space or f"{name} ({ref.backend}) SPACE")
        space = spaces.fix(space, fixed)
        for params in spaces.corners(space):
            ref.build({**fixed, **params})
        out.append((given, ref, space))
    return out


def _check_executor(args: argparse.Namespace) -> None:
    if args.executor == "local":
        if args.address is not None or args.workers is not None:
            raise ConfigError("--address and --workers are for --executor dask")
    elif args.address is None:
        raise ConfigError("--executor dask needs --address tcp://HOST:PORT (the Dask scheduler)")
    elif args.workers is not None and args.workers <= 0:
        raise ConfigError(f"--workers {args.workers} must be > 0")


def _absolute(url: str) -> str:
    """``url`` with an SQLite file's path absolute (a Dask worker's working folder is not ours)."""
    prefix = "sqlite:///"
    return prefix + os.path.abspath(url[len(prefix) :]) if url.startswith(prefix) else url


def remote_tuner(train: Interactions, valid: Interactions, spec: StudySpec, trials: int, threads: int | None) -> str:
    """One tuner worker of ``spec``'s study, as a Dask task: :func:`~benchmarks.tuning.tune` until
    the study's budget is used (its trial lines go to the Dask worker's log); returns its summary."""
    from autorec.env import set_threads
    from benchmarks.tuning import describe, tune

    registry.get(spec.model, spec.backend).load()  # the framework first: set_threads sets imported ones
    set_threads(threads)
    result = tune(
        spec, train, valid, trials=trials, log=lambda line: print(f"{spec.name} {line}", file=sys.stderr, flush=True)
    )
    return f"tuner worker on {socket.gethostname()} (pid {os.getpid()}) done: {describe(result)}"


def _tune_on_dask(args: argparse.Namespace, specs: list[StudySpec], data: SplitData, log) -> None:
    """``--workers`` tuner workers per study as tasks on the Dask cluster, the data sent once; returns
    once every worker ended (the studies hold the trials)."""
    from benchmarks.harness.dask_executor import call_all

    calls = [(replace(s, storage=_absolute(s.storage)), args.trials, args.threads) for s in specs]
    calls = [c for c in calls for _ in range(args.workers or 1)]
    if log:
        log(f"{len(calls)} tuner worker(s) on the Dask cluster at {args.address}: {', '.join(s.name for s in specs)}")
    for line in call_all(args.address, remote_tuner, calls, common=(data.train, data.valid)):
        if log:
            log(line)


def run(args: argparse.Namespace) -> int:
    import optuna

    from autorec.env import check_threads, environment, resolve_threads, set_threads
    from autorec.metrics import ColdStartPolicy
    from autorec.models.config import ModelConfig, parse_assignments
    from autorec.splits import SplitSpec
    from benchmarks.harness.data import DataSource, check_rating_scale, load_data, parse_dataset
    from benchmarks.tuning import StudySpec, describe, result_of, tune
    from benchmarks.tuning.config_file import write_config
    from benchmarks.tuning.study import sqlite_url
    from benchmarks.tuning.tuner import check_budget

    if args.trials <= 0:
        raise ConfigError(f"--trials {args.trials} must be > 0")
    check_threads(args.threads)
    _check_executor(args)
    fixed = parse_assignments(args.sets)
    harness = sorted(set(fixed) & set(ModelConfig.HARNESS))
    if harness:
        raise ConfigError(f"--set {harness}: set from the run (--seed, --cold-start), not fixed by hand")
    if "mxnet" not in sys.modules:  # mxnet's engine takes its threads from the environment at import
        os.environ["OMP_NUM_THREADS"] = str(resolve_threads(args.threads))
    targets = _targets(args, fixed)
    threads = set_threads(args.threads)
    dataset = parse_dataset(args.dataset)  # a registered name, synthetic:..., or a files: split's own
    split_spec = SplitSpec.parse(args.split)
    source = DataSource(
        data_dir=args.data_dir,
        offline=args.offline,
        cache_dir=args.cache_dir,
        rating_scale=check_rating_scale(args.rating_scale),
    )
    data = load_data(dataset, split_spec, seed=args.seed, valid_ratio=args.valid_ratio, source=source)
    ColdStartPolicy.parse(args.cold_start).check_scale(data.train.rating_scale)  # else every trial fails
    split = str(data.split.spec)
    folder = Path(args.results) / "tuning" / _slug(dataset.name)
    env = environment()
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    studies = []
    for given, ref, space in targets:
        name = args.study or study_name(ref.name, ref.backend, split, args.seed, data.split.valid_ratio)
        spec = StudySpec(
            name=name,
            storage=args.storage or sqlite_url(folder / f"{name}.db"),
            data={
                "dataset": dataset.name,
                "split": split,
                "seed": args.seed,
                "valid_ratio": data.split.valid_ratio,
                "split_sha256": data.split.sha256,
            },
            model=ref.name,
            backend=ref.backend,
            model_version=ref.load().version,
            space=space,
            fixed=fixed,
            seed=args.seed,
            cold_start=args.cold_start,
            search_seed=args.search_seed,
            prune=not args.no_prune,
            per_variant=None if args.pruner is None else args.pruner == "per-variant",
        )
        studies.append((given, spec))
    for _, spec in studies:  # before any trial runs
        check_budget(spec, args.trials, workers=(args.workers or 1) if args.executor == "dask" else 1)
    if args.executor == "dask":
        _tune_on_dask(args, [spec for _, spec in studies], data, log)
        where = f"{args.workers or 1} tuner worker(s) per study on the Dask cluster at {args.address}"
    else:
        where = f"{env['cpu_model']} (threads {threads})"
    for given, spec in studies:
        if args.executor == "dask":
            result = result_of(spec, trials=args.trials)
        else:
            if log:
                log(f"study {spec.name!r} in {spec.storage}: {args.trials} trials of {spec.model} ({spec.backend})")
            result = tune(spec, data.train, data.valid, trials=args.trials, log=log)
        print(describe(result))
        out = Path(args.out) if args.out else folder / f"{spec.name}.toml"
        versions = ", ".join(f"{k} {env[k]}" for k in ("numpy", "torch", "mxnet", "scikit-surprise") if env.get(k))
        versions += f", optuna {optuna.__version__}"
        write_config(
            out,
            result,
            command=command_line(args, given, result.spec.pruner_mode()),
            comments=[f"Split sha256 {data.split.sha256}; last run on {where}; {versions}."],
        )
        print(f"wrote {out}")
        if args.evaluate:
            print(_evaluate(args, result, threads).summary)
    return 0


def _evaluate(args: argparse.Namespace, result: TuneResult, threads: int) -> Outcome:
    """The chosen configuration run once through the harness (after its study ended)."""
    from benchmarks import harness

    spec = result.spec
    plan = harness.plan_run(
        dataset=args.dataset,
        split=spec.data["split"],
        seed=args.seed,
        model=spec.model,
        backend=spec.backend,
        params=result.best_params,
        valid_ratio=spec.data["valid_ratio"],
        cold_start=spec.cold_start,
        label=f"{spec.model} (tuned)",
        data_dir=args.data_dir,
        offline=args.offline,
        cache_dir=args.cache_dir,
        rating_scale=args.rating_scale,
    )
    if plan.identity.split.sha256 != spec.data["split_sha256"]:
        raise ConfigError(
            f"the harness materialised another split ({plan.identity.split.sha256}) than the study was tuned on "
            f"({spec.data['split_sha256']}); check --data-dir / --cache-dir"
        )
    return harness.execute(plan, Path(args.results) / "raw", threads=threads)
