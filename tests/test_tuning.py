"""The Optuna tuner (``benchmarks/tuning/``): seeded TPE, studies that resume exactly (a dead
worker's trial retried once), pruning on the per-epoch validation RMSE, failed and duplicate trials,
finite spaces searched once each, the score is the validation RMSE of the model's own predict."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import optuna
import pytest

from autorec import env
from autorec.errors import ConfigError
from autorec.interactions import Interactions
from autorec.models import registry
from benchmarks.tuning import space as spaces
from benchmarks.tuning import study as study_mod
from benchmarks.tuning import tune
from benchmarks.tuning.study import (
    PerVariantMedianPruner,
    PositionSeededTPE,
    kind,
    open_study,
    settle,
    storage,
    worker_identity,
)
from tests.tuning_helpers import LOGU, counted, spec_for, tiny


@pytest.fixture(scope="module")
def data():
    return tiny()


# ------------------------------------------------------------------------------------------ the tuner
def test_seeded_tpe_and_resuming_a_study_extends_it_exactly(data, tmp_path):
    one_go = spec_for(tmp_path, name="one-go")
    r = tune(one_go, data.train, data.valid, trials=13)
    assert r.trials == 13 and r.budget == 13 and r.counts.get("pruned")
    in_steps = spec_for(tmp_path, name="steps")
    for n in (4, 11, 13, 13):  # stopped and resumed (in the random start-up, then in TPE), then rerun once complete
        tune(in_steps, data.train, data.valid, trials=n)
    assert counted(in_steps) == counted(one_go)
    other = spec_for(tmp_path, name="other", search_seed=1)
    tune(other, data.train, data.valid, trials=13)
    assert [p for _, p, _ in counted(other)] != [p for _, p, _ in counted(one_go)]
    params = [tuple(sorted(p.items())) for _, p, _ in counted(one_go)]
    assert len(set(params)) == len(params)  # no configuration twice


def test_score_is_the_validation_rmse_of_the_models_own_predict(data, tmp_path):
    spec = spec_for(tmp_path, "bias-only")
    r = tune(spec, data.train, data.valid, trials=6)
    values = [v for k, _, v in counted(spec) if k == "complete" and v is not None]
    assert r.best_value == min(values) and r.counts["complete"] == len(values)
    again = registry.get("bias-only").build({**r.best_params, "seed": 0, "cold_start": "global-mean"})
    again.fit(data.train, data.valid)
    assert again.evaluate(data.valid)["rmse"] == pytest.approx(r.best_value, abs=1e-12)
    assert set(r.best_params) == {"reg_user", "reg_item"}


def test_trials_ask_one_shot_models_not_to_score_train(data, tmp_path, monkeypatch):
    """A trial keeps the validation score only: its fit skips a one-shot model's train pass."""
    from autorec.models.base import Recommender

    asked = []
    fit = Recommender.fit

    def spy(self, *args, score_train=True, **kw):
        asked.append(score_train)
        return fit(self, *args, score_train=score_train, **kw)

    monkeypatch.setattr(Recommender, "fit", spy)
    tune(spec_for(tmp_path, "global-mean", name="spy"), data.train, data.valid, trials=1)
    assert asked == [False]


def test_pruning_on_the_per_epoch_validation_rmse(data, tmp_path):
    pruned = spec_for(tmp_path, name="pruned")
    r = tune(pruned, data.train, data.valid, trials=16)
    study = optuna.load_study(study_name="pruned", storage=storage(pruned.storage))
    stopped = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.PRUNED]
    assert r.counts.get("pruned", 0) == len(stopped) > 0 and r.trials == 16
    for t in stopped:
        last = max(t.intermediate_values)
        assert 10 <= last < 14 and t.user_attrs["epochs_run"] == last  # never before epoch 10
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert sorted(t.intermediate_values) == list(range(1, 15))
        assert t.value == pytest.approx(t.intermediate_values[14])  # no restore: the last sweep's RMSE
    free = spec_for(tmp_path, name="free", prune=False)
    assert "pruned" not in tune(free, data.train, data.valid, trials=8).counts


