"""``autorec-bench summary SWEEP-SUMMARY.json``: what a main job (``make bench``) did, said last,
where a user looks: how many runs ran now, were already done or failed, where the raw records and
the regenerated tables are, the verdict per dataset, and how to regenerate everything from scratch
(with the time it takes, estimated from the wall times the records themselves carry)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autorec.errors import DataError
from benchmarks import verify
from benchmarks.harness import store

HELP = "say what a sweep (make bench) did: ran / already done / failed, where the results are, the verdict"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="SWEEP-SUMMARY.json", help="written by `autorec-bench sweep --summary`")
    p.add_argument("--results", default="results", help="the report folder (default results)")
    p.add_argument("--regenerate", default="make bench RERUN=1", help="the command that reruns every run")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def run(args: argparse.Namespace) -> int:
    try:
        s = json.loads(Path(args.file).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"sweep summary {args.file}: not readable ({exc}); run the sweep with --summary first"
        ) from None
    keys = ("counts", "run_ids", "raw", "sweeps", "runs", "seconds", "failed_total")
    missing = [k for k in keys if k not in s] if isinstance(s, dict) else ["JSON object"]
    if missing:
        raise DataError(
            f"sweep summary {args.file}: not a summary written by `autorec-bench sweep --summary` "
            f"(no {', '.join(missing)})"
        )
    c = s["counts"]
    ran = c.get("ok", 0) + c.get("failed", 0)
    ids = set(s["run_ids"])
    raw = Path(s.get("cwd", ".")) / s["raw"]  # the sweep's folder, wherever this runs from
    records = [r for r in store.load(raw, strict=False) if r.run_id in ids]
    wall = sum(r.timing.wall or r.timing.worker or 0.0 for r in records)
    lines = [
        f"== {' + '.join(s['sweeps'])}: {s['runs']} runs ==",
        f"this time: {ran} ran ({c.get('ok', 0)} ok, {c.get('failed', 0)} failed) in {_minutes(s['seconds'])}, "
        f"{c.get('skipped', 0)} already done (kept: their raw records were not rerun)"
        + (f", {c['claimed']} left to another sweep" if c.get("claimed") else ""),
        f"raw records: {s['raw']}/ (one JSON file per run; {len(records)} of these runs recorded)",
        f"tables and plots: {args.results}/README.md (regenerated from the raw records)",
    ]
    if s["failed_total"]:
        lines.append(
            f"FAILED runs ({len(s['failed_total'])}), each record says why: {', '.join(s['failed_total'][:3])}"
        )
    folder = Path(args.results) / verify.VERDICTS
    for path in sorted(folder.glob("*.json")):
        lines.append("verdict: " + json.loads(path.read_text()).get("sentence", "").strip())
    jobs = max(int(s.get("jobs", 1)), 1)
    lines.append(
        f"regenerate from scratch: {args.regenerate} (reruns all {s['runs']} runs; about "
        f"{_minutes(wall / jobs)} here with {jobs} job(s), from the recorded run times)"
    )
    print("\n".join(lines))
    return 1 if s["failed_total"] else 0
