"""The synthetic generator: deterministic, exact counts, unique pairs, on scale, skewed, learnable."""

from __future__ import annotations

import numpy as np
import pytest

from autorec.data.ratings import Ratings
from autorec.data.synthetic import SHAPES, generate, generate_like
from autorec.errors import DataError


def _keys(r: Ratings) -> np.ndarray:
    return r.users.astype(np.int64) * r.n_items + r.items


def test_shapes_table():
    assert SHAPES["ml-100k"] == (943, 1682, 100_000)
    assert SHAPES["ml-1m"] == (6040, 3706, 1_000_209)
    assert SHAPES["ml-10m"] == (69_878, 10_677, 10_000_054)
    assert SHAPES["ml-20m"] == (138_493, 26_744, 20_000_263)
    assert SHAPES["ml-25m"] == (162_541, 59_047, 25_000_095)
    assert SHAPES["netflix"] == (480_189, 17_770, 100_480_507)


def test_counts_types_and_ids():
    r = generate(300, 200, 12_345, seed=3)
    assert isinstance(r, Ratings)
    assert len(r) == 12_345 and r.n_users == 300 and r.n_items == 200
    assert r.users.dtype == np.int32 and r.items.dtype == np.int32
    assert r.timestamps is not None
    assert r.ratings.dtype == np.float32 and r.timestamps.dtype == np.int64
    assert r.user_ids.dtype == np.int64 and r.item_ids.dtype == np.int64
    assert np.array_equal(r.user_ids, np.arange(1, 301)) and np.array_equal(r.item_ids, np.arange(1, 201))
    # every user and every item rated, indices contiguous
    assert np.bincount(r.users, minlength=300).min() >= 1
    assert np.bincount(r.items, minlength=200).min() >= 1
    assert len(np.unique(_keys(r))) == len(r)
    assert r.timestamps.min() > 8e8 and r.timestamps.max() < 1.6e9
    assert r.name == "synthetic" and r.meta["synthetic"] is True


