"""The worker: one run in a fresh process (``python -m benchmarks.harness.worker JOB.json``).

It imports the model's framework, sets the thread count, loads the split the parent planned
(verifying its content hash), fits the model (or launches its data-parallel fit), evaluates it on
validation and test, refits it on train + validation when the run asks for it, and writes a
:class:`~benchmarks.record.RunRecord` (status ``ok``, or ``failed`` with the error and whatever was
known when it failed: sizes, the history up to a divergence) to the job's result path.  Progress
events (stages, epochs) go to the parent as JSON lines over an inherited pipe.  SIGINT / SIGTERM
end the worker with status 130 and no record: an interrupted run records nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from autorec import env
from autorec.interactions import Interactions
from autorec.jsonio import to_plain
from autorec.models import registry
from autorec.splits import SplitSpec
from benchmarks import record
from benchmarks.harness.data import load_data
from benchmarks.harness.plan import RunPlan
from benchmarks.record import ErrorInfo, FitSummary, Memory, Metrics, Refit, Sizes, Timing

REPO = Path(__file__).resolve().parents[2]
MEASURED = (
    "VmHWM (peak RSS since exec) of this run's fresh worker process, or the largest peak among its "
    "children (DDP ranks) if larger"
)
MEASURED_FORKED = (
    "VmHWM (peak RSS since fork) of this run's worker process, forked from a zygote that had imported "
    "{modules}: it counts the memory the run inherits and touches, not the import-time peak a fresh "
    "worker goes through"
)
#: set in a run forked by a zygote: the modules the zygote had imported (:mod:`.zygote`)
FORKED_FROM: tuple[str, ...] | None = None
Emit = Callable[..., None]


def rss_mb(field: str = "VmRSS") -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MB."""

    b = env.process_memory_bytes(field)
    return None if b is None else round(b / 1048576.0, 1)


def _plain_rows(history: list[dict]) -> tuple[dict, ...]:
    """The per-epoch records as plain JSON scalars (list / dict statistics dropped)."""

    return tuple(to_plain({k: v for k, v in row.items() if not isinstance(v, (list, dict))}) for row in history)


def fit_summary(info: Any) -> FitSummary:
    """A fit's :class:`~autorec.models.base.FitInfo` as the record's :class:`FitSummary`."""

    history = _plain_rows(info.history or [])
    extra = {k: v for k, v in (info.extra or {}).items() if not isinstance(v, (list, dict)) or k == "devices"}
    return FitSummary(
        best_epoch=info.best_epoch,
        weights_epoch=info.weights_epoch,
        epochs_run=int(info.epochs_run or len(history) or 1),
        history=history,
        extra=to_plain(extra),
    )