def test_failed_trials_are_recorded_and_count(data, tmp_path):
    spec = spec_for(tmp_path, fixed={"refuse_above": 3.0}, prune=False)
    r = tune(spec, data.train, data.valid, trials=10)
    study = optuna.load_study(study_name="s", storage=storage(spec.storage))
    failed = [t for t in study.get_trials() if kind(t) == "failed"]
    assert failed and r.trials == 10 and r.counts["failed"] == len(failed)
    for t in failed:
        assert t.params["reg_user"] > 3.0 and "refused above 3.0 by this test" in t.user_attrs["error"]
    assert r.best_params["refuse_above"] == 3.0 and r.best_params["reg_user"] <= 3.0


def test_finite_spaces_are_searched_once_each(data, tmp_path):
    small = {"reg_user": [1.0, 10.0], "reg_item": [1.0, 10.0], "epochs": 4}
    r = tune(spec_for(tmp_path, name="grid", space=small), data.train, data.valid, trials=60)
    assert r.budget == 4 and r.trials == 4 and r.space_size == 4
    mean = tune(spec_for(tmp_path, "global-mean", name="mean"), data.train, data.valid, trials=60)
    assert mean.budget == 1 and mean.trials == 1 and mean.best_params == {}
    bigger = {"reg_user": [0.5, 1.0, 5.0, 10.0], "reg_item": [1.0, 5.0, 10.0], "epochs": 4}  # 12 > 9: TPE, redrawn
    spec = spec_for(tmp_path, name="redraw", space=bigger, search_seed=3)
    r = tune(spec, data.train, data.valid, trials=9)
    params = [tuple(sorted(p.items())) for _, p, _ in counted(spec)]
    assert r.trials == 9 and len(set(params)) == 9


def test_a_study_refuses_another_search(data, tmp_path):
    tune(spec_for(tmp_path, "bias-only"), data.train, data.valid, trials=2)
    other = spec_for(tmp_path, "bias-only", space={"reg_user": LOGU})
    with pytest.raises(ConfigError, match="created for another search .*space"):
        tune(other, data.train, data.valid, trials=2)
    with pytest.raises(ConfigError, match="validation part"):
        empty = Interactions(data.valid.users[:0], data.valid.items[:0], data.valid.ratings[:0], 80, 50, (1.0, 5.0))
        tune(spec_for(tmp_path, "bias-only", name="v"), data.train, empty, trials=2)


def test_a_dead_workers_trial_is_failed_and_its_parameters_retried_once(data, tmp_path):
    reference = spec_for(tmp_path, name="ref")
    tune(reference, data.train, data.valid, trials=8)
    spec = spec_for(tmp_path, name="crash")
    tune(spec, data.train, data.valid, trials=4)
    study = optuna.load_study(study_name="crash", storage=spec.storage, sampler=PositionSeededTPE(spec.search_seed))
    ghost = study.ask()  # what a worker killed mid-trial leaves: RUNNING, sampled, its process gone
    spaces.suggest(ghost, spec.space)
    ghost.set_user_attr("worker", {"host": os.uname().nodename, "pid": os.getpid(), "started": 0.0})
    tune(spec, data.train, data.valid, trials=8)
    trials = optuna.load_study(study_name="crash", storage=storage(spec.storage)).get_trials()
    assert kind(trials[ghost.number]) == "interrupted"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == ghost.number]
    assert len(retries) == 1 and retries[0].params == ghost.params
    assert counted(spec) == counted(reference)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() outside optimize, on purpose
def test_a_trial_names_its_worker_as_soon_as_it_exists(tmp_path):
    # a tuner killed right after Optuna created a trial must not leave it "running" for the grace
    # period: the sampler stamps the worker before any sampling or fitting
    spec = spec_for(tmp_path, name="stamp")
    store = storage(spec.storage)
    study = open_study(settle(spec, store), store)
    trial = study.ask()
    worker = study.get_trials()[trial.number].user_attrs["worker"]
    assert worker["pid"] == os.getpid() and worker["start_ticks"] == env.proc_stat(os.getpid())[2]


