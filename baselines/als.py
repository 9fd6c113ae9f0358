"""Biased matrix factorisation ``r_ui ~ mu + b_u + b_i + p_u . q_i`` by alternating least squares
(numpy only, closed form, vectorised).

Objective (``mu`` is fixed to the training mean)::

    J = sum_(u,i) (r_ui - mu - b_u - b_i - p_u.q_i)^2
        + sum_u w_u (reg ||p_u||^2 + reg_bias b_u^2) + sum_i w_i (reg ||q_i||^2 + reg_bias b_i^2)

with ``w = number of ratings`` when ``weighted_reg`` (the weighted-lambda regularisation of Zhou et
al. 2008, "Large-scale parallel collaborative filtering for the Netflix prize") and ``w = 1``
otherwise.  A sweep first solves every user's ``[b_u, p_u]`` exactly given the items, then every
item's ``[b_i, q_i]`` given the users: each half-step is an exact block minimisation, so ``J`` never
increases.  The normal equations of a group of rows are built at once from the outer products of the
rated rows' features (``np.add.reduceat`` over the CSR segments, in chunks bounded by ``chunk_mb``)
and solved as one stacked ``np.linalg.solve``; rows with many ratings get one BLAS Gram product each.
No Python loop runs over ratings.
"""

from __future__ import annotations

import numpy as np

from autorec.interactions import Interactions
from autorec.models.base import FitInfo, ProgressFn

from baselines._common import (Baseline, EpochLoop, Param, check_pairs, check_train, check_valid,
                               nonnegative, positive)
from baselines.simple import _cold_start_param