def test_deterministic_per_seed():
    a, b, c = generate(200, 150, 5000, seed=7), generate(200, 150, 5000, seed=7), generate(200, 150, 5000, seed=8)
    for f in ("users", "items", "ratings", "timestamps", "user_ids", "item_ids"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert not (
        np.array_equal(a.users, c.users) and np.array_equal(a.items, c.items) and np.array_equal(a.ratings, c.ratings)
    )


@pytest.mark.parametrize("scale,step", [((1.0, 5.0), 1.0), ((0.5, 5.0), 0.5), ((1.0, 10.0), 1.0), ((0.0, 1.0), 0.25)])
def test_on_scale_and_step(scale, step):
    r = generate(120, 90, 3000, seed=1, scale=scale, step=step)
    lo, hi = scale
    assert r.rating_scale == scale
    assert r.ratings.min() >= lo and r.ratings.max() <= hi
    steps = (r.ratings.astype(np.float64) - lo) / step
    assert np.allclose(steps, np.round(steps))
    # the whole scale is used
    assert len(np.unique(r.ratings)) >= round((hi - lo) / step)


def test_half_stars_like_ml10m():
    r = generate_like("ml-10m", fraction=0.0005, seed=0)
    assert r.rating_scale == (0.5, 5.0)
    assert set(np.unique(r.ratings * 2).astype(int)) <= set(range(1, 11))
    assert (r.ratings * 2 % 2 == 1).any()  # some half stars
    assert r.name == "synthetic-ml-10m"


def test_generate_like_full_and_fraction():
    r = generate_like("ml-100k")
    assert (r.n_users, r.n_items, len(r)) == SHAPES["ml-100k"]
    assert len(np.unique(_keys(r))) == len(r)
    s = generate_like("ml-1m", fraction=0.01, seed=2)
    assert len(s) == round(1_000_209 * 0.01)
    assert s.n_users == round(6040 * 0.1) and s.n_items == round(3706 * 0.1)
    t = generate_like((50, 40, 600), seed=2)
    assert (t.n_users, t.n_items, len(t)) == (50, 40, 600)
    with pytest.raises(DataError, match="unknown shape 'ml-2m'"):
        generate_like("ml-2m")
    with pytest.raises(DataError, match="fraction"):
        generate_like("ml-100k", fraction=0)


def test_skewed_popularity():
    r = generate_like("ml-100k", seed=0)
    ic = np.sort(np.bincount(r.items))[::-1]
    uc = np.sort(np.bincount(r.users))[::-1]
    # the top 10% of items hold a large share of the ratings; items are more skewed than users
    top_items = ic[: len(ic) // 10].sum() / ic.sum()
    top_users = uc[: len(uc) // 10].sum() / uc.sum()
    assert top_items > 0.35
    assert top_items > top_users > 0.15
    assert ic.max() > 10 * np.median(ic)
    flat = generate(943, 1682, 100_000, skew=0.0)
    fc = np.bincount(flat.items)
    assert fc.max() < 3 * np.median(fc)


def test_exact_when_dense_and_full():
    r = generate(30, 20, 590, seed=4)  # 98% dense: the tempering fallback finishes it
    assert len(r) == 590 and len(np.unique(_keys(r))) == 590
    full = generate(30, 20, 600, seed=4)
    assert len(full) == 600 and len(np.unique(_keys(full))) == 600


def test_few_ratings_drop_unrated_ids():
    r = generate(100, 50, 60, seed=0)  # fewer ratings than users: not every user can rate
    assert len(r) == 60
    assert np.bincount(r.users).min() >= 1 and np.bincount(r.items).min() >= 1
    assert r.n_users == len(np.unique(r.users)) <= 60
    assert set(r.user_ids) <= set(range(1, 101))
    r2 = generate(100, 50, 120, seed=0)  # between max(n) and n_users + n_items: minimal cover
    assert (r2.n_users, r2.n_items, len(r2)) == (100, 50, 120)


def test_impossible_and_bad_arguments():
    with pytest.raises(DataError, match="impossible"):
        generate(10, 10, 101)
    with pytest.raises(DataError, match="n_users"):
        generate(0, 10, 5)
    with pytest.raises(DataError, match="whole number of steps"):
        generate(10, 10, 50, scale=(1.0, 5.0), step=0.3)
    with pytest.raises(DataError, match="low < high"):
        generate(10, 10, 50, scale=(5.0, 1.0))
    with pytest.raises(DataError, match="skew"):
        generate(10, 10, 50, skew=-1)


# ---------------------------------------------------------------- learnability
def _split(r: Ratings, seed=0):
    perm = np.random.default_rng(seed).permutation(len(r))
    cut = int(0.8 * len(r))
    return perm[:cut], perm[cut:]


def _rmse(p, t):
    return float(np.sqrt(np.mean((np.asarray(p, np.float64) - t) ** 2)))


def _bias_fit(u, i, y, nu, ni, reg=5.0, iters=8):
    mu = y.mean()
    bu, bi = np.zeros(nu), np.zeros(ni)
    for _ in range(iters):
        bu = np.bincount(u, y - mu - bi[i], nu) / (np.bincount(u, minlength=nu) + reg)
        bi = np.bincount(i, y - mu - bu[u], ni) / (np.bincount(i, minlength=ni) + reg)
    return mu, bu, bi


def _als(u, i, y, nu, ni, k=8, reg=3.0, iters=10, seed=0):
    """Biased ALS: residuals of the bias model fitted by a rank-k factorization."""
    mu, bu, bi = _bias_fit(u, i, y, nu, ni)
    res = y - mu - bu[u] - bi[i]
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(0, 0.1, (nu, k)), rng.normal(0, 0.1, (ni, k))
    by_u = [np.flatnonzero(u == a) for a in range(nu)]
    by_i = [np.flatnonzero(i == b) for b in range(ni)]
    eye = reg * np.eye(k)
    for _ in range(iters):
        for a, idx in enumerate(by_u):
            Qa = Q[i[idx]]
            P[a] = np.linalg.solve(Qa.T @ Qa + eye, Qa.T @ res[idx])
        for b, idx in enumerate(by_i):
            Pb = P[u[idx]]
            Q[b] = np.linalg.solve(Pb.T @ Pb + eye, Pb.T @ res[idx])
    return lambda uu, ii: mu + bu[uu] + bi[ii] + np.einsum("ij,ij->i", P[uu], Q[ii])


def test_learnable_bias_beats_mean_and_latent_beats_bias():
    r = generate(300, 200, 24_000, seed=11)
    tr, te = _split(r)
    u, i, y = r.users[tr], r.items[tr], r.ratings[tr].astype(np.float64)
    ut, it, yt = r.users[te], r.items[te], r.ratings[te].astype(np.float64)
    mean_rmse = _rmse(np.full(len(yt), y.mean()), yt)
    mu, bu, bi = _bias_fit(u, i, y, r.n_users, r.n_items)
    bias_rmse = _rmse(mu + bu[ut] + bi[it], yt)
    latent_rmse = _rmse(_als(u, i, y, r.n_users, r.n_items)(ut, it), yt)
    assert bias_rmse < mean_rmse - 0.1
    assert latent_rmse < bias_rmse - 0.08
    # and nothing is exact: noise and quantisation stay
    assert latent_rmse > 0.3


@pytest.mark.slow
def test_twenty_million_ratings():
    r = generate_like("ml-20m", seed=0)
    assert (r.n_users, r.n_items, len(r)) == SHAPES["ml-20m"]
    assert r.ratings.dtype == np.float32 and r.users.dtype == np.int32
