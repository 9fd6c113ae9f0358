"""The real MovieLens copies (skip without them): counts, scales, raw-id round trips, resolution."""

from __future__ import annotations

import numpy as np
import pytest

from autorec import data

pytestmark = pytest.mark.realdata


def _roundtrip(r: data.Ratings, path, fmt):
    u, i, v, ts = data.read_ratings(path, fmt)
    assert np.array_equal(r.user_ids[r.users], u) and np.array_equal(r.item_ids[r.items], i)
    assert r.timestamps is not None and ts is not None
    assert np.array_equal(r.ratings, v) and np.array_equal(r.timestamps, ts)
    # sorted raw ids -> 0..n-1
    assert np.all(np.diff(r.user_ids) > 0) and np.all(np.diff(r.item_ids) > 0)
    assert np.array_equal(np.unique(r.users), np.arange(r.n_users))
    assert np.array_equal(np.unique(r.items), np.arange(r.n_items))


def test_ml100k(ml100k_dir, monkeypatch):
    monkeypatch.delenv("AUTOREC_DATA_DIR", raising=False)
    r = data.load("ml-100k", ml100k_dir, offline=True)
    assert (r.n_users, r.n_items, len(r)) == (943, 1682, 100_000)
    assert r.rating_scale == (1.0, 5.0) and set(np.unique(r.ratings)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert r.timestamps is not None
    assert r.users.dtype == np.int32 and r.ratings.dtype == np.float32 and r.timestamps.dtype == np.int64
    assert r.meta["resolved_by"] == "data-dir" and r.meta["folder"] == str(ml100k_dir / "ml-100k")
    # ML-100K ids are already 1..n
    assert np.array_equal(r.user_ids, np.arange(1, 944)) and np.array_equal(r.item_ids, np.arange(1, 1683))
    _roundtrip(r, ml100k_dir / "ml-100k" / "u.data", "tab")
    assert abs(float(r.ratings.mean()) - 3.52986) < 1e-4


def test_ml100k_canonical_files_parse(ml100k_dir):
    folder = data.locate("ml-100k", ml100k_dir, offline=True)
    full = data.load("ml-100k", ml100k_dir, offline=True)
    for fold in ("u1", "ua"):
        parts = [data.read_ratings(folder / f"{fold}.{p}", "tab") for p in ("base", "test")]
        assert sum(len(p[0]) for p in parts) == 100_000
        u = np.concatenate([p[0] for p in parts])
        assert set(np.unique(u)) == set(full.user_ids)


def test_ml_latest_small(mlsmall_dir, monkeypatch):
    monkeypatch.delenv("AUTOREC_DATA_DIR", raising=False)
    r = data.load("ml-latest-small", mlsmall_dir, offline=True)
    assert (r.n_users, r.n_items, len(r)) == (610, 9724, 100_836)
    assert r.rating_scale == (0.5, 5.0)
    assert set(np.unique(r.ratings)) == {x / 2 for x in range(1, 11)}  # half stars
    assert r.item_ids.max() > r.n_items  # sparse movie ids, re-indexed
    _roundtrip(r, mlsmall_dir / "ml-latest-small" / "ratings.csv", "csv")


def test_env_var_resolution(data_dir, monkeypatch):
    if not (data_dir / "ml-100k").is_dir():
        pytest.skip("no ml-100k")
    monkeypatch.setenv("AUTOREC_DATA_DIR", str(data_dir))
    loc = data.resolve("ml-100k", offline=True)
    assert loc.step == "$AUTOREC_DATA_DIR" and loc.path == data_dir / "ml-100k"
    # the folder itself as data dir
    assert data.locate("ml-100k", data_dir / "ml-100k", offline=True) == data_dir / "ml-100k"


def test_wrong_dataset_folder_fails_validation(data_dir, tmp_path, monkeypatch):
    """ml-latest-small's ratings.csv handed in as ml-20m: caught by the counts, both numbers named."""
    if not (data_dir / "ml-latest-small").is_dir():
        pytest.skip("no ml-latest-small")
    monkeypatch.delenv("AUTOREC_DATA_DIR", raising=False)
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path))
    with pytest.raises(data.DataError, match=r"610 users \(expected 138493\).*100836 ratings \(expected 20000263\)"):
        data.load("ml-20m", data_dir / "ml-latest-small", offline=True)
