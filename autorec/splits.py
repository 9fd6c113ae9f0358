"""Train / validation / test splits, materialised once, stored, verified and shared by every model.

A split is named by a :class:`SplitSpec` (``kind`` plus arguments, written ``kind:a=1,b=2``):

``random:test_ratio=0.1``
    seeded exact-ratio holdout: ``round(test_ratio * n)`` ratings, drawn by
    ``np.random.default_rng(seed).permutation(n)``, are the test set.
``d2l-random:test_ratio=0.1``
    the D2L book's ``split_data_ml100k(..., split_mode="random")``: each rating, independently, is
    train when ``np.random.RandomState(seed).uniform(0, 1, n) < 1 - test_ratio`` (rows in file
    order), so the test size is binomial, not exact.
``seq-aware``
    D2L's leave-latest-out: for each user, the rating with the latest timestamp is the test rating,
    the rest are train.  Ties (several ratings at the user's latest timestamp) go to the rating that
    comes first in file order, which is exactly what D2L's loop does (it replaces its candidate only
    on a strictly later timestamp).  A user with a single rating is therefore cold in train, as in D2L.
``canonical:u1`` (``u1`` .. ``u5``, ``ua``, ``ub``)
    MovieLens-100K's published ``uN.base`` / ``uN.test`` files, read from the dataset folder and
    mapped row by row onto the loaded ``u.data`` by (raw user, raw item).
``kfold:k=5,fold=0``
    ``np.random.default_rng(seed).permutation(n)`` cut into ``k`` near-equal folds
    (``np.array_split``); fold ``fold`` is test.  Every rating is in exactly one test fold.
``files:TRAIN.csv,TEST.csv``
    user-supplied CSVs with the header ``user,item,rating`` (raw integer ids; extra columns are
    ignored).  :func:`load_split` builds the ratings table as the union of both files.

Validation is always a seeded share of the train part: ``round(valid_ratio * n_train)`` ratings
drawn by ``np.random.default_rng([seed, 1]).permutation(n_train)`` (a stream independent of the
test draw); the test part is never touched.  Every split is checked before it is used: the parts
are disjoint, in range and non-empty (train and test), and no test (user, item) pair occurs in
train or validation.

Each split has a SHA-256 (:func:`split_hash`) over a byte-exact encoding of its content, so the same
split hashes the same on every machine.  :func:`load_split` is the one entry point the harness and
every model use: it loads the data, materialises the split once, stores it as ``.npz`` under the
cache folder and, on reuse, verifies it against the stored hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autorec.atomic import atomic_write
from autorec.data.ratings import Ratings
from autorec.errors import DataError, SplitError
from autorec.interactions import Interactions

__all__ = [
    "KINDS", "CANONICAL_FOLDS", "SplitSpec", "Split", "SplitData", "make_split", "load_split",
    "cached_split", "split_hash", "ratings_hash", "check_split", "read_split_csv", "ratings_from_files",
    "default_cache_dir", "cache_path",
]

CANONICAL_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")

# kind -> {arg: (type, default)}; a default of _REQUIRED means the argument must be given.
_REQUIRED = object()
KINDS: dict[str, dict[str, tuple[type, Any]]] = {
    "random": {"test_ratio": (float, 0.1)},
    "d2l-random": {"test_ratio": (float, 0.1)},
    "seq-aware": {},
    "canonical": {"fold": (str, _REQUIRED)},
    "kfold": {"k": (int, 5), "fold": (int, 0)},
    "files": {"train": (str, _REQUIRED), "test": (str, _REQUIRED)},
}
# kinds whose arguments are written positionally: ``canonical:u1``, ``files:A.csv,B.csv``
_POSITIONAL = {"canonical": ("fold",), "files": ("train", "test")}

_VALID_STREAM = 1        # validation draws from default_rng([seed, _VALID_STREAM])
_STORE_FORMAT = 1        # version of the .npz layout / cache key
_SPLIT_MAGIC = b"autorec-bench/split/v1\n"
_RATINGS_MAGIC = b"autorec-bench/ratings/v1\n"


def _kinds_text() -> str:
    return ", ".join(KINDS)


def _usage(kind: str) -> str:
    examples = {
        "random": "random:test_ratio=0.1",
        "d2l-random": "d2l-random:test_ratio=0.1",
        "seq-aware": "seq-aware",
        "canonical": "canonical:u1 (one of " + ", ".join(CANONICAL_FOLDS) + ")",
        "kfold": "kfold:k=5,fold=0",
        "files": "files:TRAIN.csv,TEST.csv",
    }
    return examples[kind]


# ---------------------------------------------------------------------------------------------
# SplitSpec
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitSpec:
    """A split kind and its arguments; every argument is filled in (defaults included), so
    ``str(spec)`` is canonical and ``SplitSpec.parse(str(spec)) == spec``."""

    kind: str
    args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SplitError(f"unknown split kind {self.kind!r}; valid kinds: {_kinds_text()}")
        table = KINDS[self.kind]
        args = dict(self.args or {})
        unknown = sorted(set(args) - set(table))
        if unknown:
            valid = ", ".join(table) or "none"
            raise SplitError(f"split {self.kind!r}: unknown argument(s) {', '.join(unknown)}; "
                             f"valid arguments: {valid} (e.g. {_usage(self.kind)})")
        resolved: dict[str, Any] = {}
        for name, (typ, default) in table.items():
            if name not in args:
                if default is _REQUIRED:
                    raise SplitError(f"split {self.kind!r} needs {name!r}: write {_usage(self.kind)}")
                resolved[name] = default
                continue
            resolved[name] = _convert(self.kind, name, typ, args[name])
        _check_args(self.kind, resolved)
        object.__setattr__(self, "args", resolved)

    def __hash__(self) -> int:
        return hash(str(self))

    @classmethod
    def parse(cls, text: "str | SplitSpec") -> "SplitSpec":
        """``"random"``, ``"random:test_ratio=0.2"``, ``"d2l-random:test_ratio=0.1"``,
        ``"seq-aware"``, ``"canonical:u1"``, ``"kfold:k=5,fold=0"``, ``"files:TRAIN.csv,TEST.csv"``."""
        if isinstance(text, SplitSpec):
            return text
        if not isinstance(text, str):
            raise SplitError(f"a split spec must be a string like 'random:test_ratio=0.1', got {text!r}")
        kind, sep, rest = text.strip().partition(":")
        kind = kind.strip()
        if kind not in KINDS:
            raise SplitError(f"unknown split kind {kind!r} in {text!r}; valid kinds: {_kinds_text()}")
        args: dict[str, str] = {}
        tokens = [t.strip() for t in rest.split(",")] if sep and rest.strip() else []
        if sep and not tokens:
            raise SplitError(f"split spec {text!r}: nothing after ':'; write {_usage(kind)}")
        positional = list(_POSITIONAL.get(kind, ()))
        free = list(positional)
        for tok in tokens:
            if not tok:
                raise SplitError(f"split spec {text!r}: empty argument; write {_usage(kind)}")
            name, eq, value = tok.partition("=")
            name = name.strip()
            if eq and (not positional or name in positional):
                if name in args:
                    raise SplitError(f"split spec {text!r}: argument {name!r} given twice")
                args[name] = value.strip()
                if name in free:
                    free.remove(name)
            elif positional:
                if not free:
                    raise SplitError(f"split spec {text!r}: too many arguments; write {_usage(kind)}")
                args[free.pop(0)] = tok
            else:
                raise SplitError(f"split spec {text!r}: argument {tok!r} is not NAME=VALUE; "
                                 f"valid arguments of {kind!r}: {', '.join(KINDS[kind]) or 'none'} "
                                 f"(e.g. {_usage(kind)})")
        return cls(kind, args)

    def __str__(self) -> str:
        if not self.args:
            return self.kind
        if self.kind in _POSITIONAL:
            body = ",".join(str(self.args[n]) for n in _POSITIONAL[self.kind])
        else:
            body = ",".join(f"{n}={_fmt(self.args[n])}" for n in KINDS[self.kind])
        return f"{self.kind}:{body}"

    def hash_text(self) -> str:
        """The spec as it enters :func:`split_hash`: ``str(self)``, except that ``files`` paths are
        reduced to their base names, so the hash does not depend on where the files live."""
        if self.kind == "files":
            return "files:" + ",".join(os.path.basename(self.args[n]) for n in ("train", "test"))
        return str(self)


def _fmt(v: Any) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _convert(kind: str, name: str, typ: type, value: Any) -> Any:
    if typ is float:
        if isinstance(value, bool):
            raise SplitError(f"split {kind!r}: {name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SplitError(f"split {kind!r}: {name}={value!r} is not a number") from None
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise SplitError(f"split {kind!r}: {name} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SplitError(f"split {kind!r}: {name}={value!r} is not an integer") from None
    value = str(value).strip()
    if not value:
        raise SplitError(f"split {kind!r}: {name} is empty; write {_usage(kind)}")
    return value


def _check_args(kind: str, a: dict) -> None:
    if "test_ratio" in a:
        r = a["test_ratio"]
        if not (math.isfinite(r) and 0.0 < r < 1.0):
            raise SplitError(f"split {kind!r}: test_ratio must be strictly between 0 and 1, got {r!r}")
    if kind == "kfold":
        if a["k"] < 2:
            raise SplitError(f"split 'kfold': k must be at least 2, got {a['k']}")
        if not 0 <= a["fold"] < a["k"]:
            raise SplitError(f"split 'kfold': fold must be in 0..{a['k'] - 1} for k={a['k']}, "
                             f"got {a['fold']}")
    if kind == "canonical" and a["fold"] not in CANONICAL_FOLDS:
        raise SplitError(f"split 'canonical': unknown fold {a['fold']!r}; valid folds: "
                         f"{', '.join(CANONICAL_FOLDS)}")
    if kind == "files":
        for n in ("train", "test"):
            if "," in a[n]:
                raise SplitError(f"split 'files': path {a[n]!r} contains ',' (the argument "
                                 "separator); rename the file")


# ---------------------------------------------------------------------------------------------
# Split, SplitData
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SplitData:
    """A split applied to its ratings: the three parts as :class:`Interactions` in the full index
    space (shared ``n_users`` / ``n_items`` / ``rating_scale``).  ``path`` is where the split is
    stored (``None`` when it was not stored)."""

    ratings: Ratings
    split: "Split"
    train: Interactions
    valid: Interactions
    test: Interactions
    path: Path | None = None

    def cold_start(self) -> dict:
        """Cold start of the test part against the train part (the part models fit on):
        test ``pairs`` whose user or item has no train rating, distinct test ``users`` and
        ``items`` unseen in train."""
        known_u, known_i = self.train.known_users(), self.train.known_items()
        cold_pairs = ~(known_u[self.test.users] & known_i[self.test.items])
        test_u = np.unique(self.test.users)
        test_i = np.unique(self.test.items)
        return {"pairs": int(cold_pairs.sum()), "users": int((~known_u[test_u]).sum()),
                "items": int((~known_i[test_i]).sum()), "test_users": int(len(test_u)),
                "test_items": int(len(test_i))}


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
        return {"train": int(len(self.train)), "valid": int(len(self.valid)),
                "test": int(len(self.test))}

    def data(self, ratings: Ratings, path: Path | None = None) -> SplitData:
        """The parts as :class:`Interactions`.  Refuses ratings this split was not made from
        (different dataset, size or content, checked through the hash)."""
        if ratings.name != self.dataset:
            raise SplitError(f"split of {self.dataset!r} applied to ratings of {ratings.name!r}")
        check_split(len(ratings), self.train, self.valid, self.test)
        got = split_hash(ratings, self.train, self.valid, self.test, spec=self.spec)
        if got != self.sha256:
            raise SplitError(f"split {self.spec} (seed {self.seed}) of {self.dataset!r} does not match "
                             f"these ratings: hash {got[:16]}... != recorded {self.sha256[:16]}...; the "
                             "ratings changed since the split was made")

        def part(idx: np.ndarray) -> Interactions:
            return Interactions(users=ratings.users[idx].astype(np.int32, copy=False),
                                items=ratings.items[idx].astype(np.int32, copy=False),
                                ratings=ratings.ratings[idx].astype(np.float32, copy=False),
                                n_users=ratings.n_users, n_items=ratings.n_items,
                                rating_scale=tuple(ratings.rating_scale))

        return SplitData(ratings=ratings, split=self, train=part(self.train), valid=part(self.valid),
                         test=part(self.test), path=path)

    def __repr__(self) -> str:
        s = self.sizes
        return (f"Split({self.dataset!r}, {str(self.spec)!r}, seed={self.seed}, "
                f"valid_ratio={self.valid_ratio:g}: train {s['train']}, valid {s['valid']}, "
                f"test {s['test']}, sha256 {self.sha256[:12]}...)")


# ---------------------------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------------------------

def _le(a: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(a, dtype=np.dtype(dtype)).tobytes()


def _field(h, tag: bytes, payload: bytes) -> None:
    h.update(tag + b"\x00" + struct.pack("<Q", len(payload)) + payload)


def split_hash(ratings: Ratings, train: np.ndarray, valid: np.ndarray, test: np.ndarray, *,
               spec: "SplitSpec | str | None" = None) -> str:
    """SHA-256 (hex) of a split's content, byte-exact and machine-independent.

    The hashed bytes are, in order::

        b"autorec-bench/split/v1\\n"
        b"dataset\\0" + uint64_le(len(NAME)) + NAME          # ratings.name, UTF-8
        b"spec\\0"    + uint64_le(len(SPEC)) + SPEC          # SplitSpec.hash_text(), UTF-8
        for TAG, IDX in (b"train", train), (b"valid", valid), (b"test", test):
            TAG + b"\\0" + uint64_le(len(IDX))
            raw user ids of rows IDX as int64 LE, raw item ids as int64 LE, ratings as float32 LE

    Rows are taken in the order of ``IDX`` (sorted for every :class:`Split`).  ``spec=None`` hashes
    an empty spec text.
    """
    h = hashlib.sha256(_SPLIT_MAGIC)
    _field(h, b"dataset", ratings.name.encode("utf-8"))
    spec_text = "" if spec is None else SplitSpec.parse(spec).hash_text()
    _field(h, b"spec", spec_text.encode("utf-8"))
    raw_u = np.asarray(ratings.user_ids, dtype=np.int64)
    raw_i = np.asarray(ratings.item_ids, dtype=np.int64)
    for tag, idx in ((b"train", train), (b"valid", valid), (b"test", test)):
        idx = np.asarray(idx, dtype=np.int64)
        h.update(tag + b"\x00" + struct.pack("<Q", len(idx)))
        h.update(_le(raw_u[ratings.users[idx]], "<i8"))
        h.update(_le(raw_i[ratings.items[idx]], "<i8"))
        h.update(_le(ratings.ratings[idx], "<f4"))
    return h.hexdigest()


def ratings_hash(ratings: Ratings) -> str:
    """SHA-256 of a ratings table's content (row order included): per row, the raw user id and
    raw item id (int64 LE), the rating (float32 LE) and, when known, the timestamp (int64 LE)."""
    h = hashlib.sha256(_RATINGS_MAGIC)
    h.update(struct.pack("<Q", len(ratings)))
    h.update(_le(np.asarray(ratings.user_ids, dtype=np.int64)[ratings.users], "<i8"))
    h.update(_le(np.asarray(ratings.item_ids, dtype=np.int64)[ratings.items], "<i8"))
    h.update(_le(ratings.ratings, "<f4"))
    if ratings.timestamps is None:
        h.update(b"no-timestamps")
    else:
        h.update(b"timestamps" + _le(ratings.timestamps, "<i8"))
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------

def _pair_keys(ratings: Ratings, idx: np.ndarray) -> np.ndarray:
    return (ratings.users[idx].astype(np.int64) * np.int64(max(ratings.n_items, 1))
            + ratings.items[idx].astype(np.int64))


def check_split(n: int, train: np.ndarray, valid: np.ndarray, test: np.ndarray,
                ratings: Ratings | None = None) -> None:
    """Raise :class:`SplitError` unless the parts are int index arrays into ``n`` ratings, in range,
    pairwise disjoint (so they cover at most ``n`` ratings), train and test non-empty, and (when
    ``ratings`` is given) no test (user, item) pair also occurs in train or validation."""
    parts = {"train": train, "valid": valid, "test": test}
    for name, idx in parts.items():
        idx = np.asarray(idx)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise SplitError(f"split part {name!r} must be a 1-d integer index array, "
                             f"got dtype {idx.dtype} shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise SplitError(f"split part {name!r} has indices outside 0..{n - 1} "
                             f"(min {idx.min()}, max {idx.max()})")
        if np.unique(idx).size != idx.size:
            raise SplitError(f"split part {name!r} lists {idx.size - np.unique(idx).size} rating(s) twice")
    for name in ("train", "test"):
        if len(parts[name]) == 0:
            raise SplitError(f"the {name} part of the split is empty; choose another ratio, fold or "
                             "file (a split needs at least one train and one test rating)")
    names = list(parts)
    for a in range(3):
        for b in range(a + 1, 3):
            both = np.intersect1d(parts[names[a]], parts[names[b]])
            if both.size:
                raise SplitError(f"{both.size} rating(s) are in both {names[a]} and {names[b]} "
                                 f"(first row index {int(both[0])})")
    # in range and pairwise disjoint: together the parts cover at most n ratings
    if ratings is not None:
        seen = _pair_keys(ratings, np.concatenate([np.asarray(train, np.int64),
                                                   np.asarray(valid, np.int64)]))
        test_keys = _pair_keys(ratings, np.asarray(test, np.int64))
        leak = np.isin(test_keys, seen)
        if leak.any():
            first = np.asarray(test, np.int64)[np.argmax(leak)]
            raise SplitError(
                f"{int(leak.sum())} test (user, item) pair(s) also occur in train or validation "
                f"(first: raw user {int(ratings.user_ids[ratings.users[first]])}, raw item "
                f"{int(ratings.item_ids[ratings.items[first]])}); the dataset has repeated ratings of "
                "the same pair: deduplicate it or use a split that keeps each pair in one part")


# ---------------------------------------------------------------------------------------------
# the kinds
# ---------------------------------------------------------------------------------------------

def _random_holdout(n: int, ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n_test = int(round(ratio * n))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _d2l_random(n: int, ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.random.RandomState(seed).uniform(0, 1, n) < 1 - ratio
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def _seq_aware(ratings: Ratings) -> tuple[np.ndarray, np.ndarray]:
    if ratings.timestamps is None:
        raise SplitError(f"split 'seq-aware' needs timestamps, and {ratings.name!r} has none; "
                         "use 'random' or 'kfold'")
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


def _kfold(n: int, k: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if k > n:
        raise SplitError(f"split 'kfold': k={k} folds need at least {k} ratings, the dataset has {n}")
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, k)
    test = np.sort(folds[fold])
    train = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != fold]))
    return train, test


def _lookup(sorted_ids: np.ndarray, order: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Index of each ``raw`` id in the id table (given sorted with its argsort), -1 where absent."""
    pos = np.searchsorted(sorted_ids, raw)
    pos_c = np.minimum(pos, len(sorted_ids) - 1)
    found = (pos < len(sorted_ids)) & (sorted_ids[pos_c] == raw)
    return np.where(found, order[pos_c], -1)


