"""AutoRec in MXNet Gluon: dense vs sparse equivalence, training, multi-context, prediction,
persistence, resume, faults, invalid configs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from autorec.config import AutoRecConfig  # noqa: E402
from autorec.data.synthetic import generate  # noqa: E402
from autorec.errors import ConfigError, DataError, TrainingDivergedError  # noqa: E402
from autorec.metrics import evaluate, rmse  # noqa: E402
from autorec.models import common  # noqa: E402
from autorec.models.base import Recommender  # noqa: E402
from autorec.models.mxnet import AutoRecMXNet  # noqa: E402
from autorec.models.mxnet.model import _Trainer, split_sizes  # noqa: E402
from autorec.splits import make_split  # noqa: E402

pytestmark = [pytest.mark.mxnet,
              # mxnet 1.9.1's nd.array checks `scipy.sparse.csr.csr_matrix` (deprecated scipy path)
              pytest.mark.filterwarnings("ignore:Please import `csr_matrix`:DeprecationWarning")]


@pytest.fixture(scope="module")
def data():
    """(train, valid, test) of a small MovieLens-shaped synthetic set."""
    r = generate(150, 100, 5000, seed=3)
    sd = make_split(r, "random:test_ratio=0.1", seed=0, valid_ratio=0.1).data(r)
    return sd.train, sd.valid, sd.test


def _built(cfg: dict, train) -> AutoRecMXNet:
    m = AutoRecMXNet(cfg)
    m._set_train(train)
    m._build(m._csr.shape[1])
    return m


def _loss_grads(model: AutoRecMXNet, rows: np.ndarray, seed: int = 7):
    """(objective, {name: gradient}) of one batch, without an optimizer step."""
    t = _Trainer(model, model._csr)
    mx.random.seed(seed)
    obj, _, _ = t.batch_step(np.asarray(rows), epoch=1, bi=0, step=False)
    grads = {}
    for k, layer in enumerate(model.net.layers):
        grads[f"W{k}"] = layer.weight.grad(model.ctxs[0]).asnumpy()
        grads[f"b{k}"] = layer.bias.grad(model.ctxs[0]).asnumpy()
    return obj, grads


# ====================================================================== dense == sparse
@pytest.mark.parametrize("hidden", [(16,), (12, 8, 12)], ids=["one-hidden", "deep"])
@pytest.mark.parametrize("loss", ["d2l", "observed-sum", "observed-mean"])
@pytest.mark.parametrize("based", ["item", "user"])
def test_dense_and_sparse_same_loss_and_gradients(data, based, loss, hidden):
    train = data[0]
    cfg = dict(based=based, loss=loss, hidden=hidden, dropout=0.2, reg=0.01, reg_form="paper", seed=3)
    dense = _built({**cfg, "path": "dense"}, train)
    sparse = _built({**cfg, "path": "sparse"}, train)
    for k, v in dense.get_weights().items():
        np.testing.assert_array_equal(v, sparse.get_weights()[k])
    rows = common.epoch_batches(dense._csr.shape[0], dense.config, 1)[0][:37]
    ld, gd = _loss_grads(dense, rows)
    ls, gs = _loss_grads(sparse, rows)
    assert ld > 0
    assert ld == pytest.approx(ls, rel=2e-5)
    for name in gd:
        scale = float(np.abs(gd[name]).max()) + 1e-12
        np.testing.assert_allclose(gs[name], gd[name], rtol=1e-4, atol=2e-5 * scale, err_msg=name)


@pytest.mark.parametrize("act", ["identity", "sigmoid", "relu", "tanh", "elu", "selu"])
def test_dense_and_sparse_agree_for_every_activation(data, act):
    train = data[0]
    cfg = dict(hidden=(10,), output_activation=act, hidden_activation=act, dropout=0.0,
               loss="observed-mean", init="xavier")
    rows = np.arange(25)
    ld, gd = _loss_grads(_built({**cfg, "path": "dense"}, train), rows)
    ls, gs = _loss_grads(_built({**cfg, "path": "sparse"}, train), rows)
    assert ld == pytest.approx(ls, rel=2e-5)
    for name in gd:
        np.testing.assert_allclose(gs[name], gd[name], rtol=1e-4,
                                   atol=2e-5 * (float(np.abs(gd[name]).max()) + 1e-12))


def _np_act(name, z):
    a, lam = 1.6732632423543772, 1.0507009873554805
    return {"identity": z, "sigmoid": 1 / (1 + np.exp(-z)), "relu": np.maximum(z, 0), "tanh": np.tanh(z),
            "elu": np.where(z > 0, z, np.expm1(z)),
            "selu": lam * np.where(z > 0, z, a * np.expm1(z))}[name]


@pytest.mark.parametrize("act", ["sigmoid", "relu", "tanh", "elu", "selu"])
def test_activations_are_the_torch_definitions(data, act):
    """elu with alpha 1 and selu with torch's constants (MXNet's LeakyReLU elu defaults to slope 0.25)."""
    m = _built(dict(hidden=(6,), hidden_activation=act, output_activation=act, dropout=0.0), data[0])
    w = m.get_weights()
    x = m._csr[:5].toarray().astype(np.float64)
    ref = _np_act(act, _np_act(act, x @ w["W0"].T + w["b0"]) @ w["W1"].T + w["b1"])
    got = next(m.reconstruct(np.arange(5)))[1]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_d2l_loss_is_gluon_l2loss_on_masked_output(data):
    """objective = sum over the batch of 0.5 * mean_j (pred*sign(x) - x)^2, divided by batch_size."""
    train = data[0]
    m = _built(dict(hidden=(9,), dropout=0.0, reg=0.0), train)
    rows = np.array([0, 3, 5, 8, 13, 21, 34])
    loss, _ = _loss_grads(m, rows)
    x = m._csr[rows].toarray()
    pred = next(m.reconstruct(rows))[1]
    per_row = 0.5 * np.mean((pred * np.sign(x) - x) ** 2, axis=1)
    assert loss == pytest.approx(per_row.sum() / len(rows), rel=1e-5)
    m2 = _built(dict(hidden=(9,), dropout=0.0, reg=0.0, loss="observed-sum"), train)
    m2.set_weights(m.get_weights())
    assert _loss_grads(m2, rows)[0] == pytest.approx(((pred - x) ** 2)[x != 0].sum(), rel=1e-5)


def test_paper_reg_term_scaled_per_batch(data):
    train = data[0]
    base = dict(hidden=(9,), dropout=0.0, loss="observed-mean")
    m0 = _built({**base, "reg": 0.0}, train)
    m1 = _built({**base, "reg": 0.5, "reg_form": "paper"}, train)
    rows = np.arange(20)
    l0, _ = _loss_grads(m0, rows)
    l1, _ = _loss_grads(m1, rows)
    w = m0.get_weights()
    sq = float((w["W0"].astype(np.float64) ** 2).sum() + (w["W1"].astype(np.float64) ** 2).sum())
    assert l1 - l0 == pytest.approx(0.25 * sq * 20 / m0._csr.shape[0], rel=1e-3)


_FALLBACK_SCRIPT = r"""
import numpy as np, sys
import mxnet as mx
from mxnet import autograd, nd
from autorec.data.synthetic import generate
from autorec.interactions import Interactions
from autorec.models.mxnet import AutoRecMXNet
r = generate(60, 40, 900, seed=1)
tr = Interactions(r.users, r.items, r.ratings, r.n_users, r.n_items, r.rating_scale)
for based in ("item", "user"):
    m = AutoRecMXNet(hidden=(8,), path="sparse", epochs=1, batch_size=16, based=based)
    m.fit(tr)
    m.predict(tr.users[:50], tr.items[:50])
    list(m.reconstruct(np.arange(5)))
