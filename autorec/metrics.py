"""Accuracy metrics, the cold-start policy and clipping (applied to every model's predictions by
:meth:`autorec.models.base.Recommender.predict`).

Cold start is explicit: a test pair whose user or item has no training rating is *cold*.  Its
prediction comes from the stated policy, never from an untrained part of a model:
- ``constant`` (value 3 by default): what the AutoRec paper does;
- ``global-mean``: the mean training rating.
Every prediction is then clipped to the dataset's rating scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autorec.errors import ConfigError


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"rmse: shapes differ, {pred.shape} vs {truth.shape}")
    if pred.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((pred - truth) ** 2)))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"mae: shapes differ, {pred.shape} vs {truth.shape}")
    if pred.size == 0:
        return float("nan")
    return float(np.mean(np.abs(pred - truth)))


@dataclass(frozen=True)
class ColdStartPolicy:
    """``kind`` is ``constant`` (predict ``value``) or ``global-mean`` (predict the train mean)."""

    kind: str = "global-mean"
    value: float = 3.0

    @classmethod
    def parse(cls, text: str | ColdStartPolicy) -> ColdStartPolicy:
        """``"global-mean"``, ``"constant"`` (3, as the AutoRec paper) or ``"constant:3.5"``."""
        if isinstance(text, ColdStartPolicy):
            return text
        kind, _, arg = str(text).partition(":")
        if kind == "global-mean" and not arg:
            return cls("global-mean")
        if kind == "constant":
            try:
                value = float(arg) if arg else 3.0
            except ValueError:
                raise ConfigError(f"cold-start policy {text!r}: {arg!r} is not a number") from None
            if not np.isfinite(value):
                raise ConfigError(f"cold-start policy {text!r}: the constant must be a finite number")
            return cls("constant", value)
        raise ConfigError(f"unknown cold-start policy {text!r}; use 'global-mean', 'constant' or 'constant:V'")

    def check_scale(self, scale: tuple[float, float]) -> None:
        """:class:`ConfigError` for a constant outside the rating scale ``(low, high)``: predictions
        are clipped to the scale, so such a constant would silently predict the nearest end instead."""
        lo, hi = float(scale[0]), float(scale[1])
        if self.kind == "constant" and not lo <= self.value <= hi:
            raise ConfigError(
                f"cold-start policy {self}: the constant is outside the rating scale {lo:g}..{hi:g} "
                f"(predictions are clipped to it, so it would predict {min(max(self.value, lo), hi):g})"
            )

    def fill_value(self, global_mean: float) -> float:
        """The prediction for a cold pair, given the mean training rating."""
        return float(global_mean) if self.kind == "global-mean" else float(self.value)

    def __str__(self) -> str:
        return "global-mean" if self.kind == "global-mean" else f"constant:{self.value:g}"


#: a raw prediction further than this many widths of the rating scale outside it (beyond -39,999 or
#: 40,005 on 1..5) comes from a diverged model: no fitted model predicts there, and clipping it would
#: hide the divergence behind a rating on the scale
DIVERGED_WIDTHS = 1e4


def finalize(raw: np.ndarray, cold: np.ndarray, fill: float, scale: tuple[float, float]) -> np.ndarray:
    """Replace cold pairs by ``fill`` and clip to ``scale``; non-finite predictions, and predictions far
    outside the scale (:data:`DIVERGED_WIDTHS`), raise :class:`FloatingPointError`."""
    out = np.asarray(raw, dtype=np.float64).copy()
    if np.any(cold) and not np.isfinite(fill):
        raise FloatingPointError(
            f"the cold-start fill value is {fill} (global mean of an empty train "
            "part?); use a constant policy such as 'constant:3'"
        )
    out[cold] = fill
    bad = ~np.isfinite(out)
    if bad.any():
        raise FloatingPointError(f"{int(bad.sum())} of {out.size} predictions are NaN or infinite")
    lo, hi = float(scale[0]), float(scale[1])
    reach = DIVERGED_WIDTHS * (hi - lo)
    far = (out < lo - reach) | (out > hi + reach)
    if far.any():
        # clipping would turn a diverged model's predictions into plausible-looking ratings
        k = int(np.argmax(far))
        raise FloatingPointError(
            f"{int(far.sum())} of {out.size} predictions lie over {DIVERGED_WIDTHS:g} scale widths outside "
            f"{lo:g}..{hi:g} (e.g. {out[k]:.3g}): the model diverged"
        )
    return np.clip(out, lo, hi)
