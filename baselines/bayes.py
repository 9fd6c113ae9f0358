"""Bayesian matrix factorisation by Gibbs sampling, on myfm (Bayesian factorization machines,
Rendle 2013; myfm by T. Ohtsuki).

- :class:`BayesianMF` (``bayesian-mf``): a factorization machine over a user one-hot and an item
  one-hot, i.e. ``w0 + w_u + w_i + <v_u, v_i>`` with Gaussian priors whose means and precisions get
  Gamma / Gaussian hyper-priors, all sampled (Salakhutdinov & Mnih 2008's BPMF with biases).
- :class:`BayesianSVDpp` (``bayesian-svdpp``): the same plus SVD++-style implicit features (Koren
  2008; Rendle et al. 2019, "On the difficulty of evaluating baselines"): the user side also carries
  the user's set of rated items, the item side the item's set of raters, each weighted
  ``1 / sqrt(set size)``.  These sets come from the TRAIN part only, never from validation or test.

The features are myfm ``RelationBlock`` s: one row per user (``[one-hot | implicit items]``) and
one per item (``[one-hot | implicit users]``), indexed by each rating's user and item, so the
sampler never materialises a row per rating.  The prediction is the mean over the kept samples
(``n_iter`` minus the burn-in), each call with blocks of only the users and items it asks about (the
cost per sample follows the block rows; a pair's prediction is bitwise the same), the train and
validation pairs of a fit in one call.  That mean is myfm's arithmetic, run by myfm's ``predict`` or,
about 3x faster, by the same operations in C++ (``fm_predict.cpp``); ``kernel`` chooses, ``auto``
(the default) takes C++ where it compiles and reproduces this myfm bitwise (checked once per process
on two small fits), and the fit records which ran (``FitInfo.extra["kernel"]``).  Deterministic given
``seed`` (myfm's sampler is single-threaded and seeded).  myfm draws a tqdm progress bar
unconditionally (0.3.6 and 0.4.0 have no option to turn it off), so the sampler runs with
``sys.stderr`` sent to a discarded buffer.

Missing package -> :class:`~autorec.errors.MissingDependencyError` at construction, naming
``pip install .[bayes]`` (myfm, and setuptools < 81: myfm imports ``pkg_resources``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from autorec.errors import DataError
from autorec.interactions import Interactions
from autorec.models.base import FitInfo, ProgressFn, Recommender
from autorec.models.config import ModelConfig, choice, nonnegative, param, positive
from autorec.native_lib import EXACT_FLAGS, NativeLibrary, resolve_exact
from baselines._oneshot import mean_squared_error, one_shot_info


@contextlib.contextmanager
def _quiet_myfm_import() -> Iterator[None]:
    """myfm's ``import pkg_resources`` warns that pkg_resources is deprecated: not our concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        yield


KERNELS = ("auto", "native", "myfm")
#: relation blocks the C++ posterior mean takes (kMaxBlocks in fm_predict.cpp)
MAX_BLOCKS = 8


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    # w0, w, V, k, n_blocks, indptr[], indices[], data[], rows[], offsets[], at[], n, scratch, result
    lib.fm_add_sample.argtypes = [ctypes.c_double, ptr, ptr, i64, i64, *[ptr] * 6, i64, ptr, ptr]
    lib.fm_add_sample.restype = ctypes.c_int


#: myfm's prediction of one sample in C++ (``fm_predict.cpp``): no fused multiply-add, myfm's order
NATIVE = NativeLibrary(Path(__file__).with_name("fm_predict.cpp"), "autorec_fm_predict", EXACT_FLAGS, _declare)


