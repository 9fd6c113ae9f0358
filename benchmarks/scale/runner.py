"""Running the rows of a scale spec: decide from the estimate, or measure in a worker; one record per row.

Each row is first estimated (:meth:`~benchmarks.scale.spec.Row.estimate`): a row whose estimate
exceeds the memory limit is *refused up front* and recorded as "does not fit: needs N GB" (never
run into the OOM killer), and a ``dense-full`` row (the seed's formulation, which densifies the
whole matrix) is estimate-only.  Any other row is claimed (:mod:`benchmarks.harness.store`: two
runners never measure the same row) and measured by the harness's launcher
(:func:`benchmarks.harness.launch.launch`: a fresh worker process dying with its parent, the thread
count set in its environment, the timeout, peak RSS from VmHWM, the load average before and after)
running the job kind ``scale`` (:class:`benchmarks.scale.job.ScaleJob`), with
``THP_MEM_ALLOC_ENABLE=1`` unless set otherwise.  The record is written atomically to
``<out>/<row_id>.json``.

Resumable: a row whose record is finished (:func:`~benchmarks.scale.records.finished`: measured,
estimate-only or refused, of the same run identity) is skipped unless ``force``;
``rerun_contended`` reruns measured rows whose machine was busy.  Large rows write a checkpoint
every epoch (under the cache, ``scale-checkpoints``; removed once the row is measured) and
``resume`` continues a killed row from it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autorec import env as hostenv
from autorec.cache import cache_dir
from autorec.scale import format_bytes
from benchmarks import record
from benchmarks.harness import store
from benchmarks.harness.launch import launch
from benchmarks.record import RunRecord
from benchmarks.scale.records import (
    contended,
    decided_record,
    finished,
    outcome,
    plan_for,
    record_path,
    scale_of,
    section,
)
from benchmarks.scale.spec import Row

Log = Callable[[str], None]
#: environment variables every row's worker gets unless they are set (torch: transparent huge pages)
WORKER_ENV = {"THP_MEM_ALLOC_ENABLE": "1"}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_checkpoint_dir() -> Path:
    """Where large rows' checkpoints go (outside the repository: they are GBs)."""
    return cache_dir("scale-checkpoints")


def wait_quiet(max_load: float, timeout: float) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``max_load`` (at most ``timeout`` seconds);
    returns what was waited and seen (recorded in the row's ``scale`` section)."""
    t0 = time.time()
    seen = hostenv.load_average()
    while seen and seen[0] >= max_load and time.time() - t0 < timeout:
        time.sleep(10)
        seen = hostenv.load_average()
    return {
        "max_load": max_load,
        "waited_seconds": round(time.time() - t0, 1),
        "load_avg": list(seen) or None,
        "quiet": bool(seen) and seen[0] < max_load,
    }


def _progress(row: Row, log: Log) -> Callable[[dict], None]:
    def show(ev: dict) -> None:
        if ev.get("event") == "epoch":
            log(
                f"[{row.row_id}] epoch {ev['epoch']}/{ev['epochs']}: {ev['seconds']:.2f}s "
                f"train_loss={ev['train_loss']:.5g} rss={(ev.get('rss_bytes') or 0) / 1e9:.2f}GB"
            )
        elif ev.get("event") == "stage":
            log(f"[{row.row_id}] {ev['stage']}")

    return show


def run_row(
    row: Row,
    out_dir: Path,
    limit: int,
    *,
    resume: bool = False,
    checkpoint_dir: Path | None = None,
    quiet: dict[str, Any] | None = None,
    log: Log = _log,
) -> RunRecord | None:
    """Decide or measure one row and write its record; the record, or ``None`` when another live
    runner holds the row."""
    plan = plan_for(row)
    path = record_path(out_dir, row)
    est = row.estimate().to_dict()
    rec = decided_record(plan, row, est, limit)
    if rec is not None:
        record.write(path, rec)
        return rec
    mine, holder = store.try_claim(out_dir, plan.run_id, plan.timeout_s)
    if mine is None:
        log(f"    skipped: another runner measures it ({holder.describe() if holder else '?'})")
        return None
    try:
        ck = (checkpoint_dir or default_checkpoint_dir()) / f"{row.row_id}.ckpt.npz" if row.checkpoint else None
        threads = row.threads or hostenv.default_threads()
        policy = f"{threads} as given" if row.threads else f"all {threads} usable cores"
        options = {"row": row.to_dict(), "limit": int(limit), "resume": resume, "checkpoint": ck}
        rec, _ = launch(
            plan,
            threads,
            policy,
            on_event=_progress(row, log),
            job={"kind": "scale", "options": options},
            env_defaults=WORKER_ENV,
        )
        s = rec.scale if rec.scale is not None else section(row, est, limit, "failed")  # a worker that crashed
        if quiet is not None and rec.ok:
            s = {**s, "quiet_wait": quiet}
        rec = dataclasses.replace(rec, scale=s)
        record.write(path, rec)
        if rec.ok and ck is not None:
            ck.unlink(missing_ok=True)  # measured: the checkpoint (GBs) is no longer needed
        return rec
    finally:
        store.release(out_dir, mine)


def _summary(rec: RunRecord) -> str:
    s = scale_of(rec)
    if outcome(rec) == "measured":
        return (
            f"    {s['seconds_per_epoch']:.2f} s/epoch ({s['timing_mode']}), {s['achieved_gflops']:.1f} GFLOP/s = "
            f"{100 * s['matmul_fraction']:.0f}% of matmul {s['matmul']['gflops']:.0f}, "
            f"peak RSS {format_bytes(s['peak_rss_bytes'])}"
        )
    why = s.get("reason") or (rec.error.message[-300:] if rec.error else "")
    return f"    {outcome(rec)}: {why}"


def run_spec(
    rows: list[Row],
    out_dir: Path,
    limit: int,
    *,
    force: bool = False,
    resume: bool = False,
    dry_run: bool = False,
    quiet_load: float | None = None,
    quiet_timeout: float = 600.0,
    checkpoint_dir: Path | None = None,
    rerun_contended: bool = False,
    log: Log = _log,
) -> list[RunRecord]:
    """Every row in turn (see the module docstring); the records of this invocation, skipped
    finished rows included."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done: list[RunRecord] = []
    for i, row in enumerate(rows, 1):
        est = row.estimate()
        head = f"[{i}/{len(rows)}] {row.row_id}: estimate {format_bytes(est.total)} (limit {format_bytes(limit)})"
        old = None if force else store.read_if_valid(record_path(out_dir, row))
        if old is not None and finished(old, plan_for(row).run_id):
            if not (rerun_contended and outcome(old) == "measured" and contended(old)):
                log(head + f" -- done ({outcome(old)}), skipped")
                done.append(old)
                continue
            log(head + " -- measured on a busy machine: rerunning")
        if dry_run:
            log(head + (" -- would be refused" if est.total > limit else " -- would run"))
            continue
        quiet = None
        if quiet_load is not None and row.path != "dense-full":
            quiet = wait_quiet(quiet_load, quiet_timeout)
        log(head + f" -- running (load {list(hostenv.load_average())})")
        rec = run_row(row, out_dir, limit, resume=resume, checkpoint_dir=checkpoint_dir, quiet=quiet, log=log)
        if rec is not None:
            log(_summary(rec))
            done.append(rec)
    return done
