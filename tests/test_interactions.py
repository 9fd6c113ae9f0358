"""``Interactions``: sparse matrices in both orientations (never dense), known masks, global mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from autorec.interactions import Interactions


def part(users, items, ratings, n_users=3, n_items=4) -> Interactions:
    return Interactions(
        np.asarray(users, np.int32),
        np.asarray(items, np.int32),
        np.asarray(ratings, np.float32),
        n_users,
        n_items,
        (1.0, 5.0),
    )


# users 0..2, items 0..3; user 2 and item 3 have no rating here (cold in this part)
P = part([0, 0, 1, 1, 0], [0, 2, 1, 2, 1], [5, 3, 4, 1, 2.5])

DENSE_UI = np.array([[5, 2.5, 3, 0], [0, 4, 1, 0], [0, 0, 0, 0]], dtype=np.float32)


def test_item_based_is_items_by_users():
    m = P.csr("item")
    assert isinstance(m, sp.csr_matrix)
    assert m.shape == (4, 3) and m.dtype == np.float32
    assert np.array_equal(m.toarray(), DENSE_UI.T)
    assert m.nnz == 5 and m.has_sorted_indices
    # row 1 is item 1's ratings by all users: users 0 and 1
    assert m.indices[m.indptr[1] : m.indptr[2]].tolist() == [0, 1]
    assert m.data[m.indptr[1] : m.indptr[2]].tolist() == [2.5, 4.0]


def test_user_based_is_users_by_items():
    m = P.csr("user")
    assert isinstance(m, sp.csr_matrix)
    assert m.shape == (3, 4) and m.dtype == np.float32
    assert np.array_equal(m.toarray(), DENSE_UI)
    assert m.indptr.tolist() == [0, 3, 5, 5]  # user 2: empty row
    assert (P.csr("item").T != m).nnz == 0


def test_default_orientation_is_item_based():
    assert P.csr().shape == (P.n_items, P.n_users)


def test_bad_orientation():
    with pytest.raises(ValueError, match="'item' or 'user'"):
        P.csr("items")


def test_large_index_space_stays_sparse():
    """Full index space of ML-20M size: a dense float32 matrix would need ~3.7e10 bytes."""
    n_users, n_items = 138_493, 131_262
    big = part([0, n_users - 1, 5], [n_items - 1, 0, 7], [1, 2, 3], n_users, n_items)
    for based, shape in (("item", (n_items, n_users)), ("user", (n_users, n_items))):
        m = big.csr(based)
        assert sp.issparse(m) and m.shape == shape and m.nnz == 3
        assert m.data.nbytes + m.indices.nbytes + m.indptr.nbytes < 4 * (max(shape) + 10) * 2
    assert big.csr("user")[n_users - 1, 0] == 2.0


def test_known_masks():
    assert P.known_users().tolist() == [True, True, False]
    assert P.known_items().tolist() == [True, True, True, False]
    assert P.known_users().dtype == bool
    empty = part([], [], [])
    assert not empty.known_users().any() and not empty.known_items().any()
    assert empty.known_users().shape == (3,) and empty.known_items().shape == (4,)


def test_len_and_global_mean():
    assert len(P) == 5
    assert P.global_mean == pytest.approx((5 + 3 + 4 + 1 + 2.5) / 5, abs=1e-12)
    assert math.isnan(part([], [], []).global_mean)
    empty = part([], [], []).csr("item")
    assert empty.shape == (4, 3) and empty.nnz == 0


def test_csr_does_not_alias_the_part():
    m = P.csr("user")
    m.data[:] = 0
    assert P.ratings.tolist() == [5, 3, 4, 1, 2.5]


def test_csr_refuses_duplicate_pairs():
    """scipy sums a pair's ratings (5 + 5 would be one target of 10): the loaders refuse duplicates,
    and a part built by hand is refused where AutoRec builds its matrix."""
    from autorec.errors import DataError

    part = Interactions(np.array([0, 0, 1]), np.array([2, 2, 0]), np.array([5, 5, 3], dtype=np.float32), 2, 3, (1, 5))
    with pytest.raises(DataError, match=r"1 duplicate \(user, item\) pair\(s\) among 3 ratings"):
        part.csr()
    zero = Interactions(np.array([0, 1]), np.array([2, 2]), np.array([0, 3], dtype=np.float32), 2, 3, (0, 5))
    assert zero.csr("user").nnz == 2  # a rating of 0 is a rating, not a duplicate
