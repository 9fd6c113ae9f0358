"""Indexing raw ratings into :class:`Ratings`, with the checks every loaded dataset passes.

Raw ids become contiguous 0-based indices (sorted raw ids -> 0..n-1); ratings must be finite, on the
scale (and its step, when there is one), one per (user, item) pair.  Errors name where the rating
comes from: a loader passes ``where`` (row -> "FILE, line N"), else "NAME: row K".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from autorec.data.ratings import Ratings
from autorec.errors import DataError

__all__ = ["from_arrays", "int64_column", "Where"]

#: rows (0-based, in input order) -> where each comes from, for error messages
Where = Callable[[np.ndarray], dict[int, str]]


def _index(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous int32 indices of raw ids (sorted raw ids -> 0..n-1) and the sorted raw ids."""
    if raw.size == 0:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int64)
    lo, hi = int(raw.min()), int(raw.max())
    if lo >= 0 and hi < max(4 * raw.size, 1 << 24):
        # dense id range: an O(n) table instead of a sort
        present = np.zeros(hi + 1, dtype=bool)
        present[raw] = True
        ids = np.flatnonzero(present).astype(np.int64)
        table = np.cumsum(present, dtype=np.int64) - 1
        return table[raw].astype(np.int32), ids
    ids, inverse = np.unique(raw, return_inverse=True)
    return inverse.reshape(-1).astype(np.int32), ids.astype(np.int64)


_INT64_MAX = np.iinfo(np.int64).max
#: how an id or timestamp beyond 64-bit integers is named, whichever check finds it
OUT_OF_INT64 = "is out of the 64-bit integer range"


def int64_column(a, label: str, where_many: Where) -> np.ndarray:
    """``a`` (raw ids or timestamps) as int64, refused (naming the first bad row) unless every value
    is a whole number a 64-bit integer holds: an unsigned value above 2**63 - 1 or a float out of
    range would otherwise wrap around to another number silently."""
    a = np.asarray(a)
    bad = None
    if a.dtype.kind == "u":
        bad = a > _INT64_MAX
    elif a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.round(a)) | (a < -(2.0**63)) | (a >= 2.0**63)
    elif a.dtype.kind != "i":
        raise DataError(f"{label} must be integers, got dtype {a.dtype}")
    if bad is not None and bad.any():
        k = int(np.argmax(bad))
        value = a[k].item()
        whole = a.dtype.kind == "u" or (math.isfinite(value) and value == round(value))
        problem = OUT_OF_INT64 if whole else "is not a whole number"
        raise DataError(f"{where_many(np.array([k]))[k]}: {label} {value!r} {problem}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_ratings(
    ratings: np.ndarray, scale: tuple[float, float], step: float | None, where_many: Where
) -> np.ndarray:
    """The ratings as float32 on the scale, or :class:`DataError` naming the first bad one.  Within the
    tolerances a rating is taken to be the scale level it stands for (``4.99999`` on steps of 1 is 5;
    ``5.0000001`` on 1..5 is 5), so that ratings and predictions clipped to the scale compare exactly."""
    lo, hi = scale
    r = ratings.astype(np.float64)
    bad = ~np.isfinite(r)
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(f"{where_many(np.array([k]))[k]}: rating {float(r[k])} is not a finite number")
    off = (r < lo - 1e-6) | (r > hi + 1e-6)
    if off.any():
        k = int(np.argmax(off))
        more = int(off.sum()) - 1
        raise DataError(
            f"{where_many(np.array([k]))[k]}: rating {r[k]:g} is off the scale {lo:g}..{hi:g}"
            + (f" (and {more} more such rating(s))" if more else "")
            + "; check the rating scale or the file"
        )
    if step:
        pos = r - lo
        pos /= step
        level = np.round(pos)
        pos -= level  # in place: a 25M-rating file is 200 MB per float64 temporary
        np.abs(pos, out=pos)
        offstep = pos > 1e-4
        if offstep.any():
            k = int(np.argmax(offstep))
            more = int(offstep.sum()) - 1
            raise DataError(
                f"{where_many(np.array([k]))[k]}: rating {r[k]:g} is not on the scale's steps of "
                f"{step:g} ({lo:g}, {lo + step:g}, ..., {hi:g})"
                + (f" (and {more} more such rating(s))" if more else "")
            )
        level *= step
        level += lo
        r = level
    np.clip(r, lo, hi, out=r)
    return r.astype(np.float32)