def _map_rows(ratings: Ratings, raw_u: np.ndarray, raw_i: np.ndarray, raw_r: np.ndarray,
              source: str, first_line: int) -> np.ndarray:
    """Row index in ``ratings`` of each (raw user, raw item) row of ``source``; refuses rows with no
    match, pairs rated more than once in ``ratings``, differing ratings and rows given twice."""
    raw_u = np.asarray(raw_u, dtype=np.int64)
    raw_i = np.asarray(raw_i, dtype=np.int64)
    if raw_u.size == 0:
        raise SplitError(f"{source} has no ratings")
    uo = np.argsort(ratings.user_ids, kind="stable")
    io = np.argsort(ratings.item_ids, kind="stable")
    u = _lookup(np.asarray(ratings.user_ids, np.int64)[uo], uo, raw_u)
    i = _lookup(np.asarray(ratings.item_ids, np.int64)[io], io, raw_i)
    n_items = np.int64(max(ratings.n_items, 1))
    keys = u * n_items + i
    all_keys = ratings.users.astype(np.int64) * n_items + ratings.items.astype(np.int64)
    korder = np.argsort(all_keys, kind="stable")
    skeys = all_keys[korder]
    pos = np.searchsorted(skeys, keys)
    pos_c = np.minimum(pos, len(skeys) - 1)
    hit = (u >= 0) & (i >= 0) & (pos < len(skeys)) & (skeys[pos_c] == keys)
    if not hit.all():
        bad = int(np.argmax(~hit))
        raise SplitError(f"{int((~hit).sum())} row(s) of {source} have no rating in {ratings.name!r} "
                         f"(first: line {first_line + bad}, user {raw_u[bad]}, item {raw_i[bad]}); "
                         "the file does not belong to this dataset")
    nxt = np.minimum(pos + 1, len(skeys) - 1)
    ambiguous = (pos + 1 < len(skeys)) & (skeys[nxt] == keys)
    if ambiguous.any():
        bad = int(np.argmax(ambiguous))
        raise SplitError(f"{int(ambiguous.sum())} row(s) of {source} match a (user, item) pair rated "
                         f"more than once in {ratings.name!r} (first: line {first_line + bad}, user "
                         f"{raw_u[bad]}, item {raw_i[bad]}); deduplicate the dataset")
    idx = korder[pos].astype(np.int64)
    if raw_r is not None:
        differ = np.asarray(raw_r, np.float32) != ratings.ratings[idx]
        if differ.any():
            bad = int(np.argmax(differ))
            raise SplitError(f"{int(differ.sum())} row(s) of {source} rate differently from "
                             f"{ratings.name!r} (first: line {first_line + bad}, user {raw_u[bad]}, "
                             f"item {raw_i[bad]}: {raw_r[bad]:g} vs {ratings.ratings[idx[bad]]:g})")
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise SplitError(f"{int((counts > 1).sum())} rating(s) appear more than once in {source}")
    return np.sort(idx)


