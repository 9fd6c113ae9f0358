"""The framework-free half of AutoRec (config, semantics, rows, the base class's metadata): no
torch, no mxnet needed."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from autorec.errors import ConfigError, DataError
from autorec.interactions import Interactions
from autorec.models.autorec import AutoRecConfig
from autorec.models.autorec import semantics as sem
from autorec.models.autorec.base import AutoRecBase
from autorec.models.autorec.rows import batch_entries, group_pairs, pairs_to_rows, shard
from autorec.models.batching import epoch_order


def _interactions(rng, n_users=30, n_items=20, n=200) -> Interactions:
    pairs = rng.choice(n_users * n_items, size=n, replace=False)
    return Interactions(
        users=(pairs // n_items).astype(np.int32),
        items=(pairs % n_items).astype(np.int32),
        ratings=rng.integers(1, 6, size=n).astype(np.float32),
        n_users=n_users,
        n_items=n_items,
        rating_scale=(1.0, 5.0),
    )


def test_framework_free_modules_import_no_framework():
    code = (
        "import sys, autorec.models.autorec.base, autorec.models.autorec.semantics, autorec.models.autorec.rows; "
        "assert 'torch' not in sys.modules and 'mxnet' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ====================================================================== config
def test_config_from_plain_values():
    cfg = AutoRecConfig.from_dict({"hidden": "8,4,8", "based": "user", "devices": "cpu(0),cpu(1)", "epochs": 3.0})
    assert cfg.hidden == (8, 4, 8) and cfg.devices == ("cpu(0)", "cpu(1)") and cfg.epochs == 3
    assert cfg.to_dict()["hidden"] == [8, 4, 8]
    assert AutoRecConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(lr=0.1).lr == 0.1 and cfg.lr == 0.002
    assert AutoRecConfig(optimizer="rprop").full_batch and not AutoRecConfig().full_batch


@pytest.mark.parametrize(
    "params,match",
    [
        ({"hidden": [0]}, "hidden"),
        ({"hidden": []}, "hidden"),
        ({"hidden": "500,x"}, "hidden"),
        ({"hidden_activation": "swish"}, "hidden_activation"),
        ({"dropout": 1.0}, "dropout"),
        ({"lr": 0}, "lr"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"devices": ["tpu"]}, "devices"),
        ({"threads": 0}, "threads"),
        ({"cold_start": "median"}, "cold_start"),
        ({"nonsense": 1}, "unknown parameter"),
    ],
)
def test_invalid_configs_are_config_errors(params, match):
    with pytest.raises(ConfigError, match=match):
        AutoRecConfig.from_dict(params)


def test_every_bad_parameter_is_named_in_one_error():
    with pytest.raises(ConfigError) as exc:
        AutoRecConfig.from_dict({"lr": -1, "dropout": 2, "epochs": 0, "hidden": [8]})
    text = str(exc.value)
    assert "lr=-1: must be > 0" in text and "dropout=2: must be in [0, 1)" in text and "epochs=0: must be >= 1" in text
    assert "hidden" not in text


def test_any_cold_start_policy_is_accepted():
    for policy in ("global-mean", "constant", "constant:3.5"):
        assert AutoRecConfig.from_dict({"cold_start": policy}).cold_start == policy


def test_extra_may_change_on_resume_and_threads_is_an_execution_setting():
    assert "extra" in AutoRecConfig.RESUME_MUTABLE and "epochs" in AutoRecConfig.RESUME_MUTABLE
    assert "threads" in AutoRecConfig.EXECUTION


# ====================================================================== semantics
def test_layer_layout():
    cfg = AutoRecConfig(hidden=(8, 4, 8), based="user")
    sizes = sem.layer_sizes(cfg, 30)
    assert sizes == [30, 8, 4, 8, 30]
    assert sem.layer_activations(cfg) == ["sigmoid"] * 3 + ["identity"]
    shapes = sem.expected_shapes(sizes)
    assert list(shapes)[:4] == ["W0", "b0", "W1", "b1"]
    assert shapes["W0"] == (8, 30) and shapes["b3"] == (30,)
    with pytest.raises(DataError, match="no items"):
        sem.layer_sizes(cfg, 0)


def test_check_weights_rejects_bad_layouts():
    sizes = [5, 3, 5]
    good = {"W0": np.zeros((3, 5)), "b0": np.zeros(3), "W1": np.zeros((5, 3)), "b1": np.zeros(5)}
    assert sem.check_weights(good, sizes)["W0"].dtype == np.float32
    with pytest.raises(ConfigError, match="missing"):
        sem.check_weights({k: v for k, v in good.items() if k != "b1"}, sizes)
    with pytest.raises(ConfigError, match="shape"):
        sem.check_weights({**good, "W0": np.zeros((5, 3))}, sizes)
    with pytest.raises(ConfigError, match="NaN"):
        sem.check_weights({**good, "b0": np.array([0, np.nan, 0])}, sizes)


@pytest.mark.parametrize("init", ["normal", "uniform", "xavier"])
def test_initial_weights_deterministic(init):
    cfg = AutoRecConfig(init=init, init_scale=0.01, seed=3, hidden=(40,))
    sizes = sem.layer_sizes(cfg, 300)
    a = sem.initial_weights(cfg, sizes)
    b = sem.initial_weights(cfg, sizes)
    assert a is not None and b is not None
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == np.float32
    c = sem.initial_weights(cfg.replace(seed=4), sizes)
    assert c is not None and not np.array_equal(a["W0"], c["W0"])
    if init == "normal":
        assert abs(a["W0"].std() - 0.01) < 0.001 and not a["b0"].any()  # Gluon: Dense biases stay 0
    elif init == "uniform":
        assert np.abs(a["W0"]).max() <= 0.01
    else:
        assert np.abs(a["W0"]).max() <= math.sqrt(6 / 340) and not a["b0"].any()
    assert sem.initial_weights(cfg.replace(init="default"), sizes) is None


def test_loss_multiplier_and_schedule():
    assert sem.loss_multiplier("d2l", 4, 10, 7) == pytest.approx(0.5 / 40)
    assert sem.loss_multiplier("observed-sum", 4, 10, 7) == 1.0
    assert sem.loss_multiplier("observed-mean", 4, 10, 7) == pytest.approx(1 / 7)
    assert sem.paper_reg_fraction(25, 100) == 0.25
    cfg = AutoRecConfig(lr=0.1, lr_schedule="step", lr_step=2, lr_gamma=0.5, epochs=6)
    assert [sem.lr_at(cfg, e) for e in range(1, 6)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    cos = cfg.replace(lr_schedule="cosine")
    assert sem.lr_at(cos, 1) == pytest.approx(0.1)
    assert sem.lr_at(cos, 4) == pytest.approx(0.05)
    assert sem.lr_at(cfg.replace(lr_schedule="constant"), 5) == 0.1


def test_epoch_batches_shared_order():
    cfg = AutoRecConfig(batch_size=7, seed=5)
    b1 = sem.epoch_batches(30, cfg, 1)
    assert [len(b) for b in b1] == [7, 7, 7, 7, 2]
    assert sorted(np.concatenate(b1)) == list(range(30))
    np.testing.assert_array_equal(np.concatenate(b1), np.concatenate(sem.epoch_batches(30, cfg, 1)))
    assert not np.array_equal(np.concatenate(b1), np.concatenate(sem.epoch_batches(30, cfg, 2)))
    np.testing.assert_array_equal(epoch_order(5, 0, 1, shuffle=False), np.arange(5))
    assert sem.epoch_seed(0, 1) == sem.epoch_seed(0, 1) != sem.epoch_seed(0, 2)


def test_epoch_stats():
    st = sem.EpochStats("observed-mean", n_in=10)
    st.add(8.0, 4, 2)
    st.add(10.0, 6, 3)
    st.steps = 2
    assert st.result() == pytest.approx({"train_loss": 18.0 / 10, "train_rmse": math.sqrt(1.8), "steps": 2})
    assert sem.EpochStats("d2l", 10).result()["train_loss"] == 0.0


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_bounded_output_activation_must_reach_the_ratings(act):
    with pytest.raises(ConfigError, match=rf"output_activation='{act}'.*ratings are on \[1, 5\]"):
        sem.check_output_range(AutoRecConfig(output_activation=act), (1.0, 5.0))
    sem.check_output_range(AutoRecConfig(output_activation=act), (0.0, 1.0))
    sem.check_output_range(AutoRecConfig(output_activation="relu"), (1.0, 5.0))


# ====================================================================== rows
def test_group_pairs_bounded_and_complete(rng):
    rows = rng.integers(0, 50, size=1000)
    cols = rng.integers(0, 80, size=1000)
    seen = np.zeros(1000, dtype=int)
    for g in group_pairs(rows, cols, max_rows=7, max_pairs=60):
        assert len(g.rows) <= 7
        assert len(g.index) <= 60 or len(g.rows) == 1
        assert np.all(np.diff(g.rows) > 0)
        np.testing.assert_array_equal(g.rows[g.local], rows[g.index])
        np.testing.assert_array_equal(g.cols, cols[g.index])
        seen[g.index] += 1
    assert np.all(seen == 1)
    assert list(group_pairs(np.array([], int), np.array([], int))) == []


def test_pairs_to_rows_and_shard():
    r, c = pairs_to_rows(np.array([1, 2]), np.array([3, 4]), "item")
    assert r.tolist() == [3, 4] and c.tolist() == [1, 2]
    r, c = pairs_to_rows(np.array([1, 2]), np.array([3, 4]), "user")
    assert r.tolist() == [1, 2] and c.tolist() == [3, 4]
    rows = np.arange(7)
    assert [shard(rows, k, 3).tolist() for k in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]


def test_batch_entries(rng):
    csr = _interactions(rng).csr("item")
    rows = np.array([3, 0, 7])
    indptr, local, cols, vals = batch_entries(csr, rows)
    rebuilt = np.zeros((3, csr.get_shape()[1]), dtype=np.float32)
    rebuilt[local, cols] = vals
    np.testing.assert_array_equal(rebuilt, csr.toarray()[rows])
    assert indptr[-1] == len(vals) and vals.dtype == np.float32


# ====================================================================== class metadata
def test_display_name_and_metadata():
    assert AutoRecBase.display_name({"based": "item", "hidden": [500]}) == "I-AutoRec"
    assert AutoRecBase.display_name({"based": "user", "hidden": [500, 250, 500]}) == "U-AutoRec (deep)"
    assert (AutoRecBase.name, AutoRecBase.family, AutoRecBase.Config) == ("autorec", "autorec", AutoRecConfig)
    assert isinstance(AutoRecBase.version, int)


def test_default_space_reaches_the_paper_and_d2l_settings():
    space = AutoRecBase.SPACE
    fields = set(AutoRecConfig.field_names())
    variants = space["one_of"]
    assert {"rprop", "lbfgs", "adam"} <= set(variants)
    for sub in variants.values():
        assert set(sub) <= fields and not set(sub) & set(space)
    assert set(space) - {"one_of"} <= fields
    assert [500] in space["hidden"] and 0.05 in space["dropout"]
    for name in ("rprop", "lbfgs"):  # the paper's objective, lambda over its grid's span
        sub = variants[name]
        assert (sub["loss"], sub["reg_form"]) == ("observed-sum", "paper")
        assert sub["reg"]["low"] <= 1e-3 and sub["reg"]["high"] >= 1e3
    adam = variants["adam"]  # D2L's training: Gluon L2Loss, lr 0.002, weight decay 1e-5
    assert "d2l" in adam["loss"] and adam["reg_form"] == "wd"
    assert adam["lr"]["low"] <= 0.002 <= adam["lr"]["high"] and adam["reg"]["low"] <= 1e-5 <= adam["reg"]["high"]
    # every corner of the space is a valid configuration
    common = {k: (v[0] if isinstance(v, list) else v) for k, v in space.items() if k != "one_of"}
    for sub in variants.values():
        for end in ("low", "high"):
            values = {
                k: (v[end] if isinstance(v, dict) and "dist" in v else v[0] if isinstance(v, list) else v)
                for k, v in sub.items()
            }
            AutoRecConfig.from_dict({**common, **values})