def _epoch_timing(fit_seconds: float, fit: FitSummary) -> dict[str, float]:
    """``per_epoch``: the median epoch when the model times every epoch (one-off start-up such as
    a lazy framework import excluded), else ``fit / epochs_run``."""
    secs = sorted(r["seconds"] for r in fit.history if isinstance(r.get("seconds"), (int, float)))
    per_epoch = fit_seconds / fit.epochs_run
    if secs and len(secs) == fit.epochs_run == len(fit.history):
        per_epoch = secs[len(secs) // 2]
    return {
        "fit": round(fit_seconds, 4),
        "per_epoch": round(per_epoch, 5),
        "fit_per_epoch": round(fit_seconds / fit.epochs_run, 5),
    }


def train_plus_valid(d: Any):
    """The train and validation parts as one :class:`~autorec.interactions.Interactions` (what a
    refit trains on): the same index space, rows back in the dataset's order."""

    t, v = d.train, d.valid
    order = np.argsort(np.concatenate([d.split.train, d.split.valid]), kind="stable")
    return Interactions(
        users=np.concatenate([t.users, v.users])[order],
        items=np.concatenate([t.items, v.items])[order],
        ratings=np.concatenate([t.ratings, v.ratings])[order],
        n_users=t.n_users,
        n_items=t.n_items,
        rating_scale=t.rating_scale,
    )


class Worker:
    """One run's work; ``state`` holds the record's sections as they become known, so a failure
    record keeps them.  ``options``: what a job of another kind needs besides the plan (see
    :data:`JOB_KINDS`; an ordinary run needs none)."""

    def __init__(self, plan: RunPlan, threads: int, emit: Emit, options: dict[str, Any] | None = None) -> None:
        self.plan = plan
        self.threads = threads
        self.emit = emit
        self.options = dict(options or {})
        self.state: dict[str, Any] = {}
        self.timing: dict[str, float] = {}
        self.memory: dict[str, Any] = {}

    # ------------------------------------------------------------------ the run
    def run(self) -> None:

        ident = self.plan.identity
        ref = registry.get(ident.model, ident.backend)
        cls = ref.load()  # imports the framework before threads are set (mxnet resets torch's threads)
        self.threads = env.set_threads(self.threads)
        self.memory["rss_after_imports"] = rss_mb()
        self.emit(event="stage", stage="loading")
        t0 = time.perf_counter()
        d = load_data(
            self.plan.dataset_ref(),
            SplitSpec.from_dict(self.plan.split_spec),
            seed=ident.split.seed,
            valid_ratio=ident.split.valid_ratio,
            source=self.plan.source,
            expect_sha256=ident.split.sha256,
        )
        self.timing["load"] = round(time.perf_counter() - t0, 4)
        self.memory["rss_after_data"] = rss_mb()
        params = dict(ident.params)
        if "threads" in cls.Config.field_names():
            params["threads"] = self.threads
        self.emit(event="stage", stage="fitting")
        model, info, fit_seconds = self.fit(cls, ref, params, d.train, d.valid, progress=self.progress)
        fit = self.state["fit"] = fit_summary(info)
        self.timing.update(_epoch_timing(fit_seconds, fit))
        self.emit(event="stage", stage="evaluating")
        t0 = time.perf_counter()
        test = model.evaluate(d.test)
        self.timing["predict"] = round(time.perf_counter() - t0, 4)
        valid = model.evaluate(d.valid) if len(d.valid) else None
        self.state["metrics"] = Metrics(
            test_rmse=test["rmse"],
            test_mae=test["mae"],
            valid_rmse=valid["rmse"] if valid else None,
            valid_mae=valid["mae"] if valid else None,
        )
        self.state["sizes"] = Sizes(
            n_users=int(d.train.n_users),
            n_items=int(d.train.n_items),
            n_train=len(d.train),
            n_valid=len(d.valid),
            n_test=len(d.test),
            n_cold_start=int(test["n_cold_start"]),
            n_cold_start_valid=int(valid["n_cold_start"]) if valid else 0,
            rating_scale=tuple(float(v) for v in d.train.rating_scale),
        )
        if ident.refit:
            self.emit(event="stage", stage="refitting")
            self.state["refit"] = self.refit(cls, ref, params, fit, d)

    def fit(
        self, cls: Any, ref: Any, params: dict, train: Any, valid: Any, progress: Any = None, score_train: bool = True
    ):
        """Fit as the model launches: in this process, or data-parallel (one process per device).
        ``score_train=False``: a one-shot model skips scoring the train part (see ``Recommender.fit``)."""

        if self.plan.launcher == "ddp":
            nproc = len(self.plan.identity.devices)
            t0 = time.perf_counter()
            model = cls.fit_parallel(
                params, (train, valid), nproc=nproc, threads_per_rank=max(1, self.threads // nproc)
            )
            return model, model.fit_info, time.perf_counter() - t0
        model = ref.build(params)
        env.set_threads(self.threads)  # constructing may import a framework lazily
        t0 = time.perf_counter()
        info = model.fit(train, valid, progress=progress, score_train=score_train)
        return model, info, time.perf_counter() - t0

    def refit(self, cls: Any, ref: Any, params: dict, fit: FitSummary, d: Any) -> Refit:
        """The same configuration on train + validation, no validation, for the selected number of
        epochs (the epoch whose weights the selected model holds; the model's own budget for a
        one-shot model), scored once on test. Its history is not recorded, so a one-shot model skips
        the pass over train that only its history's train loss needs."""
        epochs = None
        if "epochs" in cls.Config.field_names():
            epochs = int(fit.weights_epoch or fit.epochs_run)
            params = {**params, "epochs": epochs}
        model, _info, seconds = self.fit(cls, ref, params, train_plus_valid(d), None, score_train=False)
        test = model.evaluate(d.test)
        return Refit(epochs=epochs, test_rmse=test["rmse"], test_mae=test["mae"], fit_seconds=round(seconds, 4))

    def progress(self, epoch: int, n_epochs: int, row: dict) -> None:
        self.emit(
            event="epoch",
            epoch=epoch,
            epochs=n_epochs,
            train_loss=row.get("train_loss"),
            valid_rmse=row.get("valid_rmse"),
        )

    # ------------------------------------------------------------------ the record
    def failed(self, exc: BaseException) -> dict[str, Any]:
        """The sections of a failure record: the error (with the epoch of a divergence) and the
        history up to it."""
        epoch = getattr(exc, "epoch", None)
        history = getattr(exc, "history", None)
        if history is not None and "fit" not in self.state:
            rows = _plain_rows(list(history))
            self.state["fit"] = FitSummary(best_epoch=None, weights_epoch=None, epochs_run=len(rows), history=rows)
        error = ErrorInfo(
            type=type(exc).__name__,
            message=str(exc),
            traceback=traceback.format_exc()[-6000:],
            epoch=int(epoch) if isinstance(epoch, int) else None,
        )
        return {**self.state, "error": error}

    def finish(self, status: str, sections: dict[str, Any], worker_seconds: float):
        """The record, with the worker's own peak memory, the environment and the commit."""

        self.timing["worker"] = round(worker_seconds, 3)
        # VmHWM is the high-water mark of this process since exec; ru_maxrss is not (Linux carries
        # the parent's RSS at fork over the exec into it)
        hwm = rss_mb("VmHWM")
        self_peak = hwm if hwm is not None else round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        children = round(child_kb / 1024.0, 1) if child_kb else None
        memory = Memory(
            peak_rss=max(self_peak, children or 0.0),
            self_peak_rss=self_peak,
            children_peak_rss=children,
            measured=MEASURED if FORKED_FROM is None else MEASURED_FORKED.format(modules=", ".join(FORKED_FROM)),
            **self.memory,
        )
        return self.plan.record(
            status,
            timing=Timing(**self.timing),
            memory=memory,
            environment=env.environment(),
            git_commit=env.git_commit(str(REPO)),
            **sections,
        )


#: the kinds of job a worker runs (``kind`` in the job file): an ordinary run, and a row of the scale
#: runner, whose class (a :class:`Worker` with its own ``run``) is imported when such a job starts
JOB_KINDS = {"run": "benchmarks.harness.worker:Worker", "scale": "benchmarks.scale.job:ScaleJob"}


def job_class(kind: str) -> type[Worker]:
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; known: {sorted(JOB_KINDS)}")
    module, _, name = JOB_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None, events_fd: int | None = None) -> int:
    """Run the job file ``argv[0]``; ``events_fd``: the events pipe when it is not the job's
    ``events_fd`` (a run forked by a zygote, :mod:`benchmarks.harness.zygote`)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(
            "usage: python -m benchmarks.harness.worker JOB.json  (internal; use `autorec-bench run`)", file=sys.stderr
        )
        return 2
    job = json.loads(Path(argv[0]).read_text())
    plan = record.from_plain(RunPlan, job["plan"])
    events = os.fdopen(int(job["events_fd"] if events_fd is None else events_fd), "w", buffering=1)

    def emit(**ev: Any) -> None:

        try:
            events.write(json.dumps(to_plain(ev)) + "\n")
        except (OSError, ValueError):
            pass

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t_start = time.perf_counter()
    worker = job_class(job.get("kind", "run"))(plan, int(job["threads"]), emit, job.get("options"))
    try:
        worker.run()
        status, sections = "ok", dict(worker.state)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # recorded as a failure record; the sweep goes on
        status, sections = "failed", worker.failed(exc)
    finally:
        events.close()
    record.write(job["result"], worker.finish(status, sections, time.perf_counter() - t_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
