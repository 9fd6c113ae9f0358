"""Test-only models and raw-record builders shared by the harness, sweep, report and verify tests.

The worker subprocess imports these models by import string (``test_harness_helpers:ToyModel``)
with ``tests/`` on ``PYTHONPATH``.  (No tests here.)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from autorec.errors import ConfigError, TrainingDivergedError
from autorec.interactions import Interactions
from autorec.models.base import FitInfo, Recommender

TESTS = Path(__file__).resolve().parent


class ToyModel(Recommender):
    """mu + shrunk user bias (+ ``shift``), with misbehaviours on demand (``mode``):
    ``ok``, ``diverge`` (TrainingDivergedError at epoch 2), ``crash`` (``os._exit(3)``),
    ``sleep`` (``sleep`` seconds per epoch), ``alloc`` (holds ``alloc_mb`` MB during fit)."""

    name = "toy"
    backend = "numpy"
    family = "mf"
    PARAMS = {"seed": 0, "cold_start": "global-mean", "epochs": 3, "shift": 0.0, "mode": "ok", "sleep": 0.0,
              "alloc_mb": 0, "devices": ["cpu"]}

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise ConfigError(f"toy: unknown parameter(s) {unknown}; known: {sorted(self.PARAMS)}")
        self.p = {**self.PARAMS, **params}
        if self.p["mode"] not in ("ok", "diverge", "crash", "sleep", "alloc"):
            raise ConfigError(f"toy: mode={self.p['mode']!r} is not ok/diverge/crash/sleep/alloc")
        if int(self.p["epochs"]) <= 0:
            raise ConfigError("toy: epochs must be > 0")
        self.p["devices"] = list(self.p["devices"])

    @classmethod
    def from_params(cls, params):
        return cls(**dict(params))

    def params(self):
        return dict(self.p)

    def fit(self, train: Interactions, valid=None, *, progress=None) -> FitInfo:
        p = self.p
        hold = None
        if p["mode"] == "alloc":
            hold = np.ones(int(p["alloc_mb"]) * 2 ** 20 // 8)
        self.mu = train.global_mean
        sums = np.bincount(train.users, weights=train.ratings - self.mu, minlength=train.n_users)
        counts = np.bincount(train.users, minlength=train.n_users)
        history = []
        for epoch in range(1, int(p["epochs"]) + 1):
            t0 = time.perf_counter()
            if p["mode"] == "crash":
                os._exit(3)
            if p["mode"] == "diverge" and epoch == 2:
                raise TrainingDivergedError(f"toy: loss is nan at epoch {epoch} (params {p})")
            if p["mode"] == "sleep":
                time.sleep(float(p["sleep"]))
            self.bu = sums / (counts + 5.0 * epoch)
            vr = None
            if valid is not None and len(valid):
                from autorec.metrics import evaluate
                vr = evaluate(self, train, valid, p["cold_start"])["rmse"]
            row = {"epoch": epoch, "train_loss": 1.0 / epoch, "valid_rmse": vr, "seconds": time.perf_counter() - t0}
            history.append(row)
            if progress is not None:
                progress(epoch, int(p["epochs"]), dict(row))
        del hold
        return FitInfo(history=history, best_epoch=int(p["epochs"]) if history[-1]["valid_rmse"] is not None else None,
                       epochs_run=len(history))

    def predict(self, users, items):
        return self.mu + self.bu[np.asarray(users)] + float(self.p["shift"])


TOY = "test_harness_helpers:ToyModel"


class ToyAutoRec(ToyModel):
    """The toy model, in the ``autorec`` family (for verify tests that run real workers)."""

    name = "toy-autorec"
    family = "autorec"


TOY_AUTOREC = "test_harness_helpers:ToyAutoRec"


# ------------------------------------------------------------------------------ raw records
def make_record(*, dataset="ml-100k", split="random:test_ratio=0.1", seed=0, model="als", backend="numpy",
                family=None, params=None, test_rmse=0.9, valid_rmse=None, test_mae=None, devices=("cpu",),
                split_sha256=None, status="ok", label=None, history=None, cold_start="global-mean",
                n_train=85500, n_valid=4500, n_test=10000, seconds=1.0) -> dict:
    """A schema-complete raw record (as the harness writes), built without running anything."""
    from benchmarks import algorithms, harness
    from autorec.splits import SplitSpec

    spec = SplitSpec.parse(split)
    params = dict(params or {})
    params.setdefault("seed", seed)
    run = harness.RunSpec(dataset=dataset, split=str(spec), seed=seed, model=model, backend=backend,
                          devices=tuple(devices), params=params, cold_start=cold_start, label=label)
    sha = split_sha256 or hashlib.sha256(f"{dataset}|{spec}|{seed}".encode()).hexdigest()
    valid_rmse = test_rmse + 0.01 if valid_rmse is None else valid_rmse
    rec = {
        "schema_version": harness.SCHEMA_VERSION, "status": status, "run_id": run.run_id,
        "identity": run.identity(), "dataset": dataset,
        "split": {"spec": str(spec), "kind": spec.kind, "args": dict(spec.args)},
        "split_sha256": sha, "model": model, "backend": backend, "devices": list(devices),
        "launcher": "single", "seed": seed, "params": params, "valid_ratio": 0.05,
        "cold_start_policy": cold_start, "label": label, "sweep": None, "variant": None,
        "family": family or algorithms.family(model), "display_name": algorithms.display_name(model, params),
        "n_train": n_train, "n_valid": n_valid, "n_test": n_test, "n_cold_start": 3, "n_cold_start_valid": 0,
        "environment": {"python": "3.11.7", "numpy": "1.23.5", "torch": "2.13.0", "mxnet": "1.9.1",
                        "cpu_model": "Test CPU", "cpu_count": 2, "gpu": [], "platform": "Linux"},
        "threads": 2, "git_commit": "abc123", "created_at": "2026-01-01T00:00:00+00:00",
        "memory": {"peak_rss_mb": 321.0}, "worker": {"exit_code": 0, "wall_seconds": seconds},
    }
    if status == "ok":
        rec.update({
            "metrics": {"test_rmse": test_rmse, "test_mae": test_mae if test_mae is not None else test_rmse * 0.79,
                        "valid_rmse": valid_rmse, "valid_mae": valid_rmse * 0.79},
            "best_epoch": 3, "epochs_run": 3,
            "history": history if history is not None else [
                {"epoch": e, "train_loss": 1.0 / e, "valid_rmse": valid_rmse + 0.05 / e, "seconds": seconds / 3}
                for e in (1, 2, 3)],
            "timing": {"fit_seconds": seconds, "seconds_per_epoch": seconds / 3, "predict_seconds": 0.01},
        })
    else:
        rec["error"] = {"type": "TrainingDivergedError", "message": "loss is nan at epoch 2", "traceback": ""}
        rec["timing"] = {}
    return rec


def write_record(raw_dir: Path, rec: dict, name: str | None = None) -> Path:
    from benchmarks import harness

    raw_dir.mkdir(parents=True, exist_ok=True)
    r = copy.deepcopy(rec)
    if name is None:
        run = harness.RunSpec(dataset=r["dataset"], split=r["split"]["spec"], seed=r["seed"], model=r["model"],
                              backend=r["backend"], devices=tuple(r["devices"]), params=r["params"],
                              cold_start=r["cold_start_policy"])
        name = run.filename
    path = raw_dir / name
    path.write_text(json.dumps(r, indent=1, sort_keys=True))
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (hidden manifest included)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
