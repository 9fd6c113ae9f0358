"""Metrics, the cold-start policy and clipping (``autorec.metrics``), on hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autorec.errors import ConfigError
from autorec.interactions import Interactions
from autorec.metrics import ColdStartPolicy, cold_mask, evaluate, finalize, mae, predict_pairs, rmse


def inter(users, items, ratings, n_users=4, n_items=5, scale=(1.0, 5.0)) -> Interactions:
    return Interactions(np.asarray(users, np.int32), np.asarray(items, np.int32),
                        np.asarray(ratings, np.float32), n_users, n_items, scale)


class TableModel:
    """Predicts from a dense users x items table and records which pairs it was asked about."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype=np.float64)
        self.asked: list[tuple[np.ndarray, np.ndarray]] = []

    def predict(self, users, items):
        self.asked.append((np.asarray(users).copy(), np.asarray(items).copy()))
        return self.table[users, items]


# train: users 0,1 and items 0,1,2 are known; user 2, 3 and items 3, 4 are cold.
TRAIN = inter([0, 0, 1, 1], [0, 1, 1, 2], [4, 2, 5, 3])   # global mean 3.5


# --- rmse / mae ------------------------------------------------------------------------------

def test_rmse_mae_numbers():
    pred = np.array([3.0, 4.0, 2.5, 5.0])
    truth = np.array([4.0, 4.0, 1.0, 3.0])
    # errors -1, 0, 1.5, 2 -> squares 1, 0, 2.25, 4 -> mean 7.25/4
    assert rmse(pred, truth) == pytest.approx(math.sqrt(7.25 / 4), abs=1e-15)
    assert mae(pred, truth) == pytest.approx(4.5 / 4, abs=1e-15)
    assert rmse(truth, truth) == 0.0 and mae(truth, truth) == 0.0
    assert rmse([1.0], [4.0]) == 3.0 and mae([2], [1]) == 1.0


def test_rmse_computed_in_float64():
    truth = np.full(100_000, 3.1, dtype=np.float32)
    pred = truth + np.float32(1e-3)
    diff = float(pred[0]) - float(truth[0])   # the exact float64 difference of the float32 inputs
    assert rmse(pred, truth) == pytest.approx(diff, rel=1e-9)
    assert mae(pred, truth) == pytest.approx(diff, rel=1e-9)


def test_rmse_mae_shape_mismatch_and_empty():
    with pytest.raises(ValueError, match="shapes differ"):
        rmse(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="shapes differ"):
        mae(np.zeros(3), np.zeros((3, 1)))
    assert math.isnan(rmse([], [])) and math.isnan(mae([], []))


# --- policy parsing --------------------------------------------------------------------------

@pytest.mark.parametrize("text,kind,value,canon", [
    ("global-mean", "global-mean", 3.0, "global-mean"),
    ("constant", "constant", 3.0, "constant:3"),
    ("constant:", "constant", 3.0, "constant:3"),
    ("constant:3.5", "constant", 3.5, "constant:3.5"),
    ("constant:1", "constant", 1.0, "constant:1"),
])
def test_policy_parse(text, kind, value, canon):
    p = ColdStartPolicy.parse(text)
    assert (p.kind, p.value, str(p)) == (kind, value, canon)
    assert ColdStartPolicy.parse(str(p)) == p
    assert ColdStartPolicy.parse(p) is p


@pytest.mark.parametrize("text,needle", [
    ("mean", "unknown cold-start policy"),
    ("global-mean:2", "unknown cold-start policy"),
    ("constant:three", "is not a number"),
    ("constant:nan", "finite"),
    ("constant:inf", "finite"),
    ("", "unknown cold-start policy"),
])
def test_policy_parse_errors(text, needle):
    with pytest.raises(ConfigError, match=needle):
        ColdStartPolicy.parse(text)


def test_policy_default_and_fill_values():
    assert ColdStartPolicy() == ColdStartPolicy.parse("global-mean")
    assert ColdStartPolicy.parse("global-mean").fill_value(TRAIN) == 3.5
    assert ColdStartPolicy.parse("constant").fill_value(TRAIN) == 3.0
    assert ColdStartPolicy.parse("constant:4.25").fill_value(TRAIN) == 4.25


# --- cold pairs ------------------------------------------------------------------------------

def test_cold_mask_known_pairs():
    users = np.array([0, 1, 2, 0, 3, 1])
    items = np.array([2, 0, 0, 3, 4, 1])
    # (0,2) warm (both known, pair unseen), (1,0) warm, (2,0) cold user, (0,3) cold item, (3,4) both
    assert cold_mask(TRAIN, users, items).tolist() == [False, False, True, True, True, False]


