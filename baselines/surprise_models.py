"""scikit-surprise's own ``SVD`` and ``SVDpp``, run through its public API on OUR split.

The train :class:`~autorec.interactions.Interactions` becomes a surprise ``Trainset`` via
``Dataset.load_from_df(...).build_full_trainset()`` whose raw ids are our contiguous user/item
indices (rows in the order of the train part, so surprise's inner ids, and therefore its seeded
initialisation, are exactly what a direct call on the same rows gives).  Training is surprise's own
``fit`` with ``random_state=seed`` (all epochs in one call: surprise has no validation hook, so no
early stopping; the validation RMSE is recorded once at the end).  Scores are surprise's
``algo.estimate(inner_u, inner_i)`` (its ``predict`` without clipping; the base class applies
clipping and cold start); for SVD the same formula is evaluated vectorised from the fitted public
attributes ``bu, bi, pu, qi`` (a test checks it equals surprise's ``predict``).

Missing package -> :class:`~autorec.errors.MissingDependencyError` at construction, naming
``pip install .[surprise]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import scipy.sparse as sp

from autorec.interactions import Interactions
from autorec.models.base import FitInfo, ProgressFn, Recommender
from autorec.models.config import ModelConfig, check_factor_init, nonnegative, param, positive
from baselines._oneshot import mean_squared_error, one_shot_info


def trainset_from(train: Interactions) -> Any:
    """A surprise ``Trainset`` of the train part; raw ids are our integer indices."""
    import pandas as pd
    import surprise

    df = pd.DataFrame(
        {
            "user": train.users.astype(np.int64),
            "item": train.items.astype(np.int64),
            "rating": train.ratings.astype(np.float64),
        }
    )
    reader = surprise.Reader(rating_scale=tuple(float(x) for x in train.rating_scale))
    return surprise.Dataset.load_from_df(df, reader).build_full_trainset()


def _optional(doc: str) -> Any:
    return param(None, low=0, doc=doc)


@dataclass(frozen=True)
class SurpriseSVDConfig(ModelConfig):
    """``surprise.SVD``'s keyword arguments and defaults (``seed`` is its ``random_state``)."""

    n_factors: int = param(100, low=1)
    n_epochs: int = param(20, low=1)
    biased: bool = param(True)
    init_mean: float = param(0.0)
    init_std_dev: float = nonnegative(0.1)
    lr_all: float = positive(0.005)
    reg_all: float = nonnegative(0.02)
    lr_bu: float | None = _optional("None = lr_all")
    lr_bi: float | None = _optional("None = lr_all")
    lr_pu: float | None = _optional("None = lr_all")
    lr_qi: float | None = _optional("None = lr_all")
    reg_bu: float | None = _optional("None = reg_all")
    reg_bi: float | None = _optional("None = reg_all")
    reg_pu: float | None = _optional("None = reg_all")
    reg_qi: float | None = _optional("None = reg_all")

    def check(self) -> None:
        check_factor_init("init_std_dev", self.init_std_dev, "init_mean", self.init_mean)


@dataclass(frozen=True)
class SurpriseSVDppConfig(ModelConfig):
    """``surprise.SVDpp``'s keyword arguments and defaults (``seed`` is its ``random_state``)."""

    n_factors: int = param(20, low=1)
    n_epochs: int = param(20, low=1)
    init_mean: float = param(0.0)
    init_std_dev: float = nonnegative(0.1)
    lr_all: float = positive(0.007)
    reg_all: float = nonnegative(0.02)
    lr_bu: float | None = _optional("None = lr_all")
    lr_bi: float | None = _optional("None = lr_all")
    lr_pu: float | None = _optional("None = lr_all")
    lr_qi: float | None = _optional("None = lr_all")
    lr_yj: float | None = _optional("None = lr_all")
    reg_bu: float | None = _optional("None = reg_all")
    reg_bi: float | None = _optional("None = reg_all")
    reg_pu: float | None = _optional("None = reg_all")
    reg_qi: float | None = _optional("None = reg_all")
    reg_yj: float | None = _optional("None = reg_all")
    cache_ratings: bool = param(False)

    def check(self) -> None:
        check_factor_init("init_std_dev", self.init_std_dev, "init_mean", self.init_mean)


SurpriseConfig = TypeVar("SurpriseConfig", SurpriseSVDConfig, SurpriseSVDppConfig)


