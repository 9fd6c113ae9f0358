"""PyTorch vs MXNet AutoRec: the same config, initial weights and batch order train the same model.

Tolerances (float32, dropout 0 so that no RNG is involved):

- per-batch objective: relative 1e-5.  Both frameworks compute the same float32 sums (matmuls of
  up to ``n_in`` terms, the squared-error sum over the batch) in different orders (MKL/oneDNN vs
  torch's kernels, a masked dense matmul vs gathered row-wise dots), which differ by a few ulp per
  sum, i.e. ~1e-7 relative; over one epoch of steps these differences feed back through the
  weights.  Measured: at most 8.4e-7 over the 16 cases of the main test.
- final weights: absolute 1e-5 for Adam (its update ``m / sqrt(v)`` is scale-free, so a gradient
  component that is nearly zero can move by a sizeable fraction of lr from rounding alone; measured
  at most 8.1e-7, weights of order 5e-2) and 1e-6 for SGD (measured at most 1.8e-7).

Adam parity needs the MXNet backend's ``extra["adam_epsilon"] = "torch"``: Gluon's own Adam adds
epsilon before the bias correction, torch after it (see :mod:`autorec.models.autorec.mxnet.optim`), which
changes the update of parameters with tiny gradients by up to ~70% early on;
:func:`test_gluon_adam_epsilon_placement_is_the_only_adam_difference` measures it.

The seed reproduction (``realdata``, ``slow``) trains the D2L configuration (``AutoRecConfig()``)
on ML-100K with the ``d2l-random`` split (seed 0) in both frameworks.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch not installed (pip install .[torch])")
pytest.importorskip("mxnet", reason="mxnet not installed (pip install .[mxnet])")

pytestmark = [pytest.mark.mxnet, pytest.mark.filterwarnings("ignore:Please import `csr_matrix`:DeprecationWarning")]

LOSS_RTOL = 1e-5
WEIGHT_ATOL = {"adam": 1e-5, "sgd": 1e-6}


@pytest.fixture(scope="module")
def backends():
    torch_mod = pytest.importorskip("autorec.models.autorec.torch")
    mx_mod = pytest.importorskip("autorec.models.autorec.mxnet")
    from autorec import env

    env.set_threads(None)  # after both frameworks are imported
    return torch_mod.AutoRecTorch, mx_mod.AutoRecMXNet


@pytest.fixture(scope="module")
def data():
    from autorec.data.synthetic import generate
    from autorec.splits import make_split

    r = generate(140, 90, 4500, seed=11)
    sd = make_split(r, "random:test_ratio=0.1", seed=0, valid_ratio=0.0).data(r)
    return sd.train, sd.test


def _start_weights(n_in: int, hidden: tuple[int, ...], seed: int = 5) -> dict[str, np.ndarray]:
    """Initial weights that neither backend's init would draw (so set_weights is what sets them)."""
    rng = np.random.default_rng(seed)
    sizes = [n_in, *hidden, n_in]
    out = {}
    for k in range(len(sizes) - 1):
        out[f"W{k}"] = rng.normal(0, 0.05, size=(sizes[k + 1], sizes[k])).astype(np.float32)
        out[f"b{k}"] = rng.normal(0, 0.05, size=(sizes[k + 1],)).astype(np.float32)
    return out


def _one_epoch(cls, cfg: dict, train, start, extra: dict):
    model = cls({**cfg, "extra": {"record_batch_losses": True, **extra}})
    info = model.fit(train, initial_weights=start)
    return np.array(info.history[0]["batch_losses"]), model.get_weights(), info


CASES = [
    (based, opt, reg_form) for based in ("item", "user") for opt in ("adam", "sgd") for reg_form in ("wd", "paper")
]


