"""The :class:`~autorec.models.base.FitInfo` of a model fitted in one call (scikit-surprise's
models, the Gibbs samplers): one history row, scored on validation once, at the end."""

from __future__ import annotations

import time
from typing import Any

from autorec.interactions import Interactions
from autorec.models.base import FitInfo, ProgressFn, Recommender


def one_shot_info(
    model: Recommender,
    valid: Interactions | None,
    *,
    train_loss: float,
    started: float,
    progress: ProgressFn | None,
    **extra: Any,
) -> FitInfo:
    """One history row (``epoch`` 1, ``train_loss``, the validation RMSE of the fitted model,
    ``seconds`` since ``started``, a ``time.perf_counter()`` value), reported to ``progress``;
    ``extra`` goes to ``FitInfo.extra`` beside ``best_valid_rmse``."""
    vr = model.evaluate(valid)["rmse"] if valid is not None else None
    row = {"epoch": 1, "train_loss": float(train_loss), "valid_rmse": vr, "seconds": time.perf_counter() - started}
    if progress is not None:
        progress(1, 1, dict(row))
    return FitInfo(
        history=[row],
        best_epoch=1 if vr is not None else None,
        epochs_run=1,
        weights_epoch=1,
        extra={"best_valid_rmse": vr, **extra},
    )
