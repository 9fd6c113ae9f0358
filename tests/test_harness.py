"""The harness: planning (validation before training, the resolved identity), one record per (run,
seed), failures, the worker's own memory, `files:` splits, progress events, refit."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

from autorec.errors import ConfigError, DataError, MissingDependencyError
from autorec.models import registry
from autorec.splits import SplitSpec
from baselines.simple import BiasOnly, GlobalMean
from benchmarks import harness, record
from benchmarks.cli import main as cli
from benchmarks.harness.worker import train_plus_valid
from benchmarks.sweep import parse_seeds, read_params_file
from tests.test_harness_helpers import SYN, TOY, execute1

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)


def _plan(**kw):
    return harness.plan_run(**{"dataset": SYN, "split": "random", "seed": 0, "model": "bias-only", **kw})


# ------------------------------------------------------------------------------ inputs
def test_parse_seeds_and_datasets():
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("2,2,1") == [2, 1] and parse_seeds([3]) == [3]
    for bad in ("a", "-1", "3-1", "", 1.5, [0.5]):
        with pytest.raises(ConfigError):
            parse_seeds(bad)
    with pytest.raises(ConfigError, match="refit='no' must be true or false"):
        _plan(refit="no")
    assert harness.parse_dataset("synthetic:10,20,30").name == "synthetic:10,20,30,0"
    assert harness.parse_dataset("synthetic:ml-1m@0.01").name == "synthetic:ml-1m@0.01,0"
    assert harness.parse_dataset("ml-100k").synthetic is None
    with pytest.raises(ConfigError, match="synthetic:NU,NI,NR"):
        harness.parse_dataset("synthetic:abc")


def test_synthetic_dataset_resolves_and_splits():
    src = harness.DataSource()
    ref = harness.parse_dataset(SYN)
    d = harness.load_data(ref, SplitSpec.parse("random"), seed=1, valid_ratio=0.05, source=src)
    assert d.ratings.name == "synthetic:120,80,2400,3"
    assert len(d.train) + len(d.valid) + len(d.test) == 2400 and len(d.test) == 240
    again = harness.load_data(ref, SplitSpec.parse("random"), seed=1, valid_ratio=0.05, source=src)
    assert again.split.sha256 == d.split.sha256


# ------------------------------------------------------------------------------ planning
def test_identity_is_resolved_and_hashed():
    r1 = _plan()
    r2 = _plan(split="random:test_ratio=0.1", label="x")
    assert r1.run_id == r2.run_id  # canonical spec; a label is no identity
    assert harness.path_for("raw", r1) == harness.path_for("raw", r2)
    r3, r4 = _plan(seed=1), _plan(params={"reg_user": 3.0})
    assert len({r1.run_id, r3.run_id, r4.run_id, _plan(refit=True).run_id}) == 4
    ident = r1.identity
    assert ident.params == BiasOnly.Config(seed=0).to_dict()  # fully resolved, seed and policy from the run
    assert ident.model_version == BiasOnly.version and r1.family == "baseline" and r1.launcher == "single"
    assert ident.split.kind == "random" and ident.split.args == {"test_ratio": 0.1}
    assert r1.split_spec == SplitSpec.parse("random").to_dict()
    d = harness.load_data(harness.parse_dataset(SYN), SplitSpec.parse("random"), seed=0, valid_ratio=0.05,
                          source=harness.DataSource())  # fmt: skip
    assert ident.split.sha256 == d.split.sha256 and ident.data.sha256 is None  # synthetic: the name is the content
    name = harness.path_for("raw", r1).name
    assert name.startswith("synthetic-120-80-2400-3_random-test-ratio-0.1_bias-only-numpy_cpu_s0_")
    assert name.endswith(f"_{r1.run_id[:16]}.json")


def test_errors_before_any_training(tmp_path, monkeypatch, capsys):
    out = tmp_path / "raw"
    with pytest.raises(ConfigError, match="unknown model"):
        _plan(model="no-such-model")
    with pytest.raises(ConfigError, match="unknown parameter"):
        _plan(params={"nope": 1})
    with pytest.raises(ConfigError, match="--seeds"):
        _plan(params={"seed": 3})
    with pytest.raises(ConfigError, match="CPU only"):
        _plan(devices="cuda:0")
    with pytest.raises(DataError, match="unknown dataset"):
        _plan(dataset="ml-99k")
    monkeypatch.setitem(registry.BACKENDS, "surprise", ("surely_not_installed_pkg", "surprise"))
    with pytest.raises(MissingDependencyError, match=r"pip install \.\[surprise\]"):
        _plan(model="surprise-svd")
    # several independent problems: all of them, in one error
    with pytest.raises(harness.PlanError) as exc:
        _plan(dataset="ml-99k", split="nosuchsplit", params={"reg_user": -1}, cold_start="warm")
    text = str(exc.value)
    assert "nosuchsplit" in text and "reg_user" in text and "cold-start" in text
    # a cold-start constant outside a registered dataset's scale (it would be clipped to 5), before
    # any data is read; the ends of the scale are allowed
    with pytest.raises(ConfigError, match=r"constant:9: the constant is outside the rating scale 1\.\.5"):
        _plan(dataset="ml-100k", cold_start="constant:9", download=False)
    with pytest.raises(ConfigError, match=r"outside the rating scale 0\.5\.\.5 .*would predict 0\.5"):
        _plan(dataset="ml-latest-small", cold_start="constant:0", download=False)
    assert _plan(dataset="ml-100k", cold_start="constant:5", download=False).identity.cold_start_policy == "constant:5"
    # the CLI: exit 2, a message naming the problem, not a single file written
    assert cli(["run", "--dataset", SYN, "--model", "bias-only", "--seeds", "0,1", "--set", "reg_user=-1",
                "--out", str(out)]) == 2  # fmt: skip
    assert "reg_user=-1" in capsys.readouterr().err
    assert not harness.raw_files(out)


def test_thread_counts_are_bounded(tmp_path, capsys):
    """torch segfaults at its first operator with 10**6 threads; the failure record said only "exited
    with status 1".  A count outside 1..1024 is refused by every command and by the model configs."""
    out = tmp_path / "raw"
    for command in (["run", "--dataset", SYN, "--model", "bias-only", "--out", str(out)],
                    ["sweep", "nonexistent.toml"], ["tune", "--dataset", SYN, "--model", "bias-only"]):  # fmt: skip
        for bad in ("0", "1000000"):
            assert cli([*command, "--threads", bad]) == 2
            assert f"--threads {bad} must be a whole number from 1 to 1024" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="threads=1025: must be <= 1024"):
        registry.get("i-autorec", "torch").build({"threads": 1025})
    assert not harness.raw_files(out)


