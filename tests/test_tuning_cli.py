"""``autorec-bench tune``: SIGKILL mid-study and rerun, two workers on one study, the test part
never read, one config file per model with the same budget, ``--evaluate`` through the harness,
errors before any work, the canonical command line."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import sqlalchemy.exc
import tomllib

from autorec.interactions import Interactions
from autorec.models import registry
from benchmarks.tuning.study import kind
from tests.conftest import REPO
from tests.tuning_helpers import SLOW, cli_env, study_of, tiny, write_parts


@pytest.fixture(scope="module")
def data():
    return tiny()


def test_sigkill_mid_study_then_rerun_continues_exactly(data, tmp_path):
    split = write_parts(tmp_path, data)

    def command(results: Path, pause: float) -> list[str]:
        return [sys.executable, "-m", "benchmarks", "tune", "--dataset", "tiny", "--split", split, "--rating-scale",
                "1,5", "--model", SLOW, "--trials", "9", "--threads", "1", "--results", str(results), "--set",
                f"pause={pause}", "--quiet"]  # fmt: skip

    done = subprocess.run(command(tmp_path / "one-go", 0.0), cwd=REPO, env=cli_env(tmp_path), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    # 0.1 s an epoch, killed at most 4 epochs in: at least 0.6 s before that trial could end (pruning
    # starts at epoch 10), so a test descheduled between reading the trials and the kill still
    # interrupts it (the margin was 0.1 s at 0.05 s and 8 epochs)
    proc = subprocess.Popen(command(tmp_path / "killed", 0.1), cwd=REPO, env=cli_env(tmp_path))
    deadline = time.time() + 120
    while True:
        assert time.time() < deadline and proc.poll() is None, "the tuner ended before it could be killed"
        try:
            trials = study_of(tmp_path / "killed").get_trials()
        except (ValueError, KeyError, sqlalchemy.exc.DBAPIError):  # not created yet, or mid-creation
            trials = []
        if sum(kind(t) in ("complete", "pruned") for t in trials) >= 3 and any(  # mid-fit, far from its end
            t.state == optuna.trial.TrialState.RUNNING and 0 < len(t.intermediate_values) <= 4 for t in trials
        ):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(command(tmp_path / "killed", 0.1), cwd=REPO, env=cli_env(tmp_path), capture_output=True)
    assert rerun.returncode == 0, rerun.stderr.decode()

    def outcome(results: Path):
        trials = sorted(study_of(results).get_trials(), key=lambda t: t.number)
        return trials, [(kind(t), t.params, t.value) for t in trials if kind(t) in ("complete", "pruned", "failed")]

    killed, resumed = outcome(tmp_path / "killed")
    _, reference = outcome(tmp_path / "one-go")
    assert resumed == reference and len(resumed) == 9  # no trial lost, none repeated, the same parameters
    interrupted = [t for t in killed if kind(t) == "interrupted"]
    assert len(interrupted) == 1
    (retry,) = [t for t in killed if t.user_attrs.get("retry_of") == interrupted[0].number]
    assert retry.params == interrupted[0].params and kind(retry) in ("complete", "pruned")


def test_two_workers_share_one_study(data, tmp_path):
    split = write_parts(tmp_path, data)
    # 0.1 s an epoch (1.4 s a trial): both workers take trials even when one starts seconds late
    command = [sys.executable, "-m", "benchmarks", "tune", "--dataset", "tiny", "--split", split, "--rating-scale",
               "1,5", "--model", SLOW, "--trials", "10", "--threads", "1", "--results", str(tmp_path), "--set",
               "pause=0.1", "--no-prune", "--quiet"]  # fmt: skip
    workers = [subprocess.Popen(command, cwd=REPO, env=cli_env(tmp_path), stderr=subprocess.PIPE) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err.decode()
    trials = study_of(tmp_path).get_trials()
    done = [t for t in trials if kind(t) == "complete"]
    assert 10 <= len(done) <= 11 and all(kind(t) in ("complete", "duplicate") for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)  # no configuration twice
    assert len({t.user_attrs["worker"]["pid"] for t in done}) == 2  # both took trials


class GuardedTest:
    """Stands in for the test part: any use raises and is recorded."""

    def __init__(self) -> None:
        object.__setattr__(self, "accesses", [])

    def __getattr__(self, name):
        self.accesses.append(name)
        raise AssertionError(f"the tuner read test.{name}")

    def __len__(self):
        return self.__getattr__("__len__")


def test_the_command_never_reads_the_test_part(data, tmp_path, monkeypatch, capsys):
    import autorec.splits
    from benchmarks.cli import main

    poisoned = Interactions(
        data.test.users, data.test.items, np.full(len(data.test), np.nan, np.float32), 80, 50, (1.0, 5.0)
    )
    split = SimpleNamespace(spec="random:test_ratio=0.1", sha256="f" * 64, valid_ratio=0.1)
    chosen = []
    for name, test in (("guarded", GuardedTest()), ("poisoned", poisoned), ("clean", data.test)):
        part = SimpleNamespace(train=data.train, valid=data.valid, test=test, split=split)
        monkeypatch.setattr(autorec.splits, "load_split", lambda *a, part=part, **kw: part)
        rc = main(["tune", "--dataset", "tiny", "--model", "bias-only", "--trials", "6", "--quiet", "--threads", "1",
                   "--results", str(tmp_path / name)])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
        (toml,) = (tmp_path / name / "tuning" / "tiny").glob("*.toml")
        chosen.append(tomllib.loads(toml.read_text())["params"])
        if isinstance(test, GuardedTest):
            assert test.accesses == []
    assert chosen[0] == chosen[1] == chosen[2]


def test_tune_command_end_to_end_and_equal_budgets(data, tmp_path, capsys, monkeypatch):
    from benchmarks.cli import main

    split = write_parts(tmp_path, data)
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    args = ["tune", "--dataset", "tiny", "--split", split, "--rating-scale", "1,5", "--valid-ratio", "0.1", "--trials",
            "7", "--threads", "1", "--results", str(tmp_path / "res"), "--model", "bias-only", "--model", "als",
            "--model", SLOW, "--set", "epochs=4"]  # fmt: skip
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert err.count("[  7/7]") == 3 and "best" in err  # a line per trial, the same budget for every model
    tomls = sorted((tmp_path / "res" / "tuning" / "tiny").glob("*.toml"))
    assert len(tomls) == 3 and len(list(tomls[0].parent.glob("*.db"))) == 3
    for toml in tomls:
        text = toml.read_text()
        doc = tomllib.loads(text)
        first = text.splitlines()[0]
        assert first.startswith("# Tuned by: autorec-bench tune --dataset tiny --split files:")
        assert f"--model {doc['model']}" in first and "--trials 7" in first and "--set epochs=4" in first
        assert shlex.split(first[len("# Tuned by: ") :])[2:] == shlex.split(doc["tuning"]["command"])[2:]
        t = doc["tuning"]
        assert t["trials"] == 7 and 0 < t["valid_rmse"] < 2 and "test_rmse" not in t
        assert doc["params"]["epochs"] == 4 and "epochs" not in doc["tuning"]["space"]
        registry.get(doc["model"]).build(doc["params"])  # a valid configuration
        assert f"validation RMSE {t['valid_rmse']:.5f}" in text
        assert f"{doc['model']} (numpy) on tiny" in out and f"validation RMSE {t['valid_rmse']:.5f}" in out
    # rerun: the studies are complete, nothing is fitted again, the same configs are written
    before = [p.read_text().splitlines()[1:] for p in tomls]
    assert main(args) == 0
    assert "[  " not in capsys.readouterr().err
    assert [p.read_text().splitlines()[1:] for p in tomls] == before
    # a smaller budget would not reproduce the study's best (the best of 7): refused, the configs untouched
    smaller = [a if a != "7" else "5" for a in args]
    assert main(smaller) == 2
    assert "already holds 7 counted trials, more than the 5 asked for" in capsys.readouterr().err
    assert [p.read_text().splitlines()[1:] for p in tomls] == before and "--trials 7" in tomls[0].read_text()


def test_evaluate_runs_the_chosen_config_once_through_the_harness(data, tmp_path, capsys, monkeypatch):
    from benchmarks import harness, record
    from benchmarks.cli import main

    split = write_parts(tmp_path, data)
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    args = ["tune", "--dataset", "tiny", "--split", split, "--rating-scale", "1,5", "--model", "bias-only", "--trials",
            "3", "--threads", "1", "--results", str(tmp_path), "--evaluate", "--quiet"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    (toml,) = (tmp_path / "tuning" / "tiny").glob("*.toml")
    (raw,) = (tmp_path / "raw").glob("*.json")
    rec = record.read(raw)
    params = tomllib.loads(toml.read_text())["params"]
    assert rec.status == "ok" and rec.metrics is not None and f"test RMSE {rec.metrics.test_rmse:.4f}" in out
    assert {k: rec.identity.params[k] for k in params} == params
    # the run a spec referencing the config file plans is this very run: a sweep would skip it
    plan = harness.plan_run(dataset="tiny", split=split, model="bias-only", params=params, rating_scale="1,5")
    assert plan.run_id == rec.run_id and harness.is_finished(raw, plan.run_id)


def test_tunes_on_synthetic_data_like_any_run(tmp_path, capsys, monkeypatch):
    """A synthetic dataset (which ``run`` and ``sweep`` take) is tuned on too, and its tuned config
    evaluated through the harness on the same split."""
    from benchmarks import record
    from benchmarks.cli import main

    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    args = ["tune", "--dataset", "synthetic:60,40,900", "--model", "bias-only", "--trials", "2", "--threads", "1",
            "--results", str(tmp_path), "--evaluate", "--quiet"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    (toml,) = (tmp_path / "tuning" / "synthetic_60_40_900_0").glob("*.toml")
    doc = tomllib.loads(toml.read_text())
    (raw,) = (tmp_path / "raw").glob("*.json")
    rec = record.read(raw)
    assert rec.status == "ok" and rec.identity.data.name == "synthetic:60,40,900,0"
    assert rec.identity.split.sha256 in toml.read_text()
    assert {k: rec.identity.params[k] for k in doc["params"]} == doc["params"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "bias-only", "--set", "reg_user=-1"], "reg_user=-1: must be >= 0"),
        (["--model", "bias-only", "--set", "seed=3"], "set from the run"),
        (["--model", "bias-only", "--set", "nonesuch=1"], "unknown parameter"),
        (["--model", "nonesuch"], "unknown model 'nonesuch'"),
        (["--model", "bias-only", "--trials", "0"], "must be > 0"),
        (["--model", "bias-only", "--model", "als", "--out", "x.toml"], "one model's search"),
        (["--model", "bias-only", "--space", "missing.toml"], "does not exist"),
    ],
)
def test_errors_come_before_any_work(argv, message, monkeypatch, capsys):
    import autorec.splits
    from benchmarks.cli import main

    calls = []
    monkeypatch.setattr(autorec.splits, "load_split", lambda *a, **kw: calls.append(a))
    assert main(["tune", "--dataset", "ml-100k", "--trials", "2", *argv]) == 2
    assert message in capsys.readouterr().err and calls == []


def test_every_value_of_the_space_is_checked_before_any_work(tmp_path, monkeypatch, capsys):
    """A value the model refuses, past the first choice or at the upper bound, would spend trials of
    the budget as failures: refused up front."""
    import autorec.splits
    from benchmarks.cli import main

    calls = []
    monkeypatch.setattr(autorec.splits, "load_split", lambda *a, **kw: calls.append(a))
    for body, message in (
        ("reg_user = [1.0, -5.0]", "reg_user=-5.0: must be >= 0"),
        ('reg_item = {dist = "uniform", low = 1.0, high = 2.0}\nepochs = [5, 0]', "epochs=0: must be >= 1"),
    ):
        (tmp_path / "space.toml").write_text("[space]\n" + body + "\n")
        argv = [
            "tune",
            "--dataset",
            "ml-100k",
            "--model",
            "bias-only",
            "--trials",
            "2",
            "--space",
            str(tmp_path / "space.toml"),
        ]
        assert main(argv) == 2
        assert message in capsys.readouterr().err and calls == []


def test_a_cold_start_constant_off_the_scale_is_refused_before_any_trial(tmp_path, capsys, monkeypatch):
    from benchmarks.cli import main

    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["tune", "--dataset", "synthetic:60,40,900", "--model", "bias-only", "--trials", "2", "--threads", "1",
            "--cold-start", "constant:9", "--results", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    assert "constant:9: the constant is outside the rating scale 1..5" in capsys.readouterr().err
    assert not list(tmp_path.glob("tuning/*/*.db"))  # no study, no failed trials


def test_command_line_is_canonical():
    import argparse

    from benchmarks.commands.tune import add_arguments, command_line

    p = argparse.ArgumentParser()
    add_arguments(p)
    argv = ["--dataset", "ml-100k", "--model", "als", "--trials", "60", "--data-dir", "/d ata", "--threads", "1",
            "--storage", "postgresql://h/db", "--no-prune"]  # fmt: skip
    args = p.parse_args(argv)
    line = command_line(args, "als")
    assert line == (
        "autorec-bench tune --dataset ml-100k --split random --seed 0 --valid-ratio 0.05 --model als --trials 60 "
        "--search-seed 0 --no-prune --threads 1 --storage postgresql://h/db --data-dir '/d ata'"
    )
    again = p.parse_args(shlex.split(line)[2:])
    assert vars(again) == {**vars(args), "model": ["als"]}


def test_the_command_line_names_the_pruning_a_study_with_variants_ran_with(tmp_path):
    import argparse

    from benchmarks.commands.tune import add_arguments, command_line
    from tests.tuning_helpers import LOGU, spec_for

    variants = {"reg_item": LOGU, "one_of": {"a": {"reg_user": LOGU}, "b": {"reg_user": 1.0}}}
    assert spec_for(tmp_path, space=variants, per_variant=False).pruner_mode() == "pooled"
    assert spec_for(tmp_path, space=variants, per_variant=True).pruner_mode() == "per-variant"
    assert spec_for(tmp_path, per_variant=True).pruner_mode() is None  # no variants: nothing to choose
    assert spec_for(tmp_path, space=variants, per_variant=True, prune=False).pruner_mode() is None
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--dataset", "ml-1m", "--model", "i-autorec"])
    line = command_line(args, "i-autorec", "pooled")
    assert line.endswith("--search-seed 0 --pruner pooled")
    assert p.parse_args(shlex.split(line)[2:]).pruner == "pooled"