class _Rows:
    """The ratings grouped by row (user or item), CSR-style, and a plan of padded blocks.

    Rows are bucketed by rating count rounded up to a power of two; a block holds rows of one bucket,
    as an (m, L) matrix of rating positions (-1 = padding), so that the Gram matrices of all its rows
    are one batched product of an (m, L, k+1) feature tensor.  Padding at most doubles the work; a
    block's feature tensor and its (m, k+1, k+1) Gram stack each stay below ``chunk_mb``.
    """

    def __init__(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int,
                 d: int, chunk_mb: float) -> None:
        order = np.argsort(rows, kind="stable")
        self.cols = cols[order]
        self.vals = vals[order]
        self.counts = np.bincount(rows, minlength=n_rows).astype(np.int64)
        self.indptr = np.concatenate([[0], np.cumsum(self.counts)])
        self.n_rows = n_rows
        self.blocks: list[tuple[np.ndarray, np.ndarray]] = []  # (row ids, padded positions)
        nonempty = np.flatnonzero(self.counts)
        width = 1 << np.ceil(np.log2(self.counts[nonempty])).astype(np.int64)
        budget = max(1, int(chunk_mb * 2**20 // (8 * d)))       # padded ratings per block
        gram_rows = max(1, int(chunk_mb * 2**20 // (8 * d * d)))  # (m, d, d) Gram stack per block
        for w in np.unique(width):
            members = nonempty[width == w]
            per_block = max(1, min(budget // int(w), gram_rows))
            for b in range(0, len(members), per_block):
                rows_b = members[b:b + per_block]
                offs = np.arange(int(w))
                pos = self.indptr[rows_b][:, None] + offs[None, :]
                pos[offs[None, :] >= self.counts[rows_b][:, None]] = -1
                self.blocks.append((rows_b, pos))


def _solve_side(side: _Rows, other_f: np.ndarray, other_b: np.ndarray, mu: float, reg: float,
                reg_bias: float, weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimiser of J over every row's ``[b, f]`` given the other side's factors and biases."""
    k = other_f.shape[1]
    d = k + 1
    # features of the other side's rows, plus a zero row that padding positions point at
    z = np.zeros((other_f.shape[0] + 1, d))
    z[:-1, 0] = 1.0
    z[:-1, 1:] = other_f
    pad_col = other_f.shape[0]
    cols = np.append(side.cols, pad_col)             # position -1 -> the zero row
    target = np.append(side.vals - mu - other_b[side.cols], 0.0)
    pen = np.full(d, reg)
    pen[0] = reg_bias
    out = np.zeros((side.n_rows, d))
    diag = np.arange(d)
    for rows, pos in side.blocks:
        zp = z[cols[pos]]                            # (m, L, d), zero rows at padding
        gram = np.matmul(zp.transpose(0, 2, 1), zp)  # (m, d, d)
        rhs = np.einsum("mld,ml->md", zp, target[pos])
        w = side.counts[rows].astype(np.float64) if weighted else np.ones(len(rows))
        gram[:, diag, diag] += w[:, None] * pen[None, :]
        out[rows] = _stacked_solve(gram, rhs)
    return out[:, 1:].copy(), out[:, 0].copy()


def _stacked_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        # singular only when a row's penalty is 0 and its features are degenerate: least squares
        return np.stack([np.linalg.lstsq(ai, bi, rcond=None)[0] for ai, bi in zip(a, b)])


class ALS(Baseline):
    """Biased MF by alternating least squares (see the module docstring for the objective)."""

    name = "als"
    backend = "numpy"
    PARAMS = {
        "factors": positive(int, 32, "latent dimension k"),
        # defaults: round values near the ML-100K validation optimum (benchmarks/configs/ml100k-als.toml)
        "reg": nonnegative(float, 0.1, "ridge penalty on p_u and q_i (times the rating count when weighted_reg)"),
        "reg_bias": nonnegative(float, 0.01, "ridge penalty on b_u and b_i (same weighting)"),
        "weighted_reg": Param(True, bool, doc="weighted-lambda regularisation (penalty x rating count)"),
        "epochs": positive(int, 30, "maximum sweeps (one sweep = users then items)"),
        "patience": positive(int, 3, "stop after this many sweeps without a better validation RMSE",
                             nullable=True),
        "init_std": positive(float, 0.1, "std of the N(0, init_std) initial factors"),
        "seed": Param(0, int, ">= 0", lambda v: v >= 0),
        "chunk_mb": positive(float, 64.0, "memory bound of one stacked block of normal equations"),
        "cold_start": _cold_start_param(),
    }

    def describe(self) -> dict:
        w = "weighted-lambda" if self.p["weighted_reg"] else "plain"
        return {"algorithm": f"biased ALS, exact alternating ridge solves ({w} regularisation)"}

    # ---------------------------------------------------------------------------------------
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
        self.n_users, self.n_items = train.n_users, train.n_items
        users = train.users.astype(np.int64)
        items = train.items.astype(np.int64)
        r = train.ratings.astype(np.float64)
        self.mu = float(r.mean())
        rng = np.random.default_rng(p["seed"])
        self.P = rng.normal(0.0, p["init_std"], (self.n_users, k))
        self.Q = rng.normal(0.0, p["init_std"], (self.n_items, k))
        self.bu = np.zeros(self.n_users)
        self.bi = np.zeros(self.n_items)
        self._fitted = True
        by_user = _Rows(users, items, r, self.n_users, k + 1, p["chunk_mb"])
        by_item = _Rows(items, users, r, self.n_items, k + 1, p["chunk_mb"])
        self._objectives = []
        loop = EpochLoop(self, train, valid, p["epochs"], p["patience"], progress, self._state,
                         self._restore, cold_start=p["cold_start"], describe=self.label())
        for _ in loop:
            self.P, self.bu = _solve_side(by_user, self.Q, self.bi, self.mu, p["reg"], p["reg_bias"],
                                          p["weighted_reg"])
            obj_half = self.objective(train)
            self.Q, self.bi = _solve_side(by_item, self.P, self.bu, self.mu, p["reg"], p["reg_bias"],
                                          p["weighted_reg"])
            obj = self.objective(train)
            self._objectives.append((obj_half, obj))
            mse = float(np.mean((r - self.predict(users, items)) ** 2))
            if loop.end_epoch(mse, objective=obj, objective_after_users=obj_half):
                break
        return loop.finish()

    def objective(self, train: Interactions) -> float:
        """The regularised objective J of the current factors on ``train``."""
        self._check_fitted()
        p = self.p
        u = train.users.astype(np.int64)
        i = train.items.astype(np.int64)
        err = train.ratings.astype(np.float64) - self.predict(u, i)
        if p["weighted_reg"]:
            wu = np.bincount(u, minlength=self.n_users).astype(np.float64)
            wi = np.bincount(i, minlength=self.n_items).astype(np.float64)
        else:
            wu, wi = np.ones(self.n_users), np.ones(self.n_items)
        penalty = (wu @ (p["reg"] * np.einsum("uk,uk->u", self.P, self.P) + p["reg_bias"] * self.bu ** 2)
                   + wi @ (p["reg"] * np.einsum("ik,ik->i", self.Q, self.Q) + p["reg_bias"] * self.bi ** 2))
        return float(err @ err + penalty)

    def predict(self, users, items) -> np.ndarray:
        self._check_fitted()
        users, items = check_pairs(self.label(), users, items, self.n_users, self.n_items)
        return self.mu + self.bu[users] + self.bi[items] + np.einsum("nk,nk->n", self.P[users], self.Q[items])
