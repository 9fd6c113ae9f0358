"""The equal-budget tuner (``benchmarks/tuning.py``) and ``autorec-bench tune``: seeded candidates,
the same budget for every model, every trial logged, the test part never read during the search and
read once afterwards, config files that round-trip."""

from __future__ import annotations

import argparse
import json
import tomllib
from types import SimpleNamespace

import numpy as np
import pytest

import baselines
from autorec.errors import AutoRecBenchError, ConfigError
from autorec.interactions import Interactions
from benchmarks import tuning


def learnable(n_users=80, n_items=50, density=0.35, seed=1):
    rng = np.random.default_rng(seed)
    n = int(n_users * n_items * density)
    keys = rng.choice(n_users * n_items, size=n, replace=False)
    u, i = keys // n_items, keys % n_items
    p, q = rng.normal(0, 0.7, (n_users, 2)), rng.normal(0, 0.7, (n_items, 2))
    r = 3.4 + rng.normal(0, 0.4, n_users)[u] + rng.normal(0, 0.4, n_items)[i] + np.einsum("nk,nk->n", p[u], q[i])
    r = np.clip(np.round(r + rng.normal(0, 0.25, n)), 1, 5).astype(np.float32)
    perm = rng.permutation(n)
    c1, c2 = int(0.8 * n), int(0.9 * n)

    def part(ix, ratings=r):
        ix = np.sort(ix)
        return Interactions(u[ix].astype(np.int32), i[ix].astype(np.int32), ratings[ix].copy(), n_users, n_items,
                            (1.0, 5.0))

    return SimpleNamespace(train=part(perm[:c1]), valid=part(perm[c1:c2]), test=part(perm[c2:]))


@pytest.fixture(scope="module")
def data():
    return learnable()


class GuardedTest:
    """Stands in for the test part: any attribute access raises, unless ``allowed``; records when."""

    def __init__(self, real, allowed=False):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "allowed", allowed)
        object.__setattr__(self, "accesses", [])

    def __getattr__(self, name):
        self.accesses.append(name)
        if not self.allowed:
            raise AssertionError(f"the tuner read test.{name} during the search")
        return getattr(self._real, name)

    def __len__(self):
        return self.__getattr__("__len__")()


SPACE = {"factors": [2, 4, 8], "reg": {"dist": "loguniform", "low": 0.01, "high": 1.0}, "epochs": 4}


def als_build(params):
    return baselines.get("als").from_params(params)


# ------------------------------------------------------------------------------------------ candidates
def test_candidates_seeded_and_sized():
    a = tuning.candidates(SPACE, 7, "random", seed=3)
    b = tuning.candidates(SPACE, 7, "random", seed=3)
    c = tuning.candidates(SPACE, 7, "random", seed=4)
    assert a == b and a != c and len(a) == 7
    for cand in a:
        assert cand["factors"] in (2, 4, 8) and 0.01 <= cand["reg"] <= 1.0 and cand["epochs"] == 4
        assert type(cand["reg"]) is float and type(cand["factors"]) is int  # plain Python, JSON/TOML-safe
    grid = {"factors": [2, 4, 8], "reg": [0.1, 0.2], "epochs": 3}
    full = tuning.candidates(grid, 100, "grid")
    assert len(full) == 6
    sub = tuning.candidates(grid, 4, "grid", seed=1)
    assert len(sub) == 4 and all(s in full for s in sub)
    assert tuning.candidates({}, 5) == [{}]
    ints = tuning.candidates({"k": {"dist": "randint", "low": 1, "high": 3}}, 30, seed=0)
    assert {c["k"] for c in ints} == {1, 2, 3}


@pytest.mark.parametrize("space,method,match", [
    ({"reg": {"dist": "normal", "low": 0, "high": 1}}, "random", "dist='normal'"),
    ({"reg": {"dist": "loguniform", "low": 0.0, "high": 1}}, "random", "low > 0"),
    ({"reg": {"dist": "uniform", "low": 2, "high": 1}}, "random", "low < high"),
    ({"reg": {"dist": "uniform", "low": 0}}, "random", "dist, low, high"),
    ({"reg": []}, "random", "empty list"),
    ({"reg": {"dist": "uniform", "low": 0, "high": 1}}, "grid", "grid search takes lists"),
    ({"reg": [1]}, "bayes", "search method"),
])
def test_bad_spaces(space, method, match):
    with pytest.raises(ConfigError, match=match):
        tuning.candidates(space, 3, method)


