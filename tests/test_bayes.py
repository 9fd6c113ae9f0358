"""Bayesian MF on myfm (``baselines/bayes.py``): the samplers learn, beat the bias model, are
deterministic given the seed, build their implicit features from the train part only, and a
missing myfm names the extra that installs it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from autorec.errors import ConfigError, DataError, MissingDependencyError
from autorec.interactions import Interactions
from autorec.models import registry
from baselines import bayes
from baselines.bayes import BayesConfig, BayesianMF, BayesianSVDpp, relation_features
from tests.conftest import exact_native, has_module, needs_myfm
from tests.synthetic_parts import learnable

FAST = {"rank": 4, "n_iter": 100}
MODELS = ["bayesian-mf", "bayesian-svdpp"]


@pytest.fixture(scope="module")
def data():
    return learnable()


def build(name, **params):
    return registry.get(name).build(params)


def count_posterior_means(model) -> list[int]:
    """The number of pairs of each posterior-mean computation ``model`` makes from now on."""
    calls: list[int] = []
    posterior_mean = model._posterior_mean

    def counted(users, items):
        calls.append(len(users))
        return posterior_mean(users, items)

    model._posterior_mean = counted
    return calls


@needs_myfm
@pytest.mark.parametrize("name", MODELS)
def test_sampler_learns_and_beats_the_bias_model(data, name):
    bias = build("bias-only")
    bias.fit(data.train, data.valid)
    model = build(name, **FAST)
    info = model.fit(data.train, data.valid)
    got = model.evaluate(data.test)["rmse"]
    assert got < bias.evaluate(data.test)["rmse"] - 0.05
    assert info.epochs_run == 1 and info.history[0]["valid_rmse"] == pytest.approx(model.evaluate(data.valid)["rmse"])
    assert info.extra["n_kept_samples"] == 99  # 100 iterations, burn-in floor(0.01 * 100)
    noise = info.extra["sampler_noise_std"]
    assert len(noise) == 100 and noise[-1] < noise[0]  # the chain leaves its initialisation


@needs_myfm
@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_predictions_other_seed_others(data, name):
    def predict(seed):
        m = build(name, **FAST, seed=seed)
        m.fit(data.train)
        return m.predict(data.test.users, data.test.items)

    a, b, c = predict(1), predict(1), predict(2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@needs_myfm
@pytest.mark.parametrize("name", MODELS)
def test_predictions_are_myfms_whatever_else_is_in_the_call(data, name):
    """Relation blocks of only the rows asked about, the train and validation pairs predicted in one
    call, the validation predictions kept for evaluate(valid): every number bitwise myfm's own
    prediction with the full blocks, pair by pair."""
    m = build(name, **FAST)
    calls = count_posterior_means(m)
    info = m.fit(data.train, data.valid)
    m.evaluate(data.valid)  # kept by the fit: no myfm call
    assert calls == [len(data.train) + int((~m.cold_mask(data.valid.users, data.valid.items)).sum())]

    def full_blocks(users, items):
        return np.asarray(m.fm.predict(None, m._blocks(users, items)), dtype=np.float64)

    err = data.train.ratings.astype(np.float64) - full_blocks(data.train.users, data.train.items)
    assert info.history[0]["train_loss"] == float(err @ err / len(err))
    warm = ~m.cold_mask(data.valid.users, data.valid.items)
    vu, vi = data.valid.users[warm], data.valid.items[warm]
    assert m._kept is not None and np.array_equal(m.estimate(vu, vi), full_blocks(vu, vi))
    tu, ti = data.test.users, data.test.items
    assert np.array_equal(m.estimate(tu, ti), full_blocks(tu, ti))
    assert np.array_equal(m.estimate(tu[:3], ti[:3]), full_blocks(tu, ti)[:3])  # a few rows alone
    t = data.train
    keep = np.arange(len(t)) % 5 != 0
    m.fit(Interactions(t.users[keep], t.items[keep], t.ratings[keep], t.n_users, t.n_items, t.rating_scale))
    assert m._kept is None  # a new fit forgets the old chain's predictions
    assert np.array_equal(m.estimate(vu, vi), full_blocks(vu, vi))


@needs_myfm
@pytest.mark.parametrize("name", MODELS)
def test_score_train_false_skips_the_train_pass_and_nothing_else(data, name):
    """``fit(score_train=False)`` (a refit, a tuning trial): no myfm call over the train pairs, the
    history's train loss None, every prediction and the validation score bitwise the same."""
    scored = build(name, **FAST)
    scored_info = scored.fit(data.train, data.valid)
    m = build(name, **FAST)
    calls = count_posterior_means(m)
    info = m.fit(data.train, data.valid, score_train=False)
    assert calls == [int((~m.cold_mask(data.valid.users, data.valid.items)).sum())]  # the validation pairs only
    assert info.history[0]["train_loss"] is None and scored_info.history[0]["train_loss"] > 0
    assert info.history[0]["valid_rmse"] == scored_info.history[0]["valid_rmse"]
    tu, ti = data.test.users, data.test.items
    assert np.array_equal(m.predict(tu, ti), scored.predict(tu, ti))
    calls.clear()
    m.fit(data.train, score_train=False)
    assert calls == [] and m._kept is None  # nothing to predict in the fit at all


