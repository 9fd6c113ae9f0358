"""Framework-free minibatch order, shared by every backend so that the same seed gives the same
batches in PyTorch and in MXNet (the parity test depends on it)."""

from __future__ import annotations

import numpy as np


def epoch_order(n_rows: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The row order of one epoch: a permutation drawn from ``(seed, epoch)`` alone."""
    if not shuffle:
        return np.arange(n_rows, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch)])
    return rng.permutation(n_rows).astype(np.int64)


def batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive slices of ``order`` of ``batch_size`` rows (the last one may be smaller)."""
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def shard(rows: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of ``rows`` (strided, so shards differ in size by at most one)."""
    return rows[rank::world_size]