def _mapped(ratings: Ratings, train_rows: np.ndarray, test_rows: np.ndarray,
            train_src: str, test_src: str) -> tuple[np.ndarray, np.ndarray]:
    both = np.intersect1d(train_rows, test_rows)
    if both.size:
        r = int(both[0])
        raise SplitError(f"{train_src} and {test_src} overlap: {both.size} rating(s) are in both (first: "
                         f"user {int(ratings.user_ids[ratings.users[r]])}, item "
                         f"{int(ratings.item_ids[ratings.items[r]])})")
    return train_rows, test_rows


def _canonical(ratings: Ratings, fold: str, source_dir) -> tuple[np.ndarray, np.ndarray]:
    if ratings.name != "ml-100k":
        raise SplitError(f"split 'canonical:{fold}' exists only for ml-100k (its published uN.base/uN.test "
                         f"files); {ratings.name!r} has none: use 'random' or 'kfold'")
    if source_dir is None:
        raise SplitError("split 'canonical' needs the ml-100k folder (source_dir) holding "
                         f"{fold}.base and {fold}.test")
    paths = [Path(source_dir) / f"{fold}.{suffix}" for suffix in ("base", "test")]
    for path in paths:
        if not path.is_file():
            raise SplitError(f"canonical split file {path} is missing; the ml-100k folder should hold "
                             f"{fold}.base and {fold}.test (re-extract ml-100k.zip)")
    from autorec.data import read_ratings

    rows = []
    for path in paths:
        u, i, r, _ = read_ratings(path, "tab")
        rows.append(_map_rows(ratings, u, i, r, str(path), 1))
    return _mapped(ratings, rows[0], rows[1], f"{fold}.base", f"{fold}.test")


