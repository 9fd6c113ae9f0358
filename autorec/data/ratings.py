"""The in-memory ratings table every loader returns and every split indexes into."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Ratings:
    """Explicit ratings with contiguous 0-based user and item indices.

    ``users[k]``, ``items[k]``, ``ratings[k]`` (and ``timestamps[k]`` when known) describe rating k.
    ``user_ids[u]`` / ``item_ids[i]`` map the indices back to the raw ids of the source files.
    Arrays are plain numpy (no pandas object columns): users/items int32, ratings float32,
    timestamps int64, raw ids int64.
    """

    name: str
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    rating_scale: tuple[float, float]
    timestamps: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(len(self.user_ids))

    @property
    def n_items(self) -> int:
        return int(len(self.item_ids))

    def __len__(self) -> int:
        return int(len(self.ratings))

    def __repr__(self) -> str:
        return (
            f"Ratings({self.name!r}: {len(self)} ratings, {self.n_users} users, "
            f"{self.n_items} items, scale {self.rating_scale})"
        )
