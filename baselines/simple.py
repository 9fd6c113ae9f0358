"""The floors every model must beat: the global mean, and the regularised bias model
``r_ui ~ mu + b_u + b_i`` (numpy only).

They are also the two worked examples of the model contract (:mod:`autorec.models.base`): a model
fitted in one go (:class:`GlobalMean`: ``_fit`` and ``estimate``) and an iterative one
(:class:`BiasOnly`: a trainer that runs one sweep at a time, driven by the shared loop).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from autorec.interactions import Interactions
from autorec.models.base import FitInfo, IterativeRecommender, ProgressFn, Recommender
from autorec.models.config import IterativeConfig, ModelConfig, nonnegative, param


class GlobalMean(Recommender[ModelConfig]):
    """Predicts the mean training rating for every pair."""

    name = "global-mean"
    family = "baseline"
    backend = "numpy"
    Config = ModelConfig
    SPACE: dict = {}
    mu: float  # nothing to tune

    def _fit(
        self, train: Interactions, valid: Interactions | None, *, progress: ProgressFn | None = None, **options
    ) -> FitInfo:
        t0 = time.perf_counter()
        self.mu = train.global_mean
        loss = float(np.mean((train.ratings.astype(np.float64) - self.mu) ** 2))
        vr = self.evaluate(valid)["rmse"] if valid is not None else None
        row = {"epoch": 1, "train_loss": loss, "valid_rmse": vr, "seconds": time.perf_counter() - t0}
        if progress is not None:
            progress(1, 1, dict(row))
        return FitInfo(
            history=[row],
            best_epoch=1 if vr is not None else None,
            epochs_run=1,
            weights_epoch=1,
            extra={"best_valid_rmse": vr},
        )

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.full(users.shape, self.mu, dtype=np.float64)


def bias_objective(
    train: Interactions, mu: float, bu: np.ndarray, bi: np.ndarray, reg_user: float, reg_item: float
) -> float:
    """sum (r - mu - b_u - b_i)^2 + reg_user sum b_u^2 + reg_item sum b_i^2."""
    err = train.ratings.astype(np.float64) - mu - bu[train.users] - bi[train.items]
    return float(err @ err + reg_user * (bu @ bu) + reg_item * (bi @ bi))


@dataclass(frozen=True)
class BiasOnlyConfig(IterativeConfig):
    reg_user: float = nonnegative(15.0, "ridge penalty on user biases")
    reg_item: float = nonnegative(10.0, "ridge penalty on item biases")
    tol: float = nonnegative(1e-7, "converged when no bias moves by more than this in a sweep")
    epochs: int = param(50, low=1, doc="maximum alternating sweeps")
    # a convex problem solved to convergence: no early stopping, the last sweep is the solution
    restore_best: bool = param(False, doc="keep the sweep with the best validation RMSE instead of the last")


class BiasOnly(IterativeRecommender[BiasOnlyConfig]):
    """``mu + b_u + b_i`` minimising ``sum (r - mu - b_u - b_i)^2 + reg_user sum b_u^2 + reg_item
    sum b_i^2`` with ``mu`` the training mean, by alternating exact (closed-form) updates::

        b_i = sum_{u in U(i)} (r_ui - mu - b_u) / (reg_item + |U(i)|)     (items first, then users)
        b_u = sum_{i in I(u)} (r_ui - mu - b_i) / (reg_user + |I(u)|)

    (the scheme of scikit-surprise's ``BaselineOnly`` with ALS, vectorised with ``np.bincount``),
    until no bias moves by more than ``tol`` in a sweep (``converged``) or ``epochs`` sweeps ran.
    The objective is strictly convex for positive regularisation, so the sweeps converge to its
    unique minimiser.
    """

    name = "bias-only"
    family = "baseline"
    backend = "numpy"
    Config = BiasOnlyConfig
    mu: float
    bu: np.ndarray
    bi: np.ndarray
    # Penalties span "almost none" to "shrink a 20-rating item halfway" (surprise's defaults are
    # 15 / 10); the problem is convex, so the sweep budget only needs to reach convergence.
    SPACE = {
        "reg_user": {"dist": "loguniform", "low": 0.1, "high": 100.0},
        "reg_item": {"dist": "loguniform", "low": 0.1, "high": 100.0},
    }

    def make_trainer(self, train: Interactions, valid: Interactions | None) -> _BiasSweeps:
        return _BiasSweeps(self, train)

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mu + self.bu[users] + self.bi[items]

    def objective(self, train: Interactions) -> float:
        c = self.config
        return bias_objective(train, self.mu, self.bu, self.bi, c.reg_user, c.reg_item)


class _BiasSweeps:
    """One alternating sweep per epoch; the model's biases are the trainer's state."""

    def __init__(self, model: BiasOnly, train: Interactions) -> None:
        c = model.config
        self.m = model
        self.train = train
        self.u = train.users.astype(np.int64)
        self.i = train.items.astype(np.int64)
        r = train.ratings.astype(np.float64)
        model.mu = float(r.mean())
        self.res = r - model.mu
        self.den_u = c.reg_user + np.bincount(self.u, minlength=train.n_users).astype(np.float64)
        self.den_i = c.reg_item + np.bincount(self.i, minlength=train.n_items).astype(np.float64)
        self.den_u[self.den_u == 0] = 1.0  # users/items without ratings (and no penalty) keep b = 0
        self.den_i[self.den_i == 0] = 1.0
        model.bu = np.zeros(train.n_users)
        model.bi = np.zeros(train.n_items)

    def train_epoch(self, epoch: int) -> dict:
        m, u, i = self.m, self.u, self.i
        old_u, old_i = m.bu, m.bi
        m.bi = np.bincount(i, weights=self.res - m.bu[u], minlength=len(old_i)) / self.den_i
        m.bu = np.bincount(u, weights=self.res - m.bi[i], minlength=len(old_u)) / self.den_u
        change = max(np.abs(m.bu - old_u).max(initial=0.0), np.abs(m.bi - old_i).max(initial=0.0))
        err = self.res - m.bu[u] - m.bi[i]
        return {
            "train_loss": float(err @ err / len(err)),
            "objective": m.objective(self.train),
            "max_change": float(change),
            "converged": bool(change <= m.config.tol),
        }

    def state(self, copy: bool = True) -> dict[str, np.ndarray]:
        return {"bu": self.m.bu.copy(), "bi": self.m.bi.copy()}  # copies (two vectors)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.m.bu, self.m.bi = state["bu"].copy(), state["bi"].copy()

    def optimizer_state(self) -> bytes:
        return b""

    def load_optimizer_state(self, state: bytes) -> None:
        pass
