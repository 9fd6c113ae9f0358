"""What only the MXNet AutoRec does: several contexts in one process (kvstore aggregation, identical
replicas), the sparse encoder without storage fallback, Gluon's initialisation, the backend's own
knobs.  What both backends do is tests/test_autorec_backends.py."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from autorec.errors import ConfigError  # noqa: E402
from autorec.models.autorec.mxnet import AutoRecMXNet  # noqa: E402
from autorec.models.autorec.mxnet.model import split_sizes  # noqa: E402
from tests.synthetic_parts import learnable  # noqa: E402

pytestmark = [
    pytest.mark.mxnet,
    # mxnet 1.9.1's nd.array checks `scipy.sparse.csr.csr_matrix` (deprecated scipy path)
    pytest.mark.filterwarnings("ignore:Please import `csr_matrix`:DeprecationWarning"),
]

TWO = ("cpu(0)", "cpu(1)")


@pytest.fixture(scope="module")
def data():
    return learnable()


_FALLBACK_SCRIPT = r"""
import numpy as np, sys
import mxnet as mx
from mxnet import autograd, nd
from autorec.data.synthetic import generate
from autorec.interactions import Interactions
from autorec.models.autorec.mxnet import AutoRecMXNet
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
    trains and predicts (I- and U-AutoRec); the control, ``dot(csr, W, transpose_b=True)``, does
    fall back (the reason for the encoder's form, see autorec.models.autorec.mxnet.block)."""
    env = {**os.environ, "MXNET_STORAGE_FALLBACK_LOG_VERBOSE": "1", "OMP_NUM_THREADS": "1"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", _FALLBACK_SCRIPT], capture_output=True, text=True, env=env, cwd=root, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    before, _, control = out.stderr.partition("=== control ===")
    assert "Storage type fallback" not in before, before[-3000:]
    assert "Storage type fallback" in control and "operator = dot" in control


# ====================================================================== several contexts
def test_split_sizes_match_gluon_split_and_load():
    for n, k in [(10, 2), (11, 2), (7, 3), (1, 2), (256, 2)]:
        if n >= k:
            ctxs = [mx.cpu(i) for i in range(k)]
            parts = mx.gluon.utils.split_and_load(np.zeros((n, 2), np.float32), ctxs, even_split=False)
            assert [p.shape[0] for p in parts] == split_sizes(n, k)
        assert sum(split_sizes(n, k)) == n


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_two_cpu_contexts_identical_replicas_and_same_rmse(data, path):
    # 90 rows of I-AutoRec with batch 89: the last batch has 1 row, fewer than the contexts
    cfg = dict(hidden=(24,), epochs=12, lr=0.01, loss="observed-mean", batch_size=89, path=path)
    one = AutoRecMXNet(cfg)
    one.fit(data.train)
    two = AutoRecMXNet({**cfg, "devices": TWO})
    info = two.fit(data.train)
    assert two.n_rows % 89 == 1
    assert info.extra["devices"] == list(TWO) and info.extra["kvstore"] == "device" and info.extra["world_size"] == 2
    r0, r1 = two.replica_weights()
    for k in r0:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
    assert abs(two.evaluate(data.test)["rmse"] - one.evaluate(data.test)["rmse"]) < 0.01


def test_two_contexts_with_dropout_and_local_kvstore(data):
    cfg = dict(hidden=(24,), epochs=10, lr=0.01, loss="observed-mean", batch_size=40, dropout=0.1)
    one = AutoRecMXNet(cfg)
    one.fit(data.train)
    two = AutoRecMXNet({**cfg, "devices": TWO, "extra": {"kvstore": "local"}})
    assert two.fit(data.train).extra["kvstore"] == "local"
    r0, r1 = two.replica_weights()
    for k in r0:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
    assert abs(two.evaluate(data.test)["rmse"] - one.evaluate(data.test)["rmse"]) < 0.01


def test_two_contexts_same_batch_losses_as_one_without_dropout(data):
    cfg = dict(hidden=(12,), epochs=2, batch_size=32, dropout=0.0, loss="d2l", extra={"record_batch_losses": True})
    h1 = AutoRecMXNet(cfg).fit(data.train).history
    h2 = AutoRecMXNet({**cfg, "devices": ("cpu", "cpu(1)")}).fit(data.train).history
    for a, b in zip(h1, h2):
        np.testing.assert_allclose(a["batch_losses"], b["batch_losses"], rtol=1e-5)


@pytest.mark.parametrize("extra", [{}, {"adam_epsilon": "torch"}])
def test_two_contexts_resume_equals_uninterrupted(data, tmp_path, extra):
    cfg = dict(hidden=(10,), epochs=4, batch_size=32, dropout=0.2, lr=0.01, devices=TWO, extra=extra)
    full = AutoRecMXNet(cfg)
    full.fit(data.train, data.valid)
    ck = tmp_path / "ck.npz"
    AutoRecMXNet({**cfg, "epochs": 2}).fit(data.train, data.valid, checkpoint=ck)
    resumed = AutoRecMXNet(cfg)
    info = resumed.fit(data.train, data.valid, resume=ck)
    assert info.extra["resumed_from_epoch"] == 2 and info.epochs_run == 4
    for k, v in full.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[k], v, err_msg=k)


def test_resume_on_more_contexts_keeps_the_replicas_identical(data, tmp_path):
    """A checkpoint written on one context, resumed on two: every replica takes the saved Adam step
    counts (the second had restarted at step 1, and its replica drifted 0.015 away)."""
    cfg = dict(hidden=(10,), epochs=4, batch_size=32, dropout=0.0, lr=0.01)
    full = AutoRecMXNet({**cfg, "devices": TWO})
    full.fit(data.train, data.valid)
    ck = tmp_path / "ck.npz"
    AutoRecMXNet({**cfg, "epochs": 2}).fit(data.train, data.valid, checkpoint=ck)
    resumed = AutoRecMXNet({**cfg, "devices": TWO})
    resumed.fit(data.train, data.valid, resume=ck)
    r0, r1 = resumed.replica_weights()
    for k in r0:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
    for k, v in full.get_weights().items():  # one context vs two differ by rounding only
        np.testing.assert_allclose(resumed.get_weights()[k], v, rtol=0, atol=1e-5, err_msg=k)


def test_saved_model_loads_on_other_contexts(data, tmp_path):
    m = AutoRecMXNet(hidden=(6,), epochs=1)
    m.fit(data.train)
    m.save(tmp_path / "m.npz")
    two = AutoRecMXNet.load(tmp_path / "m.npz", devices=TWO)
    assert [str(c) for c in two.contexts] == list(TWO)
    np.testing.assert_array_equal(
        two.predict(data.test.users, data.test.items), m.predict(data.test.users, data.test.items)
    )


@pytest.mark.parametrize(
    "devices,match",
    [
        (("gpu(0)",), "does not exist"),
        (("cuda:1",), "does not exist"),
        (("cpu(0)", "cpu"), "repeated"),
        (("cpu(0)", "gpu(0)"), "does not exist|mixing"),
    ],
)
def test_bad_contexts_rejected_up_front(devices, match):
    with pytest.raises(ConfigError, match=match):
        AutoRecMXNet(devices=devices)


def test_device_strings_and_launcher():
    assert [str(c) for c in AutoRecMXNet(devices=("cpu",)).contexts] == ["cpu(0)"]
    assert [str(c) for c in AutoRecMXNet(devices="cpu(0),cpu(2)").contexts] == ["cpu(0)", "cpu(2)"]
    assert AutoRecMXNet.launcher(list(TWO)) == "contexts" and AutoRecMXNet.launcher(["cpu"]) == "single"


# ====================================================================== the backend's own settings
def test_default_init_is_gluons(data):
    """``init="default"``: Gluon's Uniform(0.07) weights and zero biases, seeded by config.seed."""
    weights = []
    for _ in range(2):
        m = AutoRecMXNet(hidden=(20,), init="default", seed=1)
        m.make_trainer(data.train, None)
        weights.append(m.get_weights())
    w = weights[0]
    assert 0.05 < np.abs(w["W0"]).max() <= 0.07 and not w["b0"].any()
    np.testing.assert_array_equal(w["W0"], weights[1]["W0"])


@pytest.mark.parametrize(
    "params,match",
    [
        ({"optimizer": "rprop"}, "Gluon has no Rprop.*PyTorch backend"),
        ({"optimizer": "lbfgs"}, "Gluon has no L-BFGS.*PyTorch backend"),
        ({"extra": {"lbfgs_max_iter": 3}}, "unknown mxnet backend knob"),
        ({"extra": {"kvstore": "dist_sync"}}, "kvstore"),
        ({"extra": {"adam_epsilon": "keras"}}, "adam_epsilon"),
        ({"extra": {"sgd_momentum": 1.5}}, "sgd_momentum"),
        ({"extra": {"predict_batch_rows": 0}}, "predict_batch_rows"),
    ],
)
def test_mxnet_only_configs_rejected_up_front(params, match):
    with pytest.raises(ConfigError, match=match):
        AutoRecMXNet(params)


def test_threads_set_at_construction_and_fit(data, monkeypatch):
    from autorec.models.autorec import base
    from autorec.models.autorec.mxnet import model

    calls = []
    for module in (base, model):
        monkeypatch.setattr(module, "set_threads", lambda n=None, **kw: calls.append(n) or 1)
    AutoRecMXNet(hidden=(4,), epochs=1, threads=1).fit(data.train)
    assert calls == [1, 1]
