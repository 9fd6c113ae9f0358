"""What the numpy matrix-factorisation trainers (ALS, biased-mf SGD) share: their state is the
model's ``P``, ``Q``, ``bu``, ``bi`` arrays and they keep no optimizer state."""

from __future__ import annotations

from typing import Any

import numpy as np

FACTOR_ARRAYS = ("P", "Q", "bu", "bi")


class FactorStateMixin:
    """``state`` / ``load_state`` / ``optimizer_state`` of an
    :class:`autorec.models.training.EpochTrainer` whose model ``self.m`` holds the factor arrays."""

    m: Any

    def state(self, copy: bool = True) -> dict[str, np.ndarray]:
        return {k: getattr(self.m, k).copy() if copy else getattr(self.m, k) for k in FACTOR_ARRAYS}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for k in FACTOR_ARRAYS:
            setattr(self.m, k, state[k].copy())

    def optimizer_state(self) -> bytes:
        return b""

    def load_optimizer_state(self, state: bytes) -> None:
        pass
