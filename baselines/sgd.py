"""Biased MF ``r_ui ~ mu + b_u + b_i + p_u . q_i`` trained by SGD, as Funk / Koren (2008) /
scikit-surprise's ``SVD`` (numpy only, vectorised over minibatches).

Per rating, scikit-surprise's SVD does (``e = r_ui - prediction``)::

    b_u += lr_bias (e - reg_bias b_u);   b_i += lr_bias (e - reg_bias b_i)
    p_u += lr (e q_i - reg p_u);         q_i += lr (e p_u - reg q_i)

Here a minibatch of ``batch_size`` ratings computes those per-rating updates from the same current
parameters and applies their sum (repeated users/items within the batch add up), i.e. minibatch
SGD on ``sum (e^2 + reg(|p_u|^2 + |q_i|^2) + reg_bias(b_u^2 + b_i^2)) / 2`` with step ``lr`` per
rating.  ``batch_size=1`` is exactly the sequential per-rating SGD (a Python loop over ratings, slow);
larger batches are what ``params()["algorithm"]`` says.  Ratings are visited in the shuffled order
of :func:`autorec.models.batching.epoch_order` (scikit-surprise visits them unshuffled).
"""

from __future__ import annotations

import numpy as np

from autorec.interactions import Interactions
from autorec.models.base import FitInfo, ProgressFn
from autorec.models.batching import batches, epoch_order

from baselines._common import (Baseline, EpochLoop, Param, check_pairs, check_train, check_valid,
                               nonnegative, positive, scatter_add)
from baselines.simple import _cold_start_param


class BiasedMFSGD(Baseline):
    """Funk/Koren biased MF by (minibatch) SGD, early-stopped on validation RMSE."""

    name = "biased-mf"
    backend = "numpy"
    PARAMS = {
        "factors": positive(int, 100, "latent dimension k (scikit-surprise SVD default 100)"),
        "lr": positive(float, 0.005, "SGD step on p_u, q_i (surprise lr_all)"),
        "reg": nonnegative(float, 0.02, "penalty on p_u, q_i (surprise reg_all)"),
        "lr_bias": positive(float, None, "SGD step on b_u, b_i; None = lr", nullable=True),
        "reg_bias": nonnegative(float, None, "penalty on b_u, b_i; None = reg", nullable=True),
        "epochs": positive(int, 20, "maximum epochs (surprise n_epochs)"),
        "patience": positive(int, 3, "early stopping patience on validation RMSE; None = off", nullable=True),
        "batch_size": positive(int, 64, "ratings per SGD step; 1 = sequential per-rating SGD"),
        "init_mean": Param(0.0, float, doc="mean of the normal initial factors"),
        "init_std": nonnegative(float, 0.1, "std of the normal initial factors (surprise init_std_dev)"),
        "biased": Param(True, bool, doc="use mu + b_u + b_i (False: p_u . q_i only)"),
        "shuffle": Param(True, bool, doc="shuffle the ratings every epoch"),
        "seed": Param(0, int, ">= 0", lambda v: v >= 0),
        "cold_start": _cold_start_param(),
    }

    def describe(self) -> dict:
        b = self.p["batch_size"]
        if b == 1:
            algo = "sequential per-rating SGD (Funk / scikit-surprise SVD updates)"
        else:
            algo = (f"minibatch SGD: per-rating Funk / scikit-surprise SVD updates summed over "
                    f"minibatches of {b} ratings")
        return {"algorithm": algo}

    def _state(self):
        return (self.P.copy(), self.Q.copy(), self.bu.copy(), self.bi.copy())

    def _restore(self, state) -> None:
        self.P, self.Q, self.bu, self.bi = (a.copy() for a in state)

    def fit(self, train: Interactions, valid: Interactions | None = None, *,
            progress: ProgressFn | None = None) -> FitInfo:
        check_train(self.label(), train)
        check_valid(self.label(), train, valid)
        p = self.p
        k = p["factors"]
        lr, reg = p["lr"], p["reg"]
        lr_b = lr if p["lr_bias"] is None else p["lr_bias"]
        reg_b = reg if p["reg_bias"] is None else p["reg_bias"]
        self.n_users, self.n_items = train.n_users, train.n_items
        users = train.users.astype(np.int64)
        items = train.items.astype(np.int64)
        r = train.ratings.astype(np.float64)
        self.mu = float(r.mean()) if p["biased"] else 0.0
        rng = np.random.default_rng(p["seed"])
        self.P = rng.normal(p["init_mean"], p["init_std"], (self.n_users, k))
        self.Q = rng.normal(p["init_mean"], p["init_std"], (self.n_items, k))
        self.bu = np.zeros(self.n_users)
        self.bi = np.zeros(self.n_items)
        self._fitted = True
        loop = EpochLoop(self, train, valid, p["epochs"], p["patience"], progress, self._state,
                         self._restore, cold_start=p["cold_start"], describe=self.label())
        for epoch in loop:
            order = epoch_order(len(r), p["seed"], epoch - 1, shuffle=p["shuffle"])
            sq = 0.0
            if p["batch_size"] == 1:
                sq = self._sequential_epoch(users[order], items[order], r[order], lr, reg, lr_b, reg_b)
            else:
                for idx in batches(order, p["batch_size"]):
                    u, i = users[idx], items[idx]
                    pu, qi = self.P[u], self.Q[i]
                    e = r[idx] - (self.mu + self.bu[u] + self.bi[i] + np.einsum("nk,nk->n", pu, qi))
                    sq += float(e @ e)
                    if p["biased"]:
                        scatter_add(self.bu, u, lr_b * (e - reg_b * self.bu[u]))
                        scatter_add(self.bi, i, lr_b * (e - reg_b * self.bi[i]))
                    scatter_add(self.P, u, lr * (e[:, None] * qi - reg * pu))
                    scatter_add(self.Q, i, lr * (e[:, None] * pu - reg * qi))
            if loop.end_epoch(sq / len(r)):
                break
        return loop.finish()

    def _sequential_epoch(self, users, items, ratings, lr, reg, lr_b, reg_b) -> float:
        P, Q, bu, bi, mu, biased = self.P, self.Q, self.bu, self.bi, self.mu, self.p["biased"]
        sq = 0.0
        for u, i, r in zip(users.tolist(), items.tolist(), ratings.tolist()):
            pu, qi = P[u], Q[i]
            e = r - (mu + bu[u] + bi[i] + float(pu @ qi))
            sq += e * e
            if biased:
                bu[u] += lr_b * (e - reg_b * bu[u])
                bi[i] += lr_b * (e - reg_b * bi[i])
            new_pu = pu + lr * (e * qi - reg * pu)
            Q[i] = qi + lr * (e * pu - reg * qi)
            P[u] = new_pu
        return sq

    def predict(self, users, items) -> np.ndarray:
        self._check_fitted()
        users, items = check_pairs(self.label(), users, items, self.n_users, self.n_items)
        return self.mu + self.bu[users] + self.bi[items] + np.einsum("nk,nk->n", self.P[users], self.Q[items])
