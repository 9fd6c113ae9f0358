"""Baselines (``baselines/``): every model learns, ALS is exact and deterministic, bias-only is the
closed form, D2L-MF is the same in PyTorch and MXNet, surprise is surprise, bad params and missing
optional dependencies fail clearly, and the registry is lazy."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import baselines
from autorec.errors import ConfigError, DataError, MissingDependencyError
from autorec.interactions import Interactions
from autorec.metrics import evaluate
from baselines._common import NotFittedError, scatter_add


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


HAS_TORCH, HAS_MXNET, HAS_SURPRISE = has_module("torch"), has_module("mxnet"), has_module("surprise")
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch not installed (pip install .[torch])")
needs_mxnet = pytest.mark.skipif(not HAS_MXNET, reason="mxnet not installed (pip install .[mxnet])")
needs_surprise = pytest.mark.skipif(not HAS_SURPRISE, reason="scikit-surprise not installed (pip install .[surprise])")


def learnable(n_users=150, n_items=90, density=0.3, rank=3, noise=0.25, seed=0):
    """Ratings on 1..5 from biases + a rank-``rank`` interaction + noise, split 80/10/10 (every
    pair unique).  A bias model beats the mean here and a latent model beats the bias model."""
    rng = np.random.default_rng(seed)
    n = int(n_users * n_items * density)
    keys = rng.choice(n_users * n_items, size=n, replace=False)
    u, i = keys // n_items, keys % n_items
    bu, bi = rng.normal(0, 0.4, n_users), rng.normal(0, 0.4, n_items)
    p, q = rng.normal(0, 0.7, (n_users, rank)), rng.normal(0, 0.7, (n_items, rank))
    r = 3.4 + bu[u] + bi[i] + np.einsum("nk,nk->n", p[u], q[i]) + rng.normal(0, noise, n)
    r = np.clip(np.round(r), 1, 5).astype(np.float32)
    perm = rng.permutation(n)
    cut1, cut2 = int(0.8 * n), int(0.9 * n)

    def part(ix):
        ix = np.sort(ix)
        return Interactions(u[ix].astype(np.int32), i[ix].astype(np.int32), r[ix], n_users, n_items, (1.0, 5.0))

    return SimpleNamespace(train=part(perm[:cut1]), valid=part(perm[cut1:cut2]), test=part(perm[cut2:]))


@pytest.fixture(scope="module")
def data():
    return learnable()


def _test_rmse(model, d):
    return evaluate(model, d.train, d.test)["rmse"]


# ------------------------------------------------------------------------------------------- learning
MODEL_CASES = [
    ("bias-only", "numpy", {}),
    ("als", "numpy", {"factors": 4, "reg": 0.05, "epochs": 15}),
    ("biased-mf", "numpy", {"factors": 8, "lr": 0.02, "reg": 0.02, "epochs": 60, "batch_size": 32}),
    pytest.param("biased-mf", "torch", {"factors": 8, "lr": 0.02, "reg": 0.01, "epochs": 60, "batch_size": 128},
                 marks=needs_torch),
    pytest.param("d2l-mf", "torch", {"lr": 0.02, "epochs": 40, "batch_size": 128}, marks=needs_torch),
    pytest.param("d2l-mf", "mxnet", {"lr": 0.02, "epochs": 40, "batch_size": 128},
                 marks=[needs_mxnet, pytest.mark.mxnet]),
    pytest.param("surprise-svd", "surprise", {"n_factors": 8, "n_epochs": 60, "lr_all": 0.01},
                 marks=needs_surprise),
    pytest.param("surprise-svdpp", "surprise", {"n_factors": 4, "n_epochs": 60, "lr_all": 0.01},
                 marks=needs_surprise),
]


@pytest.mark.parametrize("name,backend,params", MODEL_CASES)
def test_every_model_beats_global_mean(data, name, backend, params):
    base = baselines.get("global-mean")()
    base.fit(data.train, data.valid)
    floor = _test_rmse(base, data)
    model = baselines.get(name, backend).from_params(params)
    assert model.name == name and model.backend == backend
    info = model.fit(data.train, data.valid)
    got = _test_rmse(model, data)
    assert got < floor - 0.1, (name, backend, got, floor)
    assert info.epochs_run >= 1 and info.history
    for row in info.history:
        assert {"epoch", "train_loss", "valid_rmse", "seconds"} <= set(row)
        assert np.isfinite(row["train_loss"]) and row["valid_rmse"] is not None
    if name in ("als", "biased-mf", "surprise-svd", "surprise-svdpp"):
        bias = baselines.get("bias-only")()
        bias.fit(data.train, data.valid)
        assert got < _test_rmse(bias, data) - 0.05, "a latent model must beat the bias model on low-rank data"


def test_global_mean_predicts_train_mean(data):
    m = baselines.get("global-mean")()
    info = m.fit(data.train, data.valid)
    assert np.allclose(m.predict([0, 1], [2, 3]), data.train.global_mean)
    assert info.best_epoch == 1 and info.history[0]["valid_rmse"] == pytest.approx(
        evaluate(m, data.train, data.valid)["rmse"])


# ------------------------------------------------------------------------------------------- bias-only
def test_bias_only_equals_direct_least_squares():
    rng = np.random.default_rng(3)
    n_users, n_items = 6, 5
    keys = rng.choice(n_users * n_items, size=18, replace=False)
    u, i = (keys // n_items).astype(np.int32), (keys % n_items).astype(np.int32)
    r = rng.integers(1, 6, size=18).astype(np.float32)
    train = Interactions(u, i, r, n_users, n_items, (1.0, 5.0))
    reg_u, reg_i = 2.0, 3.0
    m = baselines.get("bias-only").from_params({"reg_user": reg_u, "reg_item": reg_i, "max_iter": 1000,
                                                "tol": 1e-13})
    m.fit(train)
    # min ||y - X b||^2 + b' L b with X = [user one-hot, item one-hot], y = r - mu: normal equations
    r = r.astype(np.float64)
    mu = r.mean()
    X = np.zeros((len(r), n_users + n_items))
    X[np.arange(len(r)), u] = 1
    X[np.arange(len(r)), n_users + i] = 1
    L = np.diag([reg_u] * n_users + [reg_i] * n_items)
    b = np.linalg.solve(X.T @ X + L, X.T @ (r - mu))
    assert m.mu == pytest.approx(mu)
    np.testing.assert_allclose(m.bu, b[:n_users], atol=1e-8)
    np.testing.assert_allclose(m.bi, b[n_users:], atol=1e-8)
    objs = [h["objective"] for h in m.fit(train).history]
    assert all(b2 <= a + 1e-12 for a, b2 in zip(objs, objs[1:]))


def test_bias_only_unrated_entities_stay_zero():
    train = Interactions(np.array([0, 0, 1], np.int32), np.array([0, 1, 0], np.int32),
                         np.array([5, 3, 4], np.float32), 4, 3, (1.0, 5.0))
    m = baselines.get("bias-only").from_params({"reg_user": 0.0, "reg_item": 0.0})
    m.fit(train)
    assert m.bu[2:].tolist() == [0.0, 0.0] and m.bi[2] == 0.0
    assert np.all(np.isfinite(m.predict([3], [2])))


# ------------------------------------------------------------------------------------------- ALS
def test_als_deterministic_per_seed(data):
    def run(seed):
        m = baselines.get("als").from_params({"factors": 5, "epochs": 4, "seed": seed})
        info = m.fit(data.train, data.valid)
        return m, info

    a, ia = run(7)
    b, ib = run(7)
    c, _ = run(8)
    for x, y in ((a.P, b.P), (a.Q, b.Q), (a.bu, b.bu), (a.bi, b.bi)):
        assert np.array_equal(x, y)
    assert [h["valid_rmse"] for h in ia.history] == [h["valid_rmse"] for h in ib.history]
    assert not np.allclose(a.P, c.P)


@pytest.mark.parametrize("weighted", [True, False])
def test_als_objective_decreases_every_half_sweep(data, weighted):
    m = baselines.get("als").from_params({"factors": 6, "epochs": 8, "patience": None, "weighted_reg": weighted,
                                          "reg": 0.1 if weighted else 3.0, "reg_bias": 0.01})
    info = m.fit(data.train, data.valid)
    assert info.epochs_run == 8
    seq = [obj for pair in m._objectives for obj in pair]
    assert all(b <= a * (1 + 1e-10) for a, b in zip(seq, seq[1:])), seq
    assert seq[-1] < seq[0]
    assert info.history[-1]["objective"] == pytest.approx(m.objective(data.train))


def test_als_half_step_is_the_exact_minimiser(data):
    """After a user step, each user's [b_u, p_u] solves its own ridge problem (checked for 3 users
    with a plain np.linalg.lstsq on the augmented system)."""
    m = baselines.get("als").from_params({"factors": 3, "epochs": 1, "reg": 0.2, "reg_bias": 0.05})
    m.fit(data.train)
    from baselines.als import _Rows, _solve_side
    t = data.train
    side = _Rows(t.users.astype(np.int64), t.items.astype(np.int64), t.ratings.astype(np.float64),
                 t.n_users, 4, chunk_mb=0.01)  # tiny blocks: exercises the chunking
    P, bu = _solve_side(side, m.Q, m.bi, m.mu, 0.2, 0.05, True)
    for user in (0, 5, 17):
        sel = t.users == user
        z = np.c_[np.ones(sel.sum()), m.Q[t.items[sel]]]
        y = t.ratings[sel].astype(np.float64) - m.mu - m.bi[t.items[sel]]
        lam = np.sqrt(sel.sum() * np.array([0.05, 0.2, 0.2, 0.2]))
        sol = np.linalg.lstsq(np.r_[z, np.diag(lam)], np.r_[y, np.zeros(4)], rcond=None)[0]
        np.testing.assert_allclose(np.r_[bu[user], P[user]], sol, atol=1e-8)


def test_early_stopping_keeps_the_best_epoch(data):
    m = baselines.get("biased-mf", "numpy").from_params({"factors": 20, "lr": 0.05, "reg": 0.0, "epochs": 40,
                                                         "patience": 3, "batch_size": 16})
    info = m.fit(data.train, data.valid)
    v = [h["valid_rmse"] for h in info.history]
    assert info.best_epoch == int(np.argmin(v)) + 1
    assert info.epochs_run < 40, "unregularised big-lr SGD overfits, patience must stop it"
    assert evaluate(m, data.train, data.valid)["rmse"] == pytest.approx(min(v))


def test_sgd_minibatch_label_and_sequential_path(data):
    seq = baselines.get("biased-mf", "numpy").from_params({"factors": 4, "epochs": 2, "batch_size": 1})
    assert "sequential" in seq.params()["algorithm"]
    assert "minibatch" in baselines.get("biased-mf", "numpy")().params()["algorithm"]
    info = seq.fit(data.train, data.valid)
    assert info.epochs_run == 2 and info.history[1]["train_loss"] < info.history[0]["train_loss"]


def test_scatter_add_matches_add_at(rng):
    idx = rng.integers(0, 7, size=50)
    vals = rng.normal(size=(50, 3))
    a, b = np.zeros((7, 3)), np.zeros((7, 3))
    np.add.at(a, idx, vals)
    scatter_add(b, idx, vals)
    np.testing.assert_allclose(a, b)


# ------------------------------------------------------------------------------------------- D2L-MF
@needs_torch
@needs_mxnet
@pytest.mark.mxnet
def test_d2l_mf_torch_mxnet_parity_one_epoch(data):
    params = {"epochs": 1, "batch_size": 64, "seed": 3}
    rng = np.random.default_rng(0)
    t = data.train
    init = {"P": rng.normal(0, 0.01, (t.n_users, 30)), "Q": rng.normal(0, 0.01, (t.n_items, 30)),
            "user_bias": rng.normal(0, 0.01, t.n_users), "item_bias": rng.normal(0, 0.01, t.n_items)}
    mx_model = baselines.get("d2l-mf", "mxnet").from_params(params)
    th_model = baselines.get("d2l-mf", "torch").from_params(params)
    ia = mx_model.fit(t, data.valid, initial_weights=init)
    ib = th_model.fit(t, data.valid, initial_weights=init)
    wa, wb = mx_model.get_weights(), th_model.get_weights()
    for k in init:
        moved = np.abs(wa[k] - init[k]).max()
        assert moved > 1e-3, f"{k} did not train"
        np.testing.assert_allclose(wa[k], wb[k], atol=2e-5, err_msg=k)
    assert ia.history[0]["train_loss"] == pytest.approx(ib.history[0]["train_loss"], rel=1e-4)
    pa = mx_model.predict(data.test.users, data.test.items)
    pb = th_model.predict(data.test.users, data.test.items)
    np.testing.assert_allclose(pa, pb, atol=1e-4)


@needs_mxnet
@pytest.mark.mxnet
def test_d2l_mf_mxnet_two_contexts_equal_one(data):
    one = baselines.get("d2l-mf", "mxnet").from_params({"epochs": 2, "batch_size": 101})
    two = baselines.get("d2l-mf", "mxnet").from_params({"epochs": 2, "batch_size": 101,
                                                        "devices": ["cpu(0)", "cpu(1)"]})
    one.fit(data.train)
    two.fit(data.train)
    for k, v in one.get_weights().items():
        np.testing.assert_allclose(v, two.get_weights()[k], atol=1e-6)


@needs_torch
def test_d2l_mf_defaults_are_the_chapter(data):
    m = baselines.get("d2l-mf", "torch")()
    p = m.params()
    assert (p["factors"], p["lr"], p["wd"], p["epochs"], p["batch_size"], p["init_std"]) == \
        (30, 0.002, 1e-5, 20, 512, 0.01)
    assert p["patience"] is None
    m2 = baselines.get("d2l-mf", "torch").from_params({"epochs": 2})
    info = m2.fit(data.train, data.valid)
    assert info.best_epoch == 2, "without patience D2L keeps the last weights"
    w = m2.get_weights()
    assert set(w) == {"P", "Q", "user_bias", "item_bias"} and w["P"].shape == (data.train.n_users, 30)
    assert not hasattr(m2, "mu"), "D2L's MF has no global mean"


@needs_torch
@pytest.mark.parametrize("name", ["biased-mf", "d2l-mf"])
def test_torch_models_on_each_device(data, device, name):
    params = {"epochs": 2, "batch_size": 256, "factors": 8}
    ref = baselines.get(name, "torch").from_params(params)
    ref.fit(data.train, data.valid)
    m = baselines.get(name, "torch").from_params({**params, "devices": [device]})
    info = m.fit(data.train, data.valid)
    assert str(m.device).startswith(device) and info.epochs_run == 2
    np.testing.assert_allclose(m.predict(data.test.users, data.test.items),
                               ref.predict(data.test.users, data.test.items), atol=1e-4)


@needs_torch
def test_torch_bad_device_is_a_config_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        baselines.get("biased-mf", "torch").from_params({"devices": ["cuda:0"]})
    with pytest.raises(ConfigError, match="not a torch device"):
        baselines.get("d2l-mf", "torch").from_params({"devices": ["tpu"]})
    with pytest.raises(ConfigError, match="one device"):
        baselines.get("d2l-mf", "torch").from_params({"devices": ["cpu", "cpu"]})


# ------------------------------------------------------------------------------------------- surprise
@needs_surprise
def test_surprise_svd_equals_direct_call(data):
    import pandas as pd
    import surprise
    t = data.train
    ours = baselines.get("surprise-svd").from_params({"seed": 5})
    ours.fit(t, data.valid)
    df = pd.DataFrame({"u": t.users.astype(np.int64), "i": t.items.astype(np.int64), "r": t.ratings.astype(float)})
    ts = surprise.Dataset.load_from_df(df, surprise.Reader(rating_scale=(1, 5))).build_full_trainset()
    algo = surprise.SVD(random_state=5)
    algo.fit(ts)
    warm = t.known_users()[data.test.users] & t.known_items()[data.test.items]
    tu, ti = data.test.users[warm], data.test.items[warm]
    direct = np.array([algo.predict(int(a), int(b), clip=False).est for a, b in zip(tu, ti)])
    np.testing.assert_allclose(ours.predict(tu, ti), direct, atol=1e-6)
    direct_rmse = surprise.accuracy.rmse([algo.predict(int(a), int(b), r_ui=float(r)) for a, b, r in
                                          zip(tu, ti, data.test.ratings[warm])], verbose=False)
    got = evaluate(ours, t, Interactions(tu, ti, data.test.ratings[warm], t.n_users, t.n_items, (1.0, 5.0)))
    assert got["rmse"] == pytest.approx(direct_rmse, abs=1e-6)
    # the vectorised SVD estimate equals surprise's own estimate (the generic path)
    from baselines.surprise_models import _SurpriseModel
    iu, ii = ours._inner(tu, ti)
    np.testing.assert_allclose(ours._estimate(iu, ii), _SurpriseModel._estimate(ours, iu, ii), atol=1e-12)


@needs_surprise
@pytest.mark.realdata
def test_surprise_svd_default_equals_direct_call_on_ml100k(ml100k_dir, tmp_path):
    import surprise
    from autorec.splits import load_split
    from baselines.surprise_models import trainset_from
    d = load_split("ml-100k", "random", seed=0, data_dir=ml100k_dir, cache_dir=tmp_path)
    ours = baselines.get("surprise-svd")()
    ours.fit(d.train, d.valid)
    algo = surprise.SVD(random_state=0)
    algo.fit(trainset_from(d.train))
    warm = d.train.known_users()[d.test.users] & d.train.known_items()[d.test.items]
    tu, ti, tr = d.test.users[warm], d.test.items[warm], d.test.ratings[warm]
    preds = [algo.predict(int(a), int(b), r_ui=float(r)) for a, b, r in zip(tu, ti, tr)]
    direct_rmse = surprise.accuracy.rmse(preds, verbose=False)
    ours_rmse = evaluate(ours, d.train, Interactions(tu, ti, tr, d.train.n_users, d.train.n_items,
                                                     d.train.rating_scale))["rmse"]
    assert ours_rmse == pytest.approx(direct_rmse, abs=1e-6)
    raw = [algo.predict(int(a), int(b), clip=False).est for a, b in zip(tu, ti)]
    np.testing.assert_allclose(ours.predict(tu, ti), raw, atol=1e-6)  # raw scores (clipping is downstream)
    np.testing.assert_allclose(np.clip(ours.predict(tu, ti), 1, 5), [p.est for p in preds], atol=1e-6)
    assert 0.90 < direct_rmse < 0.97


# ------------------------------------------------------------------------------------------- params
ALL = [(n, b) for n in baselines.MODELS for b in baselines.MODELS[n]]
AVAILABLE = {"numpy": True, "torch": HAS_TORCH, "mxnet": HAS_MXNET, "surprise": HAS_SURPRISE}


@pytest.mark.parametrize("name,backend", ALL)
def test_invalid_params_are_config_errors(name, backend):
    if not AVAILABLE[backend]:
        pytest.skip(f"{backend} not installed")
    cls = baselines.get(name, backend)
    with pytest.raises(ConfigError, match="unknown parameter"):
        cls.from_params({"no_such_knob": 1})
    with pytest.raises(ConfigError, match="mapping"):
        cls.from_params([("a", 1)])
    table = cls.PARAMS
    for key in ("factors", "n_factors"):
        if key in table:
            with pytest.raises(ConfigError, match=f"{key}=0 must be > 0"):
                cls.from_params({key: 0})
            with pytest.raises(ConfigError, match="integer"):
                cls.from_params({key: 2.5})
            with pytest.raises(ConfigError, match="integer"):
                cls.from_params({key: True})
    for key in ("reg", "reg_user", "reg_all", "wd"):
        if key in table:
            with pytest.raises(ConfigError, match=">= 0"):
                cls.from_params({key: -0.1})
            with pytest.raises(ConfigError, match="number"):
                cls.from_params({key: "0.1"})
    if "lr" in table:
        with pytest.raises(ConfigError, match="> 0"):
            cls.from_params({"lr": 0})
        with pytest.raises(ConfigError, match="finite"):
            cls.from_params({"lr": float("nan")})
    with pytest.raises(ConfigError, match="cold_start"):
        cls.from_params({"cold_start": "median"})
    model = cls()
    again = cls.from_params(model.params())  # params() round-trips, derived keys included
    assert again.params() == model.params()
    if "algorithm" in model.params():
        with pytest.raises(ConfigError, match="derived"):
            cls.from_params({"algorithm": "something else"})


def test_param_coercion_accepts_numpy_scalars():
    m = baselines.get("als").from_params({"factors": np.int64(4), "reg": np.float64(0.5), "weighted_reg": np.bool_(False)})
    assert m.p["factors"] == 4 and type(m.p["factors"]) is int
    assert type(m.p["reg"]) is float and m.p["weighted_reg"] is False
    assert baselines.get("als").from_params({"factors": 8.0}).p["factors"] == 8


def test_predict_before_fit_and_bad_indices(data):
    m = baselines.get("als").from_params({"factors": 2, "epochs": 1})
    with pytest.raises(NotFittedError, match="fit"):
        m.predict([0], [0])
    m.fit(data.train)
    with pytest.raises(DataError, match="user index out of range"):
        m.predict([data.train.n_users], [0])
    with pytest.raises(DataError, match="item index out of range"):
        m.predict([0], [-1])
    with pytest.raises(DataError, match="2 users but 1 items"):
        m.predict([0, 1], [0])


def test_bad_train_data(data):
    m = baselines.get("bias-only")()
    empty = Interactions(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32), 3, 3, (1.0, 5.0))
    with pytest.raises(DataError, match="empty"):
        m.fit(empty)
    nan = Interactions(np.array([0], np.int32), np.array([0], np.int32), np.array([np.nan], np.float32), 3, 3,
                       (1.0, 5.0))
    with pytest.raises(DataError, match="NaN"):
        m.fit(nan)
    other = Interactions(np.array([0], np.int32), np.array([0], np.int32), np.array([3.0], np.float32), 3, 3,
                         (1.0, 5.0))
    with pytest.raises(DataError, match="same split"):
        m.fit(data.train, other)


def test_divergence_is_reported(data):
    from autorec.errors import TrainingDivergedError
    m = baselines.get("biased-mf", "numpy").from_params({"lr": 5.0, "epochs": 5, "batch_size": 256})
    with np.errstate(all="ignore"), pytest.raises(TrainingDivergedError, match="epoch"):
        m.fit(data.train, data.valid)


# ------------------------------------------------------------------------------------------- optional deps
@pytest.mark.parametrize("name,backend,module,extra", [
    ("biased-mf", "torch", "torch", "torch"),
    ("d2l-mf", "torch", "torch", "torch"),
    ("d2l-mf", "mxnet", "mxnet", "mxnet"),
    ("surprise-svd", "surprise", "surprise", "surprise"),
    ("surprise-svdpp", "surprise", "surprise", "surprise"),
])
def test_missing_optional_dependency_message(monkeypatch, name, backend, module, extra):
    cls = baselines.get(name, backend)  # importing the class never needs the framework
    monkeypatch.setitem(sys.modules, module, None)  # any `import module` now raises ImportError
    with pytest.raises(MissingDependencyError) as err:
        cls()
    assert f"pip install .[{extra}]" in str(err.value) and name in str(err.value)


def test_importing_baselines_imports_no_framework():
    code = ("import sys, baselines; "
            "[baselines.get(n, b) for n in baselines.MODELS for b in baselines.MODELS[n]]; "
            "bad = [m for m in ('torch', 'mxnet', 'surprise') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------------------------------- registry
def test_registry():
    assert baselines.names() == sorted(baselines.MODELS)
    assert {"global-mean", "bias-only", "als", "biased-mf", "d2l-mf", "surprise-svd", "surprise-svdpp"} \
        <= set(baselines.MODELS)
    assert baselines.default_backend("d2l-mf") == "torch"
    assert baselines.backends("biased-mf") == ["numpy", "torch"]
    for name, entry in baselines.MODELS.items():
        for backend in entry:
            cls = baselines.get(name, backend)
            assert cls.name == name and cls.backend == backend
            assert callable(cls.from_params)
    assert baselines.get("als") is baselines.get("als", "numpy")
    with pytest.raises(ConfigError, match=r"unknown baseline model 'svd'.*als.*bias-only"):
        baselines.get("svd")
    with pytest.raises(ConfigError, match=r"no backend 'jax'.*\['torch', 'mxnet'\]"):
        baselines.get("d2l-mf", "jax")
