"""scikit-surprise's own ``SVD`` and ``SVDpp``, run through its public API on OUR split.

The train :class:`~autorec.interactions.Interactions` becomes a surprise ``Trainset`` via
``Dataset.load_from_df(...).build_full_trainset()`` whose raw ids are our contiguous user/item
indices (rows in the order of the train part, so surprise's inner ids, and therefore its seeded
initialisation, are exactly what a direct call on the same rows gives).  Training is surprise's own
``fit`` with ``random_state=seed`` (all epochs: surprise has no validation hook, so no early
stopping; the validation RMSE is recorded once at the end).  Predictions are surprise's
``algo.estimate(inner_u, inner_i)`` (its ``predict`` without clipping; clipping and cold start are
applied by :func:`autorec.metrics.predict_pairs`); for SVD the same formula is evaluated vectorised
from the fitted public attributes ``bu, bi, pu, qi`` (a test checks it equals ``predict``).

Missing package -> :class:`~autorec.errors.MissingDependencyError` at construction, naming
``pip install .[surprise]``.
"""

from __future__ import annotations

import time

import numpy as np

from autorec.interactions import Interactions
from autorec.metrics import evaluate
from autorec.models.base import FitInfo, ProgressFn

from baselines._common import (Baseline, Param, check_pairs, check_train, check_valid, nonnegative,
                               positive, require)
from baselines.simple import _cold_start_param


def _surprise():
    return require("surprise", "surprise", "surprise-svd / surprise-svdpp")


def trainset_from(train: Interactions):
    """A surprise ``Trainset`` of the train part; raw ids are our integer indices."""
    surprise = _surprise()
    import pandas as pd
    df = pd.DataFrame({"user": train.users.astype(np.int64), "item": train.items.astype(np.int64),
                       "rating": train.ratings.astype(np.float64)})
    reader = surprise.Reader(rating_scale=tuple(float(x) for x in train.rating_scale))
    return surprise.Dataset.load_from_df(df, reader).build_full_trainset()


def _opt(kind, doc):
    return Param(None, kind, ">= 0", lambda v: v >= 0, nullable=True, doc=doc)


class _SurpriseModel(Baseline):
    backend = "surprise"
    ALGO = ""
    INFO_KEYS = ("algorithm", "surprise_version")

    @classmethod
    def _require_dependencies(cls) -> None:
        require("surprise", "surprise", cls.label())

    def describe(self) -> dict:
        from importlib import metadata
        try:
            version = metadata.version("scikit-surprise")
        except metadata.PackageNotFoundError:  # pragma: no cover
            version = None
        return {"algorithm": f"scikit-surprise {self.ALGO} (its own fit, public API)",
                "surprise_version": version}

    def surprise_kwargs(self) -> dict:
        """The keyword arguments given to the surprise class."""
        kw = {k: v for k, v in self.p.items() if k not in ("seed", "cold_start")}
        kw["random_state"] = self.p["seed"]
        return kw

    def fit(self, train: Interactions, valid: Interactions | None = None, *,
            progress: ProgressFn | None = None) -> FitInfo:
        check_train(self.label(), train)
        check_valid(self.label(), train, valid)
        surprise = _surprise()
        t0 = time.perf_counter()
        self.n_users, self.n_items = train.n_users, train.n_items
        self.trainset = trainset_from(train)
        self.algo = getattr(surprise, self.ALGO)(**self.surprise_kwargs())
        self.algo.fit(self.trainset)
        # our index -> surprise inner id (-1 where unknown to the trainset)
        self.inner_u = np.full(self.n_users, -1, dtype=np.int64)
        self.inner_i = np.full(self.n_items, -1, dtype=np.int64)
        for raw, inner in self.trainset._raw2inner_id_users.items():
            self.inner_u[int(raw)] = inner
        for raw, inner in self.trainset._raw2inner_id_items.items():
            self.inner_i[int(raw)] = inner
        self._fitted = True
        err = train.ratings.astype(np.float64) - self.predict(train.users, train.items)
        vr = evaluate(self, train, valid, self.p["cold_start"])["rmse"] if valid is not None and len(valid) else None
        n_epochs = self.p["n_epochs"]
        row = {"epoch": n_epochs, "train_loss": float(err @ err / len(err)), "valid_rmse": vr,
               "seconds": time.perf_counter() - t0}
        if progress is not None:
            progress(n_epochs, n_epochs, dict(row))
        return FitInfo(history=[row], best_epoch=n_epochs if vr is not None else None, epochs_run=n_epochs,
                       extra={"best_valid_rmse": vr, "history_note": "surprise trains all epochs in one call"})

    def _inner(self, users, items):
        users, items = check_pairs(self.label(), users, items, self.n_users, self.n_items)
        return self.inner_u[users], self.inner_i[items]

    def predict(self, users, items) -> np.ndarray:
        """surprise's ``estimate`` for pairs it knows; pairs with a user or item absent from the
        trainset (cold: replaced downstream by the cold-start policy) get surprise's own default
        prediction, the train global mean."""
        self._check_fitted()
        iu, ii = self._inner(users, items)
        return self._estimate(iu, ii)

    def _estimate(self, iu: np.ndarray, ii: np.ndarray) -> np.ndarray:
        surprise = _surprise()
        out = np.empty(len(iu), dtype=np.float64)
        for n, (u, i) in enumerate(zip(iu.tolist(), ii.tolist())):
            try:
                est = self.algo.estimate(u if u >= 0 else f"UKN__{u}", i if i >= 0 else f"UKN__{i}")
            except surprise.PredictionImpossible:
                est = self.trainset.global_mean
            out[n] = est[0] if isinstance(est, tuple) else est
        return out