class _SurpriseModel(Recommender[SurpriseConfig]):
    """A scikit-surprise algorithm fitted in one call; ``algo`` and ``trainset`` are the fitted
    surprise objects."""

    family = "mf"
    backend = "surprise"
    requires = (("surprise", "surprise"),)
    train_pass = True
    ALGO: ClassVar[str] = ""
    algo: Any
    trainset: Any

    def surprise_kwargs(self) -> dict:
        """The keyword arguments given to the surprise class."""
        kw = {k: v for k, v in self.config.to_dict().items() if k not in ("seed", "cold_start")}
        kw["random_state"] = self.config.seed
        return kw

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        *,
        progress: ProgressFn | None = None,
        score_train: bool = True,
        **options: Any,
    ) -> FitInfo:
        import surprise

        t0 = time.perf_counter()
        self.trainset = trainset_from(train)
        self.algo = getattr(surprise, self.ALGO)(**self.surprise_kwargs())
        self.algo.fit(self.trainset)
        self._implicit = None
        # our index -> surprise inner id (every index estimate() sees is in the trainset)
        self.inner_u = np.full(train.n_users, -1, dtype=np.int64)
        self.inner_i = np.full(train.n_items, -1, dtype=np.int64)
        for inner in self.trainset.all_users():
            self.inner_u[int(self.trainset.to_raw_uid(inner))] = inner
        for inner in self.trainset.all_items():
            self.inner_i[int(self.trainset.to_raw_iid(inner))] = inner
        loss = mean_squared_error(train.ratings, self.estimate(train.users, train.items)) if score_train else None
        return one_shot_info(self, valid, train_loss=loss, started=t0, progress=progress)

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """surprise's own ``estimate``, pair by pair."""
        iu, ii = self.inner_u[users], self.inner_i[items]
        return np.array([self.algo.estimate(u, i) for u, i in zip(iu.tolist(), ii.tolist())], dtype=np.float64)


class SurpriseSVD(_SurpriseModel[SurpriseSVDConfig]):
    """``surprise.SVD`` (Funk/Koren biased MF by sequential SGD), scikit-surprise's defaults."""

    name = "surprise-svd"
    ALGO = "SVD"
    Config = SurpriseSVDConfig
    # Rendle et al. (2019) get their strong SGD-MF numbers with hundreds of factors, strong
    # regularisation and many epochs (surprise's defaults: 100 factors, reg 0.02, 20 epochs), so the
    # space reaches 500 factors, reg_all 0.5 and 200 epochs; steps around surprise's 0.005.
    SPACE = {
        "n_factors": {"dist": "logint", "low": 20, "high": 500},
        "n_epochs": {"dist": "int", "low": 20, "high": 200},
        "lr_all": {"dist": "loguniform", "low": 0.001, "high": 0.02},
        "reg_all": {"dist": "loguniform", "low": 0.005, "high": 0.5},
    }

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        # SVD.estimate for known users and items, vectorised over the fitted public attributes
        a = self.algo
        iu, ii = self.inner_u[users], self.inner_i[items]
        dot = np.einsum("nk,nk->n", a.qi[ii], a.pu[iu])
        if not a.biased:
            return dot
        return np.full(len(iu), self.trainset.global_mean) + (a.bu[iu] + a.bi[ii]) + dot


class SurpriseSVDpp(_SurpriseModel[SurpriseSVDppConfig]):
    """``surprise.SVDpp`` (SVD++ with implicit feedback), scikit-surprise's defaults."""

    name = "surprise-svdpp"
    ALGO = "SVDpp"
    Config = SurpriseSVDppConfig
    # version 2: estimate vectorised (surprise's own sums each user's implicit term per pair in
    # Python; same numbers up to float summation order)
    version = 2
    _implicit: np.ndarray | None = None
    # As surprise-svd, but SVD++ costs about 20x more per epoch in surprise (its implicit term is
    # summed per rating), so the factor and epoch ranges are what 60 trials afford (the SVD++-style
    # model without that cost is bayesian-svdpp); regularisation still reaches 0.5.
    SPACE = {
        "n_factors": {"dist": "logint", "low": 10, "high": 50},
        "n_epochs": {"dist": "int", "low": 10, "high": 50},
        "lr_all": {"dist": "loguniform", "low": 0.001, "high": 0.02},
        "reg_all": {"dist": "loguniform", "low": 0.005, "high": 0.5},
    }

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """SVDpp.estimate for known users and items, vectorised: each user's implicit term
        ``|I(u)|^-1/2 sum_{j in I(u)} y_j`` is computed once per fit, not once per pair."""
        a = self.algo
        if self._implicit is None:
            ts = self.trainset
            rows = np.repeat(np.arange(ts.n_users), [len(ts.ur[u]) for u in range(ts.n_users)])
            cols = np.array([j for u in range(ts.n_users) for j, _ in ts.ur[u]], dtype=np.int64)
            n = np.bincount(rows, minlength=ts.n_users).astype(np.float64)
            weights = 1.0 / np.sqrt(n[rows])
            implicit = sp.csr_matrix((weights, (rows, cols)), shape=(ts.n_users, ts.n_items)) @ a.yj
            self._implicit = np.asarray(implicit)
        iu, ii = self.inner_u[users], self.inner_i[items]
        user = a.pu[iu] + np.asarray(self._implicit)[iu]
        return self.trainset.global_mean + a.bu[iu] + a.bi[ii] + np.einsum("nk,nk->n", a.qi[ii], user)