def relation_features(train: Interactions, implicit: bool) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The user and item feature rows, built from ``train`` alone.

    User ``u``'s row is its one-hot (``n_users`` columns), then, with ``implicit``, the items ``u``
    rated in ``train`` weighted ``1 / sqrt(n_u)`` (``n_items`` columns); item ``i``'s row is its
    one-hot, then the users who rated ``i`` in ``train`` weighted ``1 / sqrt(n_i)``.
    """
    nu, ni = train.n_users, train.n_items
    users, items = train.users.astype(np.int64), train.items.astype(np.int64)
    user_rows, item_rows = _one_hot(nu), _one_hot(ni)
    if not implicit:
        return user_rows, item_rows
    n_u = np.bincount(users, minlength=nu).astype(np.float64)
    n_i = np.bincount(items, minlength=ni).astype(np.float64)
    rated = sp.csr_matrix((1.0 / np.sqrt(n_u[users]), (users, items)), shape=(nu, ni))
    raters = sp.csr_matrix((1.0 / np.sqrt(n_i[items]), (items, users)), shape=(ni, nu))
    return sp.csr_matrix(sp.hstack([user_rows, rated])), sp.csr_matrix(sp.hstack([item_rows, raters]))


def _one_hot(n: int) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(n), (np.arange(n), np.arange(n))), shape=(n, n))


def _share(v: float) -> bool:
    return 0.0 <= v < 1.0


#: myfm's C++ binding keeps the low 32 bits of a larger rank (2**32 fitted a rank-0 model)
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class BayesConfig(ModelConfig):
    """The sampler's size, the feature grouping, and myfm's priors and initialisation (defaults:
    myfm's)."""

    rank: int = param(10, low=1, high=_INT32_MAX, doc="latent dimension (myfm takes a 32-bit int)")
    n_iter: int = param(600, low=1, high=_INT32_MAX, doc="Gibbs iterations (myfm takes a 32-bit int)")
    burn_in: float = param(
        0.01,
        check=_share,
        rule="a share in [0, 1)",
        doc="share of the first iterations whose samples are discarded (myfm's default: 5 iterations)",
    )
    grouped: bool = param(
        True, doc="separate hyper-priors per feature group (user ids, implicit items, item ids, implicit users)"
    )
    init_stdev: float = nonnegative(0.1, "std of the N(0, init_stdev) initial factors")
    alpha_0: float = positive(1.0, "noise precision alpha and lambda_w, lambda_V ~ Gamma(alpha_0 / 2, beta_0 / 2)")
    beta_0: float = positive(1.0, "see alpha_0")
    gamma_0: float = positive(1.0, "precision of the Normal(mu_0, 1 / gamma_0) prior of mu_w, mu_V")
    mu_0: float = param(0.0, doc="see gamma_0")
    reg_0: float = positive(1.0, "precision of the Normal(0, 1 / reg_0) prior of the global bias w0")
    kernel: str = choice(
        "auto",
        KERNELS,
        "how the posterior mean is computed, same numbers either way: myfm's predict, native (the same "
        "arithmetic in C++, about 3x faster), or auto (native where it reproduces myfm bitwise here, "
        "else myfm); an execution setting: no part of a run's identity, and a sweep cannot set it",
    )

    EXECUTION: ClassVar[tuple[str, ...]] = (*ModelConfig.EXECUTION, "kernel")

    def n_kept(self) -> int:
        """Samples averaged by the prediction: ``n_iter`` minus the burn-in (at least one, since
        ``burn_in < 1``)."""
        return self.n_iter - int(math.floor(self.burn_in * self.n_iter))


class BayesianMF(Recommender[BayesConfig]):
    """Bayesian MF (BPMF with biases) by Gibbs sampling: myfm over user and item one-hot features;
    the prediction averages the kept samples."""

    name = "bayesian-mf"
    family = "mf"
    backend = "myfm"
    train_pass = True
    requires = (("myfm", "bayes"),)
    Config = BayesConfig
    # Rank 8-128 (log scale): the sampler integrates the regularisation out, so large ranks overfit
    # little (Rendle et al. 2019 report Bayesian MF improving up to hundreds of dimensions on
    # ML-10M, with most of the gain by 128); the cost grows with the rank (ML-100K: a rank-64,
    # 300-iteration Bayesian SVD++ fit takes 80 s here), so 128 is the cap that 60 trials afford.  A
    # Gibbs chain improves with more kept samples, with diminishing returns past a few hundred; it
    # leaves its initialisation within a few dozen iterations, so 100-600 iterations and a burn-in
    # share from almost none (myfm's default, 5 iterations) to 30%.
    SPACE = {
        "rank": {"dist": "logint", "low": 8, "high": 128},
        "n_iter": {"dist": "int", "low": 100, "high": 600},
        "burn_in": {"dist": "uniform", "low": 0.0, "high": 0.3},
    }
    #: SVD++-style implicit features (:func:`relation_features`)
    implicit: ClassVar[bool] = False
    user_features: sp.csr_matrix
    item_features: sp.csr_matrix
    fm: Any
    #: (users, items, predictions) of the validation pairs, predicted alongside the fit
    _kept: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    #: how the fitted model computes its posterior mean ("native" or "myfm", see resolve_kernel)
    _kernel: str = "myfm"

    @classmethod
    def require(cls) -> None:
        with _quiet_myfm_import():
            super().require()

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        *,
        progress: ProgressFn | None = None,
        score_train: bool = True,
        **options: Any,
    ) -> FitInfo:
        self._kept = None  # first: a fit that fails leaves nothing of an earlier one behind
        with _quiet_myfm_import():
            import myfm
        c = self.config
        t0 = time.perf_counter()
        self._kernel, kernel_note = resolve_kernel(c)
        self.user_features, self.item_features = relation_features(train, self.implicit)
        blocks = self._blocks(train.users, train.items)
        self.fm = myfm.MyFMGibbsRegressor(
            rank=c.rank,
            init_stdev=c.init_stdev,
            random_seed=c.seed,
            alpha_0=c.alpha_0,
            beta_0=c.beta_0,
            gamma_0=c.gamma_0,
            mu_0=c.mu_0,
            reg_0=c.reg_0,
        )
        noise_std: list[float] = []

        def record(i: int, fm: Any, hyper: Any, history: Any) -> tuple[bool, None]:
            noise_std.append(1.0 / math.sqrt(hyper.alpha))
            return False, None

        with contextlib.redirect_stderr(io.StringIO()):  # myfm's unconditional tqdm bar
            self.fm.fit(
                None,
                train.ratings.astype(np.float64),
                X_rel=blocks,
                n_iter=c.n_iter,
                n_kept_samples=c.n_kept(),
                group_shapes=self._group_shapes(train) if c.grouped else None,
                callback=record,
            )
        # the train predictions (for the train loss) and the validation ones in one pass over the
        # samples; the validation ones are kept for evaluate(valid)
        n = len(train) if score_train else 0
        users, items = train.users[:n], train.items[:n]
        if valid is not None:
            warm = ~self.cold_mask(valid.users, valid.items)
            vu, vi = valid.users[warm], valid.items[warm]
            users, items = np.concatenate([users, vu]), np.concatenate([items, vi])
        mean = self._posterior_mean(users, items) if len(users) else np.zeros(0)
        if valid is not None:
            self._kept = (vu, vi, mean[n:])
        return one_shot_info(
            self,
            valid,
            train_loss=mean_squared_error(train.ratings, mean[:n]) if score_train else None,
            started=t0,
            progress=progress,
            n_kept_samples=c.n_kept(),
            sampler_noise_std=noise_std,
            kernel=self._kernel,
            **({"kernel_note": kernel_note} if kernel_note else {}),
        )

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self._kept is not None:
            kept_users, kept_items, mean = self._kept
            if np.array_equal(kept_users, users) and np.array_equal(kept_items, items):
                return mean.copy()
        return self._posterior_mean(users, items)

    def _posterior_mean(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """myfm's prediction (the mean over the kept samples) for each (user, item) pair, with relation
        blocks of only the users and items asked about: myfm computes each block row's terms for
        every sample and each pair from its own rows, so a pair's prediction is bitwise the same
        whatever else is in the call, and the cost per sample follows the rows asked about."""
        with _quiet_myfm_import():
            from myfm import RelationBlock
        user_rows, user_at = np.unique(np.asarray(users, dtype=np.int64), return_inverse=True)
        item_rows, item_at = np.unique(np.asarray(items, dtype=np.int64), return_inverse=True)
        features = [self.user_features[user_rows], self.item_features[item_rows]]
        if self._kernel == "native":
            return native_posterior_mean(self.fm.predictor_.samples, features, [user_at, item_at])
        blocks = [RelationBlock(at.tolist(), x) for at, x in zip((user_at, item_at), features)]
        return np.asarray(self.fm.predict(None, blocks), dtype=np.float64)

    def _blocks(self, users: np.ndarray, items: np.ndarray) -> list:
        with _quiet_myfm_import():
            from myfm import RelationBlock
        return [
            RelationBlock(np.asarray(users, dtype=np.int64).tolist(), self.user_features),
            RelationBlock(np.asarray(items, dtype=np.int64).tolist(), self.item_features),
        ]

    def _group_shapes(self, train: Interactions) -> list[int]:
        """Feature groups in column order: user ids[, implicit items], item ids[, implicit users]."""
        if self.implicit:
            return [train.n_users, train.n_items, train.n_items, train.n_users]
        return [train.n_users, train.n_items]


class BayesianSVDpp(BayesianMF):
    """Bayesian SVD++ by Gibbs sampling: :class:`BayesianMF` plus each user's normalised set of
    rated items and each item's normalised set of raters, from the train part only."""

    name = "bayesian-svdpp"
    implicit = True
    # As bayesian-mf: the implicit features add parameters, not hyper-parameters.
    SPACE = BayesianMF.SPACE


# ---------------------------------------------------------------------- the native posterior mean
def native_posterior_mean(
    samples: Sequence[Any], features: Sequence[sp.csr_matrix], at: Sequence[np.ndarray]
) -> np.ndarray:
    """myfm's ``Predictor.predict`` over relation blocks only (no plain features), its arithmetic in
    C++ (``fm_predict.cpp``): the sum of every sample's prediction in sample order, divided by the
    number of samples.  ``features[b]`` holds block ``b``'s rows (its columns follow the previous
    blocks' in the samples' ``w`` and ``V``), ``at[b][j]`` the row of pair ``j``.  Bitwise
    myfm's where :func:`native_differs` says so."""
    lib = NATIVE.require("bayesian kernel='native'", "use kernel='myfm'")
    if not 1 <= len(at) <= MAX_BLOCKS:
        raise DataError(f"posterior mean: {len(at)} relation blocks; the C++ kernel takes 1 to {MAX_BLOCKS}")
    n = len(at[0])
    first = samples[0]
    n_features, k = np.asarray(first.V).shape
    arrays, offset = [], 0
    for x, rows_at in zip(features, at, strict=True):
        x = sp.csr_matrix(x)
        indptr = np.ascontiguousarray(x.indptr, dtype=np.int64)
        indices = np.ascontiguousarray(x.indices, dtype=np.int64)
        data = np.ascontiguousarray(x.data, dtype=np.float64)
        rows_at = np.ascontiguousarray(rows_at, dtype=np.int64)
        n_rows, n_cols = len(indptr) - 1, int(x.get_shape()[1])
        if len(rows_at) != n or (n and (rows_at.min() < 0 or rows_at.max() >= n_rows)):
            raise DataError(f"posterior mean: pair rows out of range of a block of {n_rows} rows")
        consistent = indptr[0] == 0 and indptr[-1] == len(indices) == len(data)
        if (
            not consistent
            or np.any(np.diff(indptr) < 0)
            or (len(indices) and (indices.min() < 0 or indices.max() >= n_cols))
        ):
            raise DataError("posterior mean: a relation block's CSR structure is inconsistent")
        arrays.append((indptr, indices, data, n_rows, offset, rows_at))
        offset += n_cols
    if offset != n_features:
        raise DataError(f"posterior mean: the blocks have {offset} feature columns, the samples {n_features}")

    def pointers(i: int) -> ctypes.Array:
        return (ctypes.c_void_p * len(arrays))(*(a[i].ctypes.data for a in arrays))

    indptrs, index_ptrs, data_ptrs, at_ptrs = pointers(0), pointers(1), pointers(2), pointers(5)
    rows = np.array([a[3] for a in arrays], dtype=np.int64)
    offsets = np.array([a[4] for a in arrays], dtype=np.int64)
    scratch = np.empty(int(rows.sum()) * (1 + 2 * k), dtype=np.float64)
    result = np.zeros(n, dtype=np.float64)
    V = np.empty((n_features, k), dtype=np.float64)  # row-major: one feature's factors together
    for sample in samples:
        w, factors = np.ascontiguousarray(sample.w, dtype=np.float64), np.asarray(sample.V)
        if w.shape != (n_features,) or factors.shape != (n_features, k):
            raise DataError(
                f"posterior mean: a sample's weights {w.shape} and factors {factors.shape} differ from the first's"
            )
        np.copyto(V, factors)
        rc = lib.fm_add_sample(
            float(sample.w0), w.ctypes.data, V.ctypes.data, k, len(arrays), indptrs, index_ptrs, data_ptrs,
            rows.ctypes.data, offsets.ctypes.data, at_ptrs, n, scratch.ctypes.data, result.ctypes.data,
        )  # fmt: skip
        if rc != 0:
            raise DataError(f"posterior mean: the C++ kernel refused the call (code {rc})")
    result /= len(samples)
    return result


def resolve_kernel(config: BayesConfig) -> tuple[str, str | None]:
    """How a fit with ``config`` computes its posterior mean ("native" or "myfm") and, when ``auto``
    fell back to myfm, why.  ``native`` that cannot run here, or does not reproduce this myfm
    (:func:`native_differs`), is a :class:`ConfigError`."""
    return resolve_exact(
        config.kernel,
        NATIVE,
        lambda: native_differs(),  # looked up at call time (tests replace it)
        fallback="myfm",
        setting="bayesian kernel='native'",
        what="native posterior mean",
        reproduces="this myfm's predictions",
    )


@functools.cache
def native_differs() -> str | None:
    """``None`` when the C++ posterior mean is bitwise myfm's on three small fits (SVD++ features:
    rows of many entries, weights other than 1, at ranks 5 and 17, the latter filling the widest
    vectors of the factor loops; plain MF: one-hot rows) for every pair asked, some twice; else what
    differed, or why the check itself failed.  Once per process."""
    try:
        return _native_differs()
    except Exception as exc:  # a check that cannot run proves nothing: myfm's own predict is used
        return f"the self-check failed: {type(exc).__name__}: {exc}"


def _native_differs() -> str | None:
    rng = np.random.default_rng(20261207)
    for cls, rank in ((BayesianSVDpp, 5), (BayesianSVDpp, 17), (BayesianMF, 3)):
        n_users, n_items, n = 23, 31, 400
        train = Interactions(
            users=rng.integers(0, n_users, n).astype(np.int32),
            items=rng.integers(0, n_items, n).astype(np.int32),
            ratings=rng.integers(1, 6, n).astype(np.float32),
            n_users=n_users,
            n_items=n_items,
            rating_scale=(1.0, 5.0),
        )
        model = cls(rank=rank, n_iter=12, burn_in=0.25, kernel="myfm")
        model.fit(train, score_train=False)
        users = np.concatenate([train.users, rng.integers(0, n_users, 50)]).astype(np.int64)
        items = np.concatenate([train.items, rng.integers(0, n_items, 50)]).astype(np.int64)
        expected = model._posterior_mean(users, items)
        model._kernel = "native"
        got = model._posterior_mean(users, items)
        if not np.array_equal(got, expected):
            return f"{cls.name}: differs by up to {np.max(np.abs(got - expected)):.3g} (rank {rank})"
    return None
