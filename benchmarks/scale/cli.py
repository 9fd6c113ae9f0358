"""``python -m benchmarks.scale``: run the rows of a scale spec, render the report, upgrade old files.

``python -m benchmarks.scale [--spec benchmarks/specs/scale.toml] [--only PATTERN ...]
[--max-memory 80%] [--out results/raw/scale] [--report results] [--force] [--resume]
[--rerun-contended] [--quiet-load LOAD] [--dry-run]``, ``--render-only --report DIR``, and once
``--upgrade-v1 DIR``.  Exit status: 0, 1 when a row failed, 2 on a usage or spec error.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

from autorec import scale as sc
from autorec.errors import AutoRecBenchError, ConfigError
from benchmarks.scale.records import load_records, outcome
from benchmarks.scale.render import render_scale
from benchmarks.scale.runner import run_spec
from benchmarks.scale.spec import DEFAULT_SPEC, load_spec
from benchmarks.scale.upgrade import upgrade_v1

DEFAULT_OUT = Path("results/raw/scale")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="AutoRec on synthetic data of the real datasets' shapes, sparse vs dense.",
    )
    p.add_argument("--spec", default=str(DEFAULT_SPEC), help="scale spec TOML (default: benchmarks/specs/scale.toml)")
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="PATTERN",
        help="run only rows whose id matches one of these glob patterns (e.g. 'ml-1m-*')",
    )
    p.add_argument(
        "--max-memory",
        default=None,
        help="memory budget: 19GB, 80%% (of RAM), ... (default: the spec's max_memory, else 80%%)",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="raw result folder (default results/raw/scale)")
    p.add_argument(
        "--report", default=None, metavar="DIR", help="after running, render scale.md/.csv/.png into DIR (e.g. results)"
    )
    p.add_argument("--render-only", action="store_true", help="only render --report from the raw folder")
    p.add_argument("--force", action="store_true", help="rerun rows that already have a finished record")
    p.add_argument("--resume", action="store_true", help="resume checkpointed rows from their last checkpoint")
    p.add_argument(
        "--rerun-contended",
        action="store_true",
        help="rerun measured rows whose record shows a busy machine (load > 1.5 or matmul rate fell)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the rows and their estimates only")
    p.add_argument(
        "--quiet-load",
        type=float,
        default=None,
        metavar="LOAD",
        help="before each row, wait until the 1-minute load average is below LOAD",
    )
    p.add_argument(
        "--quiet-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="wait at most S seconds for --quiet-load (then run anyway; recorded)",
    )
    p.add_argument(
        "--checkpoint-dir", default=None, help="checkpoints of large rows (default: the cache's scale-checkpoints)"
    )
    p.add_argument(
        "--upgrade-v1",
        default=None,
        metavar="DIR",
        help="convert DIR's schema-1 scale records into run records in place (once; no row is run)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.upgrade_v1:
            for path in upgrade_v1(args.upgrade_v1):
                print(path)
            return 0
        out = Path(args.out)
        if args.render_only:
            if not args.report:
                raise ConfigError("--render-only needs --report DIR")
            for path in render_scale(load_records(out), args.report):
                print(path)
            return 0
        settings, rows = load_spec(args.spec)
        if args.only:
            rows = [r for r in rows if any(fnmatch.fnmatch(r.row_id, pat) for pat in args.only)]
            if not rows:
                raise ConfigError(f"--only {args.only}: no row of {args.spec} matches")
        limit = sc.parse_bytes(args.max_memory or settings.get("max_memory", "80%"))
        recs = run_spec(
            rows,
            out,
            limit,
            force=args.force,
            resume=args.resume,
            dry_run=args.dry_run,
            quiet_load=args.quiet_load,
            quiet_timeout=args.quiet_timeout,
            checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
            rerun_contended=args.rerun_contended,
        )
        if args.report and not args.dry_run:
            for path in render_scale(load_records(out), args.report):
                print(path)
        return 1 if any(outcome(r) == "failed" for r in recs) else 0
    except AutoRecBenchError as exc:
        print(f"scale: error: {exc}", file=sys.stderr)
        return 2
