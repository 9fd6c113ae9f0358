"""MovieLens-shaped synthetic ratings: skewed popularity, unique pairs, a learnable nonlinear signal.

:func:`generate` never builds a dense users x items array.  Pairs are drawn in chunks from a product
of two Zipf-like popularity laws (items more skewed than users) and deduplicated through int64 keys
``user * n_items + item``; one covering pass first gives every user and every item a rating whenever
``n_ratings`` allows it.  A rating is

    centre + b_u + b_i + 0.9 tanh(1.5 <p_u, q_i>) + 0.25 (<p_u, q'_i>^2 - 1) + noise

clipped to the scale and quantised to ``step``, so a bias model beats the global mean and a
latent-factor model beats the bias model clearly, while no model is exact (the signal is nonlinear
and the noise and quantisation are irreducible).  Everything is seeded: the same arguments give
the same :class:`~autorec.data.ratings.Ratings`, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from autorec.data.ratings import Ratings
from autorec.errors import DataError

__all__ = ["SHAPES", "generate", "generate_like"]

#: (n_users, n_items, n_ratings) of the real datasets
SHAPES: dict[str, tuple[int, int, int]] = {
    "ml-100k": (943, 1682, 100_000),
    "ml-1m": (6040, 3706, 1_000_209),
    "ml-10m": (69_878, 10_677, 10_000_054),
    "ml-20m": (138_493, 26_744, 20_000_263),
    "ml-25m": (162_541, 59_047, 25_000_095),
    "netflix": (480_189, 17_770, 100_480_507),
}

# popularity exponents at skew=1 (w_k ~ (k + offset)^-a over the popularity rank k)
_ITEM_EXPONENT = 1.0
_USER_EXPONENT = 0.8
_CHUNK = 2_000_000  # rows per chunk when drawing pairs and computing ratings
_T_START = 874_724_710  # 1997-09-20, the first ML-100K timestamp
_T_END = 1_537_799_250  # 2018-09-24, the last ml-latest-small timestamp


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"synthetic: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise DataError(f"synthetic: {name} must be >= {minimum}, got {value}")
    return int(value)


def _popularity(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Normalised cumulative weights of a Zipf-like law over n ids in random order."""
    ranks = np.arange(1, n + 1, dtype=np.float64)
    offset = 1.0 + 0.002 * n
    w = (ranks + offset) ** (-exponent) if exponent > 0 else np.ones(n)
    w = w[rng.permutation(n)]
    return w / w.sum()