def test_implicit_features_are_the_normalised_train_sets():
    # user 0 rated items 0, 2; user 1 rated item 2; user 2 and item 1 have no train rating
    train = Interactions(
        np.array([0, 0, 1], np.int32), np.array([0, 2, 2], np.int32), np.array([5, 3, 4], np.float32), 3, 3, (1.0, 5.0)
    )
    users, items = relation_features(train, implicit=True)
    s2 = 1 / np.sqrt(2)
    expected_users = np.array(
        [
            [1, 0, 0, s2, 0, s2],
            [0, 1, 0, 0, 0, 1],
            [0, 0, 1, 0, 0, 0],
        ]
    )
    expected_items = np.array(
        [
            [1, 0, 0, 1, 0, 0],
            [0, 1, 0, 0, 0, 0],
            [0, 0, 1, s2, s2, 0],
        ]
    )
    np.testing.assert_allclose(users.toarray(), expected_users)
    np.testing.assert_allclose(items.toarray(), expected_items)
    plain_users, plain_items = relation_features(train, implicit=False)
    np.testing.assert_array_equal(plain_users.toarray(), np.eye(3))
    np.testing.assert_array_equal(plain_items.toarray(), np.eye(3))


@needs_myfm
def test_validation_and_test_ratings_never_reach_the_features(data):
    """Poisoned validation ratings (and extra validation pairs that the train part does not have)
    change neither the implicit features nor the predictions; test ratings are never read."""
    clean = build("bayesian-svdpp", **FAST)
    clean.fit(data.train, data.valid)
    v, t = data.valid, data.test
    rng = np.random.default_rng(0)
    poisoned_valid = Interactions(
        np.r_[v.users, t.users],
        np.r_[v.items, t.items],
        rng.choice([1.0, 5.0], size=len(v) + len(t)).astype(np.float32),
        v.n_users,
        v.n_items,
        v.rating_scale,
    )
    dirty = build("bayesian-svdpp", **FAST)
    dirty.fit(data.train, poisoned_valid)
    for got, want in zip((dirty.user_features, dirty.item_features), relation_features(data.train, implicit=True)):
        assert (got != want).nnz == 0
    np.testing.assert_array_equal(dirty.predict(t.users, t.items), clean.predict(t.users, t.items))
    # a validation-only pair has no implicit weight: the user's implicit block holds train items only
    in_train = set(zip(data.train.users.tolist(), data.train.items.tolist()))
    u, i = next((u, i) for u, i in zip(v.users.tolist(), v.items.tolist()) if (u, i) not in in_train)
    assert dirty.user_features[u, data.train.n_users + i] == 0.0
    poisoned_test = Interactions(t.users, t.items, np.full(len(t), 1.0, np.float32), t.n_users, t.n_items, (1.0, 5.0))
    np.testing.assert_array_equal(
        dirty.predict(poisoned_test.users, poisoned_test.items), clean.predict(t.users, t.items)
    )


def test_burn_in_must_leave_samples():
    with pytest.raises(ConfigError, match="burn_in"):
        BayesConfig.from_dict({"burn_in": 1.0})


@pytest.mark.parametrize("cls", [BayesianMF, BayesianSVDpp])
def test_missing_myfm_names_the_bayes_extra(monkeypatch, cls):
    monkeypatch.setitem(sys.modules, "myfm", None)  # any `import myfm` now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install \.\[bayes\]"):
        registry.get(cls.name).load()
    with pytest.raises(MissingDependencyError, match=r"pip install \.\[bayes\]") as err:
        cls()
    assert cls.name in str(err.value)


# ----------------------------------------------------------------- the posterior mean in C++
@pytest.fixture
def native_fm():
    """The C++ posterior mean: it must compile where a compiler is found and reproduce this myfm
    (else the test fails; ``AUTOREC_FM_NATIVE_MAY_DIFFER=1`` makes that a skip, and ``auto`` then
    predicts with myfm, see ``test_auto_kernel_follows_the_self_check``)."""
    if not has_module("myfm"):
        pytest.skip("myfm not installed (pip install .[bayes])")
    return exact_native(
        bayes.NATIVE, bayes.native_differs, may_differ="AUTOREC_FM_NATIVE_MAY_DIFFER", reproduces="this myfm"
    )


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    "params",
    [{"rank": 4, "n_iter": 30}, {"rank": 1, "n_iter": 5, "burn_in": 0.0}, {"rank": 33, "n_iter": 9, "grouped": False}],
)
def test_native_posterior_mean_is_bitwise_myfms(native_fm, data, name, params):
    """Every number of a fit, and every prediction, to the bit: train loss, validation RMSE, test
    predictions (pairs repeated and in any order)."""
    fits = {}
    for kernel in ("myfm", "native"):
        m = build(name, **params, kernel=kernel)
        info = m.fit(data.train, data.valid)
        assert info.extra["kernel"] == kernel
        fits[kernel] = (m, info)
    (a, ia), (b, ib) = fits["myfm"], fits["native"]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in ia.history] == [
        {k: v for k, v in h.items() if k != "seconds"} for h in ib.history
    ]
    order = np.random.default_rng(1).permutation(np.r_[np.arange(len(data.test)), np.arange(20)])
    tu, ti = data.test.users[order], data.test.items[order]
    assert np.array_equal(a.predict(tu, ti), b.predict(tu, ti))


