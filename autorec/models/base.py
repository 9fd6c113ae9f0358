"""The tiny algorithm interface every model (AutoRec in any backend, every baseline) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from autorec.interactions import Interactions

# progress(epoch, n_epochs, info) is called after every epoch; info holds train_loss, valid_rmse, ...
ProgressFn = Callable[[int, int, dict], None]


@dataclass
class FitInfo:
    """What ``fit`` reports: one dict per epoch (``epoch``, ``train_loss``, ``valid_rmse``,
    ``seconds``), the epoch whose weights were kept (1-based, ``None`` without validation), and how
    many epochs ran."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    epochs_run: int = 0
    extra: dict = field(default_factory=dict)


class Recommender(ABC):
    """``fit`` on a train part (optionally early-stopping on a validation part), then ``predict``.

    ``predict`` returns raw scores for (user, item) index pairs; the cold-start policy and clipping
    to the rating scale are applied by :func:`autorec.metrics.predict_pairs`, the one place for them.
    """

    name: ClassVar[str] = "recommender"
    backend: ClassVar[str] = "numpy"

    @abstractmethod
    def fit(self, train: Interactions, valid: Interactions | None = None, *,
            progress: ProgressFn | None = None) -> FitInfo:
        ...

    @abstractmethod
    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        ...

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The full resolved configuration (recorded in every raw result)."""
