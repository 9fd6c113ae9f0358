"""AutoRec (PyTorch) on the real MovieLens-100K, random 90/10 split (seed 0, 5% of train as
validation for early stopping).  Skips without a real data copy."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from autorec.models.autorec.torch import AutoRecTorch  # noqa: E402

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

# the D2L chapter's configuration (AutoRecConfig defaults: I-AutoRec, hidden 500, sigmoid/identity,
# dropout 0.05, Adam lr 0.002, wd 1e-5, batch 256) with early stopping on validation RMSE
I_AUTOREC = dict(epochs=100, patience=10, threads=1)


@pytest.fixture(scope="module")
def split(ml100k_dir):
    from autorec.splits import load_split

    return load_split("ml-100k", "random", seed=0, data_dir=ml100k_dir)


@pytest.fixture(scope="module")
def dense_run(split):
    m = AutoRecTorch(I_AUTOREC)
    info = m.fit(split.train, split.valid)
    return m, info


def test_i_autorec_reaches_target_rmse(split, dense_run):
    m, info = dense_run
    assert info.best_epoch is not None and info.best_epoch < info.epochs_run <= 100
    result = m.evaluate(split.test)
    assert result["rmse"] <= 0.890, result


def test_sparse_path_gives_the_same_model(split, dense_run):
    dense, info_d = dense_run
    sparse = AutoRecTorch({**I_AUTOREC, "path": "sparse"})
    info_s = sparse.fit(split.train, split.valid)
    assert info_s.best_epoch == info_d.best_epoch
    r_d = dense.evaluate(split.test)["rmse"]
    r_s = sparse.evaluate(split.test)["rmse"]
    assert abs(r_d - r_s) < 2e-3, (r_d, r_s)
