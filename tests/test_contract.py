"""The model contract, run over every registered model and backend (autorec.models.base).

Each case gives small, fast parameters; ``diverge`` (for models that can diverge) parameters that
make training blow up; ``tol`` the tolerance of the determinism check (0: bit-identical).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from autorec.errors import ConfigError, DataError, TrainingDivergedError
from autorec.interactions import Interactions
from autorec.models import registry
from autorec.models.base import IterativeRecommender, NotFittedError, Recommender
from tests.synthetic_parts import learnable

AUTOREC_FAST = {"hidden": [16], "epochs": 8, "batch_size": 32, "lr": 0.01, "threads": 1}
# plain SGD on the unscaled sum of squared errors through an unbounded activation blows up
AUTOREC_DIVERGE = {"optimizer": "sgd", "lr": 1e6, "loss": "observed-sum", "hidden_activation": "relu", "epochs": 3}
CASES: dict[tuple[str, str], dict] = {
    ("global-mean", "numpy"): {"params": {}},
    ("bias-only", "numpy"): {"params": {}},
    ("als", "numpy"): {"params": {"factors": 4, "reg": 0.05, "epochs": 6}},
    ("biased-mf", "numpy"): {
        "params": {"factors": 4, "lr": 0.02, "reg": 0.02, "epochs": 8, "batch_size": 32},
        "diverge": {"lr": 1e6, "epochs": 3},
    },
    ("biased-mf", "torch"): {
        "params": {"factors": 4, "lr": 0.02, "reg": 0.01, "epochs": 8, "batch_size": 128},
        "diverge": {"lr": 1e8, "epochs": 3, "optimizer": "sgd"},
    },
    ("d2l-mf", "torch"): {"params": {"lr": 0.02, "epochs": 6, "batch_size": 128}},
    ("d2l-mf", "mxnet"): {"params": {"lr": 0.02, "epochs": 6, "batch_size": 128}},
    ("surprise-svd", "surprise"): {"params": {"n_factors": 4, "n_epochs": 10}},
    ("surprise-svdpp", "surprise"): {"params": {"n_factors": 4, "n_epochs": 5}},
    ("bayesian-mf", "myfm"): {"params": {"rank": 4, "n_iter": 30}},
    ("bayesian-svdpp", "myfm"): {"params": {"rank": 4, "n_iter": 30}},
    ("i-autorec", "torch"): {"params": AUTOREC_FAST, "diverge": AUTOREC_DIVERGE},
    ("u-autorec", "torch"): {"params": AUTOREC_FAST, "diverge": AUTOREC_DIVERGE},
    ("i-autorec", "mxnet"): {"params": AUTOREC_FAST, "diverge": AUTOREC_DIVERGE},
    ("u-autorec", "mxnet"): {"params": AUTOREC_FAST, "diverge": AUTOREC_DIVERGE},
}


def _all_refs() -> list[tuple[str, str]]:
    return [
        (name, backend) for name in registry.names() for backend in registry.backends(name) if name != "autorec"
    ]  # i-/u-autorec cover it


def _case_params():
    out = []
    for name, backend in _all_refs():
        dep = registry.BACKENDS.get(backend)
        marks = []
        if dep is not None and importlib.util.find_spec(dep[0]) is None:
            marks.append(pytest.mark.skip(reason=f"{dep[0]} not installed (pip install .[{dep[1]}])"))
        if backend == "mxnet":
            marks.append(pytest.mark.mxnet)
        out.append(pytest.param(name, backend, id=f"{name}-{backend}", marks=marks))
    return out


def test_every_registered_model_has_a_contract_case():
    missing = [ref for ref in _all_refs() if ref not in CASES]
    assert not missing, f"add a contract case for {missing}"


@pytest.fixture(scope="module")
def data():
    return learnable()


def _build(name, backend, **over):
    ref = registry.get(name, backend)
    return ref.build({**CASES[(name, backend)]["params"], **over})


@pytest.mark.parametrize("name,backend", _case_params())
class TestContract:
    def test_metadata_and_params_round_trip(self, name, backend):
        model = _build(name, backend)
        cls = type(model)
        assert isinstance(model, Recommender)
        assert cls.family in ("autorec", "mf", "baseline")
        assert cls.backend == backend
        assert isinstance(cls.version, int)
        params = model.params()
        assert type(model)(params).params() == params
        space = registry.get(name, backend).space()
        keys = set(space) - {"one_of"}
        for variant in (space.get("one_of") or {}).values():
            keys |= set(variant)
        for key in keys:
            assert key in cls.Config.field_names(), f"space parameter {key!r} is not a config field"

    def test_bad_parameters_are_config_errors(self, name, backend):
        with pytest.raises(ConfigError, match="unknown parameter"):
            _build(name, backend, no_such_parameter=1)
        with pytest.raises(ConfigError, match="seed"):
            _build(name, backend, seed="zero")

    def test_predict_before_fit_is_refused(self, name, backend):
        with pytest.raises(NotFittedError):
            _build(name, backend).predict([0], [0])

    def test_fit_history_and_predictions_within_scale(self, name, backend, data):
        model = _build(name, backend)
        info = model.fit(data.train, data.valid)
        assert info.epochs_run == len(info.history) >= 1
        for rec in info.history:
            assert {"epoch", "train_loss", "valid_rmse", "seconds"} <= set(rec)
            assert math.isfinite(rec["train_loss"]) and math.isfinite(rec["valid_rmse"])
        pred = model.predict(data.test.users, data.test.items)
        assert pred.shape == (len(data.test),)
        assert np.all((pred >= 1.0) & (pred <= 5.0))
        m = model.evaluate(data.test)
        assert m["n"] == len(data.test) and math.isfinite(m["rmse"]) and m["rmse"] < 1.5
        # indices are integers: 1.9 is refused, not read as user 1
        with pytest.raises(DataError, match="user indices must be integers, got float64"):
            model.predict([1.9], [0])
        with pytest.raises(DataError, match="item indices must be integers"):
            model.predict([1], ["3"])
        with pytest.raises(DataError, match="must be a 1-d array"):
            model.predict([[1, 2]], [[0, 0]])
        assert model.predict(np.array([], dtype=np.int32), []).shape == (0,)

    def test_best_epoch_is_the_lowest_validation_rmse_and_is_restored(self, name, backend, data):
        model = _build(name, backend)
        info = model.fit(data.train, data.valid)
        curve = [rec["valid_rmse"] for rec in info.history]
        assert info.best_epoch == 1 + int(np.argmin(curve))
        if getattr(model.config, "restore_best", False):
            assert info.weights_epoch == info.best_epoch
            assert model.evaluate(data.valid)["rmse"] == pytest.approx(min(curve), abs=1e-6)

    def test_cold_start_policy(self, name, backend, data):
        # user 0 and item 0 have no training rating: every pair touching them is cold
        keep = (data.train.users != 0) & (data.train.items != 0)
        train = Interactions(
            data.train.users[keep],
            data.train.items[keep],
            data.train.ratings[keep],
            data.train.n_users,
            data.train.n_items,
            data.train.rating_scale,
        )
        mean = float(np.mean(train.ratings, dtype=np.float64))
        for policy, expected in (("constant:3.5", 3.5), ("constant", 3.0), ("global-mean", mean)):
            model = _build(name, backend, cold_start=policy)
            model.fit(train)
            assert model.predict([0, 0, 5], [3, 0, 0]) == pytest.approx([expected] * 3)
            assert model.cold_mask([0, 5, 5], [3, 0, 7]).tolist() == [True, True, False]

    def test_cold_start_constant_outside_the_scale_is_refused(self, name, backend, data):
        # clipping would silently turn constant:9 into 5 (data.train's scale is 1..5)
        model = _build(name, backend, cold_start="constant:9")
        with pytest.raises(ConfigError, match="constant:9: the constant is outside the rating scale 1..5"):
            model.fit(data.train)
        with pytest.raises(NotFittedError):
            model.predict([1], [1])

    def test_predictions_clipped_to_the_rating_scale(self, name, backend, data):
        # a scale narrower than the ratings (mean about 3.4): clipping must bite on both sides
        d = data.train
        train = Interactions(d.users, d.items, d.ratings, d.n_users, d.n_items, (3.0, 3.3))
        model = _build(name, backend)
        model.fit(train)
        pred = model.predict(d.users, d.items)
        assert pred.min() >= 3.0 and pred.max() <= 3.3
        assert np.any(pred == 3.3)
        raw = model.estimate(d.users[:50], d.items[:50])
        assert np.all(np.isfinite(raw))

    def test_same_seed_same_predictions(self, name, backend, data):
        preds = []
        for _ in range(2):
            model = _build(name, backend, seed=3)
            model.fit(data.train, data.valid)
            preds.append(model.predict(data.test.users, data.test.items))
        np.testing.assert_allclose(preds[0], preds[1], rtol=0, atol=CASES[(name, backend)].get("tol", 0.0))

    def test_patience_stops_training(self, name, backend, data):
        model = _build(name, backend)
        if not isinstance(model, IterativeRecommender):
            pytest.skip("not an iterative model")
        model = _build(name, backend, patience=1, epochs=50)
        info = model.fit(data.train, data.valid)
        curve = [rec["valid_rmse"] for rec in info.history]
        if info.extra.get("stopped_early"):
            assert curve[-1] >= min(curve[:-1])
        else:
            assert info.epochs_run == 50 or info.extra.get("converged")

    def test_divergence_names_epoch_and_keeps_history(self, name, backend, data):
        diverge = CASES[(name, backend)].get("diverge")
        if diverge is None:
            pytest.skip("this model cannot diverge (closed form or bounded updates)")
        model = _build(name, backend, **diverge)
        with pytest.raises(TrainingDivergedError, match=r"epoch \d+") as err:
            model.fit(data.train, data.valid)
        assert "config" in str(err.value)
        assert isinstance(err.value.history, list)
        # diverged weights are no model, also when an earlier fit succeeded
        with pytest.raises(NotFittedError):
            model.predict(data.test.users[:3], data.test.items[:3])
        model = _build(name, backend)
        model.fit(data.train)
        model.config = _build(name, backend, **diverge).config
        with pytest.raises(TrainingDivergedError):
            model.fit(data.train, data.valid)
        with pytest.raises(NotFittedError):
            model.predict(data.test.users[:3], data.test.items[:3])

    def test_save_and_load_where_supported(self, name, backend, data, tmp_path):
        model = _build(name, backend)
        if not hasattr(model, "save"):
            pytest.skip("no save/load")
        model.fit(data.train, data.valid)
        model.save(tmp_path / "m.npz")
        back = type(model).load(tmp_path / "m.npz")
        np.testing.assert_allclose(
            back.predict(data.test.users, data.test.items), model.predict(data.test.users, data.test.items), rtol=1e-6
        )
