"""Data-parallel AutoRec (DistributedDataParallel, 2 gloo processes on 127.0.0.1 via torchrun):
``AutoRecTorch.fit_parallel``, the ``ddp`` launcher."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from autorec.errors import AutoRecBenchError, ConfigError, DataError, TrainingDivergedError  # noqa: E402
from autorec.interactions import Interactions  # noqa: E402
from autorec.models.autorec.torch import AutoRecTorch  # noqa: E402
from autorec.models.autorec.torch.ddp import raise_rank_errors  # noqa: E402
from tests.synthetic_parts import learnable  # noqa: E402

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def data():
    # 81 items, batch 16: the last global batch has one row, so rank 1's share of it is empty
    return learnable(n_users=100, n_items=81, density=0.43, seed=4)


def test_two_gloo_ranks_match_single_device(tmp_path, data):
    cfg = dict(hidden=(32,), epochs=8, lr=0.03, batch_size=16, loss="observed-mean", reg=1e-3, dropout=0.05,
               patience=4, seed=5, threads=1)  # fmt: skip
    single = AutoRecTorch(cfg)
    single.fit(data.train, data.valid)
    model = AutoRecTorch.fit_parallel(cfg, (data.train, data.valid), nproc=2, workdir=tmp_path)
    info = model.fit_info
    assert info is not None and single.fit_info is not None
    assert info.extra["world_size"] == 2 and info.extra["dist_backend"] == "gloo"
    assert info.extra["threads_per_rank"] == 1
    assert info.epochs_run >= 1 and info.best_epoch is not None
    # the replicas hold identical parameters after training
    with np.load(tmp_path / "weights_rank0.npz") as w0, np.load(tmp_path / "weights_rank1.npz") as w1:
        assert sorted(w0.files) == ["W0", "W1", "b0", "b1"]
        for k in w0.files:
            np.testing.assert_array_equal(w0[k], w1[k])
            np.testing.assert_array_equal(model.get_weights()[k], w0[k])
    assert info.extra["replica_max_abs_diff"] == 0.0
    # a rank's dropout masks are its rows of the global batch's masks: the single-device run
    for k, v in single.get_weights().items():
        np.testing.assert_allclose(model.get_weights()[k], v, atol=1e-4)
    assert [h["epoch"] for h in info.history] == [h["epoch"] for h in single.fit_info.history]
    assert [h["lr"] for h in info.history] == [h["lr"] for h in single.fit_info.history]
    np.testing.assert_allclose(
        [h["valid_rmse"] for h in info.history], [h["valid_rmse"] for h in single.fit_info.history], atol=1e-4
    )
    assert abs(model.evaluate(data.test)["rmse"] - single.evaluate(data.test)["rmse"]) < 0.01
    assert model.params()["devices"] == ["cpu"] and model.params()["threads"] == 1
    assert AutoRecTorch.launcher(["cpu", "cpu"]) == "ddp"


@pytest.mark.slow
def test_checkpoint_and_resume_across_ranks(tmp_path, data):
    """Two epochs data-parallel with a checkpoint, then two more resumed from it (epochs may be
    raised on resume) == four epochs on one device."""
    cfg = dict(hidden=(16,), epochs=2, lr=0.01, batch_size=16, loss="observed-mean", dropout=0.1, seed=2, threads=1)
    ck = tmp_path / "ck.npz"
    parts = (data.train, data.valid)
    AutoRecTorch.fit_parallel(cfg, parts, nproc=2, workdir=tmp_path / "a", checkpoint=ck)
    resumed = AutoRecTorch.fit_parallel({**cfg, "epochs": 4}, parts, nproc=2, workdir=tmp_path / "b", resume=ck)
    assert resumed.fit_info is not None
    assert resumed.fit_info.epochs_run == 4 and resumed.fit_info.extra["resumed_from_epoch"] == 2
    single = AutoRecTorch({**cfg, "epochs": 4})
    single.fit(data.train, data.valid)
    for k, v in single.get_weights().items():
        np.testing.assert_allclose(resumed.get_weights()[k], v, atol=1e-4)


def test_rank_failure_reraised_as_its_error_type(tmp_path, data):
    diverging = dict(optimizer="sgd", lr=1e6, loss="observed-sum", hidden_activation="relu")
    cfg = dict(hidden=(8,), epochs=2, batch_size=16, threads=1, **diverging)
    with pytest.raises(TrainingDivergedError, match=r"rank \d: .*epoch \d+, batch \d+"):
        AutoRecTorch.fit_parallel(cfg, (data.train, data.valid), nproc=2, workdir=tmp_path)


def test_rank_errors_read_back_whatever_state_the_files_are_in(tmp_path):
    """The suite's own error wins over another error and over an unreadable file (a peer killed
    mid-write used to leave an empty one); an unreadable file alone still names its rank."""
    (tmp_path / "error_rank1.json").write_text("")
    with pytest.raises(AutoRecBenchError, match=r"rank 1: failed \(error_rank1.json is unreadable\)"):
        raise_rank_errors(tmp_path)
    (tmp_path / "error_rank2.json").write_text(json.dumps({"rank": 2, "type": "RuntimeError", "message": "gloo"}))
    with pytest.raises(AutoRecBenchError, match=r"rank 2: RuntimeError: gloo$"):
        raise_rank_errors(tmp_path)
    # of a 4-rank job, rank 0 and 3 wrote nothing: one of them may have died first
    with pytest.raises(AutoRecBenchError, match=r"rank 2: RuntimeError: gloo \(rank\(s\) 0, 3 wrote no error: one"):
        raise_rank_errors(tmp_path, 4)
    record = {"rank": 0, "type": "TrainingDivergedError", "message": "epoch 1, batch 3"}
    (tmp_path / "error_rank0.json").write_text(json.dumps(record))
    with pytest.raises(TrainingDivergedError, match="rank 0: epoch 1, batch 3"):
        raise_rank_errors(tmp_path)


def test_bad_arguments_rejected_before_launch(data):
    parts = (data.train, data.valid)
    with pytest.raises(ConfigError, match="nproc"):
        AutoRecTorch.fit_parallel({"hidden": [4]}, parts, nproc=0)
    with pytest.raises(ConfigError, match="SplitData"):
        AutoRecTorch.fit_parallel({"hidden": [4]}, {"dataset": "ml-100k"}, nproc=2)
    with pytest.raises(ConfigError, match="mix"):
        AutoRecTorch.fit_parallel({"devices": ["cpu", "cuda:0"]}, parts)
    with pytest.raises(ConfigError, match="unknown parameter"):
        AutoRecTorch.fit_parallel({"no_such": 1}, parts, nproc=2)
    t = data.train
    bad = Interactions(t.users, t.items, np.where(np.arange(len(t)) == 5, np.nan, t.ratings), t.n_users, t.n_items,
                       t.rating_scale)  # fmt: skip
    with pytest.raises(DataError, match="NaN"):
        AutoRecTorch.fit_parallel({"hidden": [4]}, (bad, data.valid), nproc=2)


def _ranks_of(job_dir) -> list[int]:
    """Live processes (torchrun and its ranks) whose command line names ``job_dir``."""
    import os

    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if str(job_dir).encode() in fh.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def test_a_timeout_takes_torchrun_and_its_ranks_along(tmp_path, data):
    """torchrun used to be killed alone: its ranks (in sessions of their own) trained on, orphaned."""
    import time

    cfg = dict(hidden=(16,), epochs=100_000, batch_size=16, threads=1)
    with pytest.raises(AutoRecBenchError, match="torchrun did not finish within 8 s"):
        AutoRecTorch.fit_parallel(cfg, (data.train, data.valid), nproc=2, workdir=tmp_path, timeout=8)
    deadline = time.time() + 10  # the ranks get SIGKILL when torchrun dies; give the kernel a moment
    while _ranks_of(tmp_path) and time.time() < deadline:
        time.sleep(0.2)
    assert _ranks_of(tmp_path) == []
