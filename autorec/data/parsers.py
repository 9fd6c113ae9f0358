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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autorec.data.indexing import OUT_OF_INT64, Where, from_arrays, int64_column
from autorec.data.ratings import Ratings
from autorec.errors import DataError

__all__ = ["read_ratings", "load_file", "normalize_format", "line_numbers", "where_in_files", "scan_bytes"]

_FORMAT_ALIASES = {
    "tab": "tab",
    "tsv": "tab",
    "\t": "tab",
    "u.data": "tab",
    "::": "::",
    "dat": "::",
    "colons": "::",
    "csv": "csv",
    ",": "csv",
}

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
        raise DataError(
            f"unknown ratings format {fmt!r}; use 'tab' (u.data), '::' (ratings.dat) or "
            "'csv' (header user,item,rating[,timestamp])"
        )
    return _FORMAT_ALIASES[key]


def _check_file(path: Path) -> None:
    if not path.exists():
        parent = path.parent
        hint = "" if parent.is_dir() else f" (its folder {parent} does not exist either)"
        raise DataError(f"{path}: ratings file not found{hint}")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a ratings file")


# ------------------------------------------------------------------ line-level diagnosis
def _lines(path: Path, fmt: str, *, skip_initial_space: bool = False):
    """Yield (line number, fields) of every non-blank line, as the fast parser sees them (a file
    with NUL bytes or lone CRs is refused by :func:`scan_bytes` before it is read)."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not text.strip():
                continue
            if fmt == "csv":
                try:
                    fields = next(csv.reader([text], skipinitialspace=skip_initial_space))
                except csv.Error as exc:
                    raise DataError(f"{path}, line {n}: not a readable csv line ({exc}): {text[:80]!r}") from None
            elif fmt == "::":
                fields = text.split("::")
            else:
                fields = text.split("\t")
            yield n, fields


_STRAY_CR = (
    "a carriage return (CR) that ends no line (a stray CR, or old Mac line endings): line breaks must be LF or CR LF"
)


def scan_bytes(path: Path) -> None:
    """Refuse bytes the fast parser would misread without failing: a NUL (a zero-filled block of a
    damaged copy; pandas ends a field there, so ``1\\x00\\x00`` would read as ``1``) and a CR that is
    not part of a CR LF pair (pandas ends a line there, so one line could read as two rows).
    Reads the file in blocks; the error names the line."""
    offset = 0  # of this block in the file
    bad: tuple[int, str] | None = None
    with open(path, "rb") as fh:
        pending_cr = False  # the previous block ended with a CR: its pair's LF must start this one
        while block := fh.read(_SCAN_BLOCK):
            if pending_cr and not block.startswith(b"\n"):
                bad = (offset - 1, _STRAY_CR)
                break
            nul = block.find(b"\x00")
            lone = -1
            trailing = block.endswith(b"\r")
            n_cr = block.count(b"\r")
            if n_cr and n_cr != block.count(b"\r\n") + trailing:  # some CR ends no line
                k = block.find(b"\r")
                while block[k + 1 : k + 2] == b"\n":
                    k = block.find(b"\r", k + 2)
                lone = k
            first = min((k for k in (nul, lone) if k >= 0), default=-1)
            if first >= 0:
                what = "a NUL byte (the file is damaged, e.g. a zero-filled block)" if first == nul else _STRAY_CR
                if offset == 0 and (block[:2] in (b"\xff\xfe", b"\xfe\xff") or 0 <= nul < 2):
                    what = "NUL bytes between the characters: the file is UTF-16 encoded; save it as UTF-8"
                bad = (offset + first, what)
                break
            pending_cr = trailing
            offset += len(block)
    # a CR as the file's very last byte ends its last line: harmless
    if bad is not None:
        with open(path, "rb") as fh:
            line = fh.read(bad[0]).count(b"\n") + 1
        raise DataError(f"{path}, line {line}: {bad[1]}")


_SCAN_BLOCK = 1 << 24
_INT64 = (-(2**63), 2**63 - 1)


def csv_lines(path: Path, *, skip_initial_space: bool = False):
    """``(line number, fields)`` of every non-blank line of a csv file, its header included."""
    return _lines(path, "csv", skip_initial_space=skip_initial_space)


def _is_int(text: str) -> bool:
    try:
        return _INT64[0] <= int(text.strip()) <= _INT64[1]
    except ValueError:
        return False


def _is_float(text: str) -> bool:
    try:
        float(text.strip())
        return True
    except ValueError:
        return False


def _diagnose(
    path: Path, fmt: str, columns: dict[str, int] | None, n_fields: int | None, cause: Exception | None
) -> DataError:
    """The DataError for the first malformed line of ``path`` (after the fast parser failed)."""
    lines = _lines(path, fmt)
    if fmt == "csv":
        next(lines, None)  # header, already checked
    for n, fields in lines:
        if n_fields is None:
            n_fields = len(fields)
            if n_fields not in (3, 4):
                return DataError(
                    f"{path}, line {n}: expected 3 or 4 {_sep_name(fmt)}-separated fields "
                    f"(user, item, rating[, timestamp]), found {n_fields}: {_show(fields, fmt)}"
                )
        if len(fields) != n_fields:
            what = "truncated line" if len(fields) < n_fields else "malformed line"
            return DataError(
                f"{path}, line {n}: {what}: expected {n_fields} fields, found {len(fields)}: {_show(fields, fmt)}"
            )
        cols = columns or {f: k for k, f in enumerate(_FIELDS[:n_fields])}
        for field, k in cols.items():
            value = fields[k]
            ok = _is_float(value) if field == "rating" else _is_int(value)
            if not ok:
                problem = "is not a number" if field == "rating" else "is not an integer"
                if field != "rating" and value.strip().lstrip("+-").isdigit():
                    problem = OUT_OF_INT64  # the wording of indexing.int64_column, which pandas 2 reaches
                return DataError(f"{path}, line {n}: {field} {value!r} {problem}: {_show(fields, fmt)}")
            if field == "rating" and not math.isfinite(float(value)):
                return DataError(f"{path}, line {n}: rating {value.strip()} is not a finite number")
    return DataError(f"{path}: could not be parsed as {fmt!r} ratings ({cause})")


def _sep_name(fmt: str) -> str:
    return {"tab": "tab", "::": "'::'", "csv": "comma"}[fmt]


def _show(fields: list[str], fmt: str) -> str:
    sep = {"tab": "\t", "::": "::", "csv": ","}[fmt]
    text = sep.join(fields)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def line_numbers(path: Path, fmt: str, rows: np.ndarray) -> dict[int, int]:
    """Line numbers (1-based) of the given data rows (0-based, in file order; blank lines and a csv
    header are not rows), for error messages."""
    wanted = set(int(r) for r in rows)
    out: dict[int, int] = {}
    if not wanted:
        return out
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
        raise DataError(
            f"{path}, line 1: empty; a csv ratings file starts with a header row "
            "'user,item,rating[,timestamp]' (or userId,movieId,rating,timestamp)"
        )
    try:
        header = next(csv.reader([first]))
    except csv.Error as exc:
        raise DataError(f"{path}, line 1: not a readable csv header ({exc}): {first[:80]!r}") from None
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
        raise DataError(
            f"{path}, line 1: {problem}; a csv ratings file needs a header with user,item,rating"
            "[,timestamp] (MovieLens' userId,movieId,rating,timestamp is accepted too)"
        )
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
    scan_bytes(path)
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
    dtypes: Any = {k: (np.float64 if f == "rating" else np.int64) for f, k in zip(names, usecols)}
    dtypes.update({k: str for k in extra})
    try:
        # all columns (no usecols): the C parser then rejects lines with too many fields; `dtypes`
        # is typed Any because the pandas stubs want column names as keys (positions are valid)
        frame = pd.read_csv(
            source,
            sep=sep,
            header=None,
            skiprows=skip,
            dtype=dtypes,
            engine="c",
            na_filter=False,
            quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE,
            skip_blank_lines=True,
        )
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: no ratings (only a header row)" if fmt == "csv" else f"{path}: no ratings (the file is empty)"
        ) from None
    except (ValueError, TypeError, OverflowError, pd.errors.ParserError) as exc:
        raise _diagnose(path, fmt, columns, n_fields, exc) from None
    if frame.shape[1] != n_fields:
        raise _diagnose(path, fmt, columns, n_fields, None)
    if len(frame) == 0:
        raise DataError(
            f"{path}: no ratings (only a header row)" if fmt == "csv" else f"{path}: no ratings (the file is empty)"
        )
    col = {f: frame[k].to_numpy() for f, k in zip(names, usecols)}
    del frame
    values = col["rating"]
    where = where_in_files([(path, fmt, len(values))])
    # pandas 2 reads an id above 2**63 - 1 as uint64: refused here, never wrapped to a negative id
    users = int64_column(col["user"], "user", where)
    items = int64_column(col["item"], "item", where)
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(f"{where(np.array([k]))[k]}: rating {values[k]} is not a finite number")
    ratings = values.astype(np.float32)
    ts = int64_column(col["timestamp"], "timestamp", where) if "timestamp" in col else None
    return users, items, ratings, ts


def _tab_in_colons(path: Path, data: bytes) -> DataError:
    line = data[: data.index(b"\t")].count(b"\n") + 1
    return DataError(f"{path}, line {line}: a tab inside a '::'-separated file (is this a 'tab' file such as u.data?)")


def where_in_files(files: Sequence[tuple[Path, str, int]]) -> Where:
    """Where each row of several files read one after the other comes from (``PATH, line N``):
    ``files`` lists ``(path, fmt, number of rows)`` in reading order."""

    def where(rows: np.ndarray) -> dict[int, str]:
        out: dict[int, str] = {}
        start = 0
        for path, fmt, n in files:
            mine = [int(k) for k in rows if start <= int(k) < start + n]
            lines = line_numbers(path, fmt, np.asarray(mine, dtype=np.int64) - start)
            out.update({k: f"{path}, line {lines.get(k - start, '?')}" for k in mine})
            start += n
        return out

    return where


def load_file(path, fmt: str, *, name: str, scale: tuple[float, float], step: float | None = None) -> Ratings:
    """A ratings file (see :func:`read_ratings`) as a :class:`Ratings`; errors name file and line."""
    path = Path(path)
    fmt = normalize_format(fmt)
    users, items, ratings, ts = read_ratings(path, fmt)
    out = from_arrays(
        name,
        users,
        items,
        ratings,
        scale=scale,
        timestamps=ts,
        step=step,
        where=where_in_files([(path, fmt, len(ratings))]),
    )
    out.meta.update(source=str(path), format=fmt)
    return out
