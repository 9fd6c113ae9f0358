"""Test-only models and helpers shared by the harness, sweep and reliability tests.

The worker subprocess imports the toy model by import string (``tests.test_harness_helpers:ToyModel``;
the harness puts the repository on the worker's ``PYTHONPATH``).  (No tests here.)
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autorec.interactions import Interactions
from autorec.models.base import IterativeRecommender
from autorec.models.config import IterativeConfig, choice, nonnegative, param
from benchmarks import harness
from benchmarks.harness import RunPlan
from benchmarks.record import RunRecord

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TOY = "tests.test_harness_helpers:ToyModel"
SYN = "synthetic:120,80,2400,3"


@dataclass(frozen=True)
class ToyConfig(IterativeConfig):
    epochs: int = param(3, low=1, doc="epochs")
    shift: float = param(0.0, doc="added to every estimate")
    mode: str = choice("ok", ("ok", "diverge", "crash", "kill", "sleep", "alloc", "gate"), "the misbehaviour")
    sleep: float = nonnegative(0.0, "seconds slept per epoch (mode sleep)")
    gate: str = param("", doc="a file every epoch waits for (mode gate; at most 120 s; it touches gate.waiting first)")
    alloc_mb: int = nonnegative(0, "megabytes held during the fit (mode alloc)")


class ToyModel(IterativeRecommender[ToyConfig]):
    """``mu + b_u + shift`` with user biases shrunk harder every epoch, misbehaving on demand
    (``mode``): ``diverge`` (a NaN training loss at epoch 2, so the shared loop raises
    TrainingDivergedError), ``crash`` (``os._exit(3)``), ``kill`` (SIGKILL, as the OOM killer),
    ``sleep`` (``sleep`` seconds per epoch), ``alloc`` (holds ``alloc_mb`` MB during the fit),
    ``gate`` (every epoch creates ``<gate>.waiting``, then waits until the file ``gate`` exists: a run
    held where a test knows it is until the test lets it go)."""

    name = "toy"
    family = "mf"
    backend = "numpy"
    Config = ToyConfig
    mu: float
    bu: np.ndarray

    def make_trainer(self, train: Interactions, valid: Interactions | None) -> _ToyTrainer:
        return _ToyTrainer(self, train)

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mu + self.bu[users] + self.config.shift


class _ToyTrainer:
    def __init__(self, model: ToyModel, train: Interactions) -> None:
        self.m = model
        model.mu = train.global_mean
        self.sums = np.bincount(train.users, weights=train.ratings - model.mu, minlength=train.n_users)
        self.counts = np.bincount(train.users, minlength=train.n_users)
        model.bu = np.zeros(train.n_users)
        self.hold = np.ones(model.config.alloc_mb * 2**20 // 8) if model.config.mode == "alloc" else None

    def train_epoch(self, epoch: int) -> dict:
        c = self.m.config
        if c.mode == "crash":
            os._exit(3)
        if c.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if c.mode == "sleep":
            time.sleep(c.sleep)
        if c.mode == "gate":
            Path(c.gate + ".waiting").touch()
            deadline = time.monotonic() + 120
            while not os.path.exists(c.gate):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"toy: the gate file {c.gate} never appeared")
                time.sleep(0.02)
        self.m.bu = self.sums / (self.counts + 5.0 * epoch)
        return {"train_loss": float("nan") if c.mode == "diverge" and epoch == 2 else 1.0 / epoch}

    def state(self, copy: bool = True) -> dict[str, np.ndarray]:
        return {"bu": self.m.bu.copy() if copy else self.m.bu}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.m.bu = state["bu"].copy()

    def optimizer_state(self) -> bytes:
        return b""

    def load_optimizer_state(self, state: bytes) -> None:
        pass


def execute1(plan: RunPlan, out: Path, **kw) -> RunRecord:
    """Execute ``plan`` with one thread; the record it left (or found)."""
    rec = harness.execute(plan, out, threads=1, **kw).record
    assert rec is not None
    return rec


def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI subprocess: the repository importable, the test's own cache, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["AUTOREC_CACHE_DIR"] = str(tmp_path / "cache")
    env["OMP_NUM_THREADS"] = "1"
    return env
