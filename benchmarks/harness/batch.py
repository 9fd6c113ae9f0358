"""Running a batch of planned runs (a sweep): pending runs only, a progress bar with ETA, a tally.

:func:`run_batch` checks the output folder before anything trains, skips finished runs, hands the
rest to an :class:`~benchmarks.harness.launch.Executor` (``jobs`` local workers by default), shows
one line per finished run and closes with the counts and the failures (where their records are).
An interrupt stops the running workers (they record nothing), keeps every finished record and says
how to resume.  :func:`failures` is what ``--strict`` reads: the runs of the batch whose record in
the folder is a failure now, old failures included.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from autorec.env import default_threads
from benchmarks.harness import store
from benchmarks.harness.launch import (
    FAILED_RERUNS,
    Executor,
    Interrupted,
    LocalExecutor,
    Outcome,
    Tally,
    execute,
    terminate_active,
)
from benchmarks.harness.plan import RunPlan

#: the subfolder of a raw folder that keeps records that a newer model version replaced
SUPERSEDED = "superseded"


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def failures(plans: Iterable[RunPlan], out_dir: str | os.PathLike) -> list[Path]:
    """The record files of ``plans`` that hold a failure now (old ones included), and those of
    forced reruns that failed where a successful record was kept (``FAILED_RERUNS``: the latest
    attempt of that run failed, even though the tables still show the earlier result)."""
    out = []
    for plan in plans:
        path = store.path_for(out_dir, plan)
        side = Path(out_dir) / FAILED_RERUNS / path.name
        for where in (path, side):
            rec = store.read_if_valid(where)
            if rec is not None and rec.run_id == plan.run_id and not rec.ok:
                out.append(where)
    return out


def retire_superseded(plans: Iterable[RunPlan], out_dir: str | os.PathLike) -> list[Path]:
    """Move the successful records that a newer version of the same run's model replaced (same
    identity but ``model_version``) to ``<out_dir>/superseded/``: after a version bump, a sweep
    writes new files beside the old ones, which report and verify would refuse as a clash.  Only
    runs of ``plans`` that have a successful record of their own version are considered."""
    out_dir = Path(out_dir)
    current: dict[str, str] = {}
    for plan in plans:
        if store.is_finished(store.path_for(out_dir, plan), plan.run_id):
            current[plan.identity.versionless_id] = plan.run_id
    moved = []
    for path in store.raw_files(out_dir):
        rec = store.read_if_valid(path)
        if rec is None or not rec.ok:
            continue
        mine = current.get(rec.identity.versionless_id)
        if mine is not None and rec.run_id != mine:
            target = out_dir / SUPERSEDED / path.name
            target.parent.mkdir(exist_ok=True)
            os.replace(path, target)
            moved.append(target)
    return moved


class _EpochBar:
    """The inner per-epoch bar of a one-job batch on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, ev: dict) -> None:
        if not self.enabled or ev.get("event") != "epoch" or ev.get("epochs", 0) <= 1:
            return
        if self.bar is None:
            self.bar = tqdm(total=ev["epochs"], desc="  epochs", unit="ep", file=sys.stderr, leave=False, position=1)
        self.bar.n = ev["epoch"]
        if isinstance(ev.get("valid_rmse"), (int, float)):
            self.bar.set_postfix_str(f"valid {ev['valid_rmse']:.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_batch(
    plans: Sequence[RunPlan],
    out_dir: str | os.PathLike,
    *,
    title: str = "sweep",
    jobs: int = 1,
    executor: Executor | None = None,
    threads: int | None = None,
    progress: bool | None = None,
    rerun: bool = False,
    log: Callable[[str], Any] = print,
) -> Tally:
    """Run every pending run of ``plans`` (``jobs`` at a time on this machine unless an
    ``executor`` is given; ``threads`` per run, default cores / jobs); ``rerun``: every run, finished
    or not (each record replaced atomically once its new run ends); returns the :class:`Tally`."""
    out_dir = store.check_writable(out_dir)
    store.clean_stale_temp(out_dir)
    store.clean_stale_claims(out_dir)
    cores = default_threads()
    threads = threads or max(1, cores // jobs)
    policy = f"{threads} thread(s) per run ({jobs} job(s) on {cores} core(s))"
    pending = (
        list(plans) if rerun else [p for p in plans if not store.is_finished(store.path_for(out_dir, p), p.run_id)]
    )
    tally = Tally()
    tally.counts["skipped"] = len(plans) - len(pending)
    log(
        f"{title}: {len(plans)} runs, {tally.counts['skipped']} already done, {len(pending)} to run "
        f"({jobs} job(s), {threads} thread(s) each) -> {out_dir}"
    )
    if not pending:
        _retire(plans, out_dir, log)  # a sweep interrupted after its last run never got here
        return tally
    bar = tqdm(
        total=len(pending),
        desc=title,
        unit="run",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
    )
    epochs = _EpochBar(enabled=jobs == 1 and not bar.disable)
    t_start = time.perf_counter()

    # the run as any executor calls it; picklable, so that a remote executor ships it to its workers
    task = functools.partial(execute, out_dir=out_dir, threads=threads, thread_policy=policy, force=rerun)

    def one(plan: RunPlan) -> Outcome:  # on this machine: the task with the progress display
        if jobs == 1:
            bar.set_description_str(f"{title}: {plan.describe()[:60]}", refresh=True)
        return task(plan, on_event=epochs)

    runner = executor or LocalExecutor(jobs)
    try:
        for k, outcome in enumerate(runner.map(one if isinstance(runner, LocalExecutor) else task, pending), 1):
            epochs.close()
            tally.add(outcome)
            eta = (time.perf_counter() - t_start) / k * (len(pending) - k)
            line = f"[{k}/{len(pending)} eta {_fmt_s(eta)}] {outcome.summary}"
            if bar.disable:
                log(line)
            else:
                bar.write(line, file=sys.stderr)
                bar.update(1)
    except (KeyboardInterrupt, Interrupted):
        terminate_active()
        bar.close()
        done = tally.counts["ok"] + tally.counts["failed"]
        log(f"interrupted: {done} run(s) finished and kept; rerun the same command to resume")
        raise KeyboardInterrupt from None
    finally:
        epochs.close()
        bar.close()
    c = tally.counts
    log(
        f"{title} done in {_fmt_s(time.perf_counter() - t_start)}: {c['ok']} ok, {c['failed']} failed, "
        f"{c['skipped']} already done" + (f", {c['claimed']} left to another sweep" if c["claimed"] else "")
    )
    for line in tally.closing_lines():
        log(line)
    _retire(plans, out_dir, log)
    return tally


def _retire(plans: Sequence[RunPlan], out_dir: Path, log: Callable[[str], Any]) -> None:
    for path in retire_superseded(plans, out_dir):
        log(f"moved {path.name} to {path.parent}/: a newer version of its model's record replaces it")