def test_bad_trials():
    with pytest.raises(ConfigError, match="trials"):
        tuning.candidates(SPACE, 0)


@pytest.mark.parametrize("key", sorted(tuning.DEFAULT_SPACES))
def test_default_spaces_build_valid_models(key):
    name, _, backend = key.partition(":")
    if name == "autorec":
        pytest.importorskip("torch")
        from autorec.models.torch import AutoRecTorch as cls
    else:
        cls = baselines.get(name, backend or None)
        req = {"torch": "torch", "mxnet": "mxnet", "surprise": "surprise"}.get(cls.backend)
        if req:
            pytest.importorskip(req)
    for cand in tuning.candidates(tuning.DEFAULT_SPACES[key], 10, seed=0):
        cls.from_params(cand)  # every sampled combination is a valid config


def test_default_space_lookup():
    assert tuning.default_space("biased-mf", "torch") == tuning.DEFAULT_SPACES["biased-mf:torch"]
    assert tuning.default_space("als", "numpy") == tuning.DEFAULT_SPACES["als"]
    assert tuning.default_space("biased-mf") == tuning.DEFAULT_SPACES["biased-mf:numpy"]
    assert tuning.default_space("i-autorec", "mxnet") == tuning.DEFAULT_SPACES["autorec"]
    with pytest.raises(ConfigError, match="no default search space"):
        tuning.default_space("nonesuch")


# ------------------------------------------------------------------------------------------ the search
def test_tuner_never_reads_test_during_search(data, tmp_path):
    guarded = SimpleNamespace(train=data.train, valid=data.valid, test=GuardedTest(data.test))
    res = tuning.tune(als_build, guarded, SPACE, trials=5, seed=0, evaluate_test=False,
                      log=tmp_path / "t.jsonl")
    assert res.test is None and guarded.test.accesses == []
    assert res.n_trials == 5 and res.n_ok == 5

    # with the final evaluation: the first read of test happens after the last trial was recorded
    seen = {}

    def progress(rec):
        seen["trials_done"] = rec["trial"]
        assert guarded2.test.accesses == [], "test was read before the search ended"

    guarded2 = SimpleNamespace(train=data.train, valid=data.valid, test=GuardedTest(data.test, allowed=True))
    res2 = tuning.tune(als_build, guarded2, SPACE, trials=5, seed=0, progress=progress)
    assert seen["trials_done"] == 5 and guarded2.test.accesses
    assert res2.best_params == res.best_params and res2.best_valid_rmse == res.best_valid_rmse


def test_poisoned_test_ratings_change_nothing_but_the_test_score(data):
    poisoned_test = Interactions(data.test.users, data.test.items, np.full(len(data.test), np.nan, np.float32),
                                 data.test.n_users, data.test.n_items, data.test.rating_scale)
    clean = tuning.tune(als_build, data, SPACE, trials=4, seed=2)
    dirty = tuning.tune(als_build, SimpleNamespace(train=data.train, valid=data.valid, test=poisoned_test),
                        SPACE, trials=4, seed=2)
    strip = lambda trials: [{k: v for k, v in t.items() if k != "seconds"} for t in trials]  # noqa: E731
    assert strip(clean.trials) == strip(dirty.trials)
    assert clean.best_params == dirty.best_params
    assert np.isfinite(clean.test["rmse"]) and np.isnan(dirty.test["rmse"])


def test_best_is_lowest_validation_rmse_and_test_is_that_model(data, tmp_path):
    log = tmp_path / "trials.jsonl"
    res = tuning.tune(als_build, data, SPACE, trials=6, seed=0, log=log)
    rmses = [t["valid_rmse"] for t in res.trials]
    assert res.best_trial == int(np.argmin(rmses)) + 1 and res.best_valid_rmse == min(rmses)
    assert res.best_params == {**res.trials[res.best_trial - 1]["params"]}
    from autorec.metrics import evaluate
    assert res.test["rmse"] == pytest.approx(evaluate(res.model, data.train, data.test)["rmse"])
    # rebuilding the chosen config reproduces it (deterministic models)
    again = als_build(res.best_params)
    again.fit(data.train, data.valid)
    assert evaluate(again, data.train, data.valid)["rmse"] == pytest.approx(res.best_valid_rmse)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["trial"] * 6 + ["result"]
    for rec in lines[:6]:
        assert {"params", "valid_rmse", "seconds", "status", "trial", "epochs_run"} <= set(rec)
    assert lines[-1]["best_trial"] == res.best_trial and lines[-1]["test"]["rmse"] == pytest.approx(res.test["rmse"])


