"""Small synthetic train / validation / test parts that models can learn (shared by tests)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from autorec.interactions import Interactions


def learnable(n_users=150, n_items=90, density=0.3, rank=3, noise=0.25, seed=0) -> SimpleNamespace:
    """Ratings on 1..5 from biases + a rank-``rank`` interaction + noise, split 80/10/10 (every
    pair unique).  A bias model beats the mean here and a latent model beats the bias model."""

    rng = np.random.default_rng(seed)
    n = int(n_users * n_items * density)
    keys = rng.choice(n_users * n_items, size=n, replace=False)
    u, i = keys // n_items, keys % n_items
    bu, bi = rng.normal(0, 0.4, n_users), rng.normal(0, 0.4, n_items)
    p, q = rng.normal(0, 0.7, (n_users, rank)), rng.normal(0, 0.7, (n_items, rank))
    r = 3.4 + bu[u] + bi[i] + np.einsum("nk,nk->n", p[u], q[i]) + rng.normal(0, noise, n)
    r = np.clip(np.round(r), 1, 5).astype(np.float32)
    perm = rng.permutation(n)
    cut1, cut2 = int(0.8 * n), int(0.9 * n)

    def part(ix):
        ix = np.sort(ix)
        return Interactions(u[ix].astype(np.int32), i[ix].astype(np.int32), r[ix], n_users, n_items, (1.0, 5.0))

    return SimpleNamespace(train=part(perm[:cut1]), valid=part(perm[cut1:cut2]), test=part(perm[cut2:]))