def _check_unique(
    users: np.ndarray, items: np.ndarray, n_items: int, raw_u: np.ndarray, raw_i: np.ndarray, where_many: Where
) -> None:
    keys = users.astype(np.int64) * max(n_items, 1) + items
    s = np.sort(keys)
    dup = s[1:] == s[:-1]
    if dup.any():
        n_dup = int(dup.sum())
        key = s[int(np.argmax(dup))]
        rows = np.flatnonzero(keys == key)[:2]
        where = where_many(rows)
        a, b = where[int(rows[0])], where[int(rows[1])]
        prefix, _, first = a.rpartition(" ")
        second = b.rpartition(" ")[2]
        both = f"{prefix}s {first} and {second}" if b.rpartition(" ")[0] == prefix else f"{a} and {b}"
        raise DataError(
            f"{both}: duplicate rating of user "
            f"{raw_u[rows[0]]} for item {raw_i[rows[0]]} ({n_dup} duplicate (user, item) pair(s) in "
            "all); keep one rating per pair"
        )


def from_arrays(
    name: str,
    raw_users,
    raw_items,
    ratings,
    *,
    scale: tuple[float, float],
    timestamps=None,
    step: float | None = None,
    where: Where | None = None,
) -> Ratings:
    """Index raw ids contiguously (sorted raw ids -> 0..n-1) into a :class:`Ratings`.

    Checks: equal lengths, integer ids, finite ratings on ``scale`` (and on its ``step`` when given),
    one rating per (user, item) pair.  Errors name the rows through ``where`` (a loader's file and
    line), else as ``NAME: row K``.
    """
    where_many: Where = where or (lambda rows: {int(k): f"{name}: row {int(k)}" for k in rows})
    raw_u = np.asarray(raw_users)
    raw_i = np.asarray(raw_items)
    vals = np.asarray(ratings)
    if raw_u.ndim != 1 or raw_i.ndim != 1 or vals.ndim != 1:
        raise DataError(f"{name}: users, items and ratings must be 1-d arrays")
    if not (len(raw_u) == len(raw_i) == len(vals)):
        raise DataError(f"{name}: users, items and ratings differ in length ({len(raw_u)}, {len(raw_i)}, {len(vals)})")
    if len(vals) == 0:
        raise DataError(f"{name}: no ratings")
    for label, a in (("user", raw_u), ("item", raw_i)):
        if a.dtype.kind not in "iuf":
            raise DataError(f"{name}: raw {label} ids must be integers, got dtype {a.dtype}")
    raw_u = int64_column(raw_u, "user id", where_many)
    raw_i = int64_column(raw_i, "item id", where_many)
    try:
        lo, hi = float(scale[0]), float(scale[1])
    except (TypeError, ValueError, IndexError):
        raise DataError(f"{name}: scale must be (low, high), got {scale!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DataError(f"{name}: scale must be (low, high) with low < high, got {scale!r}")
    if step is not None:
        step = float(step)
        if not (step > 0 and math.isfinite(step)):
            raise DataError(f"{name}: step must be a positive number, got {step!r}")
    if vals.dtype.kind not in "iuf":
        raise DataError(f"{name}: ratings must be real numbers, got dtype {vals.dtype}")
    vals = _check_ratings(vals, (lo, hi), step, where_many)
    users, user_ids = _index(raw_u)
    items, item_ids = _index(raw_i)
    _check_unique(users, items, len(item_ids), raw_u, raw_i, where_many)
    ts = None
    if timestamps is not None:
        ts = np.asarray(timestamps)
        if ts.shape != vals.shape:
            raise DataError(f"{name}: timestamps differ in length from the ratings ({len(ts)} vs {len(vals)})")
        if ts.dtype.kind not in "iuf":
            raise DataError(f"{name}: timestamps must be integers, got dtype {ts.dtype}")
        ts = int64_column(ts, "timestamp", where_many)
    meta = {} if step is None else {"step": step}
    return Ratings(
        name=name,
        users=users,
        items=items,
        ratings=vals,
        user_ids=user_ids,
        item_ids=item_ids,
        rating_scale=(lo, hi),
        timestamps=ts,
        meta=meta,
    )
