"""The framework-free AutoRec training core (autorec.models.common): no torch, no mxnet needed."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from autorec.config import AutoRecConfig
from autorec.errors import ConfigError, DataError, TrainingDivergedError
from autorec.interactions import Interactions
from autorec.models import common


def _interactions(rng, n_users=30, n_items=20, n=200):
    pairs = rng.choice(n_users * n_items, size=n, replace=False)
    return Interactions(users=(pairs // n_items).astype(np.int32), items=(pairs % n_items).astype(np.int32),
                        ratings=rng.integers(1, 6, size=n).astype(np.float32), n_users=n_users,
                        n_items=n_items, rating_scale=(1.0, 5.0))


def test_common_imports_no_framework():
    code = ("import sys, autorec.models.common; "
            "assert 'torch' not in sys.modules and 'mxnet' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_resolve_config_and_layout():
    cfg = common.resolve_config({"hidden": [8, 4, 8], "based": "user"})
    assert cfg.hidden == (8, 4, 8)
    assert common.resolve_config(cfg) is not cfg
    with pytest.raises(ConfigError):
        common.resolve_config({"hidden": [0]})
    with pytest.raises(ConfigError):
        common.resolve_config("adam")
    sizes = common.layer_sizes(cfg, 30)
    assert sizes == [30, 8, 4, 8, 30]
    assert common.layer_activations(cfg) == ["sigmoid"] * 3 + ["identity"]
    assert common.weight_names(2) == ["W0", "b0", "W1", "b1"]
    shapes = common.expected_shapes(sizes)
    assert shapes["W0"] == (8, 30) and shapes["b3"] == (30,)


def test_check_weights_rejects_bad_layouts():
    sizes = [5, 3, 5]
    good = {"W0": np.zeros((3, 5)), "b0": np.zeros(3), "W1": np.zeros((5, 3)), "b1": np.zeros(5)}
    out = common.check_weights(good, sizes)
    assert out["W0"].dtype == np.float32
    with pytest.raises(ConfigError, match="missing"):
        common.check_weights({k: v for k, v in good.items() if k != "b1"}, sizes)
    with pytest.raises(ConfigError, match="shape"):
        common.check_weights({**good, "W0": np.zeros((5, 3))}, sizes)
    with pytest.raises(ConfigError, match="NaN"):
        common.check_weights({**good, "b0": np.array([0, np.nan, 0])}, sizes)


@pytest.mark.parametrize("init", ["normal", "uniform", "xavier"])
def test_initial_weights_deterministic(init):
    cfg = AutoRecConfig(init=init, init_scale=0.01, seed=3, hidden=(40,))
    sizes = common.layer_sizes(cfg, 300)
    a = common.initial_weights(cfg, sizes)
    b = common.initial_weights(cfg, sizes)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == np.float32
    c = common.initial_weights(cfg.replace(seed=4), sizes)
    assert not np.array_equal(a["W0"], c["W0"])
    if init == "normal":
        assert abs(a["W0"].std() - 0.01) < 0.001 and not a["b0"].any()  # Gluon: Dense biases stay 0
    elif init == "uniform":
        assert np.abs(a["W0"]).max() <= 0.01
    else:
        assert np.abs(a["W0"]).max() <= math.sqrt(6 / 340) and not a["b0"].any()
    assert common.initial_weights(cfg.replace(init="default"), sizes) is None


def test_loss_multiplier_and_schedule():
    assert common.loss_multiplier("d2l", 4, 10, 7) == pytest.approx(0.5 / 40)
    assert common.loss_multiplier("observed-sum", 4, 10, 7) == 1.0
    assert common.loss_multiplier("observed-mean", 4, 10, 7) == pytest.approx(1 / 7)
    assert common.paper_reg_fraction(25, 100) == 0.25
    cfg = AutoRecConfig(lr=0.1, lr_schedule="step", lr_step=2, lr_gamma=0.5, epochs=6)
    assert [common.lr_at(cfg, e) for e in range(1, 6)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    cos = cfg.replace(lr_schedule="cosine")
    assert common.lr_at(cos, 1) == pytest.approx(0.1)
    assert common.lr_at(cos, 4) == pytest.approx(0.05)
    assert common.lr_at(cfg.replace(lr_schedule="constant"), 5) == 0.1


def test_epoch_batches_shared_order():
    cfg = AutoRecConfig(batch_size=7, seed=5)
    b1 = common.epoch_batches(30, cfg, 1)
    assert [len(b) for b in b1] == [7, 7, 7, 7, 2]
    assert sorted(np.concatenate(b1)) == list(range(30))
    np.testing.assert_array_equal(np.concatenate(b1), np.concatenate(common.epoch_batches(30, cfg, 1)))
    assert not np.array_equal(np.concatenate(b1), np.concatenate(common.epoch_batches(30, cfg, 2)))
    assert common.epoch_seed(0, 1) == common.epoch_seed(0, 1) != common.epoch_seed(0, 2)


def test_parse_device():
    assert common.parse_device("cpu") == ("cpu", None)
    assert common.parse_device("cpu(1)") == ("cpu", 1)
    assert common.parse_device("cuda:2") == ("gpu", 2)
    assert common.parse_device("gpu(0)") == ("gpu", 0)
    with pytest.raises(ConfigError):
        common.parse_device("tpu:0")


def test_check_finite_names_epoch_batch_config():
    cfg = AutoRecConfig(lr=1e6)
    assert common.check_finite(1.5, epoch=1, batch=0, config=cfg) == 1.5
    with pytest.raises(TrainingDivergedError, match=r"epoch 3, batch 7.*lr=1e\+06"):
        common.check_finite(float("nan"), epoch=3, batch=7, config=cfg)


def test_group_pairs_bounded_and_complete(rng):
    rows = rng.integers(0, 50, size=1000)
    cols = rng.integers(0, 80, size=1000)
    seen = np.zeros(1000, dtype=int)
    for g in common.group_pairs(rows, cols, max_rows=7, max_pairs=60):
        assert len(g.rows) <= 7
        assert len(g.index) <= 60 or len(g.rows) == 1
        assert np.all(np.diff(g.rows) > 0)
        np.testing.assert_array_equal(g.rows[g.local], rows[g.index])
        np.testing.assert_array_equal(g.cols, cols[g.index])
        seen[g.index] += 1
    assert np.all(seen == 1)
    assert list(common.group_pairs(np.array([], int), np.array([], int))) == []


def test_pairs_to_rows_and_check_pairs():
    r, c = common.pairs_to_rows(np.array([1, 2]), np.array([3, 4]), "item")
    assert r.tolist() == [3, 4] and c.tolist() == [1, 2]
    r, c = common.pairs_to_rows(np.array([1, 2]), np.array([3, 4]), "user")
    assert r.tolist() == [1, 2]
    with pytest.raises(DataError, match="item index 9"):
        common.check_pairs([0, 1], [0, 9], 5, 5)
    with pytest.raises(DataError, match="equal length"):
        common.check_pairs([0, 1], [0], 5, 5)


def test_batch_entries(rng):
    inter = _interactions(rng)
    csr = inter.csr("item")
    rows = np.array([3, 0, 7])
    indptr, local, cols, vals = common.batch_entries(csr, rows)
    dense = csr.toarray()
    rebuilt = np.zeros((3, csr.shape[1]), dtype=np.float32)
    rebuilt[local, cols] = vals
    np.testing.assert_array_equal(rebuilt, dense[rows])
    assert indptr[-1] == len(vals)


def test_model_file_round_trip(tmp_path, rng):
    inter = _interactions(rng)
    cfg = AutoRecConfig(hidden=(4,))
    w = common.initial_weights(cfg, common.layer_sizes(cfg, inter.n_users))
    path = tmp_path / "m.autorec"
    common.save_model(path, config=cfg, backend="x", weights=w, train=inter, meta={"k": 1})
    assert os.listdir(tmp_path) == ["m.autorec"]  # no temp file left behind, no .npz appended
    cfg2, w2, train2, meta = common.load_model(path)
    assert cfg2 == cfg and meta == {"backend": "x", "k": 1}
    np.testing.assert_array_equal(train2.ratings, inter.ratings)
    assert (train2.n_users, train2.n_items, train2.rating_scale) == (30, 20, (1.0, 5.0))
    for k in w:
        np.testing.assert_array_equal(w[k], w2[k])
    with pytest.raises(DataError, match="does not exist"):
        common.load_model(tmp_path / "nope")
    (tmp_path / "junk").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        common.load_model(tmp_path / "junk")


class _ToyTrainer:
    """A deterministic fake backend: the 'weight' moves by a per-epoch amount; validation RMSE is
    a fixed curve, so early stopping / restore / resume can be checked exactly."""

    def __init__(self, curve):
        self.w = {"W0": np.zeros((1, 1), np.float32)}
        self.opt = 0
        self.curve = curve
        self.epochs_trained = []

    def train_epoch(self, epoch):
        self.epochs_trained.append(epoch)
        self.w["W0"] = self.w["W0"] + epoch
        self.opt += 1
        return {"train_loss": 1.0 / epoch, "train_rmse": 0.5}

    def get_weights(self):
        return {k: v.copy() for k, v in self.w.items()}

    def set_weights(self, w):
        self.w = {k: np.array(v, np.float32) for k, v in w.items()}

    def optimizer_state(self):
        return str(self.opt).encode()

    def load_optimizer_state(self, b):
        self.opt = int(b.decode())

    def valid(self):
        return self.curve[len(self.epochs_trained) - 1]


def test_run_training_early_stop_and_restore():
    cfg = AutoRecConfig(epochs=10, patience=2)
    t = _ToyTrainer([1.0, 0.9, 0.8, 0.85, 0.84, 0.7, 0.6])
    seen = []
    info = common.run_training(t, cfg, backend="toy", valid_fn=t.valid,
                               progress=lambda e, n, rec: seen.append((e, n, rec["valid_rmse"])))
    assert info.epochs_run == 5 and info.best_epoch == 3
    assert [r["epoch"] for r in info.history] == [1, 2, 3, 4, 5]
    assert set(info.history[0]) >= {"epoch", "train_loss", "valid_rmse", "seconds", "lr", "train_rmse"}
    assert seen[-1] == (5, 10, 0.84)
    assert t.w["W0"][0, 0] == 1 + 2 + 3  # best weights (after epoch 3) restored
    assert info.extra["stopped_early"] and info.extra["restored_best"]


def test_run_training_without_validation():
    t = _ToyTrainer([])
    info = common.run_training(t, AutoRecConfig(epochs=3, patience=1), backend="toy")
    assert info.best_epoch is None and info.epochs_run == 3 and info.history[0]["valid_rmse"] is None


def test_run_training_diverged():
    class Bad(_ToyTrainer):
        def train_epoch(self, epoch):
            return {"train_loss": float("inf") if epoch == 2 else 1.0}

    with pytest.raises(TrainingDivergedError, match="epoch 2"):
        common.run_training(Bad([]), AutoRecConfig(epochs=3), backend="toy")


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    curve = [1.0, 0.9, 0.95, 0.8, 0.85, 0.86, 0.87, 0.88]
    cfg = AutoRecConfig(epochs=8, patience=3)
    full = _ToyTrainer(curve)
    info_full = common.run_training(full, cfg, backend="toy", valid_fn=full.valid)

    class Stop(Exception):
        pass

    def stop_after_3(epoch, n, rec):
        if epoch == 3:
            raise Stop

    ck = tmp_path / "ck.npz"
    part = _ToyTrainer(curve)
    with pytest.raises(Stop):
        common.run_training(part, cfg, backend="toy", valid_fn=part.valid, progress=stop_after_3,
                            checkpoint=ck)
    loaded = common.load_checkpoint(ck)
    assert loaded.epoch == 3 and loaded.best_epoch == 2 and loaded.optimizer_state == b"3"

    resumed = _ToyTrainer(curve)
    resumed.epochs_trained = [0, 0, 0]  # the toy's validation curve is indexed by epochs trained
    info = common.run_training(resumed, cfg, backend="toy", valid_fn=resumed.valid, resume=ck,
                               checkpoint=ck)
    assert resumed.epochs_trained[3:] == [4, 5, 6, 7]
    assert resumed.opt == full.opt
    np.testing.assert_array_equal(resumed.w["W0"], full.w["W0"])
    assert info.best_epoch == info_full.best_epoch == 4
    assert [r["valid_rmse"] for r in info.history] == [r["valid_rmse"] for r in info_full.history]
    assert info.extra["resumed_from_epoch"] == 3
    with pytest.raises(ConfigError, match="lr"):
        common.run_training(_ToyTrainer(curve), cfg.replace(lr=0.5), backend="toy", resume=ck)
    with pytest.raises(ConfigError, match="backend"):
        common.run_training(_ToyTrainer(curve), cfg, backend="other", resume=ck)


def test_validation_rmse_via_predict_pairs(rng):
    train = _interactions(rng)
    valid = _interactions(np.random.default_rng(1), n=50)

    class Const:
        def predict(self, users, items):
            return np.full(len(users), 4.0)

    r = common.validation_rmse(Const(), train, valid, "global-mean")
    from autorec.metrics import predict_pairs
    pred, _ = predict_pairs(Const(), train, valid.users, valid.items, "global-mean")
    assert r == pytest.approx(np.sqrt(np.mean((pred - valid.ratings) ** 2)))
    s0, n0 = common.validation_sums(Const(), train, valid, "global-mean", slice(0, None, 2))
    s1, n1 = common.validation_sums(Const(), train, valid, "global-mean", slice(1, None, 2))
    assert n0 + n1 == 50 and math.sqrt((s0 + s1) / 50) == pytest.approx(r)


def test_progress_printer(capsys):
    import sys
    pr = common.progress_printer(stream=sys.stdout, every=2)
    pr(1, 3, {"train_loss": 0.5, "valid_rmse": None, "seconds": 0.1})
    pr(2, 3, {"train_loss": 0.25, "valid_rmse": 0.9, "seconds": 0.1})
    pr(3, 3, {"train_loss": 0.125, "valid_rmse": 0.8, "seconds": 0.1})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("epoch 2/3 train_loss=0.25 valid_rmse=0.90000") and out[1].startswith("epoch 3/3")