class SurpriseSVD(_SurpriseModel):
    """``surprise.SVD`` (Funk/Koren biased MF by sequential SGD), scikit-surprise's defaults."""

    name = "surprise-svd"
    ALGO = "SVD"
    PARAMS = {
        "n_factors": positive(int, 100),
        "n_epochs": positive(int, 20),
        "biased": Param(True, bool),
        "init_mean": Param(0.0, float),
        "init_std_dev": nonnegative(float, 0.1),
        "lr_all": positive(float, 0.005),
        "reg_all": nonnegative(float, 0.02),
        **{k: _opt(float, "None = lr_all / reg_all") for k in
           ("lr_bu", "lr_bi", "lr_pu", "lr_qi", "reg_bu", "reg_bi", "reg_pu", "reg_qi")},
        "seed": Param(0, int, ">= 0", lambda v: v >= 0, doc="surprise random_state"),
        "cold_start": _cold_start_param(),
    }

    def _estimate(self, iu: np.ndarray, ii: np.ndarray) -> np.ndarray:
        # SVD.estimate, vectorised over the fitted public attributes (known user AND item; pairs
        # with an unknown side follow SVD.estimate's partial formula).
        a = self.algo
        ku, ki = iu >= 0, ii >= 0
        su, si = np.where(ku, iu, 0), np.where(ki, ii, 0)
        dot = np.einsum("nk,nk->n", a.qi[si], a.pu[su])
        if a.biased:
            est = np.full(len(iu), self.trainset.global_mean)
            est += np.where(ku, a.bu[su], 0.0) + np.where(ki, a.bi[si], 0.0)
            return est + np.where(ku & ki, dot, 0.0)
        out = np.where(ku & ki, dot, self.trainset.global_mean)  # unbiased: PredictionImpossible -> mean
        return out


class SurpriseSVDpp(_SurpriseModel):
    """``surprise.SVDpp`` (SVD++ with implicit feedback), scikit-surprise's defaults."""

    name = "surprise-svdpp"
    ALGO = "SVDpp"
    PARAMS = {
        "n_factors": positive(int, 20),
        "n_epochs": positive(int, 20),
        "init_mean": Param(0.0, float),
        "init_std_dev": nonnegative(float, 0.1),
        "lr_all": positive(float, 0.007),
        "reg_all": nonnegative(float, 0.02),
        **{k: _opt(float, "None = lr_all / reg_all") for k in
           ("lr_bu", "lr_bi", "lr_pu", "lr_qi", "lr_yj", "reg_bu", "reg_bi", "reg_pu", "reg_qi", "reg_yj")},
        "cache_ratings": Param(False, bool),
        "seed": Param(0, int, ">= 0", lambda v: v >= 0, doc="surprise random_state"),
        "cold_start": _cold_start_param(),
    }
