"""Biased matrix factorisation ``r_ui ~ mu + b_u + b_i + p_u . q_i`` by alternating least squares
(numpy only, closed form, vectorised).

Objective (``mu`` is fixed to the training mean)::

    J = sum_(u,i) (r_ui - mu - b_u - b_i - p_u.q_i)^2
        + sum_u w_u (reg ||p_u||^2 + reg_bias b_u^2) + sum_i w_i (reg ||q_i||^2 + reg_bias b_i^2)

with ``w = number of ratings`` when ``weighted_reg`` (the weighted-lambda regularisation of Zhou et
al. 2008, "Large-scale parallel collaborative filtering for the Netflix prize") and ``w = 1``
otherwise.  A sweep (one epoch) first solves every user's ``[b_u, p_u]`` exactly given the items,
then every item's ``[b_i, q_i]`` given the users: each half-step is an exact block minimisation, so
``J`` never increases.  The normal equations of a group of rows are built at once from the outer
products of the rated rows' features (:class:`RatingRows` plans padded blocks bounded by
``chunk_mb``) and solved as one stacked ``np.linalg.solve``.  No Python loop runs over ratings.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from autorec.interactions import Interactions
from autorec.models.base import IterativeRecommender
from autorec.models.config import IterativeConfig, nonnegative, param, positive
from baselines._numpy import FactorStateMixin


class RatingRows:
    """The ratings grouped by row (user or item), CSR-style, and a plan of padded blocks.

    Rows are bucketed by rating count rounded up to a power of two; a block holds rows of one bucket,
    as an (m, L) matrix of rating positions (-1 = padding), so that the Gram matrices of all its rows
    are one batched product of an (m, L, d) feature tensor.  Padding at most doubles the work; a
    block's feature tensor and its (m, d, d) Gram stack each stay below ``chunk_mb``.
    """

    def __init__(
        self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, d: int, chunk_mb: float
    ) -> None:
        order = np.argsort(rows, kind="stable")
        self.cols = cols[order]
        self.vals = vals[order]
        self.counts = np.bincount(rows, minlength=n_rows).astype(np.int64)
        self.indptr = np.concatenate([[0], np.cumsum(self.counts)])
        self.n_rows = n_rows
        self.blocks: list[tuple[np.ndarray, np.ndarray]] = []  # (row ids, padded positions)
        nonempty = np.flatnonzero(self.counts)
        width = 1 << np.ceil(np.log2(self.counts[nonempty])).astype(np.int64)
        budget = max(1, int(chunk_mb * 2**20 // (8 * d)))  # padded ratings per block
        gram_rows = max(1, int(chunk_mb * 2**20 // (8 * d * d)))  # (m, d, d) Gram stack per block
        for w in np.unique(width):
            members = nonempty[width == w]
            per_block = max(1, min(budget // int(w), gram_rows))
            for b in range(0, len(members), per_block):
                rows_b = members[b : b + per_block]
                offs = np.arange(int(w))
                pos = self.indptr[rows_b][:, None] + offs[None, :]
                pos[offs[None, :] >= self.counts[rows_b][:, None]] = -1
                self.blocks.append((rows_b, pos))


def solve_side(
    side: RatingRows,
    other_f: np.ndarray,
    other_b: np.ndarray,
    mu: float,
    reg: float,
    reg_bias: float,
    weighted: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimiser of J over every row's ``[b, f]`` given the other side's factors and biases;
    returns ``(factors, biases)``."""
    k = other_f.shape[1]
    d = k + 1
    # features of the other side's rows, plus a zero row that padding positions point at
    z = np.zeros((other_f.shape[0] + 1, d))
    z[:-1, 0] = 1.0
    z[:-1, 1:] = other_f
    pad_col = other_f.shape[0]
    cols = np.append(side.cols, pad_col)  # position -1 -> the zero row
    target = np.append(side.vals - mu - other_b[side.cols], 0.0)
    pen = np.full(d, reg)
    pen[0] = reg_bias
    out = np.zeros((side.n_rows, d))
    diag = np.arange(d)
    with _one_blas_thread():
        _solve_blocks(side, z, cols, target, pen, weighted, out, diag)
    return out[:, 1:].copy(), out[:, 0].copy()


