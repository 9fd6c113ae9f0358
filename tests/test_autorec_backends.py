"""What every AutoRec backend must do (PyTorch and MXNet alike), through the public API: the two
training paths compute one objective, the objective is D2L's / the paper's, training learns and
stops early, prediction equals reconstruction, persistence and resume are exact, faults are named.

Backend-only behaviour lives beside: tests/test_autorec_torch.py, tests/test_autorec_mxnet.py,
tests/test_autorec_torch_ddp.py, tests/test_scale_native.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, cast

import numpy as np
import pytest

from autorec.errors import ConfigError, DataError, TrainingDivergedError
from autorec.interactions import Interactions
from autorec.metrics import rmse
from autorec.models import registry
from autorec.models.autorec import AutoRecConfig
from autorec.models.autorec import semantics as sem
from autorec.models.autorec.rows import pairs_to_rows
from autorec.models.base import NotFittedError, Recommender
from tests.synthetic_parts import learnable

pytestmark = pytest.mark.filterwarnings("ignore:Please import `csr_matrix`:DeprecationWarning")


def _backend(name: str, module: str, *marks):
    missing = importlib.util.find_spec(module) is None
    skip = pytest.mark.skipif(missing, reason=f"{module} not installed (pip install .[{module}])")
    return pytest.param(name, marks=[skip, *marks], id=name)


@pytest.fixture(params=[_backend("torch", "torch"), _backend("mxnet", "mxnet", pytest.mark.mxnet)])
def Model(request):
    """The AutoRec class of one backend."""
    return registry.get("autorec", request.param).load()


@pytest.fixture(scope="module")
def data():
    return learnable()


def _scaled(train: Interactions) -> Interactions:
    """The ratings mapped into (0, 1], reachable by bounded output activations."""
    return Interactions(train.users, train.items, train.ratings / 5.0, train.n_users, train.n_items, (0.2, 1.0))


def _first_epoch(Model, cfg: dict, train: Interactions, start: dict | None = None):
    """(batch objectives of epoch 1, weights after it, the model) for one SGD/Adam epoch."""
    model = Model({**cfg, "epochs": 1, "extra": {**cfg.get("extra", {}), "record_batch_losses": True}})
    info = model.fit(train, initial_weights=start)
    return np.array(info.history[0]["batch_losses"]), model.get_weights(), model


def _initial(Model, cfg: dict, train: Interactions):
    """A model holding its configured initial weights (``make_trainer`` builds the network)."""
    model = Model(cfg)
    model.make_trainer(train, None)
    return model


# ====================================================================== one objective, two paths
@pytest.mark.parametrize("hidden", [(16,), (12, 8, 12)], ids=["one-hidden", "deep"])
@pytest.mark.parametrize("loss", ["d2l", "observed-sum", "observed-mean"])
@pytest.mark.parametrize("based", ["item", "user"])
def test_dense_and_sparse_same_objective_and_steps(Model, data, based, loss, hidden):
    """Dropout, the paper regulariser and SGD steps: each batch's objective and the weights after
    an epoch agree between the paths (equal gradients), at float32 precision."""
    lr = {"d2l": 5.0, "observed-sum": 0.002, "observed-mean": 0.5}[loss]
    cfg = dict(based=based, loss=loss, hidden=hidden, dropout=0.2, reg=0.01, reg_form="paper", seed=3,
               optimizer="sgd", lr=lr, batch_size=16)  # fmt: skip
    ld, wd, _ = _first_epoch(Model, {**cfg, "path": "dense"}, data.train)
    ls, ws, _ = _first_epoch(Model, {**cfg, "path": "sparse"}, data.train)
    assert np.all(ld > 0)
    np.testing.assert_allclose(ls, ld, rtol=2e-5)
    start = _initial(Model, cfg, data.train).get_weights()
    assert np.abs(wd["W0"] - start["W0"]).max() > 1e-4  # the epoch moved the weights
    for k in wd:
        np.testing.assert_allclose(ws[k], wd[k], rtol=1e-4, atol=2e-5 * (float(np.abs(wd[k]).max()) + 1e-12), err_msg=k)


@pytest.mark.parametrize("act", ["identity", "sigmoid", "relu", "tanh", "elu", "selu"])
def test_dense_and_sparse_agree_for_every_activation(Model, data, act):
    cfg = dict(hidden=(10,), hidden_activation=act, output_activation=act, dropout=0.0, loss="observed-mean",
               init="xavier", optimizer="sgd", lr=0.5, batch_size=25)  # fmt: skip
    train = _scaled(data.train)
    ld, wd, _ = _first_epoch(Model, {**cfg, "path": "dense"}, train)
    ls, ws, _ = _first_epoch(Model, {**cfg, "path": "sparse"}, train)
    np.testing.assert_allclose(ls, ld, rtol=2e-5)
    for k in wd:
        np.testing.assert_allclose(ws[k], wd[k], rtol=1e-4, atol=2e-5 * (float(np.abs(wd[k]).max()) + 1e-12), err_msg=k)


def _np_act(name: str, z: np.ndarray) -> np.ndarray:
    a, lam = 1.6732632423543772, 1.0507009873554805
    return {
        "identity": z,
        "sigmoid": 1 / (1 + np.exp(-z)),
        "relu": np.maximum(z, 0),
        "tanh": np.tanh(z),
        "elu": np.where(z > 0, z, np.expm1(z)),
        "selu": lam * np.where(z > 0, z, a * np.expm1(z)),
    }[name]


@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize("act", ["sigmoid", "relu", "tanh", "elu", "selu"])
def test_activations_are_the_torch_definitions(Model, data, act, path):
    """elu with alpha 1 and selu with torch's constants, in both paths' reconstructions."""
    m = _initial(Model, dict(hidden=(6,), hidden_activation=act, output_activation=act, path=path), _scaled(data.train))
    w = m.get_weights()
    x = m.train_matrix[:5].toarray().astype(np.float64)
    ref = _np_act(act, _np_act(act, x @ w["W0"].T + w["b0"]) @ w["W1"].T + w["b1"])
    rows, got = next(m.reconstruct(np.arange(5)))
    assert rows.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def _forward(w: dict, x: np.ndarray) -> np.ndarray:
    """The D2L network (sigmoid / identity, no dropout) in numpy."""
    return _np_act("sigmoid", x @ w["W0"].T.astype(np.float64) + w["b0"]) @ w["W1"].T.astype(np.float64) + w["b1"]


def test_d2l_loss_is_gluon_l2loss_on_masked_output(Model, data):
    """Batch objective = sum over its rows of 0.5 * mean_j (pred*sign(x) - x)^2, divided by the
    batch size (Gluon's L2Loss and trainer.step(batch_size)); observed-sum is the paper's SSE."""
    cfg = dict(hidden=(9,), dropout=0.0, reg=0.0, optimizer="sgd", lr=1e-3, batch_size=7, seed=4)
    m = _initial(Model, cfg, data.train)
    w = m.get_weights()
    rows = sem.epoch_batches(m.n_rows, m.config, 1)[0]
    x = m.train_matrix[rows].toarray().astype(np.float64)
    pred = _forward(w, x)
    losses, _, _ = _first_epoch(Model, cfg, data.train)
    per_row = 0.5 * np.mean((pred * np.sign(x) - x) ** 2, axis=1)
    assert losses[0] == pytest.approx(per_row.sum() / len(rows), rel=1e-5)
    sums, _, _ = _first_epoch(Model, {**cfg, "loss": "observed-sum"}, data.train)
    assert sums[0] == pytest.approx(((pred - x) ** 2)[x != 0].sum(), rel=1e-5)


def test_paper_reg_term_scaled_per_batch(Model, data):
    base = dict(hidden=(9,), dropout=0.0, loss="observed-mean", optimizer="sgd", lr=1e-3, batch_size=20)
    l0, _, m0 = _first_epoch(Model, {**base, "reg": 0.0}, data.train)
    l1, _, _ = _first_epoch(Model, {**base, "reg": 0.5, "reg_form": "paper"}, data.train)
    w = _initial(Model, base, data.train).get_weights()
    sq = float((w["W0"].astype(np.float64) ** 2).sum() + (w["W1"].astype(np.float64) ** 2).sum())
    assert l1[0] - l0[0] == pytest.approx(0.25 * sq * 20 / m0.n_rows, rel=1e-3)


# ====================================================================== training
@pytest.mark.parametrize("based,path", [("item", "dense"), ("user", "sparse")])
def test_fit_learns_and_early_stops(Model, data, based, path):
    m = Model(based=based, path=path, hidden=(24,), epochs=40, lr=0.01, loss="observed-mean", batch_size=32,
              patience=3, reg=1e-3, threads=1)  # fmt: skip
    info = m.fit(data.train, data.valid)
    curve = [h["valid_rmse"] for h in info.history]
    assert [h["epoch"] for h in info.history] == list(range(1, info.epochs_run + 1))
    assert set(info.history[0]) >= {"epoch", "train_loss", "valid_rmse", "seconds", "lr", "train_rmse", "steps"}
    assert info.best_epoch == int(np.argmin(curve)) + 1
    assert info.extra["stopped_early"] == (info.epochs_run < 40)
    if info.extra["stopped_early"]:
        assert info.epochs_run == info.best_epoch + 3
    assert info.extra["backend"] == Model.backend and info.extra["path"] == path
    # the restored best weights give exactly the best validation RMSE
    assert m.evaluate(data.valid)["rmse"] == pytest.approx(min(curve), abs=1e-6)
    base = rmse(np.full(len(data.test), data.train.global_mean), data.test.ratings)
    assert m.evaluate(data.test)["rmse"] < base - 0.02


def test_seeded_runs_are_identical_and_seeds_differ(Model, data):
    cfg = dict(hidden=(12,), dropout=0.3, epochs=2, batch_size=16, threads=1)
    w1, w2, w3 = (Model({**cfg, "seed": s}) for s in (0, 0, 1))
    for m in (w1, w2, w3):
        m.fit(data.train, data.valid)
    for k, v in w1.get_weights().items():
        np.testing.assert_array_equal(v, w2.get_weights()[k])
    assert not np.array_equal(w1.get_weights()["W0"], w3.get_weights()["W0"])


@pytest.mark.parametrize(
    "optimizer,lr,extra", [("adam", 0.01, {}), ("sgd", 0.5, {}), ("sgd", 0.2, {"sgd_momentum": 0.9})]
)
@pytest.mark.parametrize("reg_form", ["wd", "paper"])
def test_optimizers_reduce_loss(Model, data, optimizer, lr, extra, reg_form):
    m = Model(hidden=(16,), optimizer=optimizer, lr=lr, extra=extra, reg_form=reg_form, reg=1e-3, epochs=6,
              loss="observed-mean", batch_size=32, threads=1)  # fmt: skip
    info = m.fit(data.train)
    assert info.history[-1]["train_loss"] < 0.8 * info.history[0]["train_loss"]
    assert all(h["steps"] == 3 for h in info.history)  # 90 rows in batches of 32


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_lr_schedules_recorded_and_applied(Model, data, schedule):
    cfg = AutoRecConfig(hidden=(8,), epochs=4, lr_schedule=schedule, lr_step=2, lr_gamma=0.1, lr=0.01, threads=1)
    seen = []
    info = Model(cfg).fit(data.train, progress=lambda e, n, rec: seen.append(rec["lr"]))
    assert [h["lr"] for h in info.history] == [sem.lr_at(cfg, e) for e in range(1, 5)] == seen
    assert info.best_epoch is None


@pytest.mark.parametrize("init", ["normal", "uniform", "xavier"])
def test_initial_weights_come_from_the_shared_seeded_draw(Model, data, init):
    m = _initial(Model, dict(hidden=(20,), init=init, init_scale=0.05, seed=2), data.train)
    expect = sem.initial_weights(m.config, [m.n_in, 20, m.n_in])
    assert expect is not None
    for k, v in m.get_weights().items():
        np.testing.assert_array_equal(v, expect[k], err_msg=k)


def test_set_weights_get_weights_and_initial_weights(Model, data):
    m = _initial(Model, dict(hidden=(7, 5)), data.train)
    n_in = m.n_in
    shapes = {k: v.shape for k, v in m.get_weights().items()}
    assert shapes == {"W0": (7, n_in), "b0": (7,), "W1": (5, 7), "b1": (5,), "W2": (n_in, 5), "b2": (n_in,)}
    rng = np.random.default_rng(0)
    new = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    m.set_weights(new)
    for k in new:
        np.testing.assert_array_equal(m.get_weights()[k], new[k])
    with pytest.raises(ConfigError, match="W1 has shape"):
        m.set_weights({**new, "W1": np.zeros((3, 3), np.float32)})
    with pytest.raises(ConfigError, match="missing"):
        m.set_weights({"W0": new["W0"]})
    with pytest.raises(ConfigError, match="NaN"):
        m.set_weights({**new, "b0": np.full(7, np.nan, np.float32)})
    fresh = Model(hidden=(7, 5))
    fresh.set_weights(new)  # builds the network from the shapes
    np.testing.assert_array_equal(fresh.get_weights()["W2"], new["W2"])
    fit = Model(hidden=(7, 5), epochs=1, lr=1e-9, optimizer="sgd", dropout=0.0)
    fit.fit(data.train, initial_weights=new)
    np.testing.assert_allclose(fit.get_weights()["W0"], new["W0"], atol=1e-6)


# ====================================================================== prediction and files
@pytest.mark.parametrize("based", ["item", "user"])
def test_predict_matches_reconstruct_and_paths_agree(Model, data, based, tmp_path):
    test = data.test
    dense = Model(based=based, hidden=(10, 6, 10), epochs=2, batch_size=32, extra={"predict_batch_rows": 7})
    dense.fit(data.train)
    dense.save(tmp_path / "m.npz")
    sparse = Model.load(tmp_path / "m.npz", path="sparse", extra={"predict_batch_rows": 5})
    pd_ = dense.predict(test.users, test.items)
    np.testing.assert_allclose(sparse.predict(test.users, test.items), pd_, atol=1e-5)
    full = np.zeros((dense.n_rows, dense.n_in), np.float32)
    seen = []
    for rows, out in dense.reconstruct(batch_size=9):
        assert out.shape == (len(rows), dense.n_in)
        full[rows] = out
        seen.append(rows)
    assert np.concatenate(seen).tolist() == list(range(dense.n_rows))
    r, c = pairs_to_rows(test.users, test.items, based)
    lo, hi = data.train.rating_scale
    np.testing.assert_allclose(np.clip(full[r, c], lo, hi), pd_, atol=1e-5)
    np.testing.assert_allclose(dense.estimate(test.users, test.items), full[r, c], atol=1e-5)
    _, out_s = next(sparse.reconstruct(rows=np.array([4, 2]), batch_size=2))
    np.testing.assert_allclose(out_s, full[[4, 2]], atol=1e-5)
    assert dense.predict(np.array([], np.int64), np.array([], np.int64)).shape == (0,)
    with pytest.raises(ConfigError, match="batch_size"):
        next(dense.reconstruct(batch_size=0))


def test_predict_before_fit_and_bad_pairs(Model, data):
    m = Model(hidden=(4,), epochs=1)
    with pytest.raises(NotFittedError, match="fit"):
        m.predict(np.array([0]), np.array([0]))
    with pytest.raises(NotFittedError):
        next(m.reconstruct())
    m.fit(data.train)
    with pytest.raises(DataError, match="user indices run from"):
        m.predict(np.array([data.train.n_users]), np.array([0]))
    with pytest.raises(DataError, match="1 items"):
        m.predict(np.array([0, 1]), np.array([0]))


def test_save_load_round_trip(Model, data, tmp_path):
    m = Model(hidden=(8,), epochs=2, path="sparse", cold_start="constant:2.5")
    m.fit(data.train, data.valid)
    path = tmp_path / "model.npz"
    m.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # atomic: no temp file left behind
    back = Model.load(path)
    assert back.params() == m.params()
    np.testing.assert_array_equal(
        back.predict(data.test.users, data.test.items), m.predict(data.test.users, data.test.items)
    )
    assert back.predict([0], [0]).tolist() in ([2.5], m.predict([0], [0]).tolist())
    with pytest.raises(DataError, match="does not exist"):
        Model.load(tmp_path / "missing.npz")
    with pytest.raises(NotFittedError, match="fit"):
        Model(hidden=(3,)).save(tmp_path / "x.npz")


@pytest.mark.parametrize("optimizer,extra", [("adam", {}), ("sgd", {"sgd_momentum": 0.9})])
def test_resume_equals_uninterrupted(Model, data, tmp_path, optimizer, extra):
    cfg = dict(hidden=(12,), epochs=5, batch_size=32, dropout=0.2, optimizer=optimizer, extra=extra, threads=1,
               lr=0.005 if optimizer == "adam" else 0.1, lr_schedule="step", lr_step=2, patience=10)  # fmt: skip
    full = Model(cfg)
    info_full = full.fit(data.train, data.valid)

    class Interrupt(Exception):
        pass

    def stop_after_2(epoch, n, rec):
        if epoch == 2:
            raise Interrupt

    ck = tmp_path / "ck"
    with pytest.raises(Interrupt):
        Model(cfg).fit(data.train, data.valid, progress=stop_after_2, checkpoint=ck)
    resumed = Model(cfg)
    info = resumed.fit(data.train, data.valid, resume=ck, checkpoint=ck)
    assert info.extra["resumed_from_epoch"] == 2 and info.epochs_run == info_full.epochs_run == 5
    assert info.best_epoch == info_full.best_epoch
    for k, v in full.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[k], v, err_msg=k)
    assert [h["valid_rmse"] for h in info.history] == [h["valid_rmse"] for h in info_full.history]
    with pytest.raises(ConfigError, match="hidden"):
        Model({**cfg, "hidden": (13,)}).fit(data.train, data.valid, resume=ck)
    if optimizer == "sgd":  # a knob of the update itself may not change; one of how it is computed may
        with pytest.raises(ConfigError, match=r"extra\['sgd_momentum'\]: checkpoint 0.9 vs now 0.5"):
            Model({**cfg, "extra": {"sgd_momentum": 0.5}}).fit(data.train, data.valid, resume=ck)
    again = Model({**cfg, "extra": {**extra, "predict_batch_rows": 7}})
    again.fit(data.train, data.valid, resume=ck)
    np.testing.assert_array_equal(again.get_weights()["W0"], full.get_weights()["W0"])
    # other data of the same shape (one rating changed, or validation dropped) is another fit
    changed = data.train.ratings.copy()
    changed[0] = 2.0 if changed[0] == 1.0 else 1.0
    other = dataclasses.replace(data.train, ratings=changed)
    for parts in ((other, data.valid), (data.train, None)):
        with pytest.raises(ConfigError, match="it was trained on other data"):
            Model(cfg).fit(*parts, resume=ck)


def test_a_truncated_or_damaged_checkpoint_is_named(Model, data, tmp_path):
    cfg = dict(hidden=(6,), epochs=2, batch_size=64)
    ck = tmp_path / "ck.npz"
    Model(cfg).fit(data.train, data.valid, checkpoint=ck)
    raw = ck.read_bytes()
    (tmp_path / "half.npz").write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    for name in ("half.npz", "flipped.npz"):
        with pytest.raises(DataError, match=f"checkpoint file '{tmp_path / name}' is not a readable checkpoint"):
            Model({**cfg, "epochs": 3}).fit(data.train, data.valid, resume=tmp_path / name)


def test_resume_keeps_the_epochs_a_cosine_schedule_depends_on(Model, data, tmp_path):
    cfg = dict(hidden=(6,), epochs=2, batch_size=64, lr_schedule="cosine", threads=1)
    Model(cfg).fit(data.train, data.valid, checkpoint=tmp_path / "ck")
    with pytest.raises(ConfigError, match="epochs: checkpoint 2 vs now 4"):
        Model({**cfg, "epochs": 4}).fit(data.train, data.valid, resume=tmp_path / "ck")
    step = {**cfg, "lr_schedule": "step", "lr_step": 1}
    Model(step).fit(data.train, data.valid, checkpoint=tmp_path / "ck2")
    assert Model({**step, "epochs": 4}).fit(data.train, data.valid, resume=tmp_path / "ck2").epochs_run == 4


# ====================================================================== faults and interface
def test_divergence_names_epoch_and_batch(Model, data):
    m = Model(hidden=(8,), optimizer="sgd", lr=1e6, loss="observed-sum", epochs=3, hidden_activation="relu")
    with pytest.raises(
        TrainingDivergedError, match=r"epoch \d+, batch \d+.*lower the step sizes \(lr now 1e\+06"
    ) as err:
        m.fit(data.train)
    assert isinstance(err.value.history, list)  # type: ignore[attr-defined]


def test_a_last_step_to_non_finite_weights_is_divergence_and_leaves_no_model(Model, data, tmp_path):
    """A fit without validation (a refit on train + validation) has nothing that looks at its last
    step; one batch per epoch makes the only step the last."""
    cfg = dict(hidden=(8,), optimizer="sgd", loss="observed-sum", epochs=1, batch_size=10_000,
               hidden_activation="identity", dropout=0.0)  # fmt: skip
    m = Model(**cfg, lr=3e38)
    with pytest.raises(TrainingDivergedError, match=r"the learned 'W0' after the last step is not finite .*epoch 1"):
        m.fit(data.train)
    with pytest.raises(NotFittedError):
        m.predict(data.test.users[:3], data.test.items[:3])
    with pytest.raises(NotFittedError):
        m.save(tmp_path / "m.npz")
    # finite weights whose outputs overflow: predict names the model and the config
    m = Model(**cfg, lr=1e36)
    m.fit(data.train)
    with pytest.raises(
        FloatingPointError, match=r"^autorec \(\w+\): 3 of 3 predictions are NaN .*did training diverge"
    ):
        m.predict(data.test.users[:3], data.test.items[:3])


def test_nan_ratings_refused_before_training(Model, data):
    train = data.train
    ratings = np.where(np.arange(len(train)) == 5, np.nan, train.ratings).astype(np.float32)
    bad = Interactions(train.users, train.items, ratings, train.n_users, train.n_items, train.rating_scale)
    with pytest.raises(DataError, match="NaN"):
        Model(hidden=(4,), epochs=1).fit(bad)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"hidden_activation": "swish"}, "hidden_activation"),
        ({"hidden": (0,)}, "hidden"),
        ({"extra": {"no_such_knob": 1}}, "unknown .* backend knob"),
        ({"nonsense": 1}, "unknown parameter"),
        ({"lr": 0}, "lr"),
        ({"hidden": "500,-250"}, "positive layer sizes"),  # a minus is a sign, not a separator
        ({"extra": {"record_batch_losses": "no"}}, r"extra\['record_batch_losses'\]='no' must be true or false"),
        ({"extra": {"sgd_momentum": -1}}, r"sgd_momentum.*\[0, 1\)"),
        ({"extra": {"predict_batch_rows": "abc"}}, "predict_batch_rows.*positive integer"),
        ({"extra": {"predict_batch_rows": 0.5}}, "predict_batch_rows.*positive integer"),
    ],
)
def test_invalid_configs_rejected_up_front(Model, params, match):
    with pytest.raises(ConfigError, match=match):
        Model(params)


def test_interface(Model, data):
    m = Model.from_params({"hidden": "20,10,20", "based": "user"})
    assert isinstance(m, Recommender)
    assert (m.name, m.family) == ("autorec", "autorec") and m.backend in ("torch", "mxnet")
    assert m.params()["hidden"] == [20, 10, 20]
    assert Model.from_params(m.params()).params() == m.params()
    assert Model(AutoRecConfig(hidden=(5,)), lr=0.1).config.lr == 0.1
    assert Model.display_name(m.params()) == "U-AutoRec (deep)"
    assert Model.launcher(["cpu"]) == "single"
    assert f"{type(m).__name__}(" in repr(m)
    with pytest.raises(DataError, match="Interactions"):
        m.fit(cast(Any, "not interactions"))
    other = Interactions(data.valid.users, data.valid.items, data.valid.ratings, data.valid.n_users + 1,
                         data.valid.n_items, data.valid.rating_scale)  # fmt: skip
    with pytest.raises(DataError, match="index space"):
        m.fit(data.train, other)


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_bounded_output_activation_that_cannot_reach_the_ratings_is_refused(Model, data, act):
    """A sigmoid/tanh output on 1..5 ratings would be clipped to the minimum everywhere: refused at
    fit, naming the activation and the scale; ratings rescaled into range train."""
    with pytest.raises(ConfigError, match=rf"output_activation='{act}'.*ratings are on \[1, 5\]"):
        Model(hidden=(8,), output_activation=act, epochs=1).fit(data.train)
    info = Model(hidden=(8,), output_activation=act, epochs=2).fit(_scaled(data.train))
    assert info.epochs_run == 2 and np.isfinite(info.history[-1]["train_loss"])