def test_cold_mask_rejects_out_of_range():
    with pytest.raises(ValueError, match="user indices must be in 0..3"):
        cold_mask(TRAIN, np.array([-1]), np.array([0]))
    with pytest.raises(ValueError, match="item indices must be in 0..4"):
        cold_mask(TRAIN, np.array([0]), np.array([5]))
    with pytest.raises(ValueError, match="differ in shape"):
        cold_mask(TRAIN, np.array([0, 1]), np.array([0]))


@pytest.mark.parametrize("policy,fill", [("constant", 3.0), ("global-mean", 3.5), ("constant:2", 2.0)])
def test_predict_pairs_fills_cold_pairs_and_counts_them(policy, fill):
    table = np.full((4, 5), 4.0)
    table[0, 2] = 4.5
    model = TableModel(table)
    users = np.array([0, 2, 0, 3, 1])
    items = np.array([2, 0, 3, 4, 0])
    pred, n_cold = predict_pairs(model, TRAIN, users, items, policy)
    assert n_cold == 3
    assert pred.tolist() == [4.5, fill, fill, fill, 4.0]
    # only warm pairs reach the model
    (asked_u, asked_i), = model.asked
    assert asked_u.tolist() == [0, 1] and asked_i.tolist() == [2, 0]


def test_all_cold_never_calls_the_model():
    model = TableModel(np.full((4, 5), np.nan))
    pred, n_cold = predict_pairs(model, TRAIN, np.array([2, 3]), np.array([0, 4]), "constant")
    assert n_cold == 2 and pred.tolist() == [3.0, 3.0] and model.asked == []


# --- clipping and non-finite predictions -----------------------------------------------------

def test_predictions_are_clipped_to_the_scale():
    table = np.array([[7.0, -2.0, 5.0, 1.0, 0.99]] * 4)
    model = TableModel(table)
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([0, 1, 2, 1, 2])
    pred, _ = predict_pairs(model, TRAIN, users, items)
    assert pred.tolist() == [5.0, 1.0, 5.0, 1.0, 5.0]
    half = inter([0], [0], [1.0], n_users=1, n_items=2, scale=(0.5, 5.0))
    assert finalize(np.array([0.1, 9.0]), np.array([False, True]), 0.2, half.rating_scale).tolist() == [0.5, 0.5]


def test_nan_and_inf_predictions_raise():
    for bad in (np.nan, np.inf, -np.inf):
        table = np.full((4, 5), 3.0)
        table[1, 1] = bad
        with pytest.raises(FloatingPointError, match="1 of 2 predictions are NaN or infinite"):
            predict_pairs(TableModel(table), TRAIN, np.array([0, 1]), np.array([0, 1]))


def test_nan_at_a_cold_pair_is_replaced_not_raised():
    raw = np.array([np.nan, 2.0])
    out = finalize(raw, np.array([True, False]), 3.0, (1.0, 5.0))
    assert out.tolist() == [3.0, 2.0]
    assert np.isnan(raw[0])  # the input is not modified


def test_global_mean_of_empty_train_is_a_clear_error():
    empty = inter([], [], [])
    with pytest.raises(FloatingPointError, match="cold-start fill value is nan"):
        predict_pairs(TableModel(np.zeros((4, 5))), empty, np.array([0]), np.array([0]), "global-mean")
    pred, n_cold = predict_pairs(TableModel(np.zeros((4, 5))), empty, np.array([0]), np.array([0]), "constant")
    assert (pred.tolist(), n_cold) == ([3.0], 1)


def test_wrong_prediction_shape_is_refused():
    class Broken:
        def predict(self, users, items):
            return np.array([3.0])  # would silently broadcast

    with pytest.raises(ValueError, match="Broken.predict returned shape \\(1,\\) for 2 pairs"):
        predict_pairs(Broken(), TRAIN, np.array([0, 1]), np.array([0, 1]))


# --- evaluate --------------------------------------------------------------------------------

def test_evaluate_numbers():
    table = np.full((4, 5), 4.0)
    table[0, 2] = 6.0   # clipped to 5
    model = TableModel(table)
    test = inter([0, 1, 2, 0], [2, 0, 1, 4], [5, 3, 2, 4])
    res = evaluate(model, TRAIN, test, "constant")
    # predictions: 5 (clipped), 4, 3 (cold user), 3 (cold item); errors 0, 1, 1, -1
    assert res["rmse"] == pytest.approx(math.sqrt(3 / 4), abs=1e-15)
    assert res["mae"] == pytest.approx(3 / 4, abs=1e-15)
    assert res["n_cold_start"] == 2 and res["n"] == 4 and res["cold_start_policy"] == "constant:3"
    res = evaluate(model, TRAIN, test)   # default: global mean 3.5 for the cold pairs
    assert res["cold_start_policy"] == "global-mean"
    assert res["rmse"] == pytest.approx(math.sqrt((0 + 1 + 1.5 ** 2 + 0.5 ** 2) / 4), abs=1e-15)
    assert res["mae"] == pytest.approx((0 + 1 + 1.5 + 0.5) / 4, abs=1e-15)
