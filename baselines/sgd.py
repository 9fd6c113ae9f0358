"""Biased MF ``r_ui ~ mu + b_u + b_i + p_u . q_i`` trained by SGD, as Funk / Koren (2008) /
scikit-surprise's ``SVD`` (numpy only, vectorised over minibatches).

Per rating, scikit-surprise's SVD does (``e = r_ui - prediction``)::

    b_u += lr_bias (e - reg_bias b_u);   b_i += lr_bias (e - reg_bias b_i)
    p_u += lr (e q_i - reg p_u);         q_i += lr (e p_u - reg q_i)

Here a minibatch of ``batch_size`` ratings computes those per-rating updates from the same current
parameters and applies their sum (repeated users/items within the batch add up), i.e. minibatch
SGD on ``sum (e^2 + reg(|p_u|^2 + |q_i|^2) + reg_bias(b_u^2 + b_i^2)) / 2`` with step ``lr`` per
rating.  ``batch_size=1`` is exactly the sequential per-rating SGD (a Python loop over ratings,
slow).  Ratings are visited in the shuffled order of :func:`autorec.models.batching.epoch_order`
(scikit-surprise visits them unshuffled).

An epoch runs either as the numpy loop below or as the same arithmetic in C++
(``sgd_kernel.cpp``: one call per epoch, no per-batch Python); ``kernel`` chooses, and every
choice gives bitwise the same factors, biases and losses.  ``auto`` (the default) takes the C++
epoch where it compiles and reproduces the numpy loop bitwise on this machine's numpy (checked once
per process on three small problems that exercise every code path), else the numpy loop; the fit
records which ran (``FitInfo.extra["kernel"]``).
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autorec.errors import ConfigError, DataError
from autorec.interactions import Interactions
from autorec.models.base import FitInfo, IterativeRecommender, ProgressFn
from autorec.models.batching import batches, epoch_order
from autorec.models.config import IterativeConfig, check_factor_init, choice, nonnegative, param, positive
from autorec.native_lib import EXACT_FLAGS, NativeLibrary, resolve_exact
from baselines._numpy import FactorStateMixin

KERNELS = ("auto", "native", "numpy")


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, dbl = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
    # n, batch, k, visit, n_ratings, users, items, ratings, n_users, n_items, P, Q, bu, bi, mu, lr,
    # reg, lr_b, reg_b, biased, err
    lib.mf_sgd_epoch.argtypes = [i64, i64, i64, ptr, i64, ptr, ptr, ptr, i64, i64, *[ptr] * 4, *[dbl] * 5]
    lib.mf_sgd_epoch.argtypes += [ctypes.c_int, ptr]
    lib.mf_sgd_epoch.restype = ctypes.c_int


#: the C++ epoch; no fused multiply-add, no reassociation: the numpy loop's roundings
NATIVE = NativeLibrary(Path(__file__).with_name("sgd_kernel.cpp"), "autorec_sgd", EXACT_FLAGS, _declare)


class ScatterPlan:
    """How to add per-rating rows into the rows of a parameter array indexed by ``index``
    (``np.add.at`` semantics: rows with a repeated index are summed), computed once per minibatch
    index array and applied to every array that index addresses (``b_u`` and ``P`` share one).

    The arithmetic is fixed, and is the one this suite's results were produced with: the values of
    a repeated index are summed in their order in ``index`` by ``np.add.reduceat`` (a stable sort
    groups them), then added to the target row once.  Only the work around it is cut: a minibatch
    without a repeated index adds its rows directly, and one with repeats reduces only the repeated
    groups (``reduceat`` over each group's own slice: the same reduction of the same
    numbers).  On ML-100K almost every minibatch of 64 repeats an item, so the saving is in the
    reduction: reducing every row as its own group was 40% of a biased-mf fit.
    """

    __slots__ = ("index", "firsts", "rows", "repeats", "repeated", "group_starts")

    def __init__(self, index: np.ndarray) -> None:
        self.index = index
        n = index.size
        order = np.argsort(index, kind="stable")
        sorted_index = index[order]
        first = np.empty(n, dtype=bool)
        first[:1] = True
        np.not_equal(sorted_index[1:], sorted_index[:-1], out=first[1:])
        starts = first.nonzero()[0]
        #: each distinct index (ascending) and the position in ``values`` of its first occurrence
        self.rows, self.firsts = sorted_index[starts], order[starts]
        self.repeats: np.ndarray | None = None
        if starts.size < n:
            sizes = np.empty_like(starts)
            np.subtract(starts[1:], starts[:-1], out=sizes[:-1])
            sizes[-1] = n - starts[-1]
            repeated = sizes > 1
            #: the groups of a repeated index, their positions in ``values`` (in order), and where
            #: each group starts among those
            self.repeats = repeated.nonzero()[0]
            self.repeated = order[np.repeat(repeated, sizes)]
            group_sizes = sizes[self.repeats]
            self.group_starts = np.zeros_like(group_sizes)
            np.cumsum(group_sizes[:-1], out=self.group_starts[1:])

    def add(self, target: np.ndarray, values: np.ndarray) -> None:
        """``target[index] += values``, repeated indices summed."""
        if self.index.size == 0:
            return
        if self.repeats is None:
            target[self.index] += values
            return
        sums = values[self.firsts]
        sums[self.repeats] = np.add.reduceat(values[self.repeated], self.group_starts, axis=0)
        target[self.rows] += sums


def scatter_add(target: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """``target[index] += values`` with repeated indices summed (``np.add.at`` semantics); see
    :class:`ScatterPlan` for the arithmetic."""
    ScatterPlan(index).add(target, values)


@dataclass(frozen=True)
class BiasedMFSGDConfig(IterativeConfig):
    factors: int = param(100, low=1, doc="latent dimension k (scikit-surprise SVD default 100)")
    lr: float = positive(0.005, "SGD step on p_u, q_i (surprise lr_all)")
    reg: float = nonnegative(0.02, "penalty on p_u, q_i (surprise reg_all)")
    lr_bias: float | None = param(None, low=0, low_open=True, doc="SGD step on b_u, b_i; None = lr")
    reg_bias: float | None = param(None, low=0, doc="penalty on b_u, b_i; None = reg")
    epochs: int = param(20, low=1, doc="maximum epochs (surprise n_epochs)")
    patience: int | None = param(3, low=1, doc="early stopping patience on validation RMSE; None = off")
    batch_size: int = param(64, low=1, doc="ratings per SGD step; 1 = sequential per-rating SGD")
    init_mean: float = param(0.0, doc="mean of the normal initial factors")
    init_std: float = nonnegative(0.1, "std of the normal initial factors (surprise init_std_dev)")
    biased: bool = param(True, doc="use mu + b_u + b_i (False: p_u . q_i only)")
    shuffle: bool = param(True, doc="shuffle the ratings every epoch")
    kernel: str = choice(
        "auto",
        KERNELS,
        "how an epoch runs, same numbers either way: native (C++), numpy, or auto (native where it "
        "reproduces numpy bitwise here, else numpy); an execution setting: no part of a run's identity, "
        "and a sweep cannot set it (its runs use auto)",
    )

    EXECUTION: ClassVar[tuple[str, ...]] = (*IterativeConfig.EXECUTION, "kernel")
    RESUME_MUTABLE: ClassVar[tuple[str, ...]] = (*IterativeConfig.RESUME_MUTABLE, "kernel")

    def check(self) -> None:
        check_factor_init("init_std", self.init_std, "init_mean", self.init_mean)
        if self.kernel == "native" and self.batch_size == 1:
            raise ConfigError(
                "kernel='native' needs batch_size >= 2 (batch_size=1 is the sequential "
                "per-rating loop, whose dot product is BLAS's); use kernel='auto' or 'numpy'"
            )


class BiasedMFSGD(IterativeRecommender[BiasedMFSGDConfig]):
    """Funk/Koren biased MF by SGD: per-rating scikit-surprise SVD updates, summed over minibatches
    of ``batch_size`` ratings (``batch_size=1``: sequential per-rating SGD), early-stopped on
    validation RMSE."""

    name = "biased-mf"
    family = "mf"
    backend = "numpy"
    Config = BiasedMFSGDConfig
    # Rendle et al. (2019) reach their strong SGD-MF results with 50-500 factors and much stronger
    # regularisation than surprise's 0.02: factors 16..500 (log scale), reg up to 0.5, steps around
    # surprise's 0.005 on both sides; small batches keep the per-rating SGD semantics; a large
    # epoch budget, early stopping decides.
    SPACE = {
        "factors": {"dist": "logint", "low": 16, "high": 500},
        "lr": {"dist": "loguniform", "low": 0.001, "high": 0.03},
        "reg": {"dist": "loguniform", "low": 0.005, "high": 0.5},
        "batch_size": [32, 64, 128],
        "epochs": 200,
        "patience": 5,
    }
    mu: float
    P: np.ndarray
    Q: np.ndarray
    bu: np.ndarray
    bi: np.ndarray

    def make_trainer(self, train: Interactions, valid: Interactions | None) -> _SGDEpochs:
        self._kernel, self._kernel_note = resolve_kernel(self.config)
        return _SGDEpochs(self, train, native=self._kernel == "native")

    def _fit(
        self, train: Interactions, valid: Interactions | None, *, progress: ProgressFn | None = None, **options: Any
    ) -> FitInfo:
        info = super()._fit(train, valid, progress=progress, **options)
        info.extra["kernel"] = self._kernel
        if self._kernel_note:
            info.extra["kernel_note"] = self._kernel_note
        return info

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mu + self.bu[users] + self.bi[items] + np.einsum("nk,nk->n", self.P[users], self.Q[items])


class _SGDEpochs(FactorStateMixin):
    """One pass over the ratings per epoch (the order drawn from ``(seed, epoch)``, so a resumed
    fit continues exactly); the factors and biases are the state."""

    def __init__(self, model: BiasedMFSGD, train: Interactions, *, native: bool = False) -> None:
        c = model.config
        self.m = model
        self.native = native
        self.users = train.users.astype(np.int64)
        self.items = train.items.astype(np.int64)
        self.r = train.ratings.astype(np.float64)
        self.lr_b = c.lr if c.lr_bias is None else c.lr_bias
        self.reg_b = c.reg if c.reg_bias is None else c.reg_bias
        model.mu = float(self.r.mean()) if c.biased else 0.0
        rng = np.random.default_rng(c.seed)
        model.P = rng.normal(c.init_mean, c.init_std, (train.n_users, c.factors))
        model.Q = rng.normal(c.init_mean, c.init_std, (train.n_items, c.factors))
        model.bu = np.zeros(train.n_users)
        model.bi = np.zeros(train.n_items)

    def train_epoch(self, epoch: int) -> dict:
        # a too large step overflows: the loop reports the non-finite loss as divergence
        with np.errstate(over="ignore", invalid="ignore"):
            return self._epoch(epoch)

    def _epoch(self, epoch: int) -> dict:
        c = self.m.config
        order = epoch_order(len(self.r), c.seed, epoch - 1, shuffle=c.shuffle)
        if c.batch_size == 1:
            sq = self._sequential(self.users[order], self.items[order], self.r[order])
        elif self.native:
            sq = self._native(order)
        else:
            sq = self._minibatches(order)
        return {"train_loss": sq / len(self.r)}

    def _minibatches(self, order: np.ndarray) -> float:
        """The numpy loop; the sum of squared errors."""
        m, c = self.m, self.m.config
        users, items, r = self.users, self.items, self.r
        lr, reg, lr_b, reg_b = c.lr, c.reg, self.lr_b, self.reg_b
        sq = 0.0
        for idx in batches(order, c.batch_size):
            u, i = users[idx], items[idx]
            at_u, at_i = ScatterPlan(u), ScatterPlan(i)
            pu, qi = m.P[u], m.Q[i]
            e = r[idx] - (m.mu + m.bu[u] + m.bi[i] + np.einsum("nk,nk->n", pu, qi))
            sq += float(e @ e)
            if c.biased:
                at_u.add(m.bu, lr_b * (e - reg_b * m.bu[u]))
                at_i.add(m.bi, lr_b * (e - reg_b * m.bi[i]))
            # lr * (e q_i - reg p_u) and lr * (e p_u - reg q_i), in place in the gathered copies
            # (the same operations on the same numbers, fewer temporaries: the loop's own time on
            # ML-100K u1 went from 4.7 to 3.9 s per fit)
            e_col = e[:, None]
            step_p, step_q = np.multiply(e_col, qi), np.empty_like(pu)
            step_p -= np.multiply(pu, reg, out=step_q)
            step_p *= lr
            np.multiply(e_col, pu, out=step_q)
            step_q -= np.multiply(qi, reg, out=pu)
            step_q *= lr
            at_u.add(m.P, step_p)
            at_i.add(m.Q, step_q)
        return sq

    def _native(self, order: np.ndarray) -> float:
        """The same epoch in one C++ call (``sgd_kernel.cpp``); the squared errors are summed here,
        batch by batch with numpy's ``e @ e``, as the numpy loop sums them."""
        m, c = self.m, self.m.config
        for name in ("P", "Q", "bu", "bi"):  # the kernel writes in place: C-contiguous float64 only
            arr = getattr(m, name)
            if arr.dtype != np.float64 or not arr.flags.c_contiguous or not arr.flags.writeable:
                setattr(m, name, np.array(arr, dtype=np.float64, order="C"))
        n_users, k = m.P.shape
        if m.Q.ndim != 2 or m.Q.shape[1] != k or m.bu.shape != (n_users,) or m.bi.shape != (m.Q.shape[0],):
            raise DataError(
                f"biased-mf: inconsistent factor shapes P {m.P.shape}, Q {m.Q.shape}, bu {m.bu.shape}, "
                f"bi {m.bi.shape} (a corrupt checkpoint?)"
            )
        order = np.ascontiguousarray(order, dtype=np.int64)
        err = np.empty(len(order))
        rc = NATIVE.require("biased-mf kernel='native'", "use kernel='numpy'").mf_sgd_epoch(
            len(order), c.batch_size, k, order.ctypes.data, len(self.r),
            *(a.ctypes.data for a in (self.users, self.items, self.r)),
            n_users, m.Q.shape[0],
            *(a.ctypes.data for a in (m.P, m.Q, m.bu, m.bi)),
            m.mu, c.lr, c.reg, self.lr_b, self.reg_b, int(c.biased), err.ctypes.data,
        )  # fmt: skip
        if rc == 1:
            raise DataError("biased-mf native epoch: a rating's user or item index is out of range (nothing updated)")
        if rc == 2:
            raise MemoryError(f"biased-mf native epoch: no memory for batch_size {c.batch_size} x {k} factors")
        sq = 0.0
        for s in range(0, len(err), c.batch_size):
            e = err[s : s + c.batch_size]
            sq += float(e @ e)
        return sq

    def _sequential(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> float:
        m, c = self.m, self.m.config
        P, Q, bu, bi, mu = m.P, m.Q, m.bu, m.bi, m.mu
        lr, reg, lr_b, reg_b = c.lr, c.reg, self.lr_b, self.reg_b
        sq = 0.0
        for u, i, r in zip(users.tolist(), items.tolist(), ratings.tolist()):
            pu, qi = P[u], Q[i]
            e = r - (mu + bu[u] + bi[i] + float(pu @ qi))
            sq += e * e
            if c.biased:
                bu[u] += lr_b * (e - reg_b * bu[u])
                bi[i] += lr_b * (e - reg_b * bi[i])
            new_pu = pu + lr * (e * qi - reg * pu)
            Q[i] = qi + lr * (e * pu - reg * qi)
            P[u] = new_pu
        return sq


# ---------------------------------------------------------------------- kernel choice
def resolve_kernel(config: BiasedMFSGDConfig) -> tuple[str, str | None]:
    """The epoch implementation a fit with ``config`` uses ("native" or "numpy") and, when
    ``auto`` fell back to numpy, why.  ``native`` that cannot run here, or does not reproduce this
    numpy (:func:`native_differs`), is a :class:`ConfigError`."""
    if config.kernel == "auto" and config.batch_size == 1:
        return "numpy", None  # the sequential loop: numpy only
    return resolve_exact(
        config.kernel,
        NATIVE,
        lambda: native_differs(),  # looked up at call time (tests replace it)
        fallback="numpy",
        setting="biased-mf kernel='native'",
        what="native epoch",
        reproduces=f"this numpy ({np.__version__})",
    )


def random_ratings(rng: np.random.Generator, n_users: int, n_items: int, n: int) -> Interactions:
    """``n`` uniformly random 1-5 ratings on ``n_users`` x ``n_items`` (pairs may repeat): with few
    rows, every minibatch repeats users and items."""
    return Interactions(
        users=rng.integers(0, n_users, n).astype(np.int32),
        items=rng.integers(0, n_items, n).astype(np.int32),
        ratings=rng.integers(1, 6, n).astype(np.float32),
        n_users=n_users,
        n_items=n_items,
        rating_scale=(1.0, 5.0),
    )


@functools.cache
def native_differs() -> str | None:
    """``None`` when the C++ epoch gives bitwise the numpy loop's factors, biases and loss on three
    small problems that exercise every code path (tail dot products, rows repeated 1 to 300 times
    in a batch: numpy's pairwise sums, with and without the biases, a short last batch); else what
    differed.  Once per process."""
    rng = np.random.default_rng(20261207)
    cases = [
        # (users, items, ratings, factors, batch, biased): 7 users x 5 items in batches of 97 ->
        # rows repeated ~10-30 times; one user in batches of 300 -> a group of 300 (the recursive
        # halving of numpy's pairwise sum); 60 x 80 in batches of 3 -> mostly single rows
        (7, 5, 300, 37, 97, True),
        (1, 3, 320, 5, 300, True),
        (60, 80, 101, 8, 3, False),
    ]
    for n_users, n_items, n, k, batch, biased in cases:
        train = random_ratings(rng, n_users, n_items, n)
        fits = []
        for native in (False, True):
            model = BiasedMFSGD(
                factors=k,
                batch_size=batch,
                lr=0.05,
                reg=0.03,
                lr_bias=0.04,
                reg_bias=0.02,
                biased=biased,
                kernel="numpy",
            )
            trainer = _SGDEpochs(model, train, native=native)
            losses = [trainer.train_epoch(epoch)["train_loss"] for epoch in (1, 2)]
            fits.append((losses, *(getattr(model, a) for a in ("P", "Q", "bu", "bi"))))
        (loss_a, *arrays_a), (loss_b, *arrays_b) = fits
        for name, a, b in zip(("P", "Q", "bu", "bi"), arrays_a, arrays_b):
            if not np.array_equal(a, b):
                return f"{name} differs by up to {np.max(np.abs(a - b)):.3g} (factors {k}, batch {batch})"
        if loss_a != loss_b:
            return f"train loss {loss_b!r} vs numpy {loss_a!r} (factors {k}, batch {batch})"
    return None