def test_a_workers_liveness_is_judged_by_its_start_in_ticks(monkeypatch):
    me = worker_identity()

    def running(worker):
        return optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, user_attrs={"worker": worker})

    # psutil's wall-clock start moves with the boot time NTP adjusts: the start in ticks decides
    assert not study_mod._dead(running({**me, "started": me["started"] + 1.0}))
    assert study_mod._dead(running({**me, "start_ticks": me["start_ticks"] + 1}))  # the pid reused
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert study_mod._dead(running({**me, "pid": int(gone.stdout)}))
    # a trial stored before start_ticks: its wall-clock start, within a slack
    old = {k: v for k, v in me.items() if k != "start_ticks"}
    assert not study_mod._dead(running({**old, "started": me["started"] + 1.0}))
    assert study_mod._dead(running({**old, "started": me["started"] - 100.0}))


def test_a_tiny_autorec_study_with_pruning(data, tmp_path):
    ref = registry.get("i-autorec", "torch")
    try:
        ref.load()
    except ConfigError as exc:
        pytest.skip(f"AutoRec is not on the model contract in this checkout ({exc})")
    import torch

    torch.set_num_threads(1)
    fixed = {"hidden": [16], "epochs": 12, "patience": None, "batch_size": 64}
    space = spaces.fix(ref.space(), fixed)
    space["one_of"] = {k: v for k, v in space["one_of"].items() if k != "lbfgs"}  # L-BFGS: 10x slower an epoch
    spec = spec_for(tmp_path, "i-autorec", space=space, fixed=fixed)
    r = tune(spec, data.train, data.valid, trials=10)
    assert r.trials == 10 and math.isfinite(r.best_value) and r.best_value < 1.2
    trials = optuna.load_study(study_name="s", storage=storage(spec.storage)).get_trials()
    assert {t.params["one_of"] for t in trials} == {"adam", "rprop"}  # both optimizer variants tried
    for t in trials:
        if kind(t) == "complete":  # every epoch's validation RMSE reached the pruner
            assert sorted(t.intermediate_values) == list(range(1, 13))
        elif kind(t) == "pruned":
            assert 10 <= max(t.intermediate_values) < 12
    assert r.best_params["hidden"] == [16] and r.best_params["optimizer"] in ("adam", "rprop")


# ------------------------------------------------------------------------------------------ pruning per variant
def _curve(variant: str, curve: list[float], complete: bool = True) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        params={spaces.ONE_OF: variant},
        distributions={spaces.ONE_OF: optuna.distributions.CategoricalDistribution(["slow", "fast"])},
        value=min(curve) if complete else None,
        intermediate_values=dict(enumerate(curve, 1)),
        state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.RUNNING,
    )


def _slow(start: float) -> list[float]:  # improves steadily over 40 epochs: 0.997 at epoch 12 for start 1.2
    return [start - 0.35 * (e - 1) / 19 for e in range(1, 41)]


def test_a_trial_is_pruned_against_its_own_variant_only():
    study = optuna.create_study(direction="minimize")
    study.add_trials([_curve("fast", [0.9] * 20) for _ in range(5)])
    pooled, per_variant = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10), PerVariantMedianPruner()
    behind_fast = _curve("slow", _slow(1.2)[:11] + [0.99], complete=False)  # epoch 12: 0.99 vs fast 0.9
    assert pooled.prune(study, behind_fast)
    assert not per_variant.prune(study, behind_fast)  # no completed slow trial to compare with yet
    study.add_trials([_curve("slow", _slow(1.2 + d)) for d in (-0.002, -0.001, 0.0, 0.001, 0.002)])
    # pooled, the median at epoch 12 is 0.9485 (five at 0.9, five near 0.997): this slow trial, ahead of
    # its own variant, is cut; per variant it goes on
    assert pooled.prune(study, behind_fast)
    assert not per_variant.prune(study, behind_fast)
    assert per_variant.prune(study, _curve("slow", _slow(1.2)[:11] + [1.05], complete=False))  # behind its own
    assert per_variant.prune(study, _curve("fast", [0.95] * 12, complete=False))
    assert not per_variant.prune(study, _curve("fast", [0.95] * 9, complete=False))  # before epoch 10