def _one_blas_thread():
    """BLAS on one thread for the stacked small products and solves: numpy calls BLAS once per small
    matrix, so more threads only add synchronisation: in a first run of ``make bench-threads`` (before
    this limit) 2 BLAS threads beside one busy core made an ALS fit 87x slower (187.6 s vs 2.15 s),
    and on a quiet machine they bought nothing (2.26 s vs 2.18 s)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _solve_blocks(side, z, cols, target, pen, weighted, out, diag) -> None:
    for rows, pos in side.blocks:
        zp = z[cols[pos]]  # (m, L, d), zero rows at padding
        gram = np.matmul(zp.transpose(0, 2, 1), zp)  # (m, d, d)
        rhs = np.einsum("mld,ml->md", zp, target[pos])
        w = side.counts[rows].astype(np.float64) if weighted else np.ones(len(rows))
        gram[:, diag, diag] += w[:, None] * pen[None, :]
        out[rows] = _stacked_solve(gram, rhs)


def _stacked_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        # singular only when a row's penalty is 0 and its features are degenerate: least squares
        return np.stack([np.linalg.lstsq(ai, bi, rcond=None)[0] for ai, bi in zip(a, b)])


@dataclass(frozen=True)
class ALSConfig(IterativeConfig):
    factors: int = param(32, low=1, doc="latent dimension k")
    # defaults: round values near the ML-100K validation optimum (results/tuning/ml-100k/als-numpy-*.toml)
    reg: float = nonnegative(0.1, "ridge penalty on p_u and q_i (times the rating count when weighted_reg)")
    reg_bias: float = nonnegative(0.01, "ridge penalty on b_u and b_i (same weighting)")
    weighted_reg: bool = param(True, doc="weighted-lambda regularisation (penalty x rating count)")
    epochs: int = param(30, low=1, doc="maximum sweeps (one sweep = users then items)")
    patience: int | None = param(3, low=1, doc="stop after this many sweeps without a better validation RMSE")
    init_std: float = positive(0.1, "std of the N(0, init_std) initial factors")
    chunk_mb: float = positive(64.0, "memory bound of one stacked block of normal equations")


class ALS(IterativeRecommender[ALSConfig]):
    """Biased MF by alternating least squares: exact alternating ridge solves of every user's then
    every item's ``[bias, factors]`` (see the module docstring for the objective)."""

    name = "als"
    family = "mf"
    backend = "numpy"
    Config = ALSConfig
    # Factors up to 300 and penalties up to 1 (x the rating count with weighted-lambda): the strong
    # MF settings of the literature (Rendle et al. 2019) use hundreds of factors with heavy
    # regularisation; a sweep is an exact solve, so 60 sweeps with patience 3 always converge.
    SPACE = {
        "factors": {"dist": "logint", "low": 16, "high": 300},
        "reg": {"dist": "loguniform", "low": 0.01, "high": 1.0},
        "reg_bias": {"dist": "loguniform", "low": 0.001, "high": 1.0},
        "epochs": 60,
        "patience": 3,
    }
    mu: float
    P: np.ndarray
    Q: np.ndarray
    bu: np.ndarray
    bi: np.ndarray

    def make_trainer(self, train: Interactions, valid: Interactions | None) -> _ALSSweeps:
        return _ALSSweeps(self, train)

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mu + self.bu[users] + self.bi[items] + np.einsum("nk,nk->n", self.P[users], self.Q[items])

    def objective(self, train: Interactions) -> float:
        """The regularised objective J of the current factors on ``train``."""
        u = train.users.astype(np.int64)
        i = train.items.astype(np.int64)
        err = train.ratings.astype(np.float64) - self.estimate(u, i)
        return self.objective_of(err, *self.penalty_weights(u, i))

    def penalty_weights(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The weights ``w_u``, ``w_i`` of the penalty for the ratings ``(users, items)``."""
        if self.config.weighted_reg:
            wu = np.bincount(users, minlength=len(self.bu)).astype(np.float64)
            wi = np.bincount(items, minlength=len(self.bi)).astype(np.float64)
            return wu, wi
        return np.ones(len(self.bu)), np.ones(len(self.bi))

    def objective_of(self, err: np.ndarray, wu: np.ndarray, wi: np.ndarray) -> float:
        """J from the residuals ``err`` of the train ratings and the penalty weights."""
        c = self.config
        penalty = wu @ (c.reg * np.einsum("uk,uk->u", self.P, self.P) + c.reg_bias * self.bu**2) + wi @ (
            c.reg * np.einsum("ik,ik->i", self.Q, self.Q) + c.reg_bias * self.bi**2
        )
        return float(err @ err + penalty)


class _ALSSweeps(FactorStateMixin):
    """One sweep (users, then items) per epoch; the model's factors and biases are the state.
    History rows carry ``objective`` (J after the sweep) and ``objective_after_users`` (J after
    its user half-step)."""

    def __init__(self, model: ALS, train: Interactions) -> None:
        c = model.config
        self.m = model
        self.train = train
        self.users = train.users.astype(np.int64)
        self.items = train.items.astype(np.int64)
        self.r = train.ratings.astype(np.float64)
        model.mu = float(self.r.mean())
        rng = np.random.default_rng(c.seed)
        model.P = rng.normal(0.0, c.init_std, (train.n_users, c.factors))
        model.Q = rng.normal(0.0, c.init_std, (train.n_items, c.factors))
        model.bu = np.zeros(train.n_users)
        model.bi = np.zeros(train.n_items)
        self.by_user = RatingRows(self.users, self.items, self.r, train.n_users, c.factors + 1, c.chunk_mb)
        self.by_item = RatingRows(self.items, self.users, self.r, train.n_items, c.factors + 1, c.chunk_mb)
        self.weights = model.penalty_weights(self.users, self.items)

    def train_epoch(self, epoch: int) -> dict:
        m, c = self.m, self.m.config
        m.P, m.bu = solve_side(self.by_user, m.Q, m.bi, m.mu, c.reg, c.reg_bias, c.weighted_reg)
        obj_half = m.objective_of(self.r - m.estimate(self.users, self.items), *self.weights)
        m.Q, m.bi = solve_side(self.by_item, m.P, m.bu, m.mu, c.reg, c.reg_bias, c.weighted_reg)
        err = self.r - m.estimate(self.users, self.items)  # one pass for J and the train loss
        obj = m.objective_of(err, *self.weights)
        return {"train_loss": float(np.mean(err**2)), "objective": obj, "objective_after_users": obj_half}
