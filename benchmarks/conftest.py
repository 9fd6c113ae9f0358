"""Fixtures of the pytest-benchmark suite (``benchmarks/bench_*.py``; ``tests/conftest.py`` is not
visible from here).  Run with::

    pytest benchmarks --benchmark-only --benchmark-autosave --benchmark-storage=results/benchmarks

``AUTOREC_DATA_DIR`` (else ``../shared/data`` beside the checkout) locates ML-100K; the ML-100K
benchmarks skip without it.  ``AUTOREC_BENCH_FRACTION`` (default 1.0) scales the synthetic
ML-1M-shaped set down (e.g. 0.1 on a small machine); ``AUTOREC_BENCH_ROUNDS`` (default 3) sets the
rounds per benchmark, ``AUTOREC_BENCH_THREADS`` (default: all cores) the threads of every
framework and of BLAS (set explicitly before each benchmark and recorded in ``extra_info``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path | None:
    env = os.environ.get("AUTOREC_DATA_DIR")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def ml100k_split():
    """ML-100K, random 90/10 split, seed 0 (5% of train held out); skips without a local copy."""
    d = real_data_dir()
    if d is None or not (d / "ml-100k").is_dir():
        pytest.skip("no ML-100K copy (set AUTOREC_DATA_DIR to the folder holding ml-100k/)")
    from autorec.splits import load_split

    return load_split("ml-100k", "random", seed=0, data_dir=d, offline=True)


@pytest.fixture(scope="session")
def ml1m_shape_split():
    """Synthetic data of ML-1M's shape (6040 users, 3706 items, 1,000,209 ratings; scaled by
    ``AUTOREC_BENCH_FRACTION``), random 90/10 split, seed 0."""
    from autorec.splits import SplitSpec
    from benchmarks.harness import DataSource, load_data, parse_dataset

    fraction = float(os.environ.get("AUTOREC_BENCH_FRACTION", "1.0"))
    ref = parse_dataset(f"synthetic:ml-1m@{fraction:g}")
    return load_data(ref, SplitSpec.parse("random"), seed=0, valid_ratio=0.05, source=DataSource())


@pytest.fixture(scope="session")
def bench_rounds() -> int:
    return max(1, int(os.environ.get("AUTOREC_BENCH_ROUNDS", "3")))


@pytest.fixture(scope="session")
def bench_threads() -> int:
    from autorec.env import default_threads

    return max(1, int(os.environ.get("AUTOREC_BENCH_THREADS", str(default_threads()))))
