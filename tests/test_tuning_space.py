"""The search-space format (``benchmarks/tuning/space.py``) and its translation to Optuna, and the
trial kinds and positions that make a resumed study exact (``benchmarks/tuning/study.py``)."""

from __future__ import annotations

import optuna
import pytest

from autorec.errors import ConfigError
from benchmarks.tuning import space as spaces
from benchmarks.tuning.study import kind, position

# ------------------------------------------------------------------------------------------ spaces
AUTOREC_LIKE = {
    "hidden": [[8], [16, 8]],
    "dropout": {"dist": "uniform", "low": 0.0, "high": 0.5},
    "epochs": 30,
    "one_of": {
        "adam": {"optimizer": "adam", "lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-2}},
        "rprop": {"optimizer": "rprop", "lr": {"dist": "loguniform", "low": 1e-3, "high": 1e-1}, "steps": [1, 2]},
    },
}


@pytest.mark.parametrize(
    "space,match",
    [
        ({"reg": {"dist": "normal", "low": 0, "high": 1}}, "dist='normal'"),
        ({"reg": {"dist": "loguniform", "low": 0.0, "high": 1}}, "needs low > 0"),
        ({"reg": {"dist": "uniform", "low": 2, "high": 1}}, "needs low < high"),
        ({"k": {"dist": "int", "low": 1.5, "high": 3}}, "integer bounds"),
        ({"reg": {"dist": "uniform", "low": 0}}, "dist, low, high"),
        ({"reg": []}, "empty list"),
        ({"reg": [1.0, 2, 1]}, "the choices 1.0 and 1 are the same value"),
        ({"one_of": {"a": {"h": [[8], [8]]}}}, r"one_of.a.h: the choices \[8\] and \[8\] are the same value"),
        ({"reg": {"low": 0.1, "high": 1}}, r"a table with \['high', 'low'\] but no dist"),
        ({"one_of": {"a": {"lr": {"low": 1e-3}}}}, r"one_of.a.lr: a table with \['low'\] but no dist"),
        ({"one_of": {}}, "non-empty table"),
        ({"lr": 1, "one_of": {"a": {"lr": [1, 2]}}}, "also in the common part"),
        ({"one_of": {"a.b": {"lr": 1}}}, "without '.'"),
        ([1, 2], "a table of parameter"),
    ],
)
def test_bad_spaces_are_refused(space, match):
    with pytest.raises(ConfigError, match=match):
        spaces.validate(space)


def test_suggest_names_variants_and_decodes_to_plain_parameters():
    spaces.validate(AUTOREC_LIKE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        params = spaces.suggest(trial, AUTOREC_LIKE)
        variant = trial.params["one_of"]
        seen.add(variant)
        assert params["optimizer"] == variant and params["epochs"] == 30
        assert params["hidden"] in ([8], [16, 8])  # decoded from its JSON text
        assert isinstance(trial.params["hidden"], str)
        assert f"{variant}.lr" in trial.params and "lr" not in trial.params  # no clash between variants
        low = 1e-4 if variant == "adam" else 1e-3
        assert low <= params["lr"] <= 100 * low
        extra = {"steps"} if variant == "rprop" else set()
        assert set(params) == {"hidden", "dropout", "epochs", "optimizer", "lr"} | extra
        assert spaces.decode(AUTOREC_LIKE, trial.params) == params
        study.tell(trial, 1.0)
    assert seen == {"adam", "rprop"}
    with pytest.raises(ValueError):
        spaces.decode(AUTOREC_LIKE, {"one_of": "adam"})  # not a whole configuration


def test_fixing_parameters_takes_them_out_of_the_search():
    no_lr = spaces.fix(AUTOREC_LIKE, {"lr": 0.01, "dropout": 0.1})
    assert "dropout" not in no_lr and all("lr" not in v for v in no_lr["one_of"].values())
    rprop = spaces.fix(AUTOREC_LIKE, {"optimizer": "rprop"})  # picks the variant, merged into the common part
    assert "one_of" not in rprop and rprop["steps"] == [1, 2] and "optimizer" not in rprop
    assert rprop["lr"]["low"] == 1e-3
    with pytest.raises(ConfigError, match="exclude every variant"):
        spaces.fix(AUTOREC_LIKE, {"optimizer": "sgd"})


def test_a_fixed_table_is_merged_into_a_variants_fixed_table():
    # --set extra={"sparse_kernel": "native"} on AutoRec's space: the L-BFGS variant keeps its own
    # extra knob beside the fixed one, the other variants get the fixed table as it is
    space = {
        "one_of": {
            "lbfgs": {"optimizer": "lbfgs", "extra": {"lbfgs_max_iter": 1}, "lr": [0.1, 1.0]},
            "adam": {"optimizer": "adam", "lr": [0.001, 0.01]},
        }
    }
    fixed = {"extra": {"sparse_kernel": "native", "lbfgs_max_iter": 1}, "path": "sparse"}
    fixed_space = spaces.fix(space, {"extra": {"sparse_kernel": "native"}})
    assert fixed_space["one_of"]["lbfgs"]["extra"] == fixed["extra"] and "extra" not in fixed_space["one_of"]["adam"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):  # what the tuner builds: the fixed parameters, the sampled ones over them
        trial = study.ask()
        params = {"extra": {"sparse_kernel": "native"}, "path": "sparse", **spaces.suggest(trial, fixed_space)}
        want = fixed["extra"] if params["optimizer"] == "lbfgs" else {"sparse_kernel": "native"}
        assert params["extra"] == want and params["path"] == "sparse"
        study.tell(trial, 1.0)


def test_space_sizes_grids_and_corners():
    finite = {"a": [1, 2, 3], "k": {"dist": "int", "low": 1, "high": 2}, "fixed": "x"}
    assert spaces.size(finite) == 6 and spaces.size({}) == 1 and spaces.size(AUTOREC_LIKE) is None
    grid = spaces.grid(finite)
    assert len(grid) == 6 and len({tuple(sorted(g.items())) for g in grid}) == 6
    assert grid[0] == {"a": 1, "k": 1} and spaces.grid({}) == [{}]
    variants = {"one_of": {"x": {"a": [1, 2]}, "y": {"a": [3], "b": [True, False]}}}
    assert spaces.size(variants) == 4
    assert spaces.grid(variants) == [
        {"one_of": "x", "x.a": 1},
        {"one_of": "x", "x.a": 2},
        {"one_of": "y", "y.a": 3, "y.b": True},
        {"one_of": "y", "y.a": 3, "y.b": False},
    ]
    # counted, not listed: a range of 10^12 integers is a size, not a list in memory
    assert spaces.size({"k": {"dist": "int", "low": 1, "high": 10**12}, "a": [1, 2]}) == 2 * 10**12
    # every value a trial can give a parameter is built up front: each choice and both bounds, per variant
    corners = spaces.corners(AUTOREC_LIKE)
    adam, rprop = [c for c in corners if c["optimizer"] == "adam"], [c for c in corners if c["optimizer"] == "rprop"]
    assert adam[0] == {"hidden": [8], "dropout": 0.0, "epochs": 30, "optimizer": "adam", "lr": 1e-4}
    assert {c["lr"] for c in adam} == {1e-4, 1e-2} and {c["dropout"] for c in adam} == {0.0, 0.5}
    assert [c["hidden"] for c in adam].count([16, 8]) == 1 and {c["steps"] for c in rprop} == {1, 2}
    assert {c["lr"] for c in rprop} == {1e-3, 1e-1}


def test_space_file(tmp_path):
    f = tmp_path / "space.toml"
    f.write_text(
        '[space]\nfactors = {dist = "logint", low = 8, high = 64}\nepochs = 20\n'
        '[space.one_of.adam]\noptimizer = "adam"\nlr = {dist = "loguniform", low = 1e-4, high = 1e-2}\n'
        '[space.one_of.sgd]\noptimizer = "sgd"\nlr = {dist = "loguniform", low = 1e-3, high = 1e-1}\n'
    )
    space = spaces.load(f)
    assert space["factors"]["dist"] == "logint" and list(space["one_of"]) == ["adam", "sgd"]
    f.write_text('[space]\nreg = {dist = "gamma", low = 1, high = 2}\n')
    with pytest.raises(ConfigError, match="gamma"):
        spaces.load(f)


def test_the_long_chain_space_only_raises_the_iteration_cap():
    """benchmarks/specs/spaces/bayesian-long-chain.toml is the Bayesian models' SPACE with a higher
    n_iter cap (their committed ML-100K study ended against 600) and nothing else changed."""
    from pathlib import Path

    from baselines.bayes import BayesianMF, BayesianSVDpp

    space = spaces.load(Path(__file__).parents[1] / "benchmarks/specs/spaces/bayesian-long-chain.toml")
    assert BayesianSVDpp.SPACE is BayesianMF.SPACE
    assert set(space) == set(BayesianMF.SPACE)
    assert {k: v for k, v in space.items() if k != "n_iter"} == {
        k: v for k, v in BayesianMF.SPACE.items() if k != "n_iter"
    }
    assert space["n_iter"]["low"] == BayesianMF.SPACE["n_iter"]["low"]
    assert space["n_iter"]["high"] > BayesianMF.SPACE["n_iter"]["high"]


def test_trial_kinds_and_positions():
    def t(number, state, **attrs):
        value = 1.0 if state == optuna.trial.TrialState.COMPLETE else None
        trial = optuna.trial.create_trial(state=state, value=value, user_attrs=attrs)
        trial.number = number
        return trial

    S = optuna.trial.TrialState
    trials = [
        t(0, S.COMPLETE),
        t(1, S.FAIL, duplicate_of=0),
        t(2, S.PRUNED),
        t(3, S.FAIL),  # interrupted: not counted, retried by #4
        t(4, S.COMPLETE, retry_of=3, attempt=2),
        t(5, S.FAIL, error="ConfigError: no"),
        t(6, S.FAIL, attempt=2),  # a retry interrupted too: counts as failed
        t(7, S.FAIL, duplicate_of=2),
        t(8, S.FAIL, duplicate_of=4),
    ]
    assert [kind(x) for x in trials] == [
        "complete", "duplicate", "pruned", "interrupted", "complete", "failed", "failed", "duplicate", "duplicate"
    ]  # fmt: skip
    assert position(trials, 3) == (2, 0) and position(trials, 4) == (2, 0)  # the retry takes #3's position
    assert position(trials, 2) == (1, 1)  # after one duplicate at position 1
    assert position(trials, 9) == (5, 2)