def _files(ratings: Ratings, spec: SplitSpec) -> tuple[np.ndarray, np.ndarray]:
    rows = []
    for name in ("train", "test"):
        path = Path(spec.args[name])
        u, i, r = read_split_csv(path)
        rows.append(_map_rows(ratings, u, i, r, str(path), 2))
    return _mapped(ratings, rows[0], rows[1], spec.args["train"], spec.args["test"])


def _carve_valid(train: np.ndarray, valid_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n_valid = int(round(valid_ratio * len(train)))
    perm = np.random.default_rng([seed, _VALID_STREAM]).permutation(len(train))
    return np.sort(train[perm[n_valid:]]), np.sort(train[perm[:n_valid]])


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise SplitError(f"split seed must be an integer in 0..2**32-1, got {seed!r}")
    return int(seed)


def _check_valid_ratio(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise SplitError(f"valid_ratio must be a number in [0, 1), got {v!r}") from None
    if not (math.isfinite(v) and 0.0 <= v < 1.0):
        raise SplitError(f"valid_ratio must be in [0, 1), got {v!r}")
    return v


def make_split(ratings: Ratings, spec: "str | SplitSpec", *, seed: int = 0, valid_ratio: float = 0.05,
               source_dir: "str | os.PathLike | None" = None) -> Split:
    """Compute a split of ``ratings`` (nothing is stored; see :func:`load_split`).

    ``source_dir`` is the dataset folder, needed by ``canonical`` (it holds ``uN.base``/``uN.test``).
    """
    spec = SplitSpec.parse(spec)
    seed = _check_seed(seed)
    valid_ratio = _check_valid_ratio(valid_ratio)
    n = len(ratings)
    if n == 0:
        raise SplitError(f"cannot split {ratings.name!r}: it has no ratings")
    a = spec.args
    if spec.kind == "random":
        pool, test = _random_holdout(n, a["test_ratio"], seed)
    elif spec.kind == "d2l-random":
        pool, test = _d2l_random(n, a["test_ratio"], seed)
    elif spec.kind == "seq-aware":
        pool, test = _seq_aware(ratings)
    elif spec.kind == "kfold":
        pool, test = _kfold(n, a["k"], a["fold"], seed)
    elif spec.kind == "canonical":
        pool, test = _canonical(ratings, a["fold"], source_dir)
    elif spec.kind == "files":
        pool, test = _files(ratings, spec)
    else:  # pragma: no cover - SplitSpec refuses unknown kinds
        raise SplitError(f"unknown split kind {spec.kind!r}")
    if len(test) == 0 or len(pool) == 0:
        which = "test" if len(test) == 0 else "train"
        raise SplitError(f"split {spec} of {ratings.name!r} ({n} ratings, seed {seed}) has an empty "
                         f"{which} part; use a larger dataset or another ratio")
    train, valid = _carve_valid(pool.astype(np.int64), valid_ratio, seed)
    test = test.astype(np.int64)
    check_split(n, train, valid, test, ratings)
    digest = split_hash(ratings, train, valid, test, spec=spec)
    return Split(dataset=ratings.name, spec=spec, seed=seed, valid_ratio=valid_ratio, train=train,
                 valid=valid, test=test, sha256=digest)


# ---------------------------------------------------------------------------------------------
# user CSV files
# ---------------------------------------------------------------------------------------------

def read_split_csv(path: "str | os.PathLike") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(raw_users int64, raw_items int64, ratings float32)`` of a CSV with the header
    ``user,item,rating`` (other columns ignored).  Bad files raise :class:`DataError` naming the
    file, the line and the problem."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; expected a header 'user,item,rating' and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    cols = [c.strip() for c in df.columns]
    df.columns = cols
    missing = [c for c in ("user", "item", "rating") if c not in cols]
    if missing:
        raise DataError(f"{path} line 1: header {','.join(cols)!r} lacks column(s) "
                        f"{', '.join(missing)}; expected 'user,item,rating'")
    if len(df) == 0:
        raise DataError(f"{path} has a header but no ratings")
    out = []
    for col in ("user", "item", "rating"):
        text = df[col].str.strip()
        if col == "rating":
            vals = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isfinite(vals)
        else:
            bad = ~text.str.fullmatch(r"[+-]?\d{1,18}").to_numpy(dtype=bool)
        if bad.any():
            j = int(np.argmax(bad))
            what = "a finite number" if col == "rating" else "an integer id"
            raise DataError(f"{path} line {j + 2}: {col} {df[col].iloc[j]!r} is not {what}")
        out.append(vals.astype(np.float32) if col == "rating" else text.to_numpy().astype(np.int64))
    return out[0], out[1], out[2]


def ratings_from_files(dataset: str, train_path, test_path, *, scale: tuple[float, float] | None = None
                       ) -> Ratings:
    """The ratings table of a ``files`` split: the union of both CSVs (train rows first, then test
    rows), indexed contiguously.  The rating scale is ``scale`` if given, else that of a registered
    dataset of the same name, else the observed (min, max)."""
    from autorec import data as _data

    parts = [read_split_csv(train_path), read_split_csv(test_path)]
    n_train = len(parts[0][0])
    _, uinv = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
    items, iinv = np.unique(np.concatenate([p[1] for p in parts]), return_inverse=True)
    keys = uinv.astype(np.int64).ravel() * len(items) + iinv.astype(np.int64).ravel()
    for k, path, (u, i, _) in ((keys[:n_train], train_path, parts[0]), (keys[n_train:], test_path, parts[1])):
        uniq, first, counts = np.unique(k, return_index=True, return_counts=True)
        if (counts > 1).any():
            j = int(first[np.argmax(counts > 1)])
            raise SplitError(f"{path}: {int((counts > 1).sum())} (user, item) pair(s) are rated more than "
                             f"once (first: user {u[j]}, item {i[j]}); keep one rating per pair")
    both = np.isin(keys[n_train:], keys[:n_train])
    if both.any():
        j = int(np.argmax(both))
        raise SplitError(f"{int(both.sum())} test (user, item) pair(s) also occur in train: {test_path} and "
                         f"{train_path} share them (first: user {parts[1][0][j]}, item {parts[1][1][j]}); "
                         "a test rating must not also be in the training file")
    raw_u = np.concatenate([p[0] for p in parts])
    raw_i = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts])
    if scale is None:
        scale = _registered_scale(dataset)
    if scale is None:
        scale = (float(vals.min()), float(vals.max()))
    return _data.from_arrays(dataset, raw_u, raw_i, vals, scale=scale)