sys.stderr.write("\n=== control ===\n")
x = nd.sparse.csr_matrix((np.ones(2, "f"), np.array([0, 2]), np.array([0, 1, 2])), shape=(2, 3))
w = nd.ones((4, 3)); w.attach_grad()
with autograd.record():
    y = nd.sparse.dot(x, w, transpose_b=True).sum()
y.backward()
"""


def test_sparse_path_runs_without_storage_fallback():
    """No MXNet "Storage type fallback" (a temporary densified CSR batch) while the sparse path
    trains and predicts (I- and U-AutoRec); the control, ``dot(csr, W, transpose_b=True)``, does fall back (the
    reason for the encoder's form, see the module docstring)."""
    env = {**os.environ, "MXNET_STORAGE_FALLBACK_LOG_VERBOSE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _FALLBACK_SCRIPT], capture_output=True, text=True,
                         env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    before, _, control = out.stderr.partition("=== control ===")
    assert "Storage type fallback" not in before, before[-3000:]
    assert "Storage type fallback" in control and "operator = dot" in control


# ====================================================================== training
def _rmse(model, train, test):
    return evaluate(model, train, test)["rmse"]


@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize("based", ["item", "user"])
def test_fit_learns_and_early_stops(data, based, path):
    train, valid, test = data
    m = AutoRecMXNet(based=based, path=path, hidden=(24,), epochs=40, lr=0.01, loss="observed-mean",
                     batch_size=32, patience=3, reg=1e-3)
    info = m.fit(train, valid)
    base = rmse(np.full(len(test), train.global_mean), test.ratings)
    assert _rmse(m, train, test) < base - 0.02
    hist = [h["train_loss"] for h in info.history]
    assert hist[-1] < hist[0]
    assert info.best_epoch == int(np.argmin([h["valid_rmse"] for h in info.history])) + 1
    assert info.extra["stopped_early"] == (info.epochs_run < 40)
    if info.extra["stopped_early"]:
        assert info.epochs_run == info.best_epoch + 3
    assert set(info.history[0]) >= {"epoch", "train_loss", "valid_rmse", "seconds", "lr", "train_rmse"}


def test_dense_and_sparse_training_trajectories_agree(data):
    train = data[0]
    cfg = dict(hidden=(12,), dropout=0.0, epochs=3, batch_size=16, loss="observed-mean",
               extra={"record_batch_losses": True})
    a = AutoRecMXNet({**cfg, "path": "dense"})
    b = AutoRecMXNet({**cfg, "path": "sparse"})
    ha, hb = a.fit(train).history, b.fit(train).history
    for ra, rb in zip(ha, hb):
        np.testing.assert_allclose(ra["batch_losses"], rb["batch_losses"], rtol=1e-4)
    for k, v in a.get_weights().items():
        np.testing.assert_allclose(b.get_weights()[k], v, rtol=1e-3, atol=1e-5)


def test_seeded_runs_are_identical_and_seeds_differ(data):
    train = data[0]
    cfg = dict(hidden=(12,), dropout=0.3, epochs=2, batch_size=16)
    w1 = AutoRecMXNet(cfg)
    w1.fit(train)
    w2 = AutoRecMXNet(cfg)
    w2.fit(train)
    w3 = AutoRecMXNet({**cfg, "seed": 1})
    w3.fit(train)
    for k, v in w1.get_weights().items():
        np.testing.assert_array_equal(v, w2.get_weights()[k])
    assert not np.array_equal(w1.get_weights()["W0"], w3.get_weights()["W0"])


@pytest.mark.parametrize("optimizer,lr,extra,reg_form", [
    ("sgd", 0.5, {}, "wd"), ("sgd", 0.2, {"sgd_momentum": 0.9}, "paper"),
    ("adam", 0.01, {"adam_epsilon": "torch"}, "paper"), ("adam", 0.01, {}, "wd")])
def test_optimizers_reduce_loss(data, optimizer, lr, extra, reg_form):
    train = data[0]
    m = AutoRecMXNet(hidden=(16,), optimizer=optimizer, lr=lr, extra=extra, reg_form=reg_form, reg=1e-3,
                     epochs=6, loss="observed-mean", batch_size=32)
    info = m.fit(train)
    assert info.history[-1]["train_loss"] < 0.8 * info.history[0]["train_loss"]


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_lr_schedules_recorded_and_applied(data, schedule):
    cfg = AutoRecConfig(hidden=(8,), epochs=4, lr_schedule=schedule, lr_step=2, lr_gamma=0.1, lr=0.01)
    seen = []
    info = AutoRecMXNet(cfg).fit(data[0], progress=lambda e, n, rec: seen.append(rec["lr"]))
    assert [h["lr"] for h in info.history] == [common.lr_at(cfg, e) for e in range(1, 5)] == seen


def test_trainer_uses_the_scheduled_lr(data):
    m = _built(dict(hidden=(8,), lr_schedule="step", lr_step=1, lr_gamma=0.5, lr=0.04, epochs=3), data[0])
    t = _Trainer(m, m._csr)
    for e in (1, 2, 3):
        t.train_epoch(e)
        assert t.trainer.learning_rate == pytest.approx(0.04 * 0.5 ** (e - 1))


@pytest.mark.parametrize("init", ["normal", "uniform", "xavier", "default"])
def test_init_schemes(data, init):
    m = _built(dict(hidden=(20,), init=init, init_scale=0.05), data[0])
    w = m.get_weights()
    sizes = m.net.sizes
    expect = common.initial_weights(m.config, sizes)
    if expect is None:  # Gluon's default initializer: Uniform(0.07) weights, zero biases
        assert np.abs(w["W0"]).max() <= 0.07 and np.abs(w["W0"]).max() > 0.05
        assert not w["b0"].any()
        m2 = _built(dict(hidden=(20,), init=init, init_scale=0.05), data[0])
        np.testing.assert_array_equal(w["W0"], m2.get_weights()["W0"])
    else:
        for k in expect:
            np.testing.assert_array_equal(w[k], expect[k])


def test_set_weights_get_weights_and_initial_weights(data):
    train = data[0]
    m = _built(dict(hidden=(7, 5)), train)
    shapes = {k: v.shape for k, v in m.get_weights().items()}
    n_in = m._csr.shape[1]
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
    fresh = AutoRecMXNet(hidden=(7, 5))
    fresh.set_weights(new)  # builds the network from the shapes
    np.testing.assert_array_equal(fresh.get_weights()["W2"], new["W2"])
    fit = AutoRecMXNet(hidden=(7, 5), epochs=1, lr=1e-9)
    fit.fit(train, initial_weights=new)
    np.testing.assert_allclose(fit.get_weights()["W0"], new["W0"], atol=1e-5)


# ====================================================================== multi-context
def test_split_sizes_match_gluon_split_and_load():
    for n, k in [(10, 2), (11, 2), (7, 3), (1, 2), (256, 2)]:
        if n >= k:
            parts = mx.gluon.utils.split_and_load(np.zeros((n, 2), np.float32), [mx.cpu(i) for i in range(k)],
                                                  even_split=False)
            assert [p.shape[0] for p in parts] == split_sizes(n, k)
        assert sum(split_sizes(n, k)) == n


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_two_cpu_contexts_identical_replicas_and_same_rmse(data, path):
    train, valid, test = data
    # 100 rows of I-AutoRec with batch 33: the last batch has 1 row, fewer than the contexts
    cfg = dict(hidden=(24,), epochs=12, lr=0.01, loss="observed-mean", batch_size=33, path=path)
    one = AutoRecMXNet(cfg)
    one.fit(train)
    two = AutoRecMXNet({**cfg, "devices": ("cpu(0)", "cpu(1)")})
    info = two.fit(train)
    assert info.extra["devices"] == ["cpu(0)", "cpu(1)"] and info.extra["kvstore"] == "device"
    assert one._csr.shape[0] % 33 == 1
    r0, r1 = two.replica_weights()
    for k in r0:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
    assert abs(_rmse(two, train, test) - _rmse(one, train, test)) < 0.01


def test_two_contexts_with_dropout_and_local_kvstore(data):
    train, _, test = data
    cfg = dict(hidden=(24,), epochs=10, lr=0.01, loss="observed-mean", batch_size=40, dropout=0.1)
    one = AutoRecMXNet(cfg)
    one.fit(train)
    two = AutoRecMXNet({**cfg, "devices": ("cpu(0)", "cpu(1)"), "extra": {"kvstore": "local"}})
    info = two.fit(train)
    assert info.extra["kvstore"] == "local"
    r0, r1 = two.replica_weights()
    for k in r0:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
    assert abs(_rmse(two, train, test) - _rmse(one, train, test)) < 0.01


def test_two_contexts_same_batch_losses_as_one_without_dropout(data):
    train = data[0]
    cfg = dict(hidden=(12,), epochs=2, batch_size=32, dropout=0.0, loss="d2l", extra={"record_batch_losses": True})
    h1 = AutoRecMXNet(cfg).fit(train).history
    h2 = AutoRecMXNet({**cfg, "devices": ("cpu", "cpu(1)")}).fit(train).history
    for a, b in zip(h1, h2):
        np.testing.assert_allclose(a["batch_losses"], b["batch_losses"], rtol=1e-5)


@pytest.mark.parametrize("devices,match", [
    (("gpu(0)",), "does not exist"), (("cuda:1",), "does not exist"),
    (("cpu(0)", "cpu"), "repeated"), (("cpu(0)", "gpu(0)"), "does not exist|mixing")])
def test_bad_contexts_rejected_up_front(devices, match):
    with pytest.raises(ConfigError, match=match):
        AutoRecMXNet(devices=devices)


def test_device_strings_accepted():
    assert [str(c) for c in AutoRecMXNet(devices=("cpu",)).contexts] == ["cpu(0)"]
    assert [str(c) for c in AutoRecMXNet(devices="cpu(0),cpu(2)").contexts] == ["cpu(0)", "cpu(2)"]


# ====================================================================== prediction
@pytest.mark.parametrize("based", ["item", "user"])
def test_predict_matches_reconstruct_and_paths_agree(data, based):
    train, _, test = data
    cfg = dict(based=based, hidden=(10,), epochs=2, batch_size=32)
    d = AutoRecMXNet({**cfg, "path": "dense"})
    d.fit(train)
    s = AutoRecMXNet({**cfg, "path": "sparse"})
    s.set_weights(d.get_weights())
    s._set_train(train)
    pd_ = d.predict(test.users, test.items)
    ps = s.predict(test.users, test.items)
    np.testing.assert_allclose(ps, pd_, rtol=1e-5, atol=1e-5)
    full = np.concatenate([o for _, o in d.reconstruct(batch_size=17)])
    rows, cols = common.pairs_to_rows(test.users, test.items, based)
    np.testing.assert_allclose(pd_, full[rows, cols], rtol=1e-5, atol=1e-6)
    full_s = np.concatenate([o for _, o in s.reconstruct(batch_size=50)])
    np.testing.assert_allclose(full_s, full, rtol=1e-5, atol=1e-5)
    # bounded groups give the same numbers
    small = AutoRecMXNet({**cfg, "path": "dense", "extra": {"predict_batch_rows": 3}})
    small.set_weights(d.get_weights())
    small._set_train(train)
    np.testing.assert_allclose(small.predict(test.users, test.items), pd_, rtol=1e-6, atol=1e-6)


def test_predict_rejects_bad_pairs(data):
    train = data[0]
    m = AutoRecMXNet(hidden=(4,), epochs=1)
    with pytest.raises(ConfigError, match="no weights"):
        m.predict(np.array([0]), np.array([0]))
    m.fit(train)
    with pytest.raises(DataError, match="outside"):
        m.predict(np.array([train.n_users]), np.array([0]))
    with pytest.raises(DataError, match="equal length"):
        m.predict(np.array([0, 1]), np.array([0]))
    with pytest.raises(DataError, match="integer"):
        m.predict(np.array([0.5]), np.array([0.0]))
    assert m.predict(np.array([], np.int64), np.array([], np.int64)).shape == (0,)
    with pytest.raises(ConfigError, match="batch_size"):
        next(m.reconstruct(batch_size=0))


# ====================================================================== persistence
def test_save_load_round_trip(tmp_path, data):
    train, _, test = data
    m = AutoRecMXNet(hidden=(10,), epochs=2, path="sparse", batch_size=32)
    m.fit(train)
    path = tmp_path / "model.npz"
    m.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # atomic: no temp file left behind
    back = AutoRecMXNet.load(path)
    assert back.params() == m.params()
    np.testing.assert_array_equal(back.predict(test.users, test.items), m.predict(test.users, test.items))
    cfg, weights, _, meta = common.load_model(path)
    assert meta["backend"] == "mxnet" and set(weights) == {"W0", "b0", "W1", "b1"}
    two = AutoRecMXNet.load(path, devices=("cpu(0)", "cpu(1)"))
    assert len(two.contexts) == 2
    with pytest.raises(DataError, match="does not exist"):
        AutoRecMXNet.load(tmp_path / "missing.npz")
    with pytest.raises(ConfigError, match="fit"):
        AutoRecMXNet(hidden=(3,)).save(tmp_path / "x.npz")


@pytest.mark.parametrize("optimizer,extra", [("adam", {}), ("sgd", {"sgd_momentum": 0.9}),
                                             ("adam", {"adam_epsilon": "torch"})])
@pytest.mark.parametrize("devices", [("cpu",), ("cpu(0)", "cpu(1)")], ids=["one", "two"])
def test_resume_equals_uninterrupted(tmp_path, data, optimizer, extra, devices):
    train, valid, _ = data
    cfg = dict(hidden=(10,), epochs=4, batch_size=32, dropout=0.2, optimizer=optimizer, extra=extra,
               lr=0.01 if optimizer == "adam" else 0.1, devices=devices)
    full = AutoRecMXNet(cfg)
    info_full = full.fit(train, valid)
    ck = tmp_path / "ck.npz"
    part = AutoRecMXNet({**cfg, "epochs": 2})
    part.fit(train, valid, checkpoint=ck)
    resumed = AutoRecMXNet(cfg)
    info = resumed.fit(train, valid, resume=ck)
    assert info.extra["resumed_from_epoch"] == 2 and info.epochs_run == 4
    for k, v in full.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[k], v, err_msg=k)
    assert [h["valid_rmse"] for h in info.history] == [h["valid_rmse"] for h in info_full.history]


def test_resume_refuses_other_config_and_backend(tmp_path, data):
    train = data[0]
    ck = tmp_path / "ck.npz"
    AutoRecMXNet(hidden=(4,), epochs=1).fit(train, checkpoint=ck)
    with pytest.raises(ConfigError, match="config differs"):
        AutoRecMXNet(hidden=(5,), epochs=2).fit(train, resume=ck)
    z = dict(np.load(ck))
    meta = common._from_json(z["meta"])
    meta["backend"] = "torch"
    z["meta"] = common._json_bytes(meta)
    np.savez(tmp_path / "other.npz", **z)
    with pytest.raises(ConfigError, match="torch backend"):
        AutoRecMXNet(hidden=(4,), epochs=2).fit(train, resume=tmp_path / "other.npz")


# ====================================================================== faults
def test_divergence_raises_naming_epoch_and_batch(data):
    m = AutoRecMXNet(hidden=(8,), optimizer="sgd", lr=1e6, epochs=3, loss="observed-sum")
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+, batch \d+"):
        m.fit(data[0])


def test_injected_nan_raises(data):
    train = data[0]
    m = _built(dict(hidden=(6,)), train)
    w = m.get_weights()
    w["W0"][0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        m.set_weights(w)
    m.net.layers[0].weight.data(m.ctxs[0])[0, 0] = float("nan")
    t = _Trainer(m, m._csr)
    with pytest.raises(TrainingDivergedError, match="epoch 1, batch 0"):
        t.train_epoch(1)


@pytest.mark.parametrize("params,match", [
    ({"optimizer": "rprop"}, "Gluon has no Rprop.*PyTorch backend"),
    ({"optimizer": "lbfgs"}, "Gluon has no L-BFGS.*PyTorch backend"),
    ({"hidden": (0,)}, "positive integer"),
    ({"hidden_activation": "swish"}, "hidden_activation"),
    ({"devices": ("tpu",)}, "device"),
    ({"extra": {"lbfgs_max_iter": 3}}, "unknown mxnet backend knob"),
    ({"extra": {"kvstore": "dist_sync"}}, "kvstore"),
    ({"extra": {"adam_epsilon": "keras"}}, "adam_epsilon"),
    ({"extra": {"sgd_momentum": 1.5}}, "sgd_momentum"),
    ({"extra": {"predict_batch_rows": 0}}, "predict_batch_rows"),
    ({"nonsense": 1}, "unknown AutoRec parameter"),
])
def test_invalid_configs_rejected_up_front(params, match):
    with pytest.raises(ConfigError, match=match):
        AutoRecMXNet(params)


def test_fit_rejects_bad_data(data):
    train, valid, _ = data
    m = AutoRecMXNet(hidden=(4,), epochs=1)
    with pytest.raises(DataError, match="Interactions"):
        m.fit(np.zeros(3))
    other = type(valid)(valid.users, valid.items, valid.ratings, valid.n_users + 1, valid.n_items,
                        valid.rating_scale)
    with pytest.raises(DataError, match="index space"):
        m.fit(train, other)


def test_interface(data):
    m = AutoRecMXNet.from_params({"hidden": [6], "epochs": 1})
    assert isinstance(m, Recommender)
    assert m.name == "autorec" and m.backend == "mxnet"
    assert m.params() == AutoRecConfig(hidden=(6,), epochs=1).to_dict()
    assert AutoRecMXNet(AutoRecConfig(hidden=(6,)), epochs=2).config.epochs == 2
    assert "AutoRecMXNet(" in repr(m)


def test_threads_set_at_construction_and_fit(data, monkeypatch):
    from autorec import env
    calls = []
    monkeypatch.setattr(env, "set_threads", lambda n=None: calls.append(n) or 1)
    m = AutoRecMXNet(hidden=(4,), epochs=1, threads=1)
    m.fit(data[0])
    assert calls == [1, 1]