def test_equal_budget_for_every_model(data):
    budgets = {}
    for name, backend, space in [("bias-only", "numpy", tuning.default_space("bias-only")),
                                 ("als", "numpy", {**tuning.default_space("als"), "epochs": 2}),
                                 ("biased-mf", "numpy", {**tuning.default_space("biased-mf", "numpy"),
                                                         "epochs": 2})]:
        cls = baselines.get(name, backend)
        res = tuning.tune(cls.from_params, data, space, trials=3, seed=0, evaluate_test=False)
        budgets[name] = (res.n_trials, len(res.trials))
    assert set(budgets.values()) == {(3, 3)}


def test_failed_trials_are_recorded_and_count(data):
    def build(params):
        if params["factors"] == 4:
            raise ConfigError("factors=4 refused by this test")
        return als_build(params)

    res = tuning.tune(build, data, {"factors": [2, 4], "epochs": 2}, trials=2, method="grid")
    status = {t["params"]["factors"]: t["status"] for t in res.trials}
    assert status == {2: "ok", 4: "failed"} and res.n_ok == 1 and res.best_params["factors"] == 2
    assert "refused" in [t for t in res.trials if t["status"] == "failed"][0]["error"]
    with pytest.raises(AutoRecBenchError, match="all 1 trials failed"):
        tuning.tune(build, data, {"factors": [4]}, trials=1)


def test_fixed_params_and_custom_factory(data):
    seen = []

    class Tiny:  # any Recommender-like object works: the factory is the only coupling
        def __init__(self, params):
            seen.append(params)
            self.shift = params["shift"]

        def fit(self, train, valid=None):
            self.mu = train.global_mean + self.shift
            return SimpleNamespace(best_epoch=None, epochs_run=1)

        def predict(self, users, items):
            return np.full(len(users), self.mu)

    res = tuning.tune(Tiny, data, {"shift": [-1.0, 0.0, 1.0]}, trials=3, method="grid", fixed={"tag": "x"})
    assert res.best_params == {"tag": "x", "shift": 0.0}
    assert all(p["tag"] == "x" for p in seen)
    with pytest.raises(ConfigError, match="both fixed and searched"):
        tuning.tune(Tiny, data, {"shift": [0.0]}, trials=1, fixed={"shift": 1.0})
    with pytest.raises(ConfigError, match="validation part"):
        tuning.tune(Tiny, SimpleNamespace(train=data.train, valid=None, test=data.test), {}, trials=1)


# ------------------------------------------------------------------------------------------ config files
def test_write_read_config_roundtrip(tmp_path):
    path = tmp_path / "c.toml"
    params = {"factors": 32, "reg": 0.0123, "weighted_reg": True, "devices": ["cpu"], "name": 'a "q"',
              "patience": None}
    tuning.write_config(path, model="als", backend="numpy", params=params,
                        comments=["Tuned by: autorec-bench tune --model als", "second line"],
                        tuning={"valid_rmse": 0.9, "space": {"reg": {"dist": "loguniform", "low": 0.01, "high": 1.0},
                                                             "factors": [8, 16]}})
    text = path.read_text()
    assert text.startswith("# Tuned by: autorec-bench tune --model als\n# second line\n")
    back = tuning.read_config(path)
    assert back["model"] == "als" and back["backend"] == "numpy" and back["params"] == params
    assert back["tuning"]["space"]["reg"]["dist"] == "loguniform"
    with pytest.raises(ConfigError, match="does not exist"):
        tuning.read_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("params = 3\n")
    with pytest.raises(ConfigError, match="needs `model"):
        tuning.read_config(tmp_path / "bad.toml")


