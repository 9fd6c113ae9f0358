"""Sweeps: spec validation up front, grid expansion, resumption after SIGKILL / SIGINT, failures that
do not stop the sweep, parallel jobs."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autorec.errors import ConfigError
from benchmarks import harness
from benchmarks import sweep as sweeps
from benchmarks.cli import main as cli
from tests.test_harness_helpers import REPO, SYN, TOY, cli_env


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)


def _spec(tmp_path: Path, text: str, name="s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _quiet(*_):
    pass


SLOW_SPEC = f'''
name = "resume"
datasets = ["{SYN}"]
splits = ["random", {{spec = "kfold:k=3,fold=1", seeds = [0]}}]
seeds = [0, 1]
[[model]]
name = "{TOY}"
params = {{mode = "sleep", sleep = 0.5, epochs = 2}}
grid = {{shift = [0.0, 0.1]}}
'''


def test_grid_expansion_and_dry_run(tmp_path, capsys):
    spec = _spec(tmp_path, SLOW_SPEC)
    sw = sweeps.load_spec(spec)
    assert len(sw.plans) == 2 * (2 + 1)  # shift x (2 seeds of random + 1 kfold seed)
    assert len({p.run_id for p in sw.plans}) == len(sw.plans)
    assert {p.variant for p in sw.plans} == {"shift=0.0", "shift=0.1"}
    assert all(p.sweep == "resume" and p.materialised for p in sw.plans)
    assert cli(["sweep", str(spec), "--dry-run", "--out", str(tmp_path / "raw")]) == 0
    assert "6 runs valid, 0 already done" in capsys.readouterr().out
    assert not (tmp_path / "raw").exists()  # a dry run writes nothing
    assert len(sweeps.load_sweeps([spec, spec]).plans) == 6  # the same spec twice: duplicates merged


def test_spec_keys_reach_the_plans(tmp_path):
    spec = _spec(tmp_path, f'''
datasets = ["{SYN}"]
splits = ["random"]
refit = true
valid_ratio = 0.1
cold_start = "constant:3"
[[model]]
name = "bias-only"
[[model]]
name = "global-mean"
refit = false
''')  # fmt: skip
    a, b = sweeps.load_spec(spec).plans
    assert a.identity.refit and not b.identity.refit
    assert a.identity.split.valid_ratio == 0.1 and a.identity.cold_start_policy == "constant:3"


def test_whole_spec_validated_before_the_first_run(tmp_path, capsys):
    bad = _spec(tmp_path, f'''
datasets = ["{SYN}"]
splits = ["random"]
[[model]]
name = "bias-only"
[[model]]
name = "no-such-model"
[[model]]
name = "bias-only"
params = {{reg_user = -3}}
[[model]]
name = "bias-only"
params = {{seed = 4}}
''')  # fmt: skip
    with pytest.raises(ConfigError) as exc:
        sweeps.load_spec(bad)
    msg = str(exc.value)
    assert "no-such-model" in msg and "reg_user" in msg and "--seeds" in msg  # every problem at once
    assert cli(["sweep", str(bad), "--out", str(tmp_path / "raw")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not harness.raw_files(tmp_path / "raw")  # not even the valid bias-only run started
    typo = _spec(
        tmp_path, f'datasets = ["{SYN}"]\nsplits = ["random"]\nseed = [1]\n[[model]]\nname = "bias-only"\n', "t.toml"
    )
    with pytest.raises(ConfigError, match="unknown key"):
        sweeps.load_spec(typo)


def test_spec_values_of_the_wrong_kind_are_config_errors(tmp_path, capsys):
    def problem(text: str, name: str = "k.toml") -> str:
        with pytest.raises(ConfigError) as exc:
            sweeps.load_spec(_spec(tmp_path, text, name))
        return str(exc.value)

    model = 'splits = ["random"]\n[[model]]\nname = "bias-only"\n'
    assert "refit='no' must be true or false" in problem(f'datasets = ["{SYN}"]\nrefit = "no"\n{model}')
    assert "seed 1.5 must be a non-negative integer" in problem(f'datasets = ["{SYN}"]\nseeds = 1.5\n{model}')
    assert "must be a list of dataset names" in problem(f"datasets = [1]\n{model}")
    # one dataset may be a string, as one split may
    one = sweeps.load_spec(_spec(tmp_path, f'datasets = "{SYN}"\n{model}', "one.toml"))
    assert len(one.plans) == 1
    (tmp_path / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        sweeps.load_spec(tmp_path / "latin1.toml")
    with pytest.raises(ConfigError, match="cannot be read"):
        sweeps.load_spec(tmp_path)  # a folder
    # two tables of one run: merged when they agree, refused when one label would silently go
    twice = f'datasets = ["{SYN}"]\n{model}[[model]]\nname = "bias-only"\n'
    assert sweeps.load_spec(_spec(tmp_path, twice, "twice.toml")).duplicates == 1
    msg = problem(f'datasets = ["{SYN}"]\n{model}label = "A"\n[[model]]\nname = "bias-only"\nlabel = "B"\n')
    assert "[[model]] #2 (bias-only): repeats a run of [[model]] #1 (bias-only)" in msg and "'B' vs 'A'" in msg


def test_missing_data_is_skipped_with_a_message(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOREC_DATA_DIR", raising=False)
    monkeypatch.setenv("AUTOREC_DATA_URL", "http://127.0.0.1:9/nothing-here")  # never reached
    spec = _spec(tmp_path, f'''
datasets = ["{SYN}", "ml-10m"]
splits = ["random"]
missing_data = "skip"
[[model]]
name = "bias-only"
''')  # fmt: skip
    (tmp_path / "empty").mkdir()
    sw = sweeps.load_spec(spec, source=harness.DataSource(data_dir=str(tmp_path / "empty")))
    assert [p.identity.data.name for p in sw.plans] == ["synthetic:120,80,2400,3"]
    assert len(sw.notes) == 1 and "ml-10m" in sw.notes[0] and "skipped" in sw.notes[0]


def _sweep_cmd(spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks", "sweep", str(spec), "--out", str(out), "--no-progress", *extra]


def _state(out: Path) -> dict:
    """{file name: (run_id, status, metrics)} of a raw folder; every file must be a valid record."""
    return {
        f.name: (r.run_id, r.status, json.dumps(r.metrics and r.metrics.__dict__, sort_keys=True))
        for f, r in zip(harness.raw_files(out), harness.load(out))
    }


def _wait_for_files(out: Path, k: int, proc, timeout=120) -> None:
    """Until ``k`` records exist and the next run is in progress (its claim taken): a signal sent
    then interrupts a run, however slowly this (loaded) machine schedules the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claims = out / ".claims"
        if len(harness.raw_files(out)) >= k and claims.is_dir() and any(claims.iterdir()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"sweep ended early with {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("sweep made no progress")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The records of the uninterrupted sweep (computed once)."""
    tmp = tmp_path_factory.mktemp("reference")
    spec = _spec(tmp, SLOW_SPEC)
    subprocess.run(_sweep_cmd(spec, tmp / "full"), env=cli_env(tmp), check=True, capture_output=True, cwd=tmp)
    state = _state(tmp / "full")
    assert len(state) == 6 and all(s == "ok" for _, s, _ in state.values())
    return state


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_killed_sweep_resumes_to_the_same_results(tmp_path, sig, reference):
    spec = _spec(tmp_path, SLOW_SPEC)
    env = cli_env(tmp_path)
    out = tmp_path / "killed"
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    # SIGINT at its default in the sweep even when these tests run as a background job (a shell
    # without job control starts those with SIGINT ignored, and Python then keeps ignoring it): a
    # small interpreter resets it and execs the sweep in its place (same process)
    reset = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    cmd = [sys.executable, "-c", reset, *_sweep_cmd(spec, out)]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, **pipes)
    _wait_for_files(out, 2, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    if sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM takes Ctrl-C's way out: said so, claims released
        assert proc.returncode == 128 + sig if sig == signal.SIGTERM else 130, f"{stdout}\n{stderr}"
        assert "rerun the same command to resume" in stdout + stderr
        assert not list((out / ".claims").iterdir())
    partial = _state(out)  # every file present is a valid record: nothing half-written
    assert 2 <= len(partial) < 6
    assert all(reference[name] == v for name, v in partial.items())  # no failure record for the interrupted run
    time.sleep(1.0)  # an orphaned worker (there must be none) would write another file by now
    assert _state(out) == partial
    # resume: finished runs kept as they are, the claim a SIGKILLed sweep left is taken over, the rest run
    kept = {name: (out / name).read_bytes() for name in partial}
    res = subprocess.run(_sweep_cmd(spec, out), env=env, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{len(partial)} already done" in res.stdout and "another sweep" not in res.stdout
    assert _state(out) == reference
    assert all((out / name).read_bytes() == data for name, data in kept.items())
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.is_file()]
    assert not list((out / ".claims").iterdir())


def test_failures_do_not_stop_the_sweep_and_are_retried(tmp_path):
    spec = _spec(tmp_path, f'''
datasets = ["{SYN}"]
splits = ["random"]
seeds = [0, 1]
[[model]]
name = "{TOY}"
grid = {{mode = ["ok", "diverge"]}}
''')  # fmt: skip
    plans = sweeps.load_spec(spec).plans
    out = tmp_path / "raw"
    tally = harness.run_batch(plans, out, progress=False, log=_quiet)
    assert (tally.counts["ok"], tally.counts["failed"], tally.counts["skipped"]) == (2, 2, 0)
    assert sorted(s for _, s, _ in _state(out).values()) == ["failed", "failed", "ok", "ok"]
    # rerun: the two failures are tried again (a failure is never done), the successes are kept
    tally = harness.run_batch(plans, out, progress=False, log=_quiet)
    assert (tally.counts["ok"], tally.counts["failed"], tally.counts["skipped"]) == (0, 2, 2)
    assert len(harness.failures(plans, out)) == 2


def test_parallel_jobs_give_the_same_results(tmp_path):
    spec = _spec(tmp_path, f'''
datasets = ["{SYN}"]
splits = ["random"]
seeds = [0, 1]
[[model]]
name = "bias-only"
[[model]]
name = "global-mean"
''')  # fmt: skip
    plans = sweeps.load_spec(spec).plans
    harness.run_batch(plans, tmp_path / "a", jobs=1, threads=1, progress=False, log=_quiet)
    harness.run_batch(plans, tmp_path / "b", jobs=2, threads=1, progress=False, log=_quiet)
    assert _state(tmp_path / "a") == _state(tmp_path / "b")
    assert {r.conditions.threads for r in harness.load(tmp_path / "b") if r.conditions} == {1}


def test_repo_specs_are_valid():
    """Every sweep spec shipped in benchmarks/specs parses and plans (optional frameworks present)."""
    if not all(importlib.util.find_spec(m) for m in ("torch", "mxnet", "surprise")):
        pytest.skip("needs torch, mxnet and surprise")
    shared = REPO.parent / "shared" / "data"  # else AUTOREC_DATA_DIR / the cache, as the data layer finds them
    source = harness.DataSource(data_dir=str(shared) if shared.is_dir() else None, offline=True)
    specs = ["smoke", "d2l", "ml100k", "mlsmall", "paper", "tta", "hidden-units", "activations", "depth", "devices"]
    for name in specs:
        try:
            sw = sweeps.load_spec(REPO / "benchmarks" / "specs" / f"{name}.toml", source=source, dry_run=True)
        except harness.PlanError as exc:
            if all("not available locally" in p for p in exc.problems):
                continue  # no copy of that dataset on this machine
            raise
        assert sw.plans or sw.notes, name


def test_summary_says_what_ran_and_rerun_regenerates(tmp_path, capsys, monkeypatch):
    spec = _spec(tmp_path, f'''
datasets = ["{SYN}"]
splits = ["random"]
seeds = [0, 1]
[[model]]
name = "bias-only"
''')  # fmt: skip
    out, summary = tmp_path / "raw", tmp_path / "summary.json"
    args = ["sweep", str(spec), "--out", str(out), "--no-progress", "--summary", str(summary)]
    assert cli(args) == 0
    assert cli(["summary", str(summary), "--results", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "this time: 2 ran (2 ok, 0 failed)" in text and "0 already done" in text
    assert f"raw records: {out}/" in text and "make bench RERUN=1 (reruns all 2 runs" in text
    first = {p.name: p.stat().st_mtime_ns for p in harness.raw_files(out)}
    assert cli(args) == 0 and cli(["summary", str(summary)]) == 0
    assert "this time: 0 ran (0 ok, 0 failed)" in capsys.readouterr().out
    assert cli([*args, "--rerun"]) == 0 and cli(["summary", str(summary)]) == 0
    assert "this time: 2 ran (2 ok, 0 failed)" in capsys.readouterr().out
    again = {p.name: p.stat().st_mtime_ns for p in harness.raw_files(out)}
    assert again.keys() == first.keys() and all(again[k] > first[k] for k in first)
    # read from another folder, a relative raw folder is still the sweep's
    rel = ["sweep", str(spec), "--out", "raw", "--no-progress", "--summary", str(summary)]
    assert cli(rel) == 0 and "2 already done" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path / "raw")
    assert cli(["summary", str(summary)]) == 0
    assert "raw records: raw/ (one JSON file per run; 2 of these runs recorded)" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    # a file that is no summary (a raw record, say) is an error naming it, not a KeyError
    some_record = harness.raw_files(out)[0]
    assert cli(["summary", str(some_record)]) == 2
    assert "not a summary written by `autorec-bench sweep --summary` (no counts" in capsys.readouterr().err
