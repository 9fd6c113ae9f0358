"""Baselines (``baselines/``), what the generic contract test (tests/test_contract.py) does not
cover: every model learns (and latent models beat the bias model), bias-only is the closed form,
ALS is an exact block minimisation with a monotone objective, D2L-MF is the same in PyTorch and
MXNet, the surprise wrappers are scikit-surprise, checkpoints resume every trainer exactly, the
search spaces are valid configurations, and optional frameworks stay optional."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from autorec.errors import ConfigError, DataError, MissingDependencyError
from autorec.interactions import Interactions
from autorec.models import registry
from autorec.models.base import NotFittedError
from baselines import sgd
from baselines.als import RatingRows, solve_side
from baselines.sgd import ScatterPlan, scatter_add
from tests.conftest import exact_native, has_module, needs_mxnet, needs_myfm, needs_torch
from tests.synthetic_parts import learnable

needs_surprise = pytest.mark.skipif(not has_module("surprise"), reason="scikit-surprise not installed")
BASELINES = [
    (name, backend)
    for name in registry.names()
    for backend in registry.backends(name)
    if registry.MODELS[name][0][backend].startswith("baselines.")
]


def build(name, backend=None, **params):
    return registry.get(name, backend).build(params)


@pytest.fixture(scope="module")
def data():
    return learnable()


def _test_rmse(model, d):
    return model.evaluate(d.test)["rmse"]


# ------------------------------------------------------------------------------------------- learning
MODEL_CASES = [
    ("bias-only", "numpy", {}),
    ("als", "numpy", {"factors": 4, "reg": 0.05, "epochs": 15}),
    ("biased-mf", "numpy", {"factors": 8, "lr": 0.02, "reg": 0.02, "epochs": 60, "batch_size": 32}),
    pytest.param(
        "biased-mf",
        "torch",
        {"factors": 8, "lr": 0.02, "reg": 0.01, "epochs": 60, "batch_size": 128},
        marks=needs_torch,
    ),
    pytest.param("d2l-mf", "torch", {"lr": 0.02, "epochs": 40, "batch_size": 128}, marks=needs_torch),
    pytest.param(
        "d2l-mf", "mxnet", {"lr": 0.02, "epochs": 40, "batch_size": 128}, marks=[needs_mxnet, pytest.mark.mxnet]
    ),
    pytest.param("surprise-svd", "surprise", {"n_factors": 8, "n_epochs": 60, "lr_all": 0.01}, marks=needs_surprise),
    pytest.param("surprise-svdpp", "surprise", {"n_factors": 4, "n_epochs": 60, "lr_all": 0.01}, marks=needs_surprise),
]
LATENT = ("als", "biased-mf", "surprise-svd", "surprise-svdpp")


@pytest.mark.parametrize("name,backend,params", MODEL_CASES)
def test_every_model_beats_global_mean(data, name, backend, params):
    floor = build("global-mean")
    floor.fit(data.train, data.valid)
    model = build(name, backend, **params)
    model.fit(data.train, data.valid)
    got = _test_rmse(model, data)
    assert got < _test_rmse(floor, data) - 0.1, (name, backend, got)
    if name in LATENT:
        bias = build("bias-only")
        bias.fit(data.train, data.valid)
        assert got < _test_rmse(bias, data) - 0.05, "a latent model must beat the bias model on low-rank data"


def test_global_mean_predicts_train_mean(data):
    m = build("global-mean")
    m.fit(data.train, data.valid)
    assert np.allclose(m.predict([0, 1], [2, 3]), data.train.global_mean)


# ------------------------------------------------------------------------------------------- bias-only
def test_bias_only_equals_direct_least_squares():
    rng = np.random.default_rng(3)
    n_users, n_items = 6, 5
    keys = rng.choice(n_users * n_items, size=18, replace=False)
    u, i = (keys // n_items).astype(np.int32), (keys % n_items).astype(np.int32)
    r = rng.integers(1, 6, size=18).astype(np.float32)
    train = Interactions(u, i, r, n_users, n_items, (1.0, 5.0))
    reg_u, reg_i = 2.0, 3.0
    m = build("bias-only", reg_user=reg_u, reg_item=reg_i, epochs=1000, tol=1e-13)
    info = m.fit(train)
    assert info.extra["converged"]
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
    objs = [h["objective"] for h in info.history]
    assert all(b2 <= a + 1e-12 for a, b2 in zip(objs, objs[1:]))


def test_bias_only_unrated_entities_stay_zero():
    train = Interactions(
        np.array([0, 0, 1], np.int32), np.array([0, 1, 0], np.int32), np.array([5, 3, 4], np.float32), 4, 3, (1.0, 5.0)
    )
    m = build("bias-only", reg_user=0.0, reg_item=0.0)
    m.fit(train)
    assert m.bu[2:].tolist() == [0.0, 0.0] and m.bi[2] == 0.0
    assert np.all(np.isfinite(m.estimate(np.array([3]), np.array([2]))))


# ------------------------------------------------------------------------------------------- ALS
def test_als_seed_decides_the_initialisation(data):
    a, b = build("als", factors=5, epochs=4, seed=7), build("als", factors=5, epochs=4, seed=8)
    a.fit(data.train, data.valid)
    b.fit(data.train, data.valid)
    assert not np.allclose(a.P, b.P)


@pytest.mark.parametrize("weighted", [True, False])
def test_als_objective_decreases_every_half_sweep(data, weighted):
    reg = 0.1 if weighted else 3.0
    m = build("als", factors=6, epochs=8, patience=None, restore_best=False, weighted_reg=weighted, reg=reg)
    info = m.fit(data.train, data.valid)
    assert info.epochs_run == 8
    seq = [obj for h in info.history for obj in (h["objective_after_users"], h["objective"])]
    assert all(b <= a * (1 + 1e-10) for a, b in zip(seq, seq[1:])), seq
    assert seq[-1] < seq[0]
    assert info.history[-1]["objective"] == pytest.approx(m.objective(data.train))


def test_als_half_step_is_the_exact_minimiser(data):
    """After a user step, each user's [b_u, p_u] solves its own ridge problem (checked for 3 users
    with a plain np.linalg.lstsq on the augmented system)."""
    m = build("als", factors=3, epochs=1, reg=0.2, reg_bias=0.05)
    m.fit(data.train)
    t = data.train
    side = RatingRows(
        t.users.astype(np.int64), t.items.astype(np.int64), t.ratings.astype(np.float64), t.n_users, 4, chunk_mb=0.01
    )  # tiny blocks: exercises the chunking
    P, bu = solve_side(side, m.Q, m.bi, m.mu, 0.2, 0.05, True)
    for user in (0, 5, 17):
        sel = t.users == user
        z = np.c_[np.ones(sel.sum()), m.Q[t.items[sel]]]
        y = t.ratings[sel].astype(np.float64) - m.mu - m.bi[t.items[sel]]
        lam = np.sqrt(sel.sum() * np.array([0.05, 0.2, 0.2, 0.2]))
        sol = np.linalg.lstsq(np.r_[z, np.diag(lam)], np.r_[y, np.zeros(4)], rcond=None)[0]
        np.testing.assert_allclose(np.r_[bu[user], P[user]], sol, atol=1e-8)


# ------------------------------------------------------------------------------------------- SGD
def test_unregularised_sgd_overfits_and_patience_stops_it(data):
    m = build("biased-mf", "numpy", factors=20, lr=0.05, reg=0.0, epochs=40, patience=3, batch_size=16)
    info = m.fit(data.train, data.valid)
    assert info.epochs_run < 40 and info.extra["stopped_early"]
    assert info.weights_epoch == info.best_epoch < info.epochs_run


def test_sgd_sequential_path_trains(data):
    info = build("biased-mf", "numpy", factors=4, epochs=2, batch_size=1).fit(data.train, data.valid)
    assert info.epochs_run == 2 and info.history[1]["train_loss"] < info.history[0]["train_loss"]


def test_scatter_add_matches_add_at(rng):
    idx = rng.integers(0, 7, size=50)
    vals = rng.normal(size=(50, 3))
    a, b = np.zeros((7, 3)), np.zeros((7, 3))
    np.add.at(a, idx, vals)
    scatter_add(b, idx, vals)
    np.testing.assert_allclose(a, b)


def _reduceat_reference(target, index, values):
    """The arithmetic the committed biased-mf results were produced with: every group of a stable
    sort reduced by np.add.reduceat, added once."""
    if index.size == 0:
        return
    order = np.argsort(index, kind="stable")
    idx = index[order]
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    target[idx[starts]] += np.add.reduceat(values[order], starts, axis=0)


@pytest.mark.parametrize("width", [None, 1, 7, 450])
def test_scatter_plan_is_bit_identical_to_the_reduceat_arithmetic(rng, width):
    # heavy repeats (groups of 2..40, in 1-D the pairwise-summation sizes too), none, and empty
    for n, k in [(64, 3), (64, 40), (64, 1000), (200, 2), (1, 1), (0, 5)]:
        for _ in range(20):
            idx = rng.integers(0, k, size=n)
            shape = (n,) if width is None else (n, width)
            vals = rng.normal(size=shape) * 10.0 ** rng.integers(-8, 8, size=shape)
            a = rng.normal(size=(k,) + shape[1:])
            b = a.copy()
            _reduceat_reference(a, idx, vals)
            ScatterPlan(idx).add(b, vals)
            assert np.array_equal(a, b)


def test_scatter_plan_is_shared_by_arrays_with_one_index(rng):
    idx = np.array([3, 1, 3, 0, 3, 1])
    plan = ScatterPlan(idx)
    bias, factors = np.zeros(4), np.zeros((4, 2))
    plan.add(bias, np.arange(6.0))
    plan.add(factors, np.ones((6, 2)))
    np.testing.assert_array_equal(bias, [3.0, 6.0, 0.0, 6.0])
    np.testing.assert_array_equal(factors[:, 0], [1.0, 2.0, 0.0, 3.0])


# ----------------------------------------------------------------------- SGD: the C++ epoch
@pytest.fixture
def native_sgd():
    """The C++ epoch: it must compile where a compiler is found and reproduce this numpy (else the
    test fails; ``AUTOREC_SGD_NATIVE_MAY_DIFFER=1`` makes that a skip, and ``auto`` then trains with
    numpy, see ``test_sgd_auto_kernel_follows_the_self_check``)."""
    return exact_native(
        sgd.NATIVE,
        sgd.native_differs,
        may_differ="AUTOREC_SGD_NATIVE_MAY_DIFFER",
        reproduces=f"numpy {np.__version__}",
    )


@pytest.mark.parametrize(
    "params",
    [
        {"factors": 450, "batch_size": 64},  # the tuned ML-100K shape
        {"factors": 17, "batch_size": 250, "lr_bias": 0.03, "reg_bias": 0.2},  # groups > 8: pairwise sums
        {"factors": 1, "batch_size": 2, "biased": False, "shuffle": False},
        {"factors": 9, "batch_size": 33, "init_mean": 0.1},
        {"factors": 3, "batch_size": 10**6},  # one batch holds the whole epoch
    ],
)
@pytest.mark.parametrize("source", ["learnable", "heavy-repeats"])
def test_sgd_native_epoch_is_bitwise_the_numpy_loop(native_sgd, data, rng, params, source):
    """Same factors, biases, train losses and validation RMSEs, to the bit, epoch after epoch."""
    train, valid = (data.train, data.valid) if source == "learnable" else (sgd.random_ratings(rng, 9, 13, 700), None)
    fits = {}
    for kernel in ("numpy", "native"):
        m = build("biased-mf", "numpy", lr=0.01, reg=0.05, epochs=4, patience=None, kernel=kernel, **params)
        info = m.fit(train, valid)
        assert info.extra["kernel"] == kernel
        fits[kernel] = (m, info)
    (a, ia), (b, ib) = fits["numpy"], fits["native"]
    for name in ("P", "Q", "bu", "bi"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in ia.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in ib.history]


def test_sgd_auto_kernel_is_native_where_it_reproduces_numpy(native_sgd, data):
    info = build("biased-mf", "numpy", factors=4, epochs=2).fit(data.train, data.valid)
    assert info.extra["kernel"] == "native" and "kernel_note" not in info.extra
    # batch_size=1 is the sequential loop (BLAS's dot product): numpy whatever the machine
    info = build("biased-mf", "numpy", factors=4, epochs=1, batch_size=1).fit(data.train, data.valid)
    assert info.extra["kernel"] == "numpy"


def test_sgd_auto_kernel_follows_the_self_check(data, monkeypatch):
    """Where the C++ epoch does not reproduce this numpy, auto trains with numpy and says why."""
    monkeypatch.setattr(sgd, "native_differs", lambda: "P differs by up to 1e-16")
    info = build("biased-mf", "numpy", factors=4, epochs=1).fit(data.train, data.valid)
    if sgd.NATIVE.available():
        assert info.extra["kernel"] == "numpy" and "P differs" in info.extra["kernel_note"]
    else:
        assert info.extra["kernel"] == "numpy" and "unavailable" in info.extra["kernel_note"]


def test_sgd_self_check_catches_a_different_native_epoch(native_sgd, monkeypatch):
    exact = sgd._SGDEpochs._native

    def off_by_one_ulp(self, order):
        sq = exact(self, order)
        self.m.P[0, 0] = np.nextafter(self.m.P[0, 0], np.inf)
        return sq

    monkeypatch.setattr(sgd._SGDEpochs, "_native", off_by_one_ulp)
    sgd.native_differs.cache_clear()
    try:
        assert "P differs" in (sgd.native_differs() or "")
    finally:
        monkeypatch.undo()
        sgd.native_differs.cache_clear()
    assert sgd.native_differs() is None


def test_sgd_kernel_errors_name_the_problem(data, monkeypatch):
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        build("biased-mf", "numpy", kernel="native", batch_size=1)
    with pytest.raises(ConfigError, match="kernel"):
        build("biased-mf", "numpy", kernel="fortran")
    missing = sgd.NativeLibrary(sgd.NATIVE.source.with_name("missing.cpp"), "autorec_missing", [["-O2"]], sgd._declare)
    monkeypatch.setattr(sgd, "NATIVE", missing)
    with pytest.raises(ConfigError, match="kernel='native' is not available here: cannot read"):
        build("biased-mf", "numpy", kernel="native", epochs=1).fit(data.train, data.valid)
    info = build("biased-mf", "numpy", factors=4, epochs=1).fit(data.train, data.valid)  # auto: numpy, and why
    assert info.extra["kernel"] == "numpy" and "cannot read" in info.extra["kernel_note"]


@pytest.mark.parametrize("field,bad", [("items", "n_items"), ("users", "n_users"), ("users", -1)])
def test_sgd_native_epoch_refuses_an_out_of_range_index(native_sgd, data, field, bad):
    m = build("biased-mf", "numpy", factors=4, epochs=1, kernel="native")
    trainer = m.make_trainer(data.train, None)
    index = getattr(trainer, field).copy()
    index[5] = getattr(data.train, bad) if isinstance(bad, str) else bad  # one past the end, or negative
    setattr(trainer, field, index)
    before = m.P.copy()
    with pytest.raises(DataError, match="out of range"):
        trainer.train_epoch(1)
    assert np.array_equal(m.P, before)  # checked before anything moved


def test_sgd_native_epoch_refuses_inconsistent_factor_shapes(native_sgd, data):
    m = build("biased-mf", "numpy", factors=4, epochs=1, kernel="native")
    trainer = m.make_trainer(data.train, None)
    state = trainer.state()
    state["bu"] = state["bu"][:-1]  # a corrupt checkpoint
    trainer.load_state(state)
    with pytest.raises(DataError, match="inconsistent factor shapes"):
        trainer.train_epoch(1)


def test_sgd_native_kernel_is_refused_where_it_does_not_reproduce_numpy(native_sgd, monkeypatch):
    monkeypatch.setattr(sgd, "native_differs", lambda: "P differs by up to 1e-16")
    with pytest.raises(ConfigError, match="does not reproduce this numpy"):
        sgd.resolve_kernel(sgd.BiasedMFSGDConfig(kernel="native"))


def test_execution_settings_are_no_part_of_a_run_and_a_run_cannot_set_them():
    """``kernel`` (and ``threads``) change no number: not in a run's identity, and a spec or --set
    naming them is refused (two runs differing only there would be one run)."""
    from benchmarks.harness.plan import resolve_model

    def resolved(params):
        return resolve_model("biased-mf", "numpy", params, seed=0, cold_start="global-mean", devices=("cpu",))

    assert "kernel" not in resolved({"factors": 4}).params
    for params, flag in [
        ({"kernel": "numpy"}, "not --set"),
        ({"kernel": "fortran"}, "not --set"),
        ({"threads": 2}, "--threads"),
    ]:
        with pytest.raises(ConfigError, match=f"execution setting.*{flag}"):
            resolved({"factors": 4, **params})


# ------------------------------------------------------------------------------------------- checkpoints
RESUME_CASES = [
    ("als", "numpy", {"factors": 4}),
    ("biased-mf", "numpy", {"factors": 4, "batch_size": 64}),
    pytest.param("biased-mf", "torch", {"factors": 4, "lr": 0.01}, marks=needs_torch),
    pytest.param("d2l-mf", "torch", {"lr": 0.01, "batch_size": 128}, marks=needs_torch),
    pytest.param("d2l-mf", "mxnet", {"lr": 0.01, "batch_size": 128}, marks=[needs_mxnet, pytest.mark.mxnet]),
]


@pytest.mark.parametrize("name,backend,params", RESUME_CASES)
def test_resume_from_a_checkpoint_equals_an_uninterrupted_fit(data, tmp_path, name, backend, params):
    """Weights and optimizer state round-trip through the checkpoint, and every trainer reseeds
    per epoch: 2 epochs + 2 resumed epochs give exactly the 4-epoch fit."""
    fixed = {**params, "patience": None, "restore_best": False, "seed": 2}
    whole = build(name, backend, **fixed, epochs=4)
    whole.fit(data.train, data.valid)
    first = build(name, backend, **fixed, epochs=2)
    first.fit(data.train, data.valid, checkpoint=tmp_path / "ck.npz")
    resumed = build(name, backend, **fixed, epochs=4)
    info = resumed.fit(data.train, data.valid, resume=tmp_path / "ck.npz")
    assert info.extra["resumed_from_epoch"] == 2 and info.epochs_run == 4
    np.testing.assert_array_equal(
        resumed.predict(data.test.users, data.test.items), whole.predict(data.test.users, data.test.items)
    )


# ------------------------------------------------------------------------------------------- D2L-MF
@needs_torch
@needs_mxnet
@pytest.mark.mxnet
def test_d2l_mf_torch_mxnet_parity_one_epoch(data):
    params = {"epochs": 1, "batch_size": 64, "seed": 3}
    rng = np.random.default_rng(0)
    t = data.train
    init = {
        "P": rng.normal(0, 0.01, (t.n_users, 30)),
        "Q": rng.normal(0, 0.01, (t.n_items, 30)),
        "user_bias": rng.normal(0, 0.01, t.n_users),
        "item_bias": rng.normal(0, 0.01, t.n_items),
    }
    mx_model = build("d2l-mf", "mxnet", **params)
    th_model = build("d2l-mf", "torch", **params)
    ia = mx_model.fit(t, data.valid, initial_weights=init)
    ib = th_model.fit(t, data.valid, initial_weights=init)
    wa, wb = mx_model.get_weights(), th_model.get_weights()
    for k in init:
        assert np.abs(wa[k] - init[k]).max() > 1e-3, f"{k} did not train"
        np.testing.assert_allclose(wa[k], wb[k], atol=2e-5, err_msg=k)
    assert ia.history[0]["train_loss"] == pytest.approx(ib.history[0]["train_loss"], rel=1e-4)
    pa = mx_model.predict(data.test.users, data.test.items)
    pb = th_model.predict(data.test.users, data.test.items)
    np.testing.assert_allclose(pa, pb, atol=1e-4)


@needs_mxnet
@pytest.mark.mxnet
def test_d2l_mf_mxnet_two_contexts_equal_one(data):
    one = build("d2l-mf", "mxnet", epochs=2, batch_size=101)
    two = build("d2l-mf", "mxnet", epochs=2, batch_size=101, devices=["cpu(0)", "cpu(1)"])
    assert type(two).launcher(two.config.devices) == "contexts"
    one.fit(data.train)
    two.fit(data.train)
    for k, v in one.get_weights().items():
        np.testing.assert_allclose(v, two.get_weights()[k], atol=1e-6)


@needs_torch
def test_d2l_mf_defaults_are_the_chapter(data):
    c = build("d2l-mf", "torch").config
    assert (c.factors, c.lr, c.wd, c.epochs, c.batch_size, c.init_std) == (30, 0.002, 1e-5, 20, 512, 0.01)
    assert c.patience is None and c.restore_best is False
    m = build("d2l-mf", "torch", epochs=2)
    info = m.fit(data.train, data.valid)
    assert info.weights_epoch == 2, "D2L keeps the last weights"
    w = m.get_weights()
    assert set(w) == {"P", "Q", "user_bias", "item_bias"} and w["P"].shape == (data.train.n_users, 30)
    assert not hasattr(m, "mu"), "D2L's MF has no global mean"


@needs_torch
@pytest.mark.parametrize("name", ["biased-mf", "d2l-mf"])
def test_torch_models_on_each_device(data, device, name):
    params = {"epochs": 2, "batch_size": 256, "factors": 8}
    ref = build(name, "torch", **params)
    ref.fit(data.train, data.valid)
    m = build(name, "torch", **params, devices=[device])
    info = m.fit(data.train, data.valid)
    assert str(m.device).startswith(device) and info.epochs_run == 2
    np.testing.assert_allclose(
        m.predict(data.test.users, data.test.items), ref.predict(data.test.users, data.test.items), atol=1e-4
    )


@needs_torch
def test_torch_bad_device_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        build("biased-mf", "torch", devices=["cuda:0"])
    with pytest.raises(ConfigError, match="devices"):
        build("d2l-mf", "torch", devices=["tpu"])
    with pytest.raises(ConfigError, match="one device"):
        build("d2l-mf", "torch", devices=["cpu", "cpu"])


# ------------------------------------------------------------------------------------------- surprise
@needs_surprise
def test_surprise_svd_equals_direct_call(data):
    import pandas as pd
    import surprise
    from surprise import accuracy

    t = data.train
    ours = build("surprise-svd", seed=5)
    ours.fit(t, data.valid)
    df = pd.DataFrame({"u": t.users.astype(np.int64), "i": t.items.astype(np.int64), "r": t.ratings.astype(float)})
    ts = surprise.Dataset.load_from_df(df, surprise.Reader(rating_scale=(1, 5))).build_full_trainset()
    algo = surprise.SVD(random_state=5)
    algo.fit(ts)
    warm = ~ours.cold_mask(data.test.users, data.test.items)
    tu, ti, tr = data.test.users[warm], data.test.items[warm], data.test.ratings[warm]
    direct = np.array([algo.predict(int(a), int(b), clip=False).est for a, b in zip(tu, ti)])
    np.testing.assert_allclose(ours.estimate(tu.astype(np.int64), ti.astype(np.int64)), direct, atol=1e-6)
    direct_rmse = accuracy.rmse(
        [algo.predict(int(a), int(b), r_ui=float(r)) for a, b, r in zip(tu, ti, tr)], verbose=False
    )
    got = ours.evaluate(Interactions(tu, ti, tr, t.n_users, t.n_items, (1.0, 5.0)))
    assert got["rmse"] == pytest.approx(direct_rmse, abs=1e-6)


@needs_surprise
def test_surprise_score_train_false_skips_only_the_train_loss(data):
    scored, skipped = build("surprise-svd", seed=5, n_epochs=3), build("surprise-svd", seed=5, n_epochs=3)
    a, b = scored.fit(data.train, data.valid), skipped.fit(data.train, data.valid, score_train=False)
    assert a.history[0]["train_loss"] > 0 and b.history[0]["train_loss"] is None
    assert a.history[0]["valid_rmse"] == b.history[0]["valid_rmse"]
    tu, ti = data.test.users, data.test.items
    assert np.array_equal(scored.predict(tu, ti), skipped.predict(tu, ti))


def test_score_train_reaches_only_the_models_with_a_train_pass(data):
    """Iterative models record the train loss their epochs computed whatever ``score_train`` says."""
    model = build("bias-only", epochs=3)
    info = model.fit(data.train, score_train=False)
    assert all(row["train_loss"] > 0 for row in info.history)


@needs_surprise
def test_surprise_svdpp_equals_direct_call(data):
    import surprise

    from baselines.surprise_models import trainset_from

    ours = build("surprise-svdpp", n_factors=4, n_epochs=3, seed=1)
    ours.fit(data.train)
    algo = surprise.SVDpp(n_factors=4, n_epochs=3, random_state=1)
    algo.fit(trainset_from(data.train))
    warm = ~ours.cold_mask(data.test.users, data.test.items)
    tu, ti = data.test.users[warm][:200], data.test.items[warm][:200]
    direct = np.clip([algo.predict(int(a), int(b)).est for a, b in zip(tu, ti)], 1, 5)
    np.testing.assert_allclose(ours.predict(tu, ti), direct, atol=1e-9)


@needs_surprise
@pytest.mark.realdata
def test_surprise_svd_default_equals_direct_call_on_ml100k(ml100k_dir, tmp_path):
    import surprise
    from surprise import accuracy

    from autorec.splits import load_split
    from baselines.surprise_models import trainset_from

    d = load_split("ml-100k", "random", seed=0, data_dir=ml100k_dir, cache_dir=tmp_path)
    ours = build("surprise-svd")
    ours.fit(d.train, d.valid)
    algo = surprise.SVD(random_state=0)
    algo.fit(trainset_from(d.train))
    warm = ~ours.cold_mask(d.test.users, d.test.items)
    tu, ti, tr = d.test.users[warm], d.test.items[warm], d.test.ratings[warm]
    preds = [algo.predict(int(a), int(b), r_ui=float(r)) for a, b, r in zip(tu, ti, tr)]
    direct_rmse = accuracy.rmse(preds, verbose=False)
    part = Interactions(tu, ti, tr, d.train.n_users, d.train.n_items, d.train.rating_scale)
    assert ours.evaluate(part)["rmse"] == pytest.approx(direct_rmse, abs=1e-6)
    np.testing.assert_allclose(ours.predict(tu, ti), [p.est for p in preds], atol=1e-6)
    assert 0.90 < direct_rmse < 0.97


# ------------------------------------------------------------------------------------------- spaces, deps
def _bounds(spec):
    if isinstance(spec, dict):
        return [spec["low"], spec["high"]]
    return spec if isinstance(spec, list) else [spec]


@pytest.mark.parametrize("name,backend", BASELINES)
def test_search_space_bounds_are_valid_configurations(name, backend):
    ref = registry.get(name, backend)
    try:
        cls = ref.load()
    except MissingDependencyError:
        pytest.skip(f"{backend} not installed")
    for key, spec in ref.space().items():
        for value in _bounds(spec):
            cls.Config.from_dict({key: value}, model=name)


@pytest.mark.parametrize(
    "name,backend,module,extra",
    [
        ("biased-mf", "torch", "torch", "torch"),
        ("d2l-mf", "torch", "torch", "torch"),
        ("d2l-mf", "mxnet", "mxnet", "mxnet"),
        ("surprise-svd", "surprise", "surprise", "surprise"),
        ("surprise-svdpp", "surprise", "surprise", "surprise"),
    ],
)
def test_missing_optional_dependency_message(monkeypatch, name, backend, module, extra):
    ref = registry.get(name, backend)
    if importlib.util.find_spec(module) is None:  # not installed (the modern env has no mxnet)
        with pytest.raises(MissingDependencyError) as err:
            ref.load()  # the registry refuses before importing anything
    else:
        cls = ref.load()  # importing the class never needs the framework
        monkeypatch.setitem(sys.modules, module, None)  # any `import module` now raises ImportError
        with pytest.raises(MissingDependencyError) as err:
            cls()
    assert f"pip install .[{extra}]" in str(err.value) and name in str(err.value)


def test_importing_every_baseline_class_imports_no_framework():
    code = (
        "import sys; from autorec.models import registry; "
        "refs = [registry.get(n, b) for n in registry.names() for b in registry.backends(n)]; "
        "classes = [(r, __import__(r.target.split(':')[0], fromlist=['x'])) for r in refs "
        "           if r.target.startswith('baselines.')]; "
        "wrong = [r.name for r, mod in classes if getattr(mod, r.target.split(':')[1]).name != r.name]; "
        "bad = [m for m in ('torch', 'mxnet', 'surprise', 'myfm') if m in sys.modules]; "
        "print(bad, wrong); sys.exit(1 if bad or wrong else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bad_pairs_and_bad_train_data(data):
    m = build("bias-only")
    empty = Interactions(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32), 3, 3, (1.0, 5.0))
    with pytest.raises(DataError, match="empty"):
        m.fit(empty)
    other = Interactions(
        np.array([0], np.int32), np.array([0], np.int32), np.array([3.0], np.float32), 3, 3, (1.0, 5.0)
    )
    with pytest.raises(DataError, match="same split"):
        m.fit(data.train, other)
    m.fit(data.train)
    with pytest.raises(DataError, match=r"predict.s user indices run from \d+ to \d+, outside the index space"):
        m.predict([data.train.n_users], [0])
    with pytest.raises(DataError, match="user index 9223372036854775813 is out of range"):  # not wrapped to < 0
        m.predict(np.array([2**63 + 5], dtype=np.uint64), [0])
    with pytest.raises(NotFittedError, match=r"bias-only \(numpy\): call fit\(train\) before predict$"):
        build("bias-only").predict([0], [0])  # no "load a saved model": the baselines have no save/load


def test_fit_checks_the_parts_it_is_given(data):
    """Indices beyond the index space raised deep in a model, a negative one wrapped around to the last
    user, and a reversed scale made every prediction 1: each is a DataError naming the part."""
    u, i, r = np.array([0, 1, 2], np.int32), np.array([0, 1, 1], np.int32), np.array([5, 4, 3], np.float32)
    cases = [
        (Interactions(np.array([0, 1, 7], np.int32), i, r, 3, 3, (1.0, 5.0)), r"user indices run from 0 to 7, outside"),
        (Interactions(np.array([0, 1, -1], np.int32), i, r, 3, 3, (1.0, 5.0)), r"user indices run from -1 to 1"),
        (Interactions(u, i.astype(np.float32), r, 3, 3, (1.0, 5.0)), "item indices must be integers"),
        (Interactions(u, i, r, 3, 3, (5.0, 1.0)), r"rating scale \(5.0, 1.0\) must be \(low, high\)"),
        (Interactions(u, i[:2], r, 3, 3, (1.0, 5.0)), "must be 1-d arrays of one length"),
    ]
    for name in ("global-mean", "bias-only", "als"):
        for part, message in cases:
            with pytest.raises(DataError, match=f"{name} \\(numpy\\): the train part's .*{message}"):
                build(name).fit(part)
    n_users = data.train.n_users
    bad_valid = Interactions(np.array([0, n_users], np.int32), np.array([0, 0], np.int32), np.array([3, 3], np.float32),
                             n_users, data.train.n_items, (1.0, 5.0))  # fmt: skip
    with pytest.raises(DataError, match=f"the valid part's user indices run from 0 to {n_users}, outside"):
        build("bias-only").fit(data.train, bad_valid)


@pytest.mark.parametrize(
    "name,backend,params,message",
    [
        ("biased-mf", "numpy", {"init_std": 0.0}, "init_std=0 with init_mean=0: every factor starts at 0"),
        pytest.param("biased-mf", "torch", {"init_std": 0.0}, "init_std=0.0: must be > 0", marks=needs_torch),
        pytest.param("surprise-svd", "surprise", {"init_std_dev": 0.0}, "init_std_dev=0 with", marks=needs_surprise),
        pytest.param("surprise-svdpp", "surprise", {"init_std_dev": 0.0}, "init_std_dev=0", marks=needs_surprise),
        ("als", "numpy", {"seed": 2**32}, "seed=4294967296: must be <= 4294967295"),
        pytest.param(
            "bayesian-mf", "myfm", {"rank": 2**32}, "rank=4294967296: must be <= 2147483647", marks=needs_myfm
        ),
        pytest.param(
            "bayesian-svdpp", "myfm", {"n_iter": 2**31}, "n_iter=2147483648: must be <= 2147483647", marks=needs_myfm
        ),
    ],
)
def test_configs_a_library_would_silently_change_are_refused(name, backend, params, message):
    """myfm keeps a rank's low 32 bits (2**32 fitted a rank-0 model); factors all starting at 0 never
    move, leaving the biases alone; seeds beyond 32 bits reach the libraries as raw errors."""
    with pytest.raises(ConfigError, match=message):
        registry.get(name, backend).build(params)


def test_factors_may_start_equal_when_not_at_zero():
    assert registry.get("biased-mf", "numpy").build({"init_std": 0.0, "init_mean": 0.1}).config.init_std == 0.0
