"""The floors every model must beat: the global mean, and the regularised bias model
``r_ui ~ mu + b_u + b_i`` (numpy only)."""

from __future__ import annotations

import time

import numpy as np

from autorec.interactions import Interactions
from autorec.metrics import ColdStartPolicy, evaluate
from autorec.models.base import FitInfo, ProgressFn

from baselines._common import Baseline, Param, check_pairs, check_train, check_valid, nonnegative, positive

def _cold_start_param() -> Param:
    return Param("global-mean", str, "a cold-start policy ('global-mean', 'constant', 'constant:V')",
                 lambda v: _valid_policy(v), doc="policy of the validation RMSE during fit")


def _valid_policy(text: str) -> bool:
    try:
        ColdStartPolicy.parse(text)
    except Exception:
        return False
    return True


class GlobalMean(Baseline):
    """Predicts the mean training rating for every pair."""

    name = "global-mean"
    backend = "numpy"
    PARAMS = {"cold_start": _cold_start_param()}

    def describe(self) -> dict:
        return {"algorithm": "mean of the training ratings"}

    def fit(self, train: Interactions, valid: Interactions | None = None, *,
            progress: ProgressFn | None = None) -> FitInfo:
        check_train(self.label(), train)
        check_valid(self.label(), train, valid)
        t0 = time.perf_counter()
        self.n_users, self.n_items = train.n_users, train.n_items
        self.mu = train.global_mean
        self._fitted = True
        loss = float(np.mean((train.ratings.astype(np.float64) - self.mu) ** 2))
        vr = None
        if valid is not None and len(valid):
            vr = evaluate(self, train, valid, self.p["cold_start"])["rmse"]
        row = {"epoch": 1, "train_loss": loss, "valid_rmse": vr, "seconds": time.perf_counter() - t0}
        if progress is not None:
            progress(1, 1, dict(row))
        return FitInfo(history=[row], best_epoch=1 if vr is not None else None, epochs_run=1,
                       extra={"best_valid_rmse": vr})

    def predict(self, users, items) -> np.ndarray:
        self._check_fitted()
        users, items = check_pairs(self.label(), users, items, self.n_users, self.n_items)
        return np.full(users.shape, self.mu, dtype=np.float64)


def bias_objective(train: Interactions, mu: float, bu: np.ndarray, bi: np.ndarray,
                   reg_user: float, reg_item: float) -> float:
    """sum (r - mu - b_u - b_i)^2 + reg_user sum b_u^2 + reg_item sum b_i^2."""
    err = train.ratings.astype(np.float64) - mu - bu[train.users] - bi[train.items]
    return float(err @ err + reg_user * (bu @ bu) + reg_item * (bi @ bi))


class BiasOnly(Baseline):
    """``mu + b_u + b_i`` minimising ``sum (r - mu - b_u - b_i)^2 + reg_user sum b_u^2 + reg_item
    sum b_i^2`` with ``mu`` the training mean, by alternating exact (closed-form) updates::

        b_i = sum_{u in U(i)} (r_ui - mu - b_u) / (reg_item + |U(i)|)     (items first, then users)
        b_u = sum_{i in I(u)} (r_ui - mu - b_i) / (reg_user + |I(u)|)

    (the scheme of scikit-surprise's ``BaselineOnly`` with ALS, vectorised with ``np.bincount``),
    until no bias moves by more than ``tol`` in a sweep or ``max_iter`` sweeps ran.  Each
    sweep is one history row.  The objective is strictly convex for positive regularisation, so the
    sweeps converge to its unique minimiser.
    """

    name = "bias-only"
    backend = "numpy"
    PARAMS = {
        "reg_user": nonnegative(float, 15.0, "ridge penalty on user biases"),
        "reg_item": nonnegative(float, 10.0, "ridge penalty on item biases"),
        "max_iter": positive(int, 50, "maximum alternating sweeps"),
        "tol": nonnegative(float, 1e-7, "stop when no bias moves by more than this in a sweep"),
        "cold_start": _cold_start_param(),
    }

    def describe(self) -> dict:
        return {"algorithm": "alternating closed-form ridge updates of item then user biases"}

    def fit(self, train: Interactions, valid: Interactions | None = None, *,
            progress: ProgressFn | None = None) -> FitInfo:
        check_train(self.label(), train)
        check_valid(self.label(), train, valid)
        p = self.p
        self.n_users, self.n_items = train.n_users, train.n_items
        u = train.users.astype(np.int64)
        i = train.items.astype(np.int64)
        r = train.ratings.astype(np.float64)
        self.mu = float(r.mean())
        n_u = np.bincount(u, minlength=self.n_users).astype(np.float64)
        n_i = np.bincount(i, minlength=self.n_items).astype(np.float64)
        den_u = p["reg_user"] + n_u
        den_i = p["reg_item"] + n_i
        den_u[den_u == 0] = 1.0  # users/items without ratings (and no penalty) keep b = 0
        den_i[den_i == 0] = 1.0
        self.bu = np.zeros(self.n_users)
        self.bi = np.zeros(self.n_items)
        self._fitted = True
        res = r - self.mu
        history = []
        prev = bias_objective(train, self.mu, self.bu, self.bi, p["reg_user"], p["reg_item"])
        vr = None
        for sweep in range(1, p["max_iter"] + 1):
            t0 = time.perf_counter()
            old_u, old_i = self.bu, self.bi
            self.bi = np.bincount(i, weights=res - self.bu[u], minlength=self.n_items) / den_i
            self.bu = np.bincount(u, weights=res - self.bi[i], minlength=self.n_users) / den_u
            change = max(np.abs(self.bu - old_u).max(initial=0.0), np.abs(self.bi - old_i).max(initial=0.0))
            obj = bias_objective(train, self.mu, self.bu, self.bi, p["reg_user"], p["reg_item"])
            err = res - self.bu[u] - self.bi[i]
            if valid is not None and len(valid):
                vr = evaluate(self, train, valid, p["cold_start"])["rmse"]
            row = {"epoch": sweep, "train_loss": float(err @ err / len(err)), "valid_rmse": vr,
                   "seconds": time.perf_counter() - t0, "objective": obj, "max_change": change}
            history.append(row)
            if progress is not None:
                progress(sweep, p["max_iter"], dict(row))
            prev = obj
            if change <= p["tol"]:
                break
        return FitInfo(history=history, best_epoch=len(history) if vr is not None else None,
                       epochs_run=len(history), extra={"best_valid_rmse": vr, "objective": prev})

    def objective(self, train: Interactions) -> float:
        self._check_fitted()
        return bias_objective(train, self.mu, self.bu, self.bi, self.p["reg_user"], self.p["reg_item"])

    def predict(self, users, items) -> np.ndarray:
        self._check_fitted()
        users, items = check_pairs(self.label(), users, items, self.n_users, self.n_items)
        return self.mu + self.bu[users] + self.bi[items]