def test_auto_kernel_is_native_where_it_reproduces_myfm(native_fm, data):
    info = build("bayesian-svdpp", **FAST).fit(data.train, data.valid)
    assert info.extra["kernel"] == "native" and "kernel_note" not in info.extra


@needs_myfm
def test_auto_kernel_follows_the_self_check(data, monkeypatch):
    """Where the C++ posterior mean does not reproduce this myfm, auto predicts with myfm and says why."""
    monkeypatch.setattr(bayes, "native_differs", lambda: "bayesian-svdpp: differs by up to 1e-16")
    info = build("bayesian-svdpp", **FAST).fit(data.train, data.valid)
    note = info.extra["kernel_note"]
    assert info.extra["kernel"] == "myfm" and ("differs by up to" in note or "unavailable" in note)
    with pytest.raises(ConfigError, match="does not reproduce this myfm|not available here"):
        build("bayesian-svdpp", **FAST, kernel="native").fit(data.train)


def test_self_check_catches_a_different_native_posterior_mean(native_fm, monkeypatch):
    exact = bayes.native_posterior_mean

    def one_ulp_off(samples, features, at):
        out = exact(samples, features, at)
        out[-1] = np.nextafter(out[-1], np.inf)
        return out

    monkeypatch.setattr(bayes, "native_posterior_mean", one_ulp_off)
    bayes.native_differs.cache_clear()
    try:
        assert "differs by up to" in (bayes.native_differs() or "")
    finally:
        monkeypatch.undo()
        bayes.native_differs.cache_clear()
    assert bayes.native_differs() is None


@needs_myfm
def test_kernel_errors_name_the_problem(data, monkeypatch):
    with pytest.raises(ConfigError, match="kernel"):
        build("bayesian-mf", kernel="cuda")
    missing = bayes.NativeLibrary(
        bayes.NATIVE.source.with_name("missing.cpp"), "autorec_missing", [["-O2"]], bayes._declare
    )
    monkeypatch.setattr(bayes, "NATIVE", missing)
    with pytest.raises(ConfigError, match="kernel='native' is not available here: cannot read"):
        build("bayesian-mf", **FAST, kernel="native").fit(data.train)
    info = build("bayesian-mf", **FAST).fit(data.train)  # auto: myfm, and why
    assert info.extra["kernel"] == "myfm" and "cannot read" in info.extra["kernel_note"]


def test_native_posterior_mean_refuses_inconsistent_input(native_fm, data):
    m = build("bayesian-svdpp", **FAST, kernel="native")
    m.fit(data.train)
    samples = m.fm.predictor_.samples
    users, items = np.array([0, 1]), np.array([2, 3])
    features = [m.user_features[users], m.item_features[items]]
    good = bayes.native_posterior_mean(samples, features, [np.arange(2), np.arange(2)])
    assert np.array_equal(good, m._posterior_mean(users, items))
    with pytest.raises(DataError, match="out of range"):
        bayes.native_posterior_mean(samples, features, [np.array([0, 2]), np.arange(2)])
    with pytest.raises(DataError, match="out of range"):
        bayes.native_posterior_mean(samples, features, [np.array([0, -1]), np.arange(2)])
    with pytest.raises(DataError, match="9 relation blocks"):
        bayes.native_posterior_mean(samples, [features[0]] * 9, [np.arange(2)] * 9)
    with pytest.raises(DataError, match="feature columns"):
        bayes.native_posterior_mean(samples, [features[0], features[1][:, :-1]], [np.arange(2), np.arange(2)])


def test_kernel_is_an_execution_setting():
    """``kernel`` changes no number: not in a run's identity, and a spec or --set naming it is refused."""
    from benchmarks.harness.plan import resolve_model

    def resolved(params):
        return resolve_model("bayesian-svdpp", None, params, seed=0, cold_start="global-mean", devices=("cpu",))

    assert "kernel" not in resolved({"rank": 4}).params
    with pytest.raises(ConfigError, match="execution setting.*not --set"):
        resolved({"rank": 4, "kernel": "myfm"})


def test_a_self_check_that_cannot_run_means_myfm(monkeypatch):
    def broken():
        raise MemoryError("no room")

    monkeypatch.setattr(bayes, "_native_differs", broken)
    bayes.native_differs.cache_clear()
    try:
        assert bayes.native_differs() == "the self-check failed: MemoryError: no room"
        assert bayes.resolve_kernel(BayesConfig())[0] == "myfm"
    finally:
        monkeypatch.undo()
        bayes.native_differs.cache_clear()