# ------------------------------------------------------------------------------ running
def test_run_writes_one_record_per_seed(tmp_path, capsys):
    out = tmp_path / "raw"
    args = ["run", "--dataset", SYN, "--model", "bias-only", "--seeds", "0,1", "--threads", "1", "--out", str(out)]
    assert cli([*args, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("todo") == 2 and not out.exists()  # checked, listed, nothing written
    assert cli(args) == 0
    files = harness.raw_files(out)
    recs = harness.load(out)
    assert len(files) == 2 and {r.split.seed for r in recs} == {0, 1}
    for rec in recs:
        assert rec.ok and rec.schema_version == record.SCHEMA_VERSION and rec.error is None
        assert rec.split.spec == "random:test_ratio=0.1" and rec.split.valid_ratio == 0.05
        assert rec.metrics is not None and 0.3 < rec.metrics.test_rmse < 1.5 and rec.metrics.valid_rmse is not None
        assert rec.sizes is not None and rec.sizes.n_test == 240
        assert rec.sizes.n_train + rec.sizes.n_valid + rec.sizes.n_test == 2400
        assert (
            rec.fit is not None and rec.fit.history and {"epoch", "train_loss", "valid_rmse"} <= set(rec.fit.history[0])
        )
        assert rec.fit.epochs_run == len(rec.fit.history)
        assert rec.timing.fit is not None and rec.timing.per_epoch is not None and rec.timing.wall is not None
        assert rec.memory.peak_rss is not None and rec.memory.peak_rss > 10
        assert rec.environment["numpy"] == np.__version__ and rec.git_commit
        assert rec.conditions is not None and rec.conditions.threads == 1 and len(rec.conditions.load_before) == 3
        assert rec.family == "baseline" and rec.display_name == "bias-only"
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.is_file()]  # no temp files left
    assert not list((out / ".claims").iterdir())  # every claim released
    # a second run skips the finished records and keeps them byte for byte
    before = {f.name: f.read_bytes() for f in files}
    capsys.readouterr()
    assert cli(args) == 0
    assert capsys.readouterr().out.count("already done") == 2
    assert {f.name: f.read_bytes() for f in harness.raw_files(out)} == before


def test_same_numbers_as_a_direct_fit(tmp_path):
    """The worker's test RMSE is the model's own evaluation on the planned split."""
    plan = _plan(params={"reg_user": 5.0})
    rec = execute1(plan, tmp_path / "raw")
    d = harness.load_data(plan.dataset_ref(), SplitSpec.from_dict(plan.split_spec), seed=0, valid_ratio=0.05,
                          source=plan.source)  # fmt: skip
    model = BiasOnly(plan.identity.params)
    info = model.fit(d.train, d.valid)
    assert rec.metrics is not None and rec.fit is not None
    assert rec.metrics.test_rmse == model.evaluate(d.test)["rmse"]
    assert rec.fit.best_epoch == info.best_epoch and rec.fit.epochs_run == info.epochs_run


def test_set_and_config_file_precedence(tmp_path):
    cfg = tmp_path / "b.toml"
    cfg.write_text('# tuned\nmodel = "bias-only"\n\n[params]\nreg_user = 3.0\nepochs = 2\nseed = 9\n')
    params = read_params_file(cfg, "bias-only")
    assert params == {"reg_user": 3.0, "epochs": 2}  # the run sets the seed
    from autorec.models.config import parse_assignments

    r = _plan(seed=1, params={**params, **parse_assignments(["epochs=4"])})
    assert r.identity.params["reg_user"] == 3.0 and r.identity.params["epochs"] == 4 and r.identity.params["seed"] == 1
    with pytest.raises(ConfigError, match="for model 'bias-only'"):
        read_params_file(cfg, "global-mean")


def test_worker_crash_and_timeout_are_failures(tmp_path):
    out = tmp_path / "raw"
    rec = execute1(_plan(model=TOY, params={"mode": "crash"}), out)
    assert rec.status == "failed" and rec.error is not None and rec.error.type == "WorkerCrashed"
    assert "status 3" in rec.error.message
    rec = execute1(_plan(model=TOY, params={"mode": "kill"}), out)  # kill -9 of the worker
    assert rec.status == "failed" and rec.error is not None and "signal SIGKILL" in rec.error.message
    assert rec.memory.peak_rss is not None and "wait4" in rec.memory.measured
    rec = execute1(_plan(model=TOY, params={"mode": "sleep", "sleep": 30.0}, timeout_s=3), out)
    assert rec.status == "failed" and rec.error is not None and "timeout of 3 s" in rec.error.message
    assert rec.conditions is not None and rec.timing.wall is not None


def test_peak_rss_is_the_runs_own(tmp_path):
    out = tmp_path / "raw"
    small = execute1(_plan(model=TOY), out).memory
    big = execute1(_plan(model=TOY, params={"mode": "alloc", "alloc_mb": 160}), out).memory
    assert big.peak_rss is not None and small.peak_rss is not None and big.rss_after_imports is not None
    assert big.peak_rss - small.peak_rss > 120
    assert big.peak_rss - big.rss_after_imports > 140


def test_peak_rss_excludes_the_parents_memory(tmp_path):
    # Linux seeds a child's ru_maxrss with the parent's RSS at fork time (kept across exec), so a
    # worker started from a big parent must not report the parent's size as its own peak.
    ballast = np.ones(400 * 2**20 // 8)  # 400 MB resident in this (parent) process
    rec = execute1(_plan(model=TOY), tmp_path / "raw")
    assert rec.ok and rec.memory.peak_rss is not None and rec.memory.peak_rss < 300, rec.memory
    del ballast


def test_files_split(tmp_path):
    rng = np.random.default_rng(0)
    pairs = rng.choice(60 * 40, size=900, replace=False)
    rows = [f"{u},{i},{r}" for u, i, r in zip(pairs // 40 + 1, pairs % 40 + 1, rng.integers(1, 6, size=900))]
    (tmp_path / "train.csv").write_text("user,item,rating\n" + "\n".join(rows[:800]) + "\n")
    (tmp_path / "test.csv").write_text("user,item,rating\n" + "\n".join(rows[800:]) + "\n")
    out = tmp_path / "raw"
    assert cli(["run", "--dataset", "mine", "--split", "files:train.csv,test.csv", "--rating-scale", "1,5",
                "--model", "bias-only", "--threads", "1", "--out", str(out)]) == 0  # fmt: skip
    (rec,) = harness.load(out)
    assert rec.sizes is not None
    assert rec.split.kind == "files" and rec.sizes.n_test == 100 and rec.sizes.n_train + rec.sizes.n_valid == 800
    assert rec.identity.data.sha256 and rec.identity.split.sha256 and rec.sizes.rating_scale == (1.0, 5.0)
    # the declared scale sets the clip range: another scale is another run, not "already done"
    assert cli(["run", "--dataset", "mine", "--split", "files:train.csv,test.csv", "--rating-scale", "0,10",
                "--model", "bias-only", "--threads", "1", "--out", str(out)]) == 0  # fmt: skip
    scales = sorted(r.sizes.rating_scale for r in harness.load(out) if r.sizes is not None)
    assert scales == [(0.0, 10.0), (1.0, 5.0)]
    # a declared scale bounds the cold-start constant before anything runs
    assert cli(["run", "--dataset", "mine", "--split", "files:train.csv,test.csv", "--rating-scale", "1,5",
                "--cold-start", "constant:7", "--model", "bias-only", "--out", str(out)]) == 2  # fmt: skip
    assert len(harness.load(out)) == 2


def test_progress_events_reach_the_parent(tmp_path):
    events = []
    execute1(_plan(model=TOY, params={"epochs": 4, "patience": None}), tmp_path / "raw", on_event=events.append)
    assert [e["epoch"] for e in events if e.get("event") == "epoch"] == [1, 2, 3, 4]
    assert {"loading", "fitting", "evaluating"} <= {e.get("stage") for e in events if e.get("event") == "stage"}


def test_worker_verifies_the_split_hash(tmp_path):
    """A plan whose split hash does not match the data (a tampered plan, or data changed after
    planning) fails in the worker, naming both hashes; nothing is trained on the wrong data."""
    plan = _plan()
    bad = dataclasses.replace(plan.identity, split=dataclasses.replace(plan.identity.split, sha256="0" * 64))
    rec = execute1(dataclasses.replace(plan, identity=bad), tmp_path / "raw")
    assert rec.status == "failed" and rec.metrics is None and rec.error is not None
    assert "0" * 16 in rec.error.message and str(plan.identity.split.sha256)[:16] in rec.error.message


# ------------------------------------------------------------------------------ refit (issue 10 item 3)
def test_refit_on_train_plus_valid(tmp_path):
    plan = _plan(refit=True, params={"epochs": 30})
    rec = execute1(plan, tmp_path / "raw")
    assert rec.ok and rec.identity.refit and rec.refit is not None and rec.fit is not None and rec.metrics is not None
    assert rec.refit.epochs == rec.fit.weights_epoch  # the selected number of epochs
    d = harness.load_data(plan.dataset_ref(), SplitSpec.from_dict(plan.split_spec), seed=0, valid_ratio=0.05,
                          source=plan.source)  # fmt: skip
    both = train_plus_valid(d)
    assert len(both) == len(d.train) + len(d.valid) and (both.n_users, both.n_items) == (
        d.train.n_users,
        d.train.n_items,
    )
    direct = BiasOnly({**plan.identity.params, "epochs": rec.refit.epochs})
    direct.fit(both)
    assert (
        rec.refit.test_rmse == direct.evaluate(d.test)["rmse"] and rec.refit.test_mae == direct.evaluate(d.test)["mae"]
    )
    assert rec.metrics.test_rmse != rec.refit.test_rmse  # the selection-time number is kept beside it
    one_shot = execute1(_plan(model="global-mean", refit=True), tmp_path / "raw").refit
    mean = GlobalMean({})
    mean.fit(both)
    assert one_shot is not None and one_shot.epochs is None and one_shot.test_rmse == mean.evaluate(d.test)["rmse"]


def test_refit_skips_the_one_shot_train_pass(tmp_path):
    """The refit's history is not recorded, so it asks the fit not to score the train part (a
    Bayesian SVD++ refit on ML-100K saved a myfm prediction over 80,000 pairs, about 7 s): through
    the worker's own fit, down to the model's ``_fit``."""
    import types

    from benchmarks.harness.worker import Worker
    from benchmarks.record import FitSummary

    plan = _plan(model="global-mean")
    d = harness.load_data(plan.dataset_ref(), SplitSpec.from_dict(plan.split_spec), seed=0, valid_ratio=0.05,
                          source=plan.source)  # fmt: skip
    asked = []

    class OneShot(GlobalMean):
        train_pass = True  # a one-shot model with a train pass

        def _fit(self, train, valid, *, progress=None, score_train=True, **options):
            asked.append((len(train), valid, score_train))
            return super()._fit(train, valid, progress=progress, **options)

    class Ref:
        def build(self, params):
            return OneShot(params)

    worker = types.SimpleNamespace(plan=types.SimpleNamespace(launcher="single"), threads=1)
    worker.fit = lambda *args, **kw: Worker.fit(worker, *args, **kw)  # type: ignore[arg-type]
    fit = FitSummary(best_epoch=1, weights_epoch=1, epochs_run=1, history=())
    refit = Worker.refit(worker, OneShot, Ref(), {}, fit, d)  # type: ignore[arg-type]
    assert asked == [(len(d.train) + len(d.valid), None, False)]
    assert refit.epochs is None and refit.test_rmse > 0
    Worker.fit(worker, OneShot, Ref(), {}, d.train, d.valid)  # type: ignore[arg-type]
    assert asked[-1] == (len(d.train), d.valid, True)  # the selection fit scores train (its history is kept)


@needs_torch
def test_torch_autorec_run(tmp_path):
    out = tmp_path / "raw"
    assert cli(["run", "--dataset", SYN, "--model", "i-autorec", "--backend", "torch", "--set", "hidden=[8]",
                "--set", "epochs=2", "--set", "path=sparse", "--threads", "1", "--out", str(out)]) == 0  # fmt: skip
    (rec,) = harness.load(out)
    assert rec.fit is not None and rec.conditions is not None
    assert rec.params["based"] == "item" and rec.params["path"] == "sparse" and rec.params["seed"] == 0
    assert "threads" not in rec.params  # an execution setting, recorded in conditions
    assert rec.fit.epochs_run == 2 and len(rec.fit.history) == 2
    assert rec.environment["threads"].get("torch_intra_op") == rec.conditions.threads == 1
    assert rec.family == "autorec" and rec.display_name == "I-AutoRec"
