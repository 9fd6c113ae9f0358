"""Data-parallel AutoRec (DistributedDataParallel, 2 gloo processes on 127.0.0.1 via torchrun)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from autorec.errors import ConfigError, TrainingDivergedError  # noqa: E402
from autorec.interactions import Interactions  # noqa: E402
from autorec.metrics import evaluate  # noqa: E402
from autorec.models.torch import AutoRecTorch, fit_distributed  # noqa: E402

from test_autorec_torch import low_rank  # noqa: E402

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def data():
    # 81 items, batch 16: the last global batch has one row, so rank 1's share of it is empty
    return low_rank(seed=4, n_users=100, n_items=81, n=3500)


def test_two_gloo_ranks_match_single_device(tmp_path, data):
    train, valid, test = data
    cfg = dict(hidden=(32,), epochs=8, lr=0.03, batch_size=16, loss="observed-mean", reg=1e-3,
               dropout=0.05, patience=4, seed=5, threads=1)
    single = AutoRecTorch(cfg)
    single.fit(train, valid)
    model = fit_distributed(cfg, (train, valid), nproc=2, workdir=tmp_path)
    info = model.fit_info
    assert info.extra["world_size"] == 2 and info.extra["dist_backend"] == "gloo"
    assert info.epochs_run >= 1 and info.best_epoch is not None
    # the replicas hold identical parameters after training
    with np.load(tmp_path / "weights_rank0.npz") as w0, np.load(tmp_path / "weights_rank1.npz") as w1:
        assert sorted(w0.files) == ["W0", "W1", "b0", "b1"]
        for k in w0.files:
            np.testing.assert_array_equal(w0[k], w1[k])
    assert info.extra["replica_max_abs_diff"] == 0.0
    for k, v in model.get_weights().items():
        np.testing.assert_array_equal(v, np.load(tmp_path / "weights_rank0.npz")[k])
    # the rank's dropout masks are its rows of the global batch's masks: the same run as one device
    for k, v in single.get_weights().items():
        np.testing.assert_allclose(model.get_weights()[k], v, atol=1e-4)
    assert [h["epoch"] for h in info.history] == [h["epoch"] for h in single.fit_info.history]
    r_single = evaluate(single, train, test)["rmse"]
    r_ddp = evaluate(model, train, test)["rmse"]
    assert abs(r_ddp - r_single) < 0.01, (r_ddp, r_single)
    assert model.params()["devices"] == ["cpu"]


@pytest.mark.slow
def test_checkpoint_and_resume_across_ranks(tmp_path, data):
    """Two epochs data-parallel with a checkpoint, then two more resumed from it (epochs may be
    raised on resume) == four epochs on one device."""
    train, valid, _ = data
    cfg = dict(hidden=(16,), epochs=2, lr=0.01, batch_size=16, loss="observed-mean", dropout=0.1,
               seed=2, threads=1)
    ck = tmp_path / "ck.npz"
    fit_distributed(cfg, (train, valid), nproc=2, workdir=tmp_path / "a", checkpoint=ck)
    resumed = fit_distributed({**cfg, "epochs": 4}, (train, valid), nproc=2, workdir=tmp_path / "b",
                              resume=ck)
    assert resumed.fit_info.epochs_run == 4 and resumed.fit_info.extra["resumed_from_epoch"] == 2
    single = AutoRecTorch({**cfg, "epochs": 4})
    single.fit(train, valid)
    for k, v in single.get_weights().items():
        np.testing.assert_allclose(resumed.get_weights()[k], v, atol=1e-4)


def test_rank_failure_reraised_as_its_error_type(tmp_path, data):
    train, valid, _ = data
    bad = Interactions(train.users, train.items, np.where(np.arange(len(train)) == 5, np.nan,
                                                          train.ratings).astype(np.float32),
                       train.n_users, train.n_items, train.rating_scale)
    with pytest.raises(TrainingDivergedError, match="rank .*epoch 1, batch"):
        fit_distributed(dict(hidden=(8,), epochs=2, threads=1), (bad, valid), nproc=2, workdir=tmp_path)


def test_bad_arguments_rejected_before_launch(data):
    with pytest.raises(ConfigError, match="nproc"):
        fit_distributed({"hidden": [4]}, data[:2], nproc=0)
    with pytest.raises(ConfigError, match="split spec"):
        fit_distributed({"hidden": [4]}, {"dataset": "ml-100k"}, nproc=2)
    with pytest.raises(ConfigError, match="mix"):
        fit_distributed({"devices": ["cpu", "cuda:0"]}, data[:2])
