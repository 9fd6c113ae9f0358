"""AutoRec works on rows of the rating matrix (items x users for I-AutoRec, users x items for
U-AutoRec); these helpers move between (user, item) pairs and rows, in bounded-size groups, and
cut batches of rows out of the CSR train matrix (numpy / scipy only)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def pairs_to_rows(users: np.ndarray, items: np.ndarray, based: str) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each (user, item) pair in the AutoRec matrix: items x users for I-AutoRec,
    users x items for U-AutoRec."""
    users = np.asarray(users, dtype=np.int64).ravel()
    items = np.asarray(items, dtype=np.int64).ravel()
    return (items, users) if based == "item" else (users, items)


@dataclass
class PairGroup:
    """One bounded group of prediction pairs sharing their input rows.

    ``index``: positions of the pairs in the caller's arrays; ``rows``: the distinct input rows of
    the group (sorted); ``local``: for each pair, the position of its row in ``rows``; ``cols``: the
    output column of each pair."""

    index: np.ndarray
    rows: np.ndarray
    local: np.ndarray
    cols: np.ndarray


def group_pairs(
    rows: np.ndarray, cols: np.ndarray, max_rows: int = 1024, max_pairs: int = 1 << 20
) -> Iterator[PairGroup]:
    """Pairs grouped by input row, at most ``max_rows`` distinct rows and (unless one row alone has
    more) ``max_pairs`` pairs per group, so a backend reconstructs each needed row once and in
    bounded memory."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if len(rows) == 0:
        return
    order = np.argsort(rows, kind="stable")
    uniq, counts = np.unique(rows[order], return_counts=True)
    cum = np.concatenate([[0], np.cumsum(counts)])
    n_u = len(uniq)
    start = 0
    max_rows = max(int(max_rows), 1)
    while start < n_u:
        end = min(start + max_rows, n_u)
        end_pairs = int(np.searchsorted(cum, cum[start] + max_pairs, side="right")) - 1
        end = max(start + 1, min(end, end_pairs))
        lo, hi = int(cum[start]), int(cum[end])
        idx = order[lo:hi]
        local = np.repeat(np.arange(end - start, dtype=np.int64), counts[start:end])
        yield PairGroup(index=idx, rows=uniq[start:end], local=local, cols=cols[idx])
        start = end


def batch_entries(csr: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The observed entries of ``rows`` of a CSR matrix: ``(indptr, local_row, col, value)`` with
    ``local_row`` the position in ``rows`` (int64 indices, float32 values)."""
    sub = csr[np.asarray(rows, dtype=np.int64)]
    indptr = sub.indptr.astype(np.int64)
    local = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(indptr))
    return indptr, local, sub.indices.astype(np.int64), sub.data.astype(np.float32)


def shard(rows: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of ``rows`` (strided, so shards differ in size by at most one)."""
    return rows[rank::world_size]
