"""The D2L book's MF (d2l.ai chapter "Matrix Factorization"): its configuration, search space and
what its PyTorch (:mod:`baselines.mf_torch`) and MXNet (:mod:`baselines.mf_mxnet`) implementations
share (framework-free, so that importing it imports neither framework)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from autorec.interactions import Interactions
from autorec.models.base import FitInfo, IterativeRecommender, ProgressFn
from autorec.models.config import IterativeConfig, devices_ok, nonnegative, param, positive, threads_param

#: the embedding tables of the chapter's ``MF`` block, in ``get_weights`` / ``set_weights`` layout
TABLES = ("P", "Q", "user_bias", "item_bias")


@dataclass(frozen=True)
class D2LConfig(IterativeConfig):
    factors: int = param(30, low=1, doc="latent dimension (D2L: 30)")
    lr: float = positive(0.002, "Adam learning rate (D2L: 0.002)")
    wd: float = nonnegative(1e-5, "Adam coupled weight decay (D2L: 1e-5)")
    epochs: int = param(20, low=1, doc="epochs (D2L: 20)")
    batch_size: int = param(512, low=1, doc="ratings per batch (D2L: 512)")
    init_std: float = positive(0.01, "std of mx.init.Normal for every embedding (D2L: 0.01)")
    patience: int | None = param(None, low=1, doc="early stopping on validation RMSE; None = D2L (all epochs)")
    # D2L keeps the weights of the last epoch; set true (with patience) to keep the best epoch's
    restore_best: bool = param(False, doc="keep the weights of the best validation epoch")
    devices: tuple[str, ...] = param(
        ("cpu",), check=devices_ok, rule="a non-empty list of devices", doc="devices / contexts"
    )
    threads: int | None = threads_param()


class D2LMF(IterativeRecommender[D2LConfig]):
    """The D2L chapter's MF: embeddings ``P``, ``Q``, user and item bias (no global mean), every
    embedding initialised N(0, init_std), Gluon ``L2Loss`` averaged per batch, MXNet's Adam with
    coupled weight decay.  Subclasses are the framework implementations."""

    name = "d2l-mf"
    family = "mf"
    Config = D2LConfig
    # Around the chapter's settings (30 factors, lr 0.002, wd 1e-5), widened to the strong MF
    # settings of the literature (up to 300 factors, much stronger weight decay); the chapter
    # trains 20 epochs, the tuner may go to 100 and stop early, keeping the best epoch.
    SPACE = {
        "factors": {"dist": "logint", "low": 10, "high": 300},
        "lr": {"dist": "loguniform", "low": 0.0005, "high": 0.01},
        "wd": {"dist": "loguniform", "low": 1e-6, "high": 1e-2},
        "epochs": 100,
        "patience": 5,
        "restore_best": True,
    }

    initial_weights: dict[str, np.ndarray] | None = None

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        *,
        progress: ProgressFn | None = None,
        initial_weights: dict[str, np.ndarray] | None = None,
        **options: Any,
    ) -> FitInfo:
        """``initial_weights`` (the ``get_weights`` layout) replaces the random initialisation, e.g.
        to start both backends from identical weights."""
        self.initial_weights = initial_weights
        return super()._fit(train, valid, progress=progress, **options)
