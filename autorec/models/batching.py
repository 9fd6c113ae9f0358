"""Framework-free minibatch order, shared by every minibatch trainer (AutoRec in both backends, the
SGD / Adam matrix factorisations): the same seed gives the same batches in PyTorch, MXNet and numpy."""

from __future__ import annotations

import numpy as np


def epoch_order(n_rows: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The row order of one (1-based) epoch: a permutation drawn from ``(seed, epoch)`` alone, so a
    resumed fit draws the same order as an uninterrupted one."""
    if not shuffle:
        return np.arange(n_rows, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch)])
    return rng.permutation(n_rows).astype(np.int64)


def batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive slices of ``order`` of ``batch_size`` rows (the last one may be smaller)."""
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
