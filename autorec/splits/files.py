"""Split files: the user's CSVs of a ``files:TRAIN.csv,TEST.csv`` split (:func:`read_split_csv`,
:func:`ratings_from_files`), and mapping the rows of any split file (those CSVs, or ML-100K's
published ``uN.base`` / ``uN.test``) onto the loaded ratings (:func:`map_rows`, :func:`disjoint_rows`).

Every error names the file, and the line where one applies."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from autorec.data.indexing import from_arrays
from autorec.data.parsers import csv_lines, line_numbers, scan_bytes, where_in_files
from autorec.data.rating_scale import scale_for
from autorec.data.ratings import Ratings
from autorec.errors import DataError, SplitError

__all__ = ["read_split_csv", "ratings_from_files", "map_rows", "disjoint_rows"]


def read_split_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(raw_users int64, raw_items int64, ratings float32)`` of a CSV with the header
    ``user,item,rating`` (other columns ignored).  Bad files raise :class:`DataError` naming the
    file, the line and the problem."""
    import pandas as pd  # lazily: importing autorec.splits stays light

    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} does not exist")
    scan_bytes(path)
    try:
        with warnings.catch_warnings():
            # index_col=False, and its warning an error: a row with more fields than the header is
            # refused below, never read shifted by a column (pandas' default) or cut short
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; expected a header 'user,item,rating' and rows") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError) as exc:
        raise _field_count_error(path) or DataError(f"{path}: not a readable CSV ({exc})") from None
    cols = [c.strip() for c in df.columns]
    df.columns = cols
    missing = [c for c in ("user", "item", "rating") if c not in cols]
    if missing:
        raise DataError(
            f"{path} line 1: header {','.join(cols)!r} lacks column(s) {', '.join(missing)}; "
            "expected 'user,item,rating'"
        )
    if len(df) == 0:
        raise DataError(f"{path} has a header but no ratings")
    out: list[Any] = []
    for col in ("user", "item", "rating"):
        text = df[col].str.strip()
        if col == "rating":
            vals = np.asarray(pd.to_numeric(text, errors="coerce"), dtype=np.float64)
            bad = ~np.isfinite(vals)
        else:
            vals = None
            bad = ~text.str.fullmatch(r"[+-]?\d{1,18}").to_numpy(dtype=bool)
        if bad.any():
            err = _field_count_error(path)
            if err is not None:
                raise err
            j = int(np.argmax(bad))
            line = line_numbers(path, "csv", np.array([j])).get(j, "?")
            what = "a finite number" if col == "rating" else "an integer id"
            raise DataError(f"{path} line {line}: {col} {df[col].iloc[j]!r} is not {what}")
        out.append(vals.astype(np.float32) if vals is not None else text.to_numpy().astype(np.int64))
    return out[0], out[1], out[2]


def _field_count_error(path: Path) -> DataError | None:
    """The error for the first line whose number of fields differs from the header's, if any."""
    lines = csv_lines(path, skip_initial_space=True)  # as pandas reads it here
    header = next(lines, None)
    if header is None:
        return None
    for n, fields in lines:
        if len(fields) != len(header[1]):
            what = "truncated line" if len(fields) < len(header[1]) else "malformed line"
            return DataError(
                f"{path} line {n}: {what}: expected {len(header[1])} fields as in the header, found {len(fields)}"
            )
    return None


def ratings_from_files(
    dataset: str, train_path: str | os.PathLike, test_path: str | os.PathLike, *, rating_scale: Any = None
) -> Ratings:
    """The ratings table of a ``files`` split: the union of both CSVs (train rows first, then test
    rows), indexed contiguously.

    The rating scale is the one declared (``rating_scale=(1, 5)``, ``"1,5"`` or a
    :class:`~autorec.data.RatingScale`), that of a registered dataset of the same name, or, with a
    warning, the complete grid the ratings fill (:func:`autorec.data.scale_for`; otherwise refused).
    A rating off the scale is an error naming its file and line.  ``meta["rating_scale_source"]``
    says where the scale came from."""
    paths = [Path(train_path), Path(test_path)]
    parts = [read_split_csv(p) for p in paths]
    n_train = len(parts[0][0])
    _, uinv = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
    items, iinv = np.unique(np.concatenate([p[1] for p in parts]), return_inverse=True)
    keys = uinv.astype(np.int64).ravel() * len(items) + iinv.astype(np.int64).ravel()
    for k, path, (u, i, _) in ((keys[:n_train], paths[0], parts[0]), (keys[n_train:], paths[1], parts[1])):
        _, first, counts = np.unique(k, return_index=True, return_counts=True)
        if (counts > 1).any():
            j = int(first[np.argmax(counts > 1)])
            raise SplitError(
                f"{path}: {int((counts > 1).sum())} (user, item) pair(s) are rated more than once "
                f"(first: user {u[j]}, item {i[j]}); keep one rating per pair"
            )
    both = np.isin(keys[n_train:], keys[:n_train])
    if both.any():
        j = int(np.argmax(both))
        raise SplitError(
            f"{int(both.sum())} test (user, item) pair(s) also occur in train: {paths[1]} and {paths[0]} share "
            f"them (first: user {parts[1][0][j]}, item {parts[1][1][j]}); a test rating must not also be in the "
            "training file"
        )
    vals = np.concatenate([p[2] for p in parts])
    scale, source = scale_for(dataset, rating_scale, vals)
    where = where_in_files([(p, "csv", len(part[0])) for p, part in zip(paths, parts)])
    ratings = from_arrays(
        dataset,
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        vals,
        scale=scale.bounds,
        step=scale.step,
        where=where,
    )
    ratings.meta.update(rating_scale_source=source, sources=[str(p) for p in paths])
    return ratings


