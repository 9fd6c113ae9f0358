"""Accuracy metrics, the cold-start policy and clipping: the one place predictions are finalised.

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
from autorec.interactions import Interactions


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
    def parse(cls, text: "str | ColdStartPolicy") -> "ColdStartPolicy":
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

    def fill_value(self, train: Interactions) -> float:
        return train.global_mean if self.kind == "global-mean" else float(self.value)

    def __str__(self) -> str:
        return "global-mean" if self.kind == "global-mean" else f"constant:{self.value:g}"


def cold_mask(train: Interactions, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """True where the user or the item of a pair has no rating in ``train``."""
    users = np.asarray(users)
    items = np.asarray(items)
    if users.shape != items.shape:
        raise ValueError(f"users and items differ in shape: {users.shape} vs {items.shape}")
    for name, idx, n in (("user", users, train.n_users), ("item", items, train.n_items)):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{name} indices must be in 0..{n - 1}, got min {idx.min()} max {idx.max()}")
    return ~(train.known_users()[users] & train.known_items()[items])


def finalize(raw: np.ndarray, cold: np.ndarray, fill: float, scale: tuple[float, float]) -> np.ndarray:
    """Replace cold pairs by ``fill``, replace non-finite predictions nowhere (they raise), and clip."""
    out = np.asarray(raw, dtype=np.float64).copy()
    if np.any(cold) and not np.isfinite(fill):
        raise FloatingPointError(f"the cold-start fill value is {fill} (global mean of an empty train "
                                 "part?); use a constant policy such as 'constant:3'")
    out[cold] = fill
    bad = ~np.isfinite(out)
    if bad.any():
        raise FloatingPointError(f"{int(bad.sum())} of {out.size} predictions are NaN or infinite")
    return np.clip(out, scale[0], scale[1])


def predict_pairs(model, train: Interactions, users: np.ndarray, items: np.ndarray,
                  policy: "str | ColdStartPolicy" = "global-mean") -> tuple[np.ndarray, int]:
    """Predictions for (user, item) pairs through the cold-start policy and clipping.

    Returns the predictions and the number of cold pairs.  Only warm pairs are sent to the model.
    """
    policy = ColdStartPolicy.parse(policy)
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    cold = cold_mask(train, users, items)
    raw = np.zeros(len(users), dtype=np.float64)
    warm = ~cold
    if warm.any():
        scores = np.asarray(model.predict(users[warm], items[warm]), dtype=np.float64)
        if scores.shape != (int(warm.sum()),):
            raise ValueError(f"{type(model).__name__}.predict returned shape {scores.shape} for "
                             f"{int(warm.sum())} pairs; it must return one score per pair")
        raw[warm] = scores
    return finalize(raw, cold, policy.fill_value(train), train.rating_scale), int(cold.sum())


def evaluate(model, train: Interactions, test: Interactions,
             policy: "str | ColdStartPolicy" = "global-mean") -> dict:
    """RMSE and MAE of ``model`` on ``test`` (cold pairs handled by ``policy``), and the cold count."""
    pred, n_cold = predict_pairs(model, train, test.users, test.items, policy)
    return {"rmse": rmse(pred, test.ratings), "mae": mae(pred, test.ratings), "n_cold_start": n_cold,
            "n": len(test), "cold_start_policy": str(ColdStartPolicy.parse(policy))}