def _draw(cdf: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.searchsorted(cdf, rng.random(size), side="right")
    np.minimum(idx, len(cdf) - 1, out=idx)
    return idx.astype(np.int64, copy=False)


def _cover(
    n_users: int, n_items: int, n_ratings: int, pu: np.ndarray, pi: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Keys of a first set of pairs that rates every user and every item (when n_ratings allows)."""
    if n_ratings < max(n_users, n_items):
        return np.empty(0, dtype=np.int64)
    # every user rates one item drawn by popularity ...
    users = np.arange(n_users, dtype=np.int64)
    items = _draw(np.cumsum(pi), n_users, rng)
    # ... and every item still without a rating gets one user drawn by activity
    seen = np.zeros(n_items, dtype=bool)
    seen[items] = True
    rest = np.flatnonzero(~seen).astype(np.int64)
    keys = np.concatenate([users * n_items + items, _draw(np.cumsum(pu), len(rest), rng) * n_items + rest])
    if len(keys) > n_ratings:
        # a minimal cover: max(n_users, n_items) pairs (u_k, i_k) with k running over the larger side
        m = max(n_users, n_items)
        k = np.arange(m, dtype=np.int64)
        keys = rng.permutation(n_users)[k % n_users].astype(np.int64) * n_items + rng.permutation(n_items)[k % n_items]
    return np.sort(keys)


def _sample_keys(n_users: int, n_items: int, n_ratings: int, skew: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted unique int64 keys, exactly n_ratings of them."""
    total = n_users * n_items
    if n_ratings == total:
        return np.arange(total, dtype=np.int64)
    pu = _popularity(n_users, _USER_EXPONENT * skew, rng)
    pi = _popularity(n_items, _ITEM_EXPONENT * skew, rng)
    keys = _cover(n_users, n_items, n_ratings, pu, pi, rng)
    temper = 1.0
    while len(keys) < n_ratings:
        need = n_ratings - len(keys)
        # flatten the popularity as the popular pairs fill up, so that dense requests still finish
        wu, wi = (pu, pi) if temper == 1.0 else (pu**temper, pi**temper)
        size = int(min(max(need * 1.25 + 1024, 4096), 16 * _CHUNK))
        # users and items are independent: the users may come in sorted order as long as the items
        # are an iid sequence; drawing counts (multinomial) avoids a binary search per rating
        users = np.repeat(np.arange(n_users, dtype=np.int64), rng.multinomial(size, wu / wu.sum()))
        items = np.repeat(np.arange(n_items, dtype=np.int64), rng.multinomial(size, wi / wi.sum()))
        rng.shuffle(items)
        users *= n_items
        users += items
        del items
        new = np.unique(users)
        del users
        if len(keys):
            # sorted needles: the binary searches walk keys in order (fast)
            pos = np.searchsorted(keys, new)
            np.minimum(pos, len(keys) - 1, out=pos)
            new = new[keys[pos] != new]
        if len(new) < 0.1 * size:
            temper *= 0.5
            if temper < 1e-3:
                temper = 0.0
        if len(new) > need:
            # keep a random subset of `need` (not the smallest keys)
            prio = rng.random(len(new))
            new = new[prio <= np.partition(prio, need - 1)[need - 1]]
        # two sorted runs: the stable sort (timsort for int64) merges them in linear time
        keys = np.concatenate([keys, new])
        keys.sort(kind="stable")
    return keys


def _timestamps(users: np.ndarray, n_users: int, rng: np.random.Generator) -> np.ndarray:
    """int64 seconds: each user rates within an active period (about a month on average)."""
    start = rng.integers(_T_START, _T_END - 86_400, size=n_users, dtype=np.int64)
    length = np.minimum(rng.exponential(30 * 86_400.0, size=n_users).astype(np.int64) + 600, _T_END - start)
    out = np.empty(len(users), dtype=np.int64)
    for lo in range(0, len(users), _CHUNK):
        u = users[lo : lo + _CHUNK]
        out[lo : lo + _CHUNK] = start[u] + (rng.random(len(u)) * length[u]).astype(np.int64)
    return out


def generate(
    n_users: int,
    n_items: int,
    n_ratings: int,
    *,
    seed: int = 0,
    scale: tuple[float, float] = (1.0, 5.0),
    step: float = 1.0,
    rank: int = 8,
    skew: float = 1.0,
    noise: float = 0.3,
    name: str = "synthetic",
) -> Ratings:
    """Synthetic explicit ratings shaped like MovieLens.

    ``n_ratings`` unique (user, item) pairs (a :class:`DataError` if more than ``n_users * n_items``),
    item popularity and user activity Zipf-like (``skew`` scales both exponents; 0 is uniform), ratings
    on ``scale`` in steps of ``step`` (0.5 for half stars), a rank-``rank`` nonlinear latent signal with
    user/item biases and Gaussian ``noise`` (in stars, before quantisation).  Raw ids are 1..n; when
    ``n_ratings >= max(n_users, n_items)`` every user and every item has at least one rating (else the
    unrated ones are dropped from the index, keeping their raw ids).  Timestamps are int64 seconds.
    """
    n_users = _check_int("n_users", n_users, 1)
    n_items = _check_int("n_items", n_items, 1)
    n_ratings = _check_int("n_ratings", n_ratings, 1)
    rank = _check_int("rank", rank, 1)
    if n_ratings > n_users * n_items:
        raise DataError(
            f"synthetic: {n_ratings} ratings are impossible with {n_users} users x {n_items} items "
            f"(at most {n_users * n_items} unique pairs); lower n_ratings or raise the counts"
        )
    lo, hi = (float(scale[0]), float(scale[1]))
    step = float(step)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DataError(f"synthetic: scale must be (low, high) with low < high, got {scale!r}")
    if not (step > 0 and math.isfinite(step)):
        raise DataError(f"synthetic: step must be a positive number, got {step!r}")
    n_steps = (hi - lo) / step
    if abs(n_steps - round(n_steps)) > 1e-9:
        raise DataError(f"synthetic: the scale {lo:g}..{hi:g} is not a whole number of steps of {step:g}")
    if not (math.isfinite(skew) and skew >= 0):
        raise DataError(f"synthetic: skew must be >= 0, got {skew!r}")
    if not (math.isfinite(noise) and noise >= 0):
        raise DataError(f"synthetic: noise must be >= 0, got {noise!r}")

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED_A07E]))
    keys = _sample_keys(n_users, n_items, n_ratings, float(skew), rng)
    users = (keys // n_items).astype(np.int32)
    items = (keys % n_items).astype(np.int32)
    del keys

    # the latent structure, in units of a quarter of the scale's range ("stars" on 1..5)
    unit = (hi - lo) / 4.0
    centre = lo + (hi - lo) * 0.62  # MovieLens means sit near 3.5 of 1..5
    # factor entries with variance 1/sqrt(rank): the inner products have unit variance
    f = rank**-0.25
    p = (rng.standard_normal((n_users, rank)) * f).astype(np.float32)
    q = (rng.standard_normal((n_items, rank)) * f).astype(np.float32)
    q2 = (rng.standard_normal((n_items, rank)) * f).astype(np.float32)
    bu = (rng.standard_normal(n_users) * 0.45).astype(np.float32)
    bi = (rng.standard_normal(n_items) * 0.55).astype(np.float32)
    ratings = np.empty(n_ratings, dtype=np.float32)
    for a in range(0, n_ratings, _CHUNK):
        u, i = users[a : a + _CHUNK], items[a : a + _CHUNK]
        z = np.einsum("ij,ij->i", p[u], q[i])
        z2 = np.einsum("ij,ij->i", p[u], q2[i])
        s = bu[u] + bi[i] + 0.9 * np.tanh(1.5 * z) + 0.25 * (z2 * z2 - 1.0)
        s += rng.standard_normal(len(u)).astype(np.float32) * np.float32(noise)
        r = centre + unit * s
        r = lo + np.round((r - lo) / step) * step
        ratings[a : a + _CHUNK] = np.clip(r, lo, hi)

    timestamps = _timestamps(users, n_users, rng)

    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    # drop ids left without a rating (only possible when n_ratings < max(n_users, n_items))
    for side in ("user", "item"):
        idx, ids = (users, user_ids) if side == "user" else (items, item_ids)
        used = np.zeros(len(ids), dtype=bool)
        used[idx] = True
        if not used.all():
            remap = np.cumsum(used, dtype=np.int64) - 1
            idx = remap[idx].astype(np.int32)
            ids = ids[used]
            if side == "user":
                users, user_ids = idx, ids
            else:
                items, item_ids = idx, ids
    meta = {
        "synthetic": True,
        "seed": int(seed),
        "rank": rank,
        "skew": float(skew),
        "noise": float(noise),
        "step": step,
        "shape": (n_users, n_items, n_ratings),
    }
    return Ratings(
        name=name,
        users=users,
        items=items,
        ratings=ratings,
        user_ids=user_ids,
        item_ids=item_ids,
        rating_scale=(lo, hi),
        timestamps=timestamps,
        meta=meta,
    )


def generate_like(shape: str | tuple[int, int, int], *, seed: int = 0, fraction: float = 1.0, **kw) -> Ratings:
    """:func:`generate` with the counts of a real dataset (a :data:`SHAPES` name, or a
    ``(n_users, n_items, n_ratings)`` tuple), scaled down by ``fraction`` (for tests): the ratings
    by ``fraction``, users and items by ``sqrt(fraction)`` so that the density stays the real one.

    A named shape also sets that dataset's scale and step unless given (half stars from ml-10m on,
    and for the ``latest`` sets; 1..5 whole stars otherwise) and its name ``synthetic-<shape>``.
    """
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise DataError(f"synthetic: unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        nu, ni, nr = SHAPES[shape]
        if shape in ("ml-10m", "ml-20m", "ml-25m"):
            kw.setdefault("scale", (0.5, 5.0))
            kw.setdefault("step", 0.5)
        kw.setdefault("name", f"synthetic-{shape}")
    else:
        try:
            nu, ni, nr = (int(x) for x in shape)
        except (TypeError, ValueError):
            raise DataError(
                f"synthetic: shape must be a name or (n_users, n_items, n_ratings), got {shape!r}"
            ) from None
    fraction = float(fraction)
    if not (0 < fraction <= 1):
        raise DataError(f"synthetic: fraction must be in (0, 1], got {fraction!r}")
    if fraction < 1:
        # ratings scale by fraction, users and items by sqrt(fraction): the density (and so the
        # collision structure of the pairs) stays that of the real dataset
        root = math.sqrt(fraction)
        nu, ni = max(1, round(nu * root)), max(1, round(ni * root))
        nr = min(max(1, round(nr * fraction)), nu * ni)
    return generate(nu, ni, nr, seed=seed, **kw)
