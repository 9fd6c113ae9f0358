"""Is a local copy of a registered dataset complete?  And what should the user do when it is not?

:func:`copy_problem` is the cheap check (it counts the rating lines, without parsing them) that
decides whether a copy is *available*: ``autorec-bench datasets`` lists an incomplete copy as such,
and a cached copy that fails it is replaced when the archive is extracted again.
:func:`check_counts` is the full check on load (users, items and ratings of the parsed file).  Both
name what is wrong ("truncated: 90,000 of 100,000 ratings") and a fix the user can apply, which
depends on where the copy was found (:func:`fix_hint`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autorec.data.parsers import line_numbers
from autorec.data.ratings import Ratings
from autorec.data.registry import DATASETS, DatasetSpec
from autorec.errors import DataError

__all__ = ["count_rows", "copy_problem", "check_counts", "check_timestamps", "fix_hint"]

_BLOCK = 1 << 22
_SPACE = np.array([ord(c) for c in " \t\r\v\f"], dtype=np.uint8)


def count_rows(path: str | Path, fmt: str) -> int:
    """The number of non-blank lines of ``path`` (less the header row of a ``csv`` file): the
    number of ratings a well-formed file holds.  Reads the file in blocks, never parses it."""
    rows = 0
    carry = False  # the line running over the block boundary has a non-blank byte
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            arr = np.frombuffer(block, dtype=np.uint8)
            filled = np.concatenate([[0], np.cumsum(~np.isin(arr, _SPACE) & (arr != 10), dtype=np.int64)])
            ends = np.flatnonzero(arr == 10)
            starts = np.concatenate([[0], ends + 1])
            full = filled[ends] - filled[starts[:-1]] > 0
            if len(ends):
                full[0] |= carry
                rows += int(full.sum())
                carry = bool(filled[-1] - filled[starts[-1]] > 0)
            else:
                carry = carry or bool(filled[-1] > 0)
    rows += int(carry)
    return rows - 1 if fmt == "csv" and rows else rows


def copy_problem(spec: DatasetSpec, folder: str | Path) -> str | None:
    """``None`` when ``folder`` holds the ratings file of ``spec`` with the registered number of
    ratings, else what is wrong with it (``"truncated: 90,000 of 100,000 ratings"``)."""
    path = Path(folder) / spec.ratings_file
    if not path.is_file():
        return f"{path.name} is missing"
    n = count_rows(path, spec.fmt)
    other = _release_with(n, spec) if n != spec.n_ratings else None
    if other is not None:
        return (
            f"another dataset's ratings file: its {n:,} ratings are {other}'s count "
            f"({spec.name} has {spec.n_ratings:,})"
        )
    if n < spec.n_ratings:
        return f"truncated: {n:,} of {spec.n_ratings:,} ratings"
    if n > spec.n_ratings:
        return f"{n:,} ratings where {spec.name} has {spec.n_ratings:,} (modified, or another release)"
    return None


def _release_with(n_ratings: int, spec: DatasetSpec) -> str | None:
    """The other registered dataset, in ``spec``'s file format, with exactly ``n_ratings`` ratings (a
    folder named for one release holding another's file is not a truncated copy)."""
    return next(
        (o.name for o in DATASETS.values() if o.name != spec.name and o.fmt == spec.fmt and o.n_ratings == n_ratings),
        None,
    )


def fix_hint(spec: DatasetSpec, step: str) -> str:
    """What to do about an incomplete copy found by resolution step ``step`` (``data-dir``,
    ``$AUTOREC_DATA_DIR``, ``cache``, ...): the cache can be repaired by the CLI, a folder of the
    user's is never overwritten."""
    download = f"autorec-bench datasets --download {spec.name}"
    if step == "data-dir":
        return (
            f"point --data-dir at a complete copy (or re-extract {spec.archive} there), or drop --data-dir and "
            f"run `{download}` to get a verified copy into the cache"
        )
    if step.startswith("$"):
        return (
            f"put a complete copy in {step} (re-extract {spec.archive} there), or unset {step} and run "
            f"`{download}` to get a verified copy into the cache"
        )
    return f"re-download it with `{download}` (replaces the cached copy), or point --data-dir at a complete copy"


def check_counts(ratings: Ratings, spec: DatasetSpec, where: str | Path, step: str) -> None:
    """:class:`DataError` unless ``ratings`` has the registered users / items / ratings counts;
    the message says what is off and how to fix it (``step``: where the copy was found)."""
    got = (ratings.n_users, ratings.n_items, len(ratings))
    if got == spec.expected:
        return
    labels = ("users", "items", "ratings")
    diff = ", ".join(f"{g} {lab} (expected {e})" for g, e, lab in zip(got, spec.expected, labels) if g != e)
    what = f"truncated: {len(ratings):,} of {spec.n_ratings:,} ratings; " if len(ratings) < spec.n_ratings else ""
    raise DataError(
        f"{where}: {what}has {diff}; {spec.name} has {spec.n_users} users, {spec.n_items} rated items and "
        f"{spec.n_ratings} ratings. The copy is incomplete, modified or another release. Fix: {fix_hint(spec, step)}"
    )


def check_timestamps(ratings: Ratings, spec: DatasetSpec, where: str | Path, step: str) -> None:
    """:class:`DataError`, naming the line, for a timestamp outside the release's first..last one
    (``spec.timestamps``, where known): a last line cut short inside its timestamp still parses and
    keeps the counts, but would move that rating in time (``seq-aware`` splits order by it)."""
    if spec.timestamps is None or ratings.timestamps is None:
        return
    lo, hi = spec.timestamps
    off = (ratings.timestamps < lo) | (ratings.timestamps > hi)
    if not off.any():
        return
    k = int(np.argmax(off))
    line = line_numbers(Path(where), spec.fmt, np.array([k])).get(k, "?")
    raise DataError(
        f"{where}, line {line}: timestamp {int(ratings.timestamps[k])} is outside {spec.name}'s "
        f"{lo}..{hi} (a line cut short, or another release). Fix: {fix_hint(spec, step)}"
    )
