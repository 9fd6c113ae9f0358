"""The harness: parsing, validation before training, one raw file per (run, seed), schema, failures,
memory of the run's own worker, `files:` splits, the registry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from autorec.errors import ConfigError, MissingDependencyError
from benchmarks import algorithms, harness
from benchmarks.cli import main as cli
from test_harness_helpers import TESTS, TOY

SYN = "synthetic:120,80,2400,3"

REQUIRED = ["dataset", "split", "split_sha256", "model", "backend", "devices", "seed", "params", "metrics",
            "best_epoch", "epochs_run", "history", "timing", "memory", "n_train", "n_valid", "n_test",
            "n_cold_start", "cold_start_policy", "environment", "git_commit", "created_at", "schema_version",
            "run_id", "status", "threads"]


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------------------ parsing
def test_parse_seeds_devices_sets_dataset():
    assert harness.parse_seeds("0,1,2") == [0, 1, 2]
    assert harness.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert harness.parse_seeds("2,2,1") == [2, 1]
    assert harness.parse_seeds([3]) == [3]
    for bad in ("a", "-1", "3-1", ""):
        with pytest.raises(ConfigError):
            harness.parse_seeds(bad)
    assert harness.parse_devices("cpu(0),cpu(1)") == ["cpu(0)", "cpu(1)"]
    assert harness.parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    assert harness.parse_devices(None) == ["cpu"]
    with pytest.raises(ConfigError, match="not a device"):
        harness.parse_devices("tpu")
    assert harness.parse_sets(["lr=0.001", "hidden=[500, 250]", "based=user", "patience=none", "x=true"]) == {
        "lr": 0.001, "hidden": [500, 250], "based": "user", "patience": None, "x": True}
    with pytest.raises(ConfigError, match="key=value"):
        harness.parse_sets(["lr"])
    assert harness.parse_dataset("synthetic:10,20,30").name == "synthetic:10,20,30,0"
    assert harness.parse_dataset("synthetic:ml-1m@0.01").name == "synthetic:ml-1m@0.01,0"
    assert harness.parse_dataset("ml-100k").synthetic is None
    with pytest.raises(ConfigError, match="synthetic:NU,NI,NR"):
        harness.parse_dataset("synthetic:abc")


def test_synthetic_dataset_resolves_and_splits():
    d = harness.load_data(SYN, "random", seed=1)
    assert d.ratings.name == "synthetic:120,80,2400,3"
    assert len(d.train) + len(d.valid) + len(d.test) == 2400
    assert len(d.test) == 240
    again = harness.load_data(SYN, "random", seed=1)
    assert again.split.sha256 == d.split.sha256
    assert harness.load_data(SYN, "random", seed=2).split.sha256 != d.split.sha256


# ------------------------------------------------------------------------------ validation up front
def test_errors_before_any_training(tmp_path, monkeypatch):
    out = tmp_path / "raw"
    with pytest.raises(ConfigError, match="unknown model"):
        harness.plan_run(dataset=SYN, split="random", seed=0, model="no-such-model")
    with pytest.raises(ConfigError, match="unknown"):
        harness.plan_run(dataset=SYN, split="random", seed=0, model="bias-only", params={"nope": 1})
    with pytest.raises(ConfigError, match="--seeds"):
        harness.plan_run(dataset=SYN, split="random", seed=0, model="als", params={"seed": 3})
    with pytest.raises(ConfigError, match="CPU only"):
        harness.plan_run(dataset=SYN, split="random", seed=0, model="als", devices="cuda:0")
    with pytest.raises(Exception, match="kind"):
        harness.plan_run(dataset=SYN, split="nosuchsplit", seed=0, model="als")
    monkeypatch.setitem(algorithms.BACKEND_DEPENDENCIES, "surprise", ("surely_not_installed_pkg", "surprise"))
    with pytest.raises(MissingDependencyError, match=r"pip install \.\[surprise\]"):
        harness.plan_run(dataset=SYN, split="random", seed=0, model="surprise-svd")
    # the CLI: exit 2, an error naming the problem, and not a single file written
    assert cli(["run", "--dataset", SYN, "--model", "bias-only", "--seeds", "0,1", "--set", "reg_user=-1",
                "--out", str(out)]) == 2
    assert cli(["run", "--dataset", SYN, "--model", "surprise-svd", "--out", str(out)]) == 2
    assert not out.exists() or not list(out.iterdir())


def test_registry():
    assert {"i-autorec", "u-autorec", "autorec", "als", "bias-only", "d2l-mf"} <= set(algorithms.names())
    assert algorithms.backends("i-autorec") == ["torch", "mxnet"]
    a = algorithms.get("u-autorec", "torch")
    assert a.family == "autorec" and a.fixed == {"based": "user"}
    with pytest.raises(ConfigError, match="fixes based"):
        a.merge({"based": "item"})
    assert algorithms.get("als").family == "mf" and algorithms.get("bias-only").family == "baseline"
    with pytest.raises(ConfigError, match="no backend"):
        algorithms.get("als", "torch")
    assert algorithms.display_name("i-autorec", {"based": "item", "hidden": [500, 250, 500]}) == "I-AutoRec (deep)"
    assert algorithms.get(TOY).family == "mf"
    assert algorithms.get("d2l-mf", "torch").launcher(["cpu"]) == "single"
    assert algorithms.get("i-autorec", "torch").launcher(["cpu", "cpu"]) == "ddp"
    assert algorithms.get("i-autorec", "mxnet").launcher(["cpu(0)", "cpu(1)"]) == "contexts"


def test_identity_hash_and_filename():
    r1 = harness.plan_run(dataset=SYN, split="random", seed=0, model="bias-only")
    r2 = harness.plan_run(dataset=SYN, split="random:test_ratio=0.1", seed=0, model="bias-only", label="x")
    assert r1.run_id == r2.run_id and r1.filename == r2.filename  # canonical spec; label is no identity
    r3 = harness.plan_run(dataset=SYN, split="random", seed=1, model="bias-only")
    r4 = harness.plan_run(dataset=SYN, split="random", seed=0, model="bias-only", params={"reg_user": 3.0})
    assert len({r1.run_id, r3.run_id, r4.run_id}) == 3
    assert r1.params["reg_user"] != 3.0 and "max_iter" in r1.params  # fully resolved defaults
    assert r1.filename.startswith("synthetic-120-80-2400-3_random-test-ratio-0.1_bias-only-numpy_cpu_s0_")
    assert r1.filename.endswith(f"_{r1.run_id[:16]}.json")


# ------------------------------------------------------------------------------ running
def test_run_writes_one_file_per_seed_with_schema(tmp_path, capsys):
    out = tmp_path / "raw"
    assert cli(["run", "--dataset", SYN, "--model", "bias-only", "--seeds", "0,1", "--out", str(out)]) == 0
    files = harness.raw_files(out)
    assert len(files) == 2
    recs = [harness.read_raw(f) for f in files]
    for rec in recs:
        for key in REQUIRED:
            assert key in rec, key
        assert rec["status"] == "ok" and rec["schema_version"] == harness.SCHEMA_VERSION
        assert rec["split"] == {"spec": "random:test_ratio=0.1", "kind": "random", "args": {"test_ratio": 0.1}}
        assert set(rec["metrics"]) >= {"test_rmse", "test_mae", "valid_rmse"}
        assert 0.3 < rec["metrics"]["test_rmse"] < 1.5
        assert set(rec["timing"]) >= {"fit_seconds", "seconds_per_epoch", "predict_seconds"}
        assert rec["memory"]["peak_rss_mb"] > 10
        assert rec["n_train"] + rec["n_valid"] + rec["n_test"] == 2400 and rec["n_test"] == 240
        assert rec["history"] and {"epoch", "train_loss", "valid_rmse"} <= set(rec["history"][0])
        assert rec["environment"]["numpy"] == np.__version__
        assert "threads" in rec["environment"] and rec["threads"] >= 1
        assert "seed" not in rec["params"]  # bias-only is deterministic: no seed parameter
        d = harness.load_data(SYN, "random", seed=rec["seed"])
        assert rec["split_sha256"] == d.split.sha256
    assert {r["seed"] for r in recs} == {0, 1}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    # a second run skips the finished results and keeps them byte for byte
    before = {f.name: f.read_bytes() for f in files}
    assert cli(["run", "--dataset", SYN, "--model", "bias-only", "--seeds", "0,1", "--out", str(out)]) == 0
    assert "already done" in capsys.readouterr().out
    assert {f.name: f.read_bytes() for f in harness.raw_files(out)} == before


def test_set_and_config_file_precedence(tmp_path):
    cfg = tmp_path / "als.toml"
    cfg.write_text('# tuned\nmodel = "als"\nbackend = "numpy"\n\n[params]\nfactors = 3\nepochs = 2\nseed = 9\n')
    r = harness.plan_run(dataset=SYN, split="random", seed=1, model="als",
                         params={**harness.read_params_file(cfg, "als"), **harness.parse_sets(["epochs=4"])})
    assert r.params["factors"] == 3 and r.params["epochs"] == 4 and r.params["seed"] == 1
    with pytest.raises(ConfigError, match="for model 'als'"):
        harness.read_params_file(cfg, "bias-only")


def test_failed_run_is_recorded_not_raised(tmp_path):
    out = tmp_path / "raw"
    code = cli(["run", "--dataset", SYN, "--model", TOY, "--set", "mode=diverge", "--out", str(out)])
    assert code == 1
    (f,) = harness.raw_files(out)
    rec = harness.read_raw(f)
    assert rec["status"] == "failed"
    assert rec["error"]["type"] == "TrainingDivergedError" and "epoch 2" in rec["error"]["message"]
    assert rec["split_sha256"] and "metrics" not in rec
    # a failure file counts as done unless --retry-failed
    run = harness.plan_run(dataset=SYN, split="random", seed=0, model=TOY, params={"mode": "diverge"})
    assert harness.execute(run, out).status == "skipped"
    assert harness.execute(run, out, retry_failed=True).status == "failed"


def test_worker_crash_and_timeout_are_failures(tmp_path):
    out = tmp_path / "raw"
    crash = harness.plan_run(dataset=SYN, split="random", seed=0, model=TOY, params={"mode": "crash"})
    o = harness.execute(crash, out)
    assert o.status == "failed" and o.record["error"]["type"] == "WorkerCrashed"
    assert "status 3" in o.record["error"]["message"]
    slow = harness.plan_run(dataset=SYN, split="random", seed=0, model=TOY, params={"mode": "sleep", "sleep": 30.0},
                            timeout_s=3)
    o = harness.execute(slow, out)
    assert o.status == "failed" and "timeout" in o.record["error"]["message"]
    assert o.seconds < 25


def test_peak_rss_is_the_runs_own(tmp_path):
    out = tmp_path / "raw"
    small = harness.execute(harness.plan_run(dataset=SYN, split="random", seed=0, model=TOY), out).record
    big = harness.execute(harness.plan_run(dataset=SYN, split="random", seed=0, model=TOY,
                                           params={"mode": "alloc", "alloc_mb": 160}), out).record
    assert big["memory"]["peak_rss_mb"] - small["memory"]["peak_rss_mb"] > 120
    assert big["memory"]["peak_rss_mb"] - big["memory"]["rss_after_imports_mb"] > 140
    # the parent's own memory does not leak into a small run's number
    assert small["memory"]["peak_rss_mb"] < big["memory"]["peak_rss_mb"] - 120


def test_peak_rss_excludes_the_parents_memory(tmp_path):
    # Linux seeds a child's ru_maxrss with the parent's RSS at fork time (kept across exec), so a
    # worker started from a big parent must not report the parent's size as its own peak.
    ballast = np.ones(400 * 2 ** 20 // 8)  # 400 MB resident in this (parent) process
    rec = harness.execute(harness.plan_run(dataset=SYN, split="random", seed=0, model=TOY), tmp_path / "raw").record
    assert rec["status"] == "ok"
    assert rec["memory"]["peak_rss_mb"] < 300, rec["memory"]
    assert rec["memory"]["wait4_maxrss_mb"] > 400  # what ru_maxrss would have claimed
    del ballast


def test_files_split(tmp_path):
    rng = np.random.default_rng(0)
    pairs = rng.choice(60 * 40, size=900, replace=False)
    users, items = pairs // 40 + 1, pairs % 40 + 1
    ratings = rng.integers(1, 6, size=900)
    rows = [f"{u},{i},{r}" for u, i, r in zip(users, items, ratings)]
    (tmp_path / "train.csv").write_text("user,item,rating\n" + "\n".join(rows[:800]) + "\n")
    (tmp_path / "test.csv").write_text("user,item,rating\n" + "\n".join(rows[800:]) + "\n")
    out = tmp_path / "raw"
    assert cli(["run", "--dataset", "mine", "--split", "files:train.csv,test.csv", "--model", "bias-only",
                "--out", str(out)]) == 0
    (f,) = harness.raw_files(out)
    rec = harness.read_raw(f)
    assert rec["split"]["kind"] == "files" and rec["n_test"] == 100 and rec["n_train"] + rec["n_valid"] == 800


def test_progress_events_reach_the_parent(tmp_path):
    events = []
    run = harness.plan_run(dataset=SYN, split="random", seed=0, model=TOY, params={"epochs": 4})
    harness.execute(run, tmp_path / "raw", on_event=events.append)
    epochs = [e["epoch"] for e in events if e.get("event") == "epoch"]
    assert epochs == [1, 2, 3, 4]
    assert {"loading", "fitting", "evaluating"} <= {e.get("stage") for e in events if e.get("event") == "stage"}


@pytest.mark.skipif(not __import__("importlib").util.find_spec("torch"), reason="torch not installed")
def test_torch_autorec_run(tmp_path):
    out = tmp_path / "raw"
    assert cli(["run", "--dataset", SYN, "--model", "i-autorec", "--backend", "torch", "--set", "hidden=[8]",
                "--set", "epochs=2", "--set", "path=sparse", "--out", str(out)]) == 0
    (f,) = harness.raw_files(out)
    rec = harness.read_raw(f)
    assert rec["params"]["based"] == "item" and rec["params"]["path"] == "sparse" and rec["params"]["seed"] == 0
    assert "threads" not in rec["params"]  # an execution setting, recorded separately
    assert rec["epochs_run"] == 2 and len(rec["history"]) == 2
    assert rec["environment"]["threads"].get("torch_intra_op") == rec["threads"]
    assert rec["family"] == "autorec" and rec["display_name"] == "I-AutoRec"