def test_a_study_keeps_the_pruning_it_was_created_with(data, tmp_path):
    variants = {"reg_item": LOGU, spaces.ONE_OF: {"a": {"reg_user": LOGU}, "b": {"reg_user": 1.0}}}
    new = spec_for(tmp_path, name="fresh", space=variants)
    fresh = settle(new, storage(new.storage))
    assert fresh.per_variant is True and fresh.pruning()["per_variant"] is True
    assert "per variant" in fresh.pruning_text()
    r = tune(new, data.train, data.valid, trials=3)
    assert r.spec.per_variant is True
    assert optuna.load_study(study_name="fresh", storage=storage(r.spec.storage)).user_attrs["definition"]["pruner"][
        "per_variant"
    ]
    # a study created pooled (as every study before this rule) resumes pooled; asked for per-variant, it refuses
    old = spec_for(tmp_path, name="old", space=variants, per_variant=False)
    tune(old, data.train, data.valid, trials=2)
    resumed = tune(spec_for(tmp_path, name="old", space=variants), data.train, data.valid, trials=3)
    assert resumed.spec.per_variant is False and "per_variant" not in resumed.spec.pruning()
    assert resumed.spec.pruning_text().endswith("from epoch 10, pooled over the variants)")
    with pytest.raises(ConfigError, match="pruner"):
        tune(spec_for(tmp_path, name="old", space=variants, per_variant=True), data.train, data.valid, trials=3)
    # no variants: the definition is what it always was, whatever per_variant says
    plain = spec_for(tmp_path, name="plain")
    assert settle(plain, storage(plain.storage)).pruning() == {
        "name": "median", "n_startup_trials": 5, "n_warmup_steps": 10
    }  # fmt: skip


@pytest.mark.parametrize("model", ["i-autorec", "u-autorec"])
def test_the_committed_autorec_studies_resume_with_their_pooled_pruning(model, tmp_path):
    import shutil
    from pathlib import Path

    from benchmarks.tuning.study import sqlite_url

    studies = sorted((Path(__file__).parents[1] / "results/tuning/ml-100k").glob(f"{model}-torch-*valid0.05.db"))
    if not studies:
        pytest.skip("no committed ML-100K study here")
    copy = tmp_path / studies[0].name
    shutil.copy(studies[0], copy)
    store = storage(sqlite_url(copy))
    name = store.get_all_studies()[0].study_name
    spec = spec_for(tmp_path, name=name, storage=sqlite_url(copy))
    assert settle(spec, store).per_variant is False


@pytest.mark.parametrize("dataset", ["ml-100k", "ml-latest-small"])
@pytest.mark.parametrize("model", ["i-autorec", "u-autorec"])
def test_the_committed_per_variant_studies_resume_per_variant(dataset, model, tmp_path):
    import shutil
    from pathlib import Path

    from benchmarks.tuning.study import sqlite_url

    studies = sorted((Path(__file__).parents[1] / "results/tuning" / dataset).glob(f"{model}-torch-*-per-variant.db"))
    if not studies:
        pytest.skip(f"no committed per-variant {dataset} study here")
    copy = tmp_path / studies[0].name
    shutil.copy(studies[0], copy)
    store = storage(sqlite_url(copy))
    name = store.get_all_studies()[0].study_name
    spec = spec_for(tmp_path, name=name, storage=sqlite_url(copy))
    assert settle(spec, store).per_variant is True


def test_a_study_holding_more_trials_than_asked_is_refused_beyond_the_workers_overshoot(data, tmp_path):
    """Its best is the best of all its trials: a command asking for fewer would not reproduce it.  Tuner
    workers sharing a study may each start its last trial, so up to workers - 1 over is not refused."""
    from benchmarks.tuning.tuner import check_budget

    spec = spec_for(tmp_path, "bias-only", space={"reg_user": LOGU, "reg_item": LOGU})
    tune(spec, data.train, data.valid, trials=5)
    check_budget(spec, 5)
    check_budget(spec, 3, workers=3)  # 5 held, 3 asked, 2 over: two workers' overshoot each
    with pytest.raises(ConfigError, match="already holds 5 counted trials, more than the 3 asked for"):
        check_budget(spec, 3, workers=2)