def _registered_scale(dataset: str):
    """The rating scale of a registered dataset named ``dataset``, else ``None``."""
    from autorec import data as _data

    try:
        spec = _data.get(dataset)
    except DataError:
        return None
    return tuple(float(v) for v in spec.rating_scale)


# ---------------------------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """``$AUTOREC_CACHE_DIR/splits`` if set, else ``$XDG_CACHE_HOME/autorec-bench/splits``
    (``~/.cache/autorec-bench/splits``)."""
    env = os.environ.get("AUTOREC_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "splits"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autorec-bench" / "splits"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _source_files(spec: SplitSpec, source_dir) -> dict:
    if spec.kind == "canonical" and source_dir is not None:
        fold = spec.args["fold"]
        paths = [Path(source_dir) / f"{fold}.base", Path(source_dir) / f"{fold}.test"]
    elif spec.kind == "files":
        paths = [Path(spec.args["train"]), Path(spec.args["test"])]
    else:
        return {}
    return {f"{k}:{p.name}": (_file_sha256(p) if p.is_file() else None)
            for k, p in zip(("train", "test"), paths)}


def _store_key(dataset: str, rhash: str, spec: SplitSpec, seed: int, valid_ratio: float,
               sources: dict) -> str:
    doc = {"format": _STORE_FORMAT, "dataset": dataset, "ratings_sha256": rhash, "spec": str(spec),
           "seed": seed, "valid_ratio": repr(float(valid_ratio)), "sources": sources}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()


def cache_path(cache_dir: Path, dataset: str, spec: SplitSpec, seed: int, key: str) -> Path:
    return Path(cache_dir) / f"{_safe(dataset)}-{_safe(spec.kind)}-seed{seed}-{key[:20]}.npz"


def _write_atomic(path: Path, split: Split, meta: dict) -> None:
    atomic_write(path, lambda fh: np.savez(fh, train=split.train, valid=split.valid, test=split.test,
                                           meta=np.array(json.dumps(meta, sort_keys=True))))


def _read_stored(path: Path, ratings: Ratings, spec: SplitSpec, seed: int, valid_ratio: float,
                 key: str) -> Split:
    fix = f"delete {path} to rebuild it"
    try:
        with np.load(path, allow_pickle=False) as z:
            train, valid, test = (np.asarray(z[n], dtype=np.int64) for n in ("train", "valid", "test"))
            meta = json.loads(str(z["meta"][()]))
    except Exception as exc:  # truncated / not an npz / missing arrays
        raise SplitError(f"stored split {path} is unreadable ({type(exc).__name__}: {exc}); {fix}") from None
    if meta.get("key") != key or meta.get("n_ratings") != len(ratings):
        raise SplitError(f"stored split {path} was made for other data or settings; {fix}")
    try:
        check_split(len(ratings), train, valid, test, ratings)
    except SplitError as exc:
        raise SplitError(f"stored split {path} is invalid ({exc}); {fix}") from None
    digest = split_hash(ratings, train, valid, test, spec=spec)
    if digest != meta.get("sha256"):
        raise SplitError(f"stored split {path} fails its hash check (content {digest[:16]}..., recorded "
                         f"{str(meta.get('sha256'))[:16]}...): it is corrupt; {fix}")
    return Split(dataset=ratings.name, spec=spec, seed=seed, valid_ratio=valid_ratio, train=train,
                 valid=valid, test=test, sha256=digest)


def load_split(dataset: str, spec: "str | SplitSpec", *, seed: int = 0, valid_ratio: float = 0.05,
               data_dir: "str | os.PathLike | None" = None, offline: bool = False,
               cache_dir: "str | os.PathLike | None" = None) -> SplitData:
    """THE entry point: the ratings of ``dataset`` split by ``spec``, materialised once and stored.

    The ratings come from :func:`autorec.data.load` (for ``files``, from the two CSVs).  The split
    is stored as ``.npz`` under ``cache_dir`` (default :func:`default_cache_dir`), keyed by dataset,
    ratings content hash, spec, seed, valid_ratio (and the content of the split's source files);
    the write is atomic.  A stored split is reused only after its indices are re-checked and its
    content hash verified; a mismatch raises :class:`SplitError` naming the file.
    """
    spec = SplitSpec.parse(spec)
    seed = _check_seed(seed)
    valid_ratio = _check_valid_ratio(valid_ratio)
    source_dir = None
    if spec.kind == "files":
        ratings = ratings_from_files(dataset, spec.args["train"], spec.args["test"])
    else:
        from autorec import data as _data
        ratings = _data.load(dataset, data_dir, offline=offline)
        if spec.kind == "canonical" and ratings.name == "ml-100k":
            source_dir = _data.locate(dataset, data_dir, offline=offline)
    return cached_split(ratings, spec, seed=seed, valid_ratio=valid_ratio, source_dir=source_dir,
                        cache_dir=cache_dir)


def cached_split(ratings: Ratings, spec: "str | SplitSpec", *, seed: int = 0, valid_ratio: float = 0.05,
                 source_dir: "str | os.PathLike | None" = None,
                 cache_dir: "str | os.PathLike | None" = None) -> SplitData:
    """:func:`make_split` of ratings already loaded, stored under ``cache_dir`` and reused (the
    storage half of :func:`load_split`)."""
    spec = SplitSpec.parse(spec)
    seed = _check_seed(seed)
    valid_ratio = _check_valid_ratio(valid_ratio)
    rhash = ratings_hash(ratings)
    key = _store_key(ratings.name, rhash, spec, seed, valid_ratio, _source_files(spec, source_dir))
    path = cache_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(),
                      ratings.name, spec, seed, key)
    if path.is_file():
        split = _read_stored(path, ratings, spec, seed, valid_ratio, key)
    else:
        split = make_split(ratings, spec, seed=seed, valid_ratio=valid_ratio, source_dir=source_dir)
        meta = {"format": _STORE_FORMAT, "key": key, "dataset": ratings.name, "spec": str(spec),
                "seed": seed, "valid_ratio": valid_ratio, "n_ratings": len(ratings),
                "ratings_sha256": rhash, "sha256": split.sha256, "sizes": split.sizes}
        _write_atomic(path, split, meta)
    return split.data(ratings, path=path)
