"""The :class:`~autorec.models.base.FitInfo` of a model fitted in one call (scikit-surprise's
models, the Gibbs samplers): one history row, scored on validation once, at the end."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from autorec.interactions import Interactions
from autorec.models.base import FitInfo, ProgressFn, Recommender


def one_shot_info(
    model: Recommender,
    valid: Interactions | None,
    *,
    train_loss: float | None,
    started: float,
    progress: ProgressFn | None,
    **extra: Any,
) -> FitInfo:
    """One history row (``epoch`` 1, ``train_loss`` (None where the fit skipped scoring the train
    part), the validation RMSE of the fitted model,
    ``seconds`` since ``started``, a ``time.perf_counter()`` value), reported to ``progress``;
    ``extra`` goes to ``FitInfo.extra`` beside ``best_valid_rmse``."""
    vr = model.evaluate(valid)["rmse"] if valid is not None else None
    loss = None if train_loss is None else float(train_loss)
    row = {"epoch": 1, "train_loss": loss, "valid_rmse": vr, "seconds": time.perf_counter() - started}
    if progress is not None:
        progress(1, 1, dict(row))
    return FitInfo(
        history=[row],
        best_epoch=1 if vr is not None else None,
        epochs_run=1,
        weights_epoch=1,
        extra={"best_valid_rmse": vr, **extra},
    )


def mean_squared_error(ratings: np.ndarray, predictions: np.ndarray) -> float:
    """The train loss of a one-shot model: the mean squared error of its predictions."""
    err = np.asarray(ratings, dtype=np.float64) - predictions
    return float(err @ err / len(err))