@pytest.mark.parametrize("loss", ["d2l", "observed-mean"])
@pytest.mark.parametrize("based,optimizer,reg_form", CASES)
def test_one_epoch_same_losses_and_weights(backends, data, based, optimizer, reg_form, loss):
    AutoRecTorch, AutoRecMXNet = backends
    train = data[0]
    lr = {"adam": 0.002, "sgd": {"d2l": 10.0, "observed-mean": 0.5}[loss]}[optimizer]
    cfg = dict(
        based=based,
        hidden=(16,),
        dropout=0.0,
        epochs=1,
        batch_size=16,
        optimizer=optimizer,
        lr=lr,
        loss=loss,
        reg_form=reg_form,
        reg=0.01 if reg_form == "paper" else 1e-3,
        seed=2,
    )
    n_in = train.n_users if based == "item" else train.n_items
    start = _start_weights(n_in, (16,))
    lt, wt, it = _one_epoch(AutoRecTorch, cfg, train, start, {})
    lm, wm, im = _one_epoch(AutoRecMXNet, cfg, train, start, {"adam_epsilon": "torch"} if optimizer == "adam" else {})
    n_rows = train.n_items if based == "item" else train.n_users
    assert len(lt) == len(lm) == -(-n_rows // 16)
    np.testing.assert_allclose(lm, lt, rtol=LOSS_RTOL)
    assert it.history[0]["train_loss"] == pytest.approx(im.history[0]["train_loss"], rel=LOSS_RTOL)
    moved = 0.0
    for k in wt:
        np.testing.assert_allclose(wm[k], wt[k], rtol=0, atol=WEIGHT_ATOL[optimizer], err_msg=k)
        moved = max(moved, float(np.abs(wt[k] - start[k]).max()))
    assert moved > 50 * WEIGHT_ATOL[optimizer]  # the epoch really changed the weights


@pytest.mark.parametrize("act", ["sigmoid", "relu", "tanh", "elu", "selu"])
def test_every_activation_trains_alike_across_frameworks(backends, data, act):
    """The gradients too, not only the forward values: MXNet's own selu backward is wrong for
    negative inputs (the block computes selu as scale * elu)."""
    AutoRecTorch, AutoRecMXNet = backends
    train = data[0]
    cfg = dict(hidden=(12, 6), hidden_activation=act, output_activation="identity", dropout=0.0, epochs=1,
               batch_size=20, loss="observed-mean", optimizer="sgd", lr=0.5, reg=0.0, path="sparse")  # fmt: skip
    start = _start_weights(train.n_users, (12, 6), seed=5)
    start["b0"] -= 1.0  # many negative pre-activations, where elu and selu bend
    lt, wt, _ = _one_epoch(AutoRecTorch, cfg, train, start, {})
    lm, wm, _ = _one_epoch(AutoRecMXNet, cfg, train, start, {})
    np.testing.assert_allclose(lm, lt, rtol=LOSS_RTOL)
    for k in wt:  # selu's weights move by up to 30 here: float rounding scales with them
        atol = WEIGHT_ATOL["sgd"] * max(1.0, float(np.abs(wt[k]).max()))
        np.testing.assert_allclose(wm[k], wt[k], rtol=0, atol=atol, err_msg=k)
    assert np.abs(wt["W0"] - start["W0"]).max() > 1e-2  # the epoch really trained the first layer


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_deep_stack_and_paths_agree_across_frameworks(backends, data, path):
    AutoRecTorch, AutoRecMXNet = backends
    train = data[0]
    cfg = dict(
        hidden=(12, 6, 12),
        hidden_activation="elu",
        output_activation="identity",
        dropout=0.0,
        epochs=1,
        batch_size=20,
        loss="observed-sum",
        lr=0.002,
        reg_form="paper",
        reg=0.1,
        path=path,
    )
    start = _start_weights(train.n_users, (12, 6, 12), seed=9)
    lt, wt, _ = _one_epoch(AutoRecTorch, cfg, train, start, {})
    lm, wm, _ = _one_epoch(AutoRecMXNet, cfg, train, start, {"adam_epsilon": "torch"})
    np.testing.assert_allclose(lm, lt, rtol=LOSS_RTOL)
    for k in wt:
        np.testing.assert_allclose(wm[k], wt[k], rtol=0, atol=WEIGHT_ATOL["adam"], err_msg=k)


def test_gluon_adam_epsilon_placement_is_the_only_adam_difference(backends, data):
    """With Gluon's own Adam (the default, as D2L trains) the losses still agree closely, but the
    weights of parameters with tiny gradients move differently: the gap is far above float32 noise
    and vanishes with torch's epsilon placement."""
    AutoRecTorch, AutoRecMXNet = backends
    train = data[0]
    cfg = dict(based="item", hidden=(16,), dropout=0.0, epochs=1, batch_size=16, lr=0.002, reg=1e-3)
    start = _start_weights(train.n_users, (16,))
    lt, wt, _ = _one_epoch(AutoRecTorch, cfg, train, start, {})
    lg, wg, _ = _one_epoch(AutoRecMXNet, cfg, train, start, {})
    _, we, _ = _one_epoch(AutoRecMXNet, cfg, train, start, {"adam_epsilon": "torch"})
    np.testing.assert_allclose(lg, lt, rtol=1e-3)
    gap_gluon = max(float(np.abs(wg[k] - wt[k]).max()) for k in wt)
    gap_torch = max(float(np.abs(we[k] - wt[k]).max()) for k in wt)
    assert gap_torch < WEIGHT_ATOL["adam"] < 10 * WEIGHT_ATOL["adam"] < gap_gluon


def test_same_initial_weights_from_the_same_seed(backends, data):
    AutoRecTorch, AutoRecMXNet = backends
    train = data[0]
    for init in ("normal", "uniform", "xavier"):
        cfg = dict(hidden=(8,), init=init, epochs=1, lr=1e-12, seed=4)
        t, m = AutoRecTorch(cfg), AutoRecMXNet(cfg)
        t.fit(train)
        m.fit(train)
        for k, v in t.get_weights().items():
            np.testing.assert_allclose(m.get_weights()[k], v, atol=1e-8, err_msg=f"{init} {k}")


def test_a_saved_model_loads_in_the_other_backend(backends, data, tmp_path):
    AutoRecTorch, AutoRecMXNet = backends
    train, test = data
    m = AutoRecMXNet(hidden=(8,), epochs=2, batch_size=32)
    m.fit(train)
    m.save(tmp_path / "m.npz")
    t = AutoRecTorch.load(tmp_path / "m.npz")
    np.testing.assert_allclose(
        t.predict(test.users, test.items), m.predict(test.users, test.items), rtol=1e-5, atol=1e-5
    )
    # the main job's torch setting (native sparse kernels, fused Adam) loads in MXNet: those knobs
    # say how torch trained, and are left out with a warning
    fused = AutoRecTorch(hidden=(8,), epochs=2, batch_size=32, path="sparse",
                         extra={"sparse_kernel": "native", "fused_step": True})  # fmt: skip
    fused.fit(train)
    fused.save(tmp_path / "t.npz")
    with pytest.warns(UserWarning, match=r"\['fused_step', 'sparse_kernel'\] have no meaning in the mxnet backend"):
        back = AutoRecMXNet.load(tmp_path / "t.npz")
    assert back.config.extra == {}
    np.testing.assert_allclose(
        back.predict(test.users, test.items), fused.predict(test.users, test.items), rtol=1e-5, atol=1e-5
    )


@pytest.mark.realdata
@pytest.mark.slow
def test_d2l_seed_reproduced_in_both_frameworks(backends, ml100k_dir, tmp_path):
    """The D2L chapter's I-AutoRec (AutoRecConfig() defaults: hidden 500, sigmoid, dropout 0.05,
    Adam lr 0.002 wd 1e-5, 25 epochs, batch 256; MXNet with Gluon's Adam as the chapter) on ML-100K
    split as D2L does (``d2l-random``, seed 0, 90/10, no validation carved out): both frameworks
    land within 0.02 test RMSE of each other."""
    from autorec.models.autorec import AutoRecConfig
    from autorec.splits import load_split

    AutoRecTorch, AutoRecMXNet = backends
    sd = load_split("ml-100k", "d2l-random", seed=0, valid_ratio=0.0, data_dir=ml100k_dir, cache_dir=tmp_path)
    results = {}
    for cls in (AutoRecMXNet, AutoRecTorch):
        model = cls(AutoRecConfig())
        model.fit(sd.train)
        ev = model.evaluate(sd.test)
        raw = model.estimate(sd.test.users, sd.test.items)  # D2L's evaluator: no clipping, no cold fill
        results[cls.backend] = (ev["rmse"], float(np.sqrt(np.mean((raw - sd.test.ratings) ** 2))))
    print("\nD2L I-AutoRec on ML-100K d2l-random seed 0, test RMSE (clipped+cold policy, D2L-style raw):", results)
    (mx_rmse, mx_raw), (t_rmse, t_raw) = results["mxnet"], results["torch"]
    assert abs(mx_rmse - t_rmse) < 0.02 and abs(mx_raw - t_raw) < 0.02
    base = float(np.sqrt(np.mean((sd.test.ratings - sd.train.global_mean) ** 2)))
    for v in (mx_rmse, t_rmse):
        assert 0.80 < v < base - 0.1
