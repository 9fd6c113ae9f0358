"""Reading ratings files into plain numpy arrays, and indexing them into :class:`Ratings`.

Formats: ``tab`` (ML-100K ``u.data`` and its ``uN.base/test``: ``user TAB item TAB rating [TAB
timestamp]``), ``::`` (ML-1M/10M ``ratings.dat``: ``user::item::rating::timestamp``) and ``csv``
(a header row naming ``user,item,rating[,timestamp]`` or MovieLens' ``userId,movieId,rating,timestamp``;
other columns are ignored).  The fast path is pandas' C parser with fixed dtypes (``::`` is turned into
a tab in memory, so the python engine is never used); when it fails, a line-by-line scan finds the
first bad line so that every error names the file, the line number and the problem.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Callable

import numpy as np

from autorec.data.ratings import Ratings
from autorec.errors import DataError

__all__ = ["read_ratings", "load_file", "from_arrays", "normalize_format"]

_FORMAT_ALIASES = {"tab": "tab", "tsv": "tab", "\t": "tab", "u.data": "tab",
                   "::": "::", "dat": "::", "colons": "::",
                   "csv": "csv", ",": "csv"}

# accepted csv header names (compared lower-case, without '_' and spaces)
_CSV_COLUMNS = {
    "user": ("user", "userid", "users"),
    "item": ("item", "itemid", "movieid", "movie", "items"),
    "rating": ("rating", "ratings", "score"),
    "timestamp": ("timestamp", "time", "ts"),
}
_FIELDS = ("user", "item", "rating", "timestamp")


def normalize_format(fmt: str) -> str:
    key = str(fmt).strip().lower() if str(fmt).strip() else str(fmt)
    if key not in _FORMAT_ALIASES:
        raise DataError(f"unknown ratings format {fmt!r}; use 'tab' (u.data), '::' (ratings.dat) or "
                        "'csv' (header user,item,rating[,timestamp])")
    return _FORMAT_ALIASES[key]


def _check_file(path: Path) -> None:
    if not path.exists():
        parent = path.parent
        hint = "" if parent.is_dir() else f" (its folder {parent} does not exist either)"
        raise DataError(f"{path}: ratings file not found{hint}")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a ratings file")


# ------------------------------------------------------------------ line-level diagnosis
def _lines(path: Path, fmt: str):
    """Yield (line number, fields) of every non-blank line, as the fast parser sees them."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not text.strip():
                continue
            if fmt == "csv":
                fields = next(csv.reader([text]))
            elif fmt == "::":
                fields = text.split("::")
            else:
                fields = text.split("\t")
            yield n, fields


def _is_int(text: str) -> bool:
    try:
        int(text.strip())
        return True
    except ValueError:
        return False


def _is_float(text: str) -> bool:
    try:
        float(text.strip())
        return True
    except ValueError:
        return False


def _diagnose(path: Path, fmt: str, columns: dict[str, int] | None, n_fields: int | None,
              cause: Exception | None) -> DataError:
    """The DataError for the first malformed line of ``path`` (after the fast parser failed)."""
    lines = _lines(path, fmt)
    if fmt == "csv":
        next(lines, None)  # header, already checked
    for n, fields in lines:
        if n_fields is None:
            n_fields = len(fields)
            if n_fields not in (3, 4):
                return DataError(f"{path}, line {n}: expected 3 or 4 {_sep_name(fmt)}-separated fields "
                                 f"(user, item, rating[, timestamp]), found {n_fields}: {_show(fields, fmt)}")
        if len(fields) != n_fields:
            what = "truncated line" if len(fields) < n_fields else "malformed line"
            return DataError(f"{path}, line {n}: {what}: expected {n_fields} fields, found {len(fields)}: "
                             f"{_show(fields, fmt)}")
        cols = columns or {f: k for k, f in enumerate(_FIELDS[:n_fields])}
        for field, k in cols.items():
            value = fields[k]
            ok = _is_float(value) if field == "rating" else _is_int(value)
            if not ok:
                kind = "a number" if field == "rating" else "an integer"
                return DataError(f"{path}, line {n}: {field} {value!r} is not {kind}: {_show(fields, fmt)}")
            if field == "rating" and not math.isfinite(float(value)):
                return DataError(f"{path}, line {n}: rating {value.strip()} is not a finite number")
    return DataError(f"{path}: could not be parsed as {fmt!r} ratings ({cause})")


def _sep_name(fmt: str) -> str:
    return {"tab": "tab", "::": "'::'", "csv": "comma"}[fmt]


def _show(fields: list[str], fmt: str) -> str:
    sep = {"tab": "\t", "::": "::", "csv": ","}[fmt]
    text = sep.join(fields)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _row_lines(path: Path, fmt: str, rows: np.ndarray) -> dict[int, int]:
    """Line numbers of the given data rows (0-based, in file order, blank lines skipped)."""
    wanted = set(int(r) for r in rows)
    out: dict[int, int] = {}
    lines = _lines(path, fmt)
    if fmt == "csv":
        next(lines, None)
    for k, (n, _) in enumerate(lines):
        if k in wanted:
            out[k] = n
            if len(out) == len(wanted):
                break
    return out


