"""One part (train, validation or test) of a split, as the models consume it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from autorec.errors import DataError


@dataclass(frozen=True, eq=False)
class Interactions:
    """Ratings of one split part, in the index space of the full :class:`~autorec.data.Ratings`.

    ``n_users`` / ``n_items`` are those of the whole dataset, so every part of a split shares the
    same index space (a test user with no training rating still has a valid index: it is cold).
    """

    users: np.ndarray  # int32
    items: np.ndarray  # int32
    ratings: np.ndarray  # float32
    n_users: int
    n_items: int
    rating_scale: tuple[float, float]

    def __len__(self) -> int:
        return int(len(self.ratings))

    @property
    def global_mean(self) -> float:
        return float(np.mean(self.ratings, dtype=np.float64)) if len(self) else float("nan")

    def csr(self, based: str = "item") -> sp.csr_matrix:
        """The sparse interaction matrix AutoRec consumes, never densified.

        ``based="item"`` gives items x users (I-AutoRec: each row is an item's ratings by all users);
        ``based="user"`` gives users x items (U-AutoRec).
        """
        if based == "item":
            rows, cols, shape = self.items, self.users, (self.n_items, self.n_users)
        elif based == "user":
            rows, cols, shape = self.users, self.items, (self.n_users, self.n_items)
        else:
            raise ValueError(f"based must be 'item' or 'user', got {based!r}")
        m = sp.csr_matrix((self.ratings.astype(np.float32, copy=False), (rows, cols)), shape=shape, dtype=np.float32)
        m.sum_duplicates()
        if m.nnz != len(self):  # scipy summed a pair's ratings into one (5 + 5 = a target of 10)
            raise DataError(
                f"{len(self) - m.nnz} duplicate (user, item) pair(s) among {len(self)} ratings: "
                "keep one rating per pair"
            )
        m.sort_indices()
        return m

    def known_users(self) -> np.ndarray:
        """Boolean mask over all users: True where the user has at least one rating here."""
        mask = np.zeros(self.n_users, dtype=bool)
        mask[self.users] = True
        return mask

    def known_items(self) -> np.ndarray:
        mask = np.zeros(self.n_items, dtype=bool)
        mask[self.items] = True
        return mask
