"""``autorec-bench sweep SPEC.toml [SPEC2.toml ...]``: run a declared grid of runs, resumably.

The whole spec is validated before the first run.  Rerunning the same command after an
interruption (Ctrl-C, SIGKILL, a crash) skips every finished run.  Failed runs are recorded as
failure files and do not stop the sweep (``--retry-failed`` reruns them).  See
:mod:`benchmarks.sweep` for the spec format.
"""

from __future__ import annotations

import argparse

from benchmarks import harness
from benchmarks import sweep as sweeps

HELP = "run one or more sweep specs (benchmarks/specs/*.toml); resumable, validated up front"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC.toml", help="sweep spec file(s)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1; threads are shared)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs; train nothing")
    p.add_argument("--out", default=str(harness.DEFAULT_RAW), help="raw results folder (default results/raw)")
    p.add_argument("--data-dir", default=None, help="folder holding the datasets")
    p.add_argument("--offline", action="store_true", help="never download")
    p.add_argument("--threads", type=int, default=None, help="threads per run (default: cores / jobs)")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    p.add_argument("--strict", action="store_true", help="exit 1 when any run failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one line per run)")


def run(args: argparse.Namespace) -> int:
    from autorec.errors import ConfigError
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs} must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads} must be >= 1")
    sweep = sweeps.load_sweeps(args.specs, data_dir=args.data_dir)
    if args.dry_run:
        from pathlib import Path
        out = Path(args.out)
        done = [r for r in sweep.runs if harness.is_finished(out / r.filename, r.run_id)]
        for msg in sweep.skipped:
            print(f"skip: {msg}")
        print(f"sweep {', '.join(sweep.names)}: {len(sweep.runs)} runs valid, {len(done)} already done in "
              f"{out}, {len(sweep.runs) - len(done)} to run" +
              (f" ({sweep.duplicates} duplicate(s) merged)" if sweep.duplicates else ""))
        for key, n in sweeps.estimate(sweep).items():
            print(f"  {n:4d}  {key}")
        done_ids = {r.run_id for r in done}
        for r in sweep.runs:
            print(f"  {'done ' if r.run_id in done_ids else 'todo '} {r.filename}")
        return 0
    counts = sweeps.run_sweep(sweep, args.out, jobs=args.jobs, data_dir=args.data_dir, offline=args.offline,
                              threads=args.threads, retry_failed=args.retry_failed,
                              progress=False if args.no_progress else None)
    return 1 if (args.strict and counts.get("failed")) else 0
