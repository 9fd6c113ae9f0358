"""Content hashes: of a split (:func:`split_hash`), of a ratings table (:func:`ratings_hash`) and of
a file (:func:`file_sha256`).  Byte-exact encodings, so the same content hashes the same on every
machine; these hashes identify every stored split and every run."""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from autorec.data.ratings import Ratings
from autorec.splits.spec import SplitSpec

__all__ = ["split_hash", "ratings_hash", "file_sha256"]

_SPLIT_MAGIC = b"autorec-bench/split/v1\n"
_RATINGS_MAGIC = b"autorec-bench/ratings/v1\n"


def _le(a: Any, dtype: str) -> bytes:
    return np.ascontiguousarray(a, dtype=np.dtype(dtype)).tobytes()


def _field(h: Any, tag: bytes, payload: bytes) -> None:
    h.update(tag + b"\x00" + struct.pack("<Q", len(payload)) + payload)


def split_hash(
    ratings: Ratings,
    train: npt.ArrayLike,
    valid: npt.ArrayLike,
    test: npt.ArrayLike,
    *,
    spec: SplitSpec | str | None = None,
) -> str:
    """SHA-256 (hex) of a split's content, byte-exact and machine-independent.

    The hashed bytes are, in order::

        b"autorec-bench/split/v1\\n"
        b"dataset\\0" + uint64_le(len(NAME)) + NAME          # ratings.name, UTF-8
        b"spec\\0"    + uint64_le(len(SPEC)) + SPEC          # SplitSpec.hash_text(), UTF-8
        for TAG, IDX in (b"train", train), (b"valid", valid), (b"test", test):
            TAG + b"\\0" + uint64_le(len(IDX))
            raw user ids of rows IDX as int64 LE, raw item ids as int64 LE, ratings as float32 LE

    Rows are taken in the order of ``IDX`` (sorted for every :class:`~autorec.splits.Split`).
    ``spec=None`` hashes an empty spec text.
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


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