def test_load_space_file(tmp_path):
    f = tmp_path / "space.toml"
    f.write_text('[space]\nfactors = [4, 8]\nreg = {dist = "loguniform", low = 0.01, high = 1.0}\n')
    assert tuning.load_space(f) == {"factors": [4, 8], "reg": {"dist": "loguniform", "low": 0.01, "high": 1.0}}
    f.write_text('[space]\nreg = {dist = "gamma", low = 1, high = 2}\n')
    with pytest.raises(ConfigError, match="gamma"):
        tuning.load_space(f)


# ------------------------------------------------------------------------------------------ CLI
def test_tune_command_end_to_end(data, tmp_path, monkeypatch, capsys):
    from benchmarks.cli import main
    from benchmarks.commands import tune as tune_cmd
    import autorec.splits

    split = SimpleNamespace(sha256="f" * 64)
    guarded = SimpleNamespace(train=data.train, valid=data.valid, test=data.test, split=split)
    calls = []

    def fake_load_split(dataset, spec, **kw):
        calls.append((dataset, spec, kw))
        return guarded

    monkeypatch.setattr(autorec.splits, "load_split", fake_load_split)
    space = tmp_path / "space.toml"
    space.write_text('[space]\nfactors = [2, 4]\nreg = {dist = "loguniform", low = 0.01, high = 1.0}\nepochs = 3\n')
    out = tmp_path / "ml100k-als.toml"
    rc = main(["tune", "--dataset", "ml-100k", "--split", "random", "--seed", "0", "--model", "als",
               "--trials", "3", "--space", str(space), "--set", "patience=2", "--out", str(out), "--threads", "1"])
    assert rc == 0
    assert calls[0][0] == "ml-100k" and calls[0][1] == "random" and calls[0][2]["valid_ratio"] == 0.05
    printed = capsys.readouterr()
    assert "test RMSE" in printed.out and "trial   3/3" in printed.err
    text = out.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# Tuned by: autorec-bench tune --dataset ml-100k --split random --seed 0")
    assert "--model als" in first and "--trials 3" in first and "--set patience=2" in first
    cfg = tuning.read_config(out)
    assert cfg["model"] == "als" and cfg["backend"] == "numpy" and cfg["params"]["patience"] == 2
    t = cfg["tuning"]
    assert t["trials"] == 3 and 0 < t["valid_rmse"] < 2 and 0 < t["test_rmse"] < 2 and "test RMSE" in text
    assert t["split_sha256"] == "f" * 64
    trials = (tmp_path / "ml100k-als.trials.jsonl").read_text().splitlines()
    assert len(trials) == 4
    baselines.get("als").from_params(cfg["params"])  # the written config is a valid config
    # errors before any work
    rc = main(["tune", "--dataset", "ml-100k", "--model", "als", "--set", "reg_bias=-1", "--trials", "2",
               "--space", str(space)])
    assert rc == 2 and "reg_bias=-1 must be >= 0" in capsys.readouterr().err
    rc = main(["tune", "--dataset", "ml-100k", "--model", "als", "--set", "factors=3", "--trials", "2",
               "--space", str(space)])
    assert rc == 2 and "both fixed and searched" in capsys.readouterr().err
    assert len(calls) == 1, "an invalid config must fail before the split is loaded"
    rc = main(["tune", "--dataset", "ml-100k", "--model", "nonesuch"])
    assert rc == 2 and "unknown model 'nonesuch'" in capsys.readouterr().err
    assert tune_cmd.parse_set(["a=1", "b=[1, 2]", 'c="x"', "d=word"]) == {"a": 1, "b": [1, 2], "c": "x", "d": "word"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        tune_cmd.parse_set(["novalue"])


def test_command_line_is_canonical():
    from benchmarks.commands.tune import add_arguments, command_line
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--dataset", "ml-100k", "--model", "als", "--trials", "20", "--out", "x.toml",
                         "--data-dir", "/d ata", "--threads", "1"])
    line = command_line(args)
    assert line == ("autorec-bench tune --dataset ml-100k --split random --seed 0 --valid-ratio 0.05 --model als "
                    "--trials 20 --method random --search-seed 0 --threads 1 --data-dir '/d ata' --out x.toml")
    import shlex
    assert p.parse_args(shlex.split(line)[2:]) == args