# ------------------------------------------------------------------ the fast readers
def _csv_columns(path: Path) -> tuple[dict[str, int], int]:
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    if not first.strip():
        raise DataError(f"{path}, line 1: empty; a csv ratings file starts with a header row "
                        "'user,item,rating[,timestamp]' (or userId,movieId,rating,timestamp)")
    header = next(csv.reader([first]))
    norm = [h.strip().strip('"').lower().replace("_", "").replace(" ", "") for h in header]
    columns: dict[str, int] = {}
    for field, accepted in _CSV_COLUMNS.items():
        for k, h in enumerate(norm):
            if h in accepted:
                columns[field] = k
                break
    missing = [f for f in ("user", "item", "rating") if f not in columns]
    if missing:
        if all(_is_float(h) for h in header):
            problem = "has no header row"
        else:
            problem = f"header {first!r} names no {'/'.join(missing)} column"
        raise DataError(f"{path}, line 1: {problem}; a csv ratings file needs a header with user,item,rating"
                        "[,timestamp] (MovieLens' userId,movieId,rating,timestamp is accepted too)")
    return columns, len(header)


def read_ratings(path, fmt: str):
    """``(raw_users int64, raw_items int64, ratings float32, timestamps int64 or None)`` of a file.

    ``timestamps`` is None when the file has none (3-field tab/``::`` lines, a csv without a
    timestamp column).  Raises :class:`DataError` naming the file, line and problem for a missing
    file, a truncated or malformed line (wrong field count) or a non-numeric field.
    """
    import pandas as pd  # lazily: importing autorec.data stays light

    path = Path(path)
    fmt = normalize_format(fmt)
    _check_file(path)
    columns: dict[str, int] | None = None
    n_fields: int | None = None
    if fmt == "csv":
        columns, n_fields = _csv_columns(path)
        names = [f for f in _FIELDS if f in columns]
        usecols = [columns[f] for f in names]
        source, sep, skip = path, ",", 1
        extra = [k for k in range(n_fields) if k not in usecols]
    else:
        with open(path, "rb") as fh:
            head = b""
            for raw in fh:
                if raw.strip():
                    head = raw.rstrip(b"\r\n")
                    break
        if not head:
            raise DataError(f"{path}: no ratings (the file is empty)")
        fields = head.split(b"::" if fmt == "::" else b"\t")
        if len(fields) not in (3, 4):
            raise _diagnose(path, fmt, None, None, None)
        n_fields = len(fields)
        names = list(_FIELDS[:n_fields])
        usecols = list(range(n_fields))
        if fmt == "::":
            data = path.read_bytes()
            if b"\t" in data:
                raise _tab_in_colons(path, data)
            source = io.BytesIO(data.replace(b"::", b"\t"))
            del data
        else:
            source = path
        sep, skip, extra = "\t", 0, []
    dtypes = {k: (np.float64 if f == "rating" else np.int64) for f, k in zip(names, usecols)}
    dtypes.update({k: str for k in extra})
    try:
        # all columns (no usecols): the C parser then rejects lines with too many fields
        frame = pd.read_csv(source, sep=sep, header=None, skiprows=skip, dtype=dtypes, engine="c",
                            na_filter=False, quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE,
                            skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: no ratings (only a header row)" if fmt == "csv" else
                        f"{path}: no ratings (the file is empty)") from None
    except (ValueError, TypeError, pd.errors.ParserError) as exc:
        raise _diagnose(path, fmt, columns, n_fields, exc) from None
    if frame.shape[1] != n_fields:
        raise _diagnose(path, fmt, columns, n_fields, None)
    if len(frame) == 0:
        raise DataError(f"{path}: no ratings (only a header row)" if fmt == "csv" else
                        f"{path}: no ratings (the file is empty)")
    col = {f: frame[k].to_numpy() for f, k in zip(names, usecols)}
    users = np.ascontiguousarray(col["user"], dtype=np.int64)
    items = np.ascontiguousarray(col["item"], dtype=np.int64)
    values = col["rating"]
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.argmax(bad))
        line = _row_lines(path, fmt, np.array([k])).get(k, "?")
        raise DataError(f"{path}, line {line}: rating {values[k]} is not a finite number")
    ratings = values.astype(np.float32)
    ts = np.ascontiguousarray(col["timestamp"], dtype=np.int64) if "timestamp" in col else None
    return users, items, ratings, ts


def _tab_in_colons(path: Path, data: bytes) -> DataError:
    line = data[:data.index(b"\t")].count(b"\n") + 1
    return DataError(f"{path}, line {line}: a tab inside a '::'-separated file (is this a 'tab' file such as "
                     "u.data?)")


