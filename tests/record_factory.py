"""Build :class:`~benchmarks.record.RunRecord` objects for the report and verify tests, without running
anything, and write them as raw files (through :func:`benchmarks.record.write`).  (No tests here.)"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autorec.splits import SplitSpec
from benchmarks import record
from benchmarks.record import (
    Conditions,
    DataRef,
    ErrorInfo,
    FitSummary,
    Memory,
    Metrics,
    Refit,
    RunIdentity,
    RunRecord,
    Sizes,
    SplitRef,
    Timing,
)

FAMILIES = {"i-autorec": "autorec", "u-autorec": "autorec", "bias-only": "baseline", "global-mean": "baseline"}
NAMES = {"i-autorec": "I-AutoRec", "u-autorec": "U-AutoRec"}


def make_run(
    *,
    dataset: str = "ml-100k",
    split: str = "random:test_ratio=0.1",
    seed: int = 0,
    model: str = "als",
    backend: str = "numpy",
    family: str | None = None,
    params: dict[str, Any] | None = None,
    test_rmse: float = 0.9,
    valid_rmse: float | None = None,
    refit_rmse: float | None = None,
    devices: tuple[str, ...] = ("cpu",),
    split_sha256: str | None = None,
    valid_ratio: float = 0.05,
    cold_start: str = "global-mean",
    status: str = "ok",
    label: str | None = None,
    sweep: str | None = "ml100k",
    history: Iterable[float] = (),
    fit_seconds: float = 10.0,
    per_epoch: float = 0.5,
    contended: bool = False,
    sizes: tuple[int, int, int] = (85500, 4500, 10000),
) -> RunRecord:
    """A successful (or failed) record; ``valid_rmse`` defaults to ``test_rmse + 0.01``, ``history``
    is the validation RMSE per epoch."""
    spec = SplitSpec.parse(split)
    sha = split_sha256 or hashlib.sha256(f"{dataset}|{spec}|{seed}|{valid_ratio}".encode()).hexdigest()
    identity = RunIdentity(
        data=DataRef(dataset, hashlib.sha256(dataset.encode()).hexdigest()),
        split=SplitRef(str(spec), spec.kind, dict(spec.args), seed, valid_ratio, sha),
        model=model,
        backend=backend,
        model_version=1,
        devices=devices,
        params={**(params or {}), "seed": seed},
        cold_start_policy=cold_start,
        refit=refit_rmse is not None,
    )
    hist = tuple({"epoch": e, "valid_rmse": v, "train_loss": 1.0 / e} for e, v in enumerate(history, start=1))
    ok = status == "ok"
    n_train, n_valid, n_test = sizes
    return RunRecord(
        run_id=identity.run_id,
        status=status,
        identity=identity,
        family=family or FAMILIES.get(model, "mf"),
        display_name=NAMES.get(model, model),
        label=label,
        sweep=sweep,
        metrics=Metrics(test_rmse, test_rmse - 0.2, test_rmse + 0.01 if valid_rmse is None else valid_rmse)
        if ok
        else None,
        refit=Refit(len(hist) or None, refit_rmse, refit_rmse - 0.2, fit_seconds) if refit_rmse is not None else None,
        fit=FitSummary(len(hist) or None, len(hist) or None, len(hist), hist) if ok else None,
        sizes=Sizes(943, 1682, n_train, n_valid, n_test, 3, 1, (1.0, 5.0)),
        timing=Timing(fit=fit_seconds, per_epoch=per_epoch) if ok else Timing(),
        memory=Memory(peak_rss=400.0),
        conditions=Conditions(threads=1, contended=contended, worker_start="forked" if seed % 2 else "fresh"),
        error=None if ok else ErrorInfo("TrainingDivergedError", "loss is nan at epoch 2"),
        environment={"cpu_model": "Test CPU", "cpu_count": 2, "torch": "2.13.0+cpu", "numpy": "1.23.5"},
        git_commit="abc123",
    )


def write_runs(raw_dir: Path, runs: Iterable[RunRecord]) -> list[Path]:
    """Each record as ``<dataset>_<run_id[:16]>.json`` under ``raw_dir``."""
    return [record.write(raw_dir / f"{r.dataset}_{r.run_id[:16]}.json", r) for r in runs]
