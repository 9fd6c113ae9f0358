"""Metrics, the cold-start policy and clipping (``autorec.metrics``), on hand-computed numbers.

How a model applies them (cold pairs never reach ``estimate``, predictions clipped, ``evaluate``) is
the contract's (``Recommender.predict`` / ``evaluate``), tested in tests/test_contract.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autorec.errors import ConfigError
from autorec.metrics import ColdStartPolicy, finalize, mae, rmse

# --- rmse / mae ------------------------------------------------------------------------------


def test_rmse_mae_numbers():
    pred = np.array([3.0, 4.0, 2.5, 5.0])
    truth = np.array([4.0, 4.0, 1.0, 3.0])
    # errors -1, 0, 1.5, 2 -> squares 1, 0, 2.25, 4 -> mean 7.25/4
    assert rmse(pred, truth) == pytest.approx(math.sqrt(7.25 / 4), abs=1e-15)
    assert mae(pred, truth) == pytest.approx(4.5 / 4, abs=1e-15)
    assert rmse(truth, truth) == 0.0 and mae(truth, truth) == 0.0
    assert rmse(np.array([1.0]), np.array([4.0])) == 3.0 and mae(np.array([2]), np.array([1])) == 1.0


def test_rmse_computed_in_float64():
    truth = np.full(100_000, 3.1, dtype=np.float32)
    pred = truth + np.float32(1e-3)
    diff = float(pred[0]) - float(truth[0])  # the exact float64 difference of the float32 inputs
    assert rmse(pred, truth) == pytest.approx(diff, rel=1e-9)
    assert mae(pred, truth) == pytest.approx(diff, rel=1e-9)


def test_rmse_mae_shape_mismatch_and_empty():
    with pytest.raises(ValueError, match="shapes differ"):
        rmse(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="shapes differ"):
        mae(np.zeros(3), np.zeros((3, 1)))
    assert math.isnan(rmse(np.array([]), np.array([]))) and math.isnan(mae(np.array([]), np.array([])))


# --- policy parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,kind,value,canon",
    [
        ("global-mean", "global-mean", 3.0, "global-mean"),
        ("constant", "constant", 3.0, "constant:3"),
        ("constant:", "constant", 3.0, "constant:3"),
        ("constant:3.5", "constant", 3.5, "constant:3.5"),
        ("constant:1", "constant", 1.0, "constant:1"),
    ],
)
def test_policy_parse(text, kind, value, canon):
    p = ColdStartPolicy.parse(text)
    assert (p.kind, p.value, str(p)) == (kind, value, canon)
    assert ColdStartPolicy.parse(str(p)) == p
    assert ColdStartPolicy.parse(p) is p


@pytest.mark.parametrize(
    "text,needle",
    [
        ("mean", "unknown cold-start policy"),
        ("global-mean:2", "unknown cold-start policy"),
        ("constant:three", "is not a number"),
        ("constant:nan", "finite"),
        ("constant:inf", "finite"),
        ("", "unknown cold-start policy"),
    ],
)
def test_policy_parse_errors(text, needle):
    with pytest.raises(ConfigError, match=needle):
        ColdStartPolicy.parse(text)


def test_policy_default_and_fill_values():
    assert ColdStartPolicy() == ColdStartPolicy.parse("global-mean")
    assert ColdStartPolicy.parse("global-mean").fill_value(3.5) == 3.5
    assert ColdStartPolicy.parse("constant").fill_value(3.5) == 3.0
    assert ColdStartPolicy.parse("constant:4.25").fill_value(3.5) == 4.25


def test_constant_must_lie_on_the_rating_scale():
    for ok in ("global-mean", "constant:1", "constant:5", "constant"):
        ColdStartPolicy.parse(ok).check_scale((1.0, 5.0))
    with pytest.raises(ConfigError, match="constant:0.5: the constant is outside the rating scale 1..5"):
        ColdStartPolicy.parse("constant:0.5").check_scale((1, 5))
    ColdStartPolicy.parse("constant:0.5").check_scale((0.5, 5.0))


# --- finalize: cold fill, non-finite predictions, clipping ------------------------------------


def test_finalize_fills_cold_pairs_and_clips():
    raw = np.array([7.0, -2.0, 4.5, np.nan, 0.99])
    cold = np.array([False, False, False, True, False])
    assert finalize(raw, cold, 3.0, (1.0, 5.0)).tolist() == [5.0, 1.0, 4.5, 3.0, 1.0]
    assert finalize(np.array([0.1, 9.0]), np.array([False, True]), 0.2, (0.5, 5.0)).tolist() == [0.5, 0.5]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_warm_predictions_raise(bad):
    with pytest.raises(FloatingPointError, match="1 of 2 predictions are NaN or infinite"):
        finalize(np.array([3.0, bad]), np.array([False, False]), 3.0, (1.0, 5.0))


def test_predictions_far_off_the_scale_are_divergence_not_clipped():
    # 4 widths of 1..5 beyond it is a bad model, clipped; 10,000 widths beyond it is a diverged one
    assert finalize(np.array([21.0, -15.0]), np.array([False, False]), 3.0, (1.0, 5.0)).tolist() == [5.0, 1.0]
    assert finalize(np.array([40_005.0, -39_999.0]), np.zeros(2, bool), 3.0, (1.0, 5.0)).tolist() == [5.0, 1.0]
    with pytest.raises(FloatingPointError, match=r"1 of 3 predictions lie over 10000 scale widths outside 1..5 "
                       r"\(e.g. 4.5e\+04\): the model diverged"):  # fmt: skip
        finalize(np.array([2.0, 45_000.0, 3.0]), np.zeros(3, bool), 3.0, (1.0, 5.0))
    with pytest.raises(FloatingPointError, match=r"e.g. -1e\+08"):
        finalize(np.array([-1e8]), np.array([False]), 3.0, (0.5, 5.0))


def test_nan_at_a_cold_pair_is_replaced_not_raised():
    raw = np.array([np.nan, 2.0])
    out = finalize(raw, np.array([True, False]), 3.0, (1.0, 5.0))
    assert out.tolist() == [3.0, 2.0]
    assert np.isnan(raw[0])  # the input is not modified


def test_non_finite_fill_is_a_clear_error():
    """The global mean of an empty train part is NaN: a clear error, unless no pair is cold."""
    with pytest.raises(FloatingPointError, match="cold-start fill value is nan"):
        finalize(np.array([0.0]), np.array([True]), float("nan"), (1.0, 5.0))
    assert finalize(np.array([2.0]), np.array([False]), float("nan"), (1.0, 5.0)).tolist() == [2.0]