def _lookup(sorted_ids: np.ndarray, order: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Index of each ``raw`` id in the id table (given sorted with its argsort), -1 where absent."""
    pos = np.searchsorted(sorted_ids, raw)
    pos_c = np.minimum(pos, len(sorted_ids) - 1)
    found = (pos < len(sorted_ids)) & (sorted_ids[pos_c] == raw)
    return np.where(found, order[pos_c], -1)


def map_rows(
    ratings: Ratings, raw_u: np.ndarray, raw_i: np.ndarray, raw_r: np.ndarray | None, source: str, fmt: str
) -> np.ndarray:
    """Row index in ``ratings`` of each (raw user, raw item) row of the file ``source`` (read as
    ``fmt``: errors name its lines, blank lines counted); refuses rows with no match, pairs rated
    more than once in ``ratings``, differing ratings and rows given twice."""

    def line(row: int) -> int | str:
        return line_numbers(Path(source), fmt, np.array([row])).get(row, "?")

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
        raise SplitError(
            f"{int((~hit).sum())} row(s) of {source} have no rating in {ratings.name!r} "
            f"(first: line {line(bad)}, user {raw_u[bad]}, item {raw_i[bad]}); "
            "the file does not belong to this dataset"
        )
    nxt = np.minimum(pos + 1, len(skeys) - 1)
    ambiguous = (pos + 1 < len(skeys)) & (skeys[nxt] == keys)
    if ambiguous.any():
        bad = int(np.argmax(ambiguous))
        raise SplitError(
            f"{int(ambiguous.sum())} row(s) of {source} match a (user, item) pair rated more than once in "
            f"{ratings.name!r} (first: line {line(bad)}, user {raw_u[bad]}, item {raw_i[bad]}); "
            "deduplicate the dataset"
        )
    idx = korder[pos].astype(np.int64)
    if raw_r is not None:
        differ = np.asarray(raw_r, np.float32) != ratings.ratings[idx]
        if differ.any():
            bad = int(np.argmax(differ))
            raise SplitError(
                f"{int(differ.sum())} row(s) of {source} rate differently from {ratings.name!r} "
                f"(first: line {line(bad)}, user {raw_u[bad]}, item {raw_i[bad]}: "
                f"{raw_r[bad]:g} vs {ratings.ratings[idx[bad]]:g})"
            )
    values, first, counts = np.unique(idx, return_index=True, return_counts=True)
    if (counts > 1).any():
        again = np.flatnonzero(np.isin(idx, values[counts > 1]))
        second = int(next(k for k in again if k != first[np.searchsorted(values, idx[k])]))
        raise SplitError(
            f"{int((counts > 1).sum())} rating(s) appear more than once in {source} (first repeat: line "
            f"{line(second)}, user {raw_u[second]}, item {raw_i[second]})"
        )
    return np.sort(idx)


def disjoint_rows(
    ratings: Ratings, train_rows: np.ndarray, test_rows: np.ndarray, train_src: str, test_src: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, test_rows)``, refused when the two files share a rating."""
    both = np.intersect1d(train_rows, test_rows)
    if both.size:
        r = int(both[0])
        raise SplitError(
            f"{train_src} and {test_src} overlap: {both.size} rating(s) are in both (first: "
            f"user {int(ratings.user_ids[ratings.users[r]])}, item {int(ratings.item_ids[ratings.items[r]])})"
        )
    return train_rows, test_rows
