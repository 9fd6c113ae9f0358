"""The split kinds: one strategy per kind in :data:`STRATEGIES` (kind -> function), and
:func:`make_split`, which runs one and carves the validation part out of its train pool.

A strategy takes ``(ratings, spec, seed, source_dir)`` and returns ``(pool, test)``: sorted row
indices of the train pool (train + validation) and of the test part.  The semantics of each kind
are in the :mod:`autorec.splits` docstring.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from autorec.data.parsers import read_ratings
from autorec.data.ratings import Ratings
from autorec.errors import SplitError
from autorec.splits.checks import check_split
from autorec.splits.files import disjoint_rows, map_rows, read_split_csv
from autorec.splits.hashing import split_hash
from autorec.splits.spec import SplitSpec, check_seed, check_valid_ratio
from autorec.splits.split import Split

__all__ = ["STRATEGIES", "make_split"]

Parts = tuple[np.ndarray, np.ndarray]
Strategy = Callable[[Ratings, SplitSpec, int, "Path | None"], Parts]

_VALID_STREAM = 1  # validation draws from default_rng([seed, _VALID_STREAM])


def _random(ratings: Ratings, spec: SplitSpec, seed: int, source_dir: Path | None) -> Parts:
    n = len(ratings)
    n_test = int(round(spec.args["test_ratio"] * n))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _d2l_random(ratings: Ratings, spec: SplitSpec, seed: int, source_dir: Path | None) -> Parts:
    mask = np.random.RandomState(seed).uniform(0, 1, len(ratings)) < 1 - spec.args["test_ratio"]
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def _seq_aware(ratings: Ratings, spec: SplitSpec, seed: int, source_dir: Path | None) -> Parts:
    if ratings.timestamps is None:
        raise SplitError(f"split 'seq-aware' needs timestamps, and {ratings.name!r} has none; use 'random' or 'kfold'")
    n = len(ratings)
    rows = np.arange(n, dtype=np.int64)
    # per user: timestamps ascending, then file order descending -> the group's last row is the
    # latest rating, the first one in file order among ties
    order = np.lexsort((-rows, np.asarray(ratings.timestamps, np.int64), ratings.users))
    users = ratings.users[order]
    last = np.flatnonzero(np.r_[users[1:] != users[:-1], True])
    test = np.sort(order[last])
    mask = np.ones(n, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def _kfold(ratings: Ratings, spec: SplitSpec, seed: int, source_dir: Path | None) -> Parts:
    n, k, fold = len(ratings), spec.args["k"], spec.args["fold"]
    if k > n:
        raise SplitError(f"split 'kfold': k={k} folds need at least {k} ratings, the dataset has {n}")
    folds = np.array_split(np.random.default_rng(seed).permutation(n), k)
    test = np.sort(folds[fold])
    train = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != fold]))
    return train, test


def _canonical(ratings: Ratings, spec: SplitSpec, seed: int, source_dir: Path | None) -> Parts:
    fold = spec.args["fold"]
    if ratings.name != "ml-100k":
        raise SplitError(
            f"split 'canonical:{fold}' exists only for ml-100k (its published uN.base/uN.test files); "
            f"{ratings.name!r} has none: use 'random' or 'kfold'"
        )
    if source_dir is None:
        raise SplitError(f"split 'canonical' needs the ml-100k folder (source_dir) holding {fold}.base and {fold}.test")
    paths = [Path(source_dir) / f"{fold}.{suffix}" for suffix in ("base", "test")]
    for path in paths:
        if not path.is_file():
            raise SplitError(
                f"canonical split file {path} is missing; the ml-100k folder should hold "
                f"{fold}.base and {fold}.test (re-extract ml-100k.zip)"
            )
    rows = []
    for path in paths:
        u, i, r, _ = read_ratings(path, "tab")
        rows.append(map_rows(ratings, u, i, r, str(path), "tab"))
    train, test = disjoint_rows(ratings, rows[0], rows[1], f"{fold}.base", f"{fold}.test")
    if len(train) + len(test) != len(ratings):
        # every published fold partitions u.data: a rating in neither file means one was cut short
        # or edited (a line lost at the end of a truncated copy parses without an error)
        raise SplitError(
            f"{fold}.base and {fold}.test hold {len(train):,} + {len(test):,} ratings, but u.data holds "
            f"{len(ratings):,}: every published fold covers all of them, so {paths[0].parent} holds a truncated "
            "or edited copy (re-extract ml-100k.zip)"
        )
    return train, test


def _files(ratings: Ratings, spec: SplitSpec, seed: int, source_dir: Path | None) -> Parts:
    rows = []
    for name in ("train", "test"):
        path = Path(spec.args[name])
        u, i, r = read_split_csv(path)
        rows.append(map_rows(ratings, u, i, r, str(path), "csv"))
    return disjoint_rows(ratings, rows[0], rows[1], spec.args["train"], spec.args["test"])


STRATEGIES: dict[str, Strategy] = {
    "random": _random,
    "d2l-random": _d2l_random,
    "seq-aware": _seq_aware,
    "canonical": _canonical,
    "kfold": _kfold,
    "files": _files,
}


def _carve_valid(train: np.ndarray, valid_ratio: float, seed: int) -> Parts:
    n_valid = int(round(valid_ratio * len(train)))
    perm = np.random.default_rng([seed, _VALID_STREAM]).permutation(len(train))
    return np.sort(train[perm[n_valid:]]), np.sort(train[perm[:n_valid]])


def make_split(
    ratings: Ratings,
    spec: str | SplitSpec,
    *,
    seed: int = 0,
    valid_ratio: float = 0.05,
    source_dir: str | os.PathLike | None = None,
) -> Split:
    """Compute a split of ``ratings`` (nothing is stored; see :func:`~autorec.splits.load_split`).

    ``source_dir`` is the dataset folder, needed by ``canonical`` (it holds ``uN.base``/``uN.test``).
    """
    spec = SplitSpec.parse(spec)
    seed = check_seed(seed)
    valid_ratio = check_valid_ratio(valid_ratio)
    n = len(ratings)
    if n == 0:
        raise SplitError(f"cannot split {ratings.name!r}: it has no ratings")
    pool, test = STRATEGIES[spec.kind](ratings, spec, seed, None if source_dir is None else Path(source_dir))
    if len(test) == 0 or len(pool) == 0:
        which = "test" if len(test) == 0 else "train"
        raise SplitError(
            f"split {spec} of {ratings.name!r} ({n} ratings, seed {seed}) has an empty {which} part; "
            "use a larger dataset or another ratio"
        )
    train, valid = _carve_valid(pool.astype(np.int64), valid_ratio, seed)
    test = test.astype(np.int64)
    check_split(n, train, valid, test, ratings)
    digest = split_hash(ratings, train, valid, test, spec=spec)
    return Split(
        dataset=ratings.name,
        spec=spec,
        seed=seed,
        valid_ratio=valid_ratio,
        train=train,
        valid=valid,
        test=test,
        sha256=digest,
    )
