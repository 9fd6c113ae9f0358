"""What a split is: :class:`Split` (sorted row indices of each part, and the content hash) and
:class:`SplitData` (the split applied to its ratings: the parts as :class:`Interactions`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autorec.data.ratings import Ratings
from autorec.errors import SplitError
from autorec.interactions import Interactions
from autorec.splits.checks import check_split
from autorec.splits.hashing import ratings_hash, split_hash
from autorec.splits.spec import SplitSpec

__all__ = ["Split", "SplitData"]


@dataclass(frozen=True, eq=False)
class SplitData:
    """A split applied to its ratings: the three parts as :class:`Interactions` in the full index
    space (shared ``n_users`` / ``n_items`` / ``rating_scale``).  ``path`` is where the split is
    stored (``None`` when it was not stored)."""

    ratings: Ratings
    split: Split
    train: Interactions
    valid: Interactions
    test: Interactions
    path: Path | None = None
    _ratings_sha256: str | None = field(default=None, repr=False)

    @property
    def ratings_sha256(self) -> str:
        """The dataset's content hash (:func:`~autorec.splits.ratings_hash`), for a run's identity:
        the store passes in the one it computed for its key; otherwise computed on first use."""
        digest = self._ratings_sha256
        if digest is None:
            digest = ratings_hash(self.ratings)
            object.__setattr__(self, "_ratings_sha256", digest)
        return digest

    def cold_start(self) -> dict:
        """Cold start of the test part against the train part (the part models fit on):
        test ``pairs`` whose user or item has no train rating, distinct test ``users`` and
        ``items`` unseen in train."""
        known_u, known_i = self.train.known_users(), self.train.known_items()
        cold_pairs = ~(known_u[self.test.users] & known_i[self.test.items])
        test_u = np.unique(self.test.users)
        test_i = np.unique(self.test.items)
        return {
            "pairs": int(cold_pairs.sum()),
            "users": int((~known_u[test_u]).sum()),
            "items": int((~known_i[test_i]).sum()),
            "test_users": int(len(test_u)),
            "test_items": int(len(test_i)),
        }


@dataclass(frozen=True, eq=False)
class Split:
    """Sorted int64 row indices into a :class:`Ratings` for each part, and the content hash."""

    dataset: str
    spec: SplitSpec
    seed: int
    valid_ratio: float
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    sha256: str

    @property
    def sizes(self) -> dict:
        return {"train": int(len(self.train)), "valid": int(len(self.valid)), "test": int(len(self.test))}

    def data(self, ratings: Ratings, path: Path | None = None, *, ratings_sha256: str | None = None) -> SplitData:
        """The parts as :class:`Interactions`.  Refuses ratings this split was not made from
        (different dataset, size or content, checked through the hash).  ``ratings_sha256`` is the
        ratings' content hash when the caller already has it."""
        if ratings.name != self.dataset:
            raise SplitError(f"split of {self.dataset!r} applied to ratings of {ratings.name!r}")
        check_split(len(ratings), self.train, self.valid, self.test)
        got = split_hash(ratings, self.train, self.valid, self.test, spec=self.spec)
        if got != self.sha256:
            raise SplitError(
                f"split {self.spec} (seed {self.seed}) of {self.dataset!r} does not match these ratings: "
                f"hash {got[:16]}... != recorded {self.sha256[:16]}...; the ratings changed since the split was made"
            )

        def part(idx: np.ndarray) -> Interactions:
            return Interactions(
                users=ratings.users[idx].astype(np.int32, copy=False),
                items=ratings.items[idx].astype(np.int32, copy=False),
                ratings=ratings.ratings[idx].astype(np.float32, copy=False),
                n_users=ratings.n_users,
                n_items=ratings.n_items,
                rating_scale=(ratings.rating_scale[0], ratings.rating_scale[1]),
            )

        return SplitData(
            ratings=ratings,
            split=self,
            train=part(self.train),
            valid=part(self.valid),
            test=part(self.test),
            path=path,
            _ratings_sha256=ratings_sha256,
        )

    def __repr__(self) -> str:
        s = self.sizes
        return (
            f"Split({self.dataset!r}, {str(self.spec)!r}, seed={self.seed}, valid_ratio={self.valid_ratio:g}: "
            f"train {s['train']}, valid {s['valid']}, test {s['test']}, sha256 {self.sha256[:12]}...)"
        )
