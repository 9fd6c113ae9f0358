"""``autorec-bench sweep SPEC.toml [SPEC2.toml ...]``: run a declared grid of runs, resumably.

Every run of every spec is planned (data, split, model, parameters, devices, the output folder)
before the first one trains, and every problem is reported at once.  Rerunning the same command
after an interruption (Ctrl-C, SIGKILL, a crash) skips every finished run and tries the failed
ones again; a run another live sweep claims is left to it.  ``--strict`` exits 1 when any run of
the sweep is failed, also when the failure is an old one.  See :mod:`benchmarks.sweep` for the
spec format.
"""

from __future__ import annotations

import argparse
import os
import time

from autorec.atomic import atomic_write
from autorec.env import check_threads
from autorec.errors import ConfigError
from autorec.jsonio import dumps
from benchmarks import harness
from benchmarks import sweep as sweeps

HELP = "run one or more sweep specs (benchmarks/specs/*.toml); resumable, validated up front"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC.toml", help="sweep spec file(s)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1; threads are shared)")
    p.add_argument("--dry-run", action="store_true", help="check everything a run checks, list the runs; train nothing")
    p.add_argument("--out", default=str(harness.DEFAULT_RAW), help="raw results folder (default results/raw)")
    p.add_argument("--data-dir", default=None, help="folder holding the datasets")
    p.add_argument("--offline", action="store_true", help="never download")
    p.add_argument("--threads", type=int, default=None, help="threads per run (default: cores / jobs)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any run of the sweep is failed (old ones too)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one line per run)")
    p.add_argument(
        "--rerun", action="store_true", help="run every run again, finished ones too (regenerate from scratch)"
    )
    p.add_argument(
        "--summary",
        default=None,
        metavar="FILE.json",
        help="write what this invocation did (ran / already done / failed) for `autorec-bench summary`",
    )
    p.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="where runs execute: this machine (default) or a Dask cluster (--address; docs/cluster.md)",
    )
    p.add_argument("--address", default=None, metavar="tcp://HOST:PORT", help="the Dask scheduler (--executor dask)")


def dry_run(sweep: sweeps.Sweep, out: str) -> int:
    """List what a real run would do: every run, done / failed / to run, and the notes."""
    for msg in sweep.notes:
        print(f"note: {msg}")
    states = {}
    for p in sweep.plans:
        path = harness.path_for(out, p)
        rec = harness.read_if_valid(path) if p.materialised else None
        if rec is not None and rec.run_id == p.run_id:
            states[p.run_id] = "done " if rec.ok else "retry"
        else:
            states[p.run_id] = "todo "
    n_done = sum(s == "done " for s in states.values())
    n_failed = sum(s == "retry" for s in states.values())
    merged = f" ({sweep.duplicates} duplicate(s) merged)" if sweep.duplicates else ""
    print(
        f"sweep {', '.join(sweep.names)}: {len(sweep.plans)} runs valid, {n_done} already done in {out}, "
        f"{n_failed} failed (tried again), {len(sweep.plans) - n_done - n_failed} to run{merged}"
    )
    for key, n in sweeps.estimate(sweep).items():
        print(f"  {n:4d}  {key}")
    for p in sweep.plans:
        print(f"  {states[p.run_id]} {harness.path_for(out, p).name}")
    return 0


def executor(args: argparse.Namespace) -> harness.Executor | None:
    """The executor ``--executor`` names (``None``: ``--jobs`` local workers).  On Dask, the
    results folder and the data folder travel as absolute paths (the workers' working folders differ)."""
    if args.executor == "local":
        if args.address is not None:
            raise ConfigError("--address names a Dask scheduler: add --executor dask")
        return None
    if args.address is None:
        raise ConfigError("--executor dask needs --address tcp://HOST:PORT (the Dask scheduler)")
    if args.jobs != 1:
        raise ConfigError("--jobs is for --executor local; on Dask, each worker's --nthreads sets the runs at a time")
    from benchmarks.harness.dask_executor import DaskExecutor

    args.out = os.path.abspath(args.out)
    args.data_dir = os.path.abspath(args.data_dir) if args.data_dir is not None else None
    return DaskExecutor(args.address, args.out)


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs} must be >= 1")
    check_threads(args.threads)
    engine = executor(args)
    harness.check_writable(args.out, create=not args.dry_run)
    source = harness.DataSource(data_dir=args.data_dir, offline=args.offline)
    sweep = sweeps.load_sweeps(args.specs, source=source, dry_run=args.dry_run)
    if args.dry_run:
        return dry_run(sweep, args.out)
    for msg in sweep.notes:
        print(f"note: {msg}")
    started = time.time()
    tally = harness.run_batch(
        sweep.plans,
        args.out,
        title=f"sweep {', '.join(sweep.names)}",
        jobs=args.jobs,
        executor=engine,
        threads=args.threads,
        progress=False if args.no_progress else None,
        rerun=args.rerun,
    )
    failed = harness.failures(sweep.plans, args.out)
    if args.summary:
        summary = {
            "specs": list(args.specs),
            "sweeps": sweep.names,
            "raw": str(args.out),
            "cwd": os.getcwd(),  # what a relative "raw" is relative to
            "runs": len(sweep.plans),
            "jobs": args.jobs,
            "rerun": bool(args.rerun),
            "seconds": round(time.time() - started, 1),
            "counts": dict(tally.counts),
            "failed_now": [str(o.path) for o in tally.failed],
            "failed_total": [str(p) for p in failed],
            "run_ids": [p.run_id for p in sweep.plans],
        }
        atomic_write(args.summary, lambda fh: fh.write(dumps(summary).encode("utf-8")))
    if args.strict and failed:
        print(f"--strict: {len(failed)} run(s) of this sweep are failed (their records say why), e.g. {failed[0]}")
        return 1
    return 0