# ------------------------------------------------------------------ indexing and checks
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


def _default_where(k: int) -> str:
    return f"row {k}"


def _check_ratings(ratings: np.ndarray, scale: tuple[float, float], step: float | None,
                   where_many: Callable[[np.ndarray], dict[int, str]]) -> None:
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
        raise DataError(f"{where_many(np.array([k]))[k]}: rating {r[k]:g} is off the scale {lo:g}..{hi:g}"
                        + (f" (and {more} more such rating(s))" if more else "")
                        + "; check the rating scale or the file")
    if step:
        pos = (r - lo) / step
        offstep = np.abs(pos - np.round(pos)) > 1e-4
        if offstep.any():
            k = int(np.argmax(offstep))
            more = int(offstep.sum()) - 1
            raise DataError(f"{where_many(np.array([k]))[k]}: rating {r[k]:g} is not on the scale's steps of "
                            f"{step:g} ({lo:g}, {lo + step:g}, ..., {hi:g})"
                            + (f" (and {more} more such rating(s))" if more else ""))


def _check_unique(users: np.ndarray, items: np.ndarray, n_items: int, raw_u: np.ndarray, raw_i: np.ndarray,
                  where_many: Callable[[np.ndarray], dict[int, str]]) -> None:
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
        raise DataError(f"{both}: duplicate rating of user "
                        f"{raw_u[rows[0]]} for item {raw_i[rows[0]]} ({n_dup} duplicate (user, item) pair(s) in "
                        "all); keep one rating per pair")


def _build(name: str, raw_users, raw_items, ratings, scale, timestamps, step,
           where_many: Callable[[np.ndarray], dict[int, str]], meta: dict) -> Ratings:
    raw_u = np.asarray(raw_users)
    raw_i = np.asarray(raw_items)
    vals = np.asarray(ratings)
    if raw_u.ndim != 1 or raw_i.ndim != 1 or vals.ndim != 1:
        raise DataError(f"{name}: users, items and ratings must be 1-d arrays")
    if not (len(raw_u) == len(raw_i) == len(vals)):
        raise DataError(f"{name}: users, items and ratings differ in length "
                        f"({len(raw_u)}, {len(raw_i)}, {len(vals)})")
    if len(vals) == 0:
        raise DataError(f"{name}: no ratings")
    for label, a in (("user", raw_u), ("item", raw_i)):
        if not np.issubdtype(a.dtype, np.integer):
            if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
                continue
            raise DataError(f"{name}: raw {label} ids must be integers, got dtype {a.dtype}")
    raw_u = raw_u.astype(np.int64, copy=False)
    raw_i = raw_i.astype(np.int64, copy=False)
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
    if not np.issubdtype(vals.dtype, np.number):
        raise DataError(f"{name}: ratings must be numbers, got dtype {vals.dtype}")
    _check_ratings(vals, (lo, hi), step, where_many)
    users, user_ids = _index(raw_u)
    items, item_ids = _index(raw_i)
    _check_unique(users, items, len(item_ids), raw_u, raw_i, where_many)
    ts = None
    if timestamps is not None:
        ts = np.asarray(timestamps)
        if ts.shape != vals.shape:
            raise DataError(f"{name}: timestamps differ in length from the ratings ({len(ts)} vs {len(vals)})")
        ts = ts.astype(np.int64, copy=False)
    meta = dict(meta)
    if step is not None:
        meta.setdefault("step", step)
    return Ratings(name=name, users=users, items=items, ratings=vals.astype(np.float32, copy=False),
                   user_ids=user_ids, item_ids=item_ids, rating_scale=(lo, hi), timestamps=ts, meta=meta)


def from_arrays(name: str, raw_users, raw_items, ratings, *, scale: tuple[float, float], timestamps=None,
                step: float | None = None) -> Ratings:
    """Index raw ids contiguously (sorted raw ids -> 0..n-1) into a :class:`Ratings`.

    Checks: equal lengths, integer ids, finite ratings on ``scale`` (and on its ``step`` when given),
    one rating per (user, item) pair; errors name the row.
    """
    return _build(name, raw_users, raw_items, ratings, scale, timestamps, step,
                  lambda rows: {int(k): f"{name}: row {int(k)}" for k in rows}, {})


def load_file(path, fmt: str, *, name: str, scale: tuple[float, float], step: float | None = None) -> Ratings:
    """A ratings file (see :func:`read_ratings`) as a :class:`Ratings`; errors name file and line."""
    path = Path(path)
    fmt = normalize_format(fmt)
    users, items, ratings, ts = read_ratings(path, fmt)

    def where_many(rows: np.ndarray) -> dict[int, str]:
        lines = _row_lines(path, fmt, rows)
        return {int(k): f"{path}, line {lines.get(int(k), '?')}" for k in rows}

    return _build(name, users, items, ratings, scale, ts, step, where_many,
                  {"source": str(path), "format": fmt})
