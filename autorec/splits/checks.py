"""The one validity check every split passes before it is used or stored (:func:`check_split`)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from autorec.data.ratings import Ratings
from autorec.errors import SplitError

__all__ = ["check_split"]


def _pair_keys(ratings: Ratings, idx: np.ndarray) -> np.ndarray:
    return ratings.users[idx].astype(np.int64) * np.int64(max(ratings.n_items, 1)) + ratings.items[idx].astype(np.int64)


def check_split(
    n: int, train: npt.ArrayLike, valid: npt.ArrayLike, test: npt.ArrayLike, ratings: Ratings | None = None
) -> None:
    """Raise :class:`SplitError` unless the parts are int index arrays into ``n`` ratings, in range,
    pairwise disjoint (so they cover at most ``n`` ratings), train and test non-empty, and (when
    ``ratings`` is given) no test (user, item) pair also occurs in train or validation: such a leak
    is refused naming the first leaking pair by its raw ids."""
    parts = {"train": np.asarray(train), "valid": np.asarray(valid), "test": np.asarray(test)}
    for name, idx in parts.items():
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise SplitError(
                f"split part {name!r} must be a 1-d integer index array, got dtype {idx.dtype} shape {idx.shape}"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise SplitError(f"split part {name!r} has indices outside 0..{n - 1} (min {idx.min()}, max {idx.max()})")
        if np.unique(idx).size != idx.size:
            raise SplitError(f"split part {name!r} lists {idx.size - np.unique(idx).size} rating(s) twice")
    for name in ("train", "test"):
        if len(parts[name]) == 0:
            raise SplitError(
                f"the {name} part of the split is empty; choose another ratio, fold or "
                "file (a split needs at least one train and one test rating)"
            )
    names = list(parts)
    for a in range(3):
        for b in range(a + 1, 3):
            both = np.intersect1d(parts[names[a]], parts[names[b]])
            if both.size:
                raise SplitError(
                    f"{both.size} rating(s) are in both {names[a]} and {names[b]} (first row index {int(both[0])})"
                )
    if ratings is not None:
        seen = _pair_keys(ratings, np.concatenate([np.asarray(train, np.int64), np.asarray(valid, np.int64)]))
        test_keys = _pair_keys(ratings, np.asarray(test, np.int64))
        leak = np.isin(test_keys, seen)
        if leak.any():
            first = np.asarray(test, np.int64)[np.argmax(leak)]
            raise SplitError(
                f"{int(leak.sum())} test (user, item) pair(s) also occur in train or validation "
                f"(first: raw user {int(ratings.user_ids[ratings.users[first]])}, raw item "
                f"{int(ratings.item_ids[ratings.items[first]])}); the dataset has repeated ratings of "
                "the same pair: deduplicate it or use a split that keeps each pair in one part"
            )
