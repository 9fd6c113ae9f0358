"""Sweeps: spec validation up front, grid expansion, resumption after SIGKILL / SIGINT, failures that
do not stop the sweep."""

from __future__ import annotations

import json
import os
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
from test_harness_helpers import TESTS, TOY

REPO = Path(__file__).resolve().parents[1]
SYN = "synthetic:120,80,2400,3"


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.chdir(tmp_path)


def _spec(tmp_path: Path, text: str, name="s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


SLOW_SPEC = f'''
name = "resume"
datasets = ["{SYN}"]
splits = ["random", {{spec = "kfold:k=3,fold=1", seeds = [0]}}]
seeds = [0, 1]
[[model]]
name = "{TOY}"
params = {{mode = "sleep", sleep = 0.1, epochs = 2}}
grid = {{shift = [0.0, 0.1]}}
'''


def test_grid_expansion_and_dry_run(tmp_path, capsys):
    spec = _spec(tmp_path, SLOW_SPEC)
    sw = sweeps.load_spec(spec)
    assert len(sw.runs) == 2 * (2 + 1)  # shift x (2 seeds of random + 1 kfold seed)
    assert len({r.run_id for r in sw.runs}) == len(sw.runs)
    assert {r.variant for r in sw.runs} == {"shift=0.0", "shift=0.1"}
    assert all(r.sweep == "resume" for r in sw.runs)
    assert cli(["sweep", str(spec), "--dry-run", "--out", str(tmp_path / "raw")]) == 0
    out = capsys.readouterr().out
    assert "6 runs valid, 0 already done" in out
    assert not (tmp_path / "raw").exists() or not list((tmp_path / "raw").iterdir())
    # the same spec twice: duplicates merged
    assert len(sweeps.load_sweeps([str(spec), str(spec)]).runs) == 6


def test_whole_spec_validated_before_the_first_run(tmp_path):
    bad = _spec(tmp_path, f'''
datasets = ["{SYN}"]
splits = ["random"]
[[model]]
name = "bias-only"
[[model]]
name = "no-such-model"
[[model]]
name = "als"
params = {{factors = -3}}
[[model]]
name = "als"
params = {{seed = 4}}
''')
    with pytest.raises(ConfigError) as exc:
        sweeps.load_spec(bad)
    msg = str(exc.value)
    assert "no-such-model" in msg and "factors" in msg and "--seeds" in msg  # every problem at once
    assert cli(["sweep", str(bad), "--out", str(tmp_path / "raw")]) == 2
    assert not (tmp_path / "raw").exists()  # not even the valid bias-only run started
    typo = _spec(tmp_path, f'datasets = ["{SYN}"]\nsplits = ["random"]\nseed = [1]\n[[model]]\nname = "als"\n', "t.toml")
    with pytest.raises(ConfigError, match="unknown key"):
        sweeps.load_spec(typo)


def test_missing_data_is_skipped_with_a_message(tmp_path, capsys):
    spec = _spec(tmp_path, f'''
datasets = ["{SYN}", "ml-10m"]
splits = ["random"]
missing_data = "skip"
[[model]]
name = "bias-only"
''')
    sw = sweeps.load_spec(spec, data_dir=tmp_path / "empty")
    assert [r.dataset for r in sw.runs] == ["synthetic:120,80,2400,3"]
    assert len(sw.skipped) == 1 and "ml-10m" in sw.skipped[0] and "skipped" in sw.skipped[0]


def _sweep_cmd(spec: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks", "sweep", str(spec), "--out", str(out), "--no-progress"]


def _proc_env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS)])
    env["AUTOREC_CACHE_DIR"] = str(tmp_path / "cache")
    return env


def _state(out: Path) -> dict:
    """{file name: (run_id, status, metrics)} of a raw folder; every file must parse."""
    res = {}
    for f in harness.raw_files(out):
        rec = harness.read_raw(f)
        res[f.name] = (rec["run_id"], rec["status"], json.dumps(rec.get("metrics"), sort_keys=True))
    return res


def _wait_for_files(out: Path, k: int, proc, timeout=90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(harness.raw_files(out)) >= k:
            return
        if proc.poll() is not None:
            raise AssertionError(f"sweep ended early with {proc.returncode}")
        time.sleep(0.05)
    raise AssertionError("sweep made no progress")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The raw files of the uninterrupted sweep (computed once)."""
    tmp = tmp_path_factory.mktemp("reference")
    spec = _spec(tmp, SLOW_SPEC)
    full = tmp / "full"
    subprocess.run(_sweep_cmd(spec, full), env=_proc_env(tmp), check=True, capture_output=True, cwd=tmp)
    state = _state(full)
    assert len(state) == 6 and all(s == "ok" for _, s, _ in state.values())
    return state


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_sweep_resumes_to_the_same_results(tmp_path, sig, reference):
    spec = _spec(tmp_path, SLOW_SPEC)
    env = _proc_env(tmp_path)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_sweep_cmd(spec, out), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _wait_for_files(out, 2, proc)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
    partial = _state(out)  # every file present parses: nothing half-written
    assert 2 <= len(partial) < 6
    assert all(reference[name] == v for name, v in partial.items())  # no failure file for the interrupted run
    time.sleep(1.0)  # an orphaned worker (there must be none) would write another file by now
    assert _state(out) == partial
    # resume: the finished runs are kept as they are, the rest run, the final set is identical
    kept = {name: (out / name).read_bytes() for name in partial}
    res = subprocess.run(_sweep_cmd(spec, out), env=env, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{len(partial)} already done" in res.stdout
    assert _state(out) == reference
    assert all((out / name).read_bytes() == data for name, data in kept.items())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_failures_do_not_stop_the_sweep(tmp_path):
    spec = _spec(tmp_path, f'''
datasets = ["{SYN}"]
splits = ["random"]
seeds = [0, 1]
[[model]]
name = "{TOY}"
grid = {{mode = ["ok", "diverge"]}}
''')
    counts = sweeps.run_sweep(sweeps.load_spec(spec), tmp_path / "raw", progress=False, log=lambda *_: None)
    assert counts == {"ok": 2, "failed": 2, "skipped": 0}
    state = _state(tmp_path / "raw")
    assert sorted(s for _, s, _ in state.values()) == ["failed", "failed", "ok", "ok"]
    # rerun: nothing to do; --retry-failed reruns the two failures only
    assert sweeps.run_sweep(sweeps.load_spec(spec), tmp_path / "raw", progress=False,
                            log=lambda *_: None) == {"ok": 0, "failed": 0, "skipped": 4}
    assert sweeps.run_sweep(sweeps.load_spec(spec), tmp_path / "raw", progress=False, retry_failed=True,
                            log=lambda *_: None) == {"ok": 0, "failed": 2, "skipped": 2}


def test_parallel_jobs_give_the_same_results(tmp_path):
    spec = _spec(tmp_path, f'''
datasets = ["{SYN}"]
splits = ["random"]
seeds = [0, 1]
[[model]]
name = "bias-only"
[[model]]
name = "als"
params = {{epochs = 2, factors = 2}}
''')
    sw = sweeps.load_spec(spec)
    sweeps.run_sweep(sw, tmp_path / "a", jobs=1, progress=False, log=lambda *_: None)
    sweeps.run_sweep(sw, tmp_path / "b", jobs=2, progress=False, log=lambda *_: None)
    assert _state(tmp_path / "a") == _state(tmp_path / "b")
    assert {harness.read_raw(f)["threads"] for f in harness.raw_files(tmp_path / "b")} == {
        max(1, __import__("autorec.env", fromlist=["x"]).default_threads() // 2)}


def test_repo_specs_are_valid():
    """Every sweep spec shipped in benchmarks/specs parses and validates (optional frameworks present)."""
    import importlib.util
    if not all(importlib.util.find_spec(m) for m in ("torch", "mxnet", "surprise")):
        pytest.skip("needs torch, mxnet and surprise")
    names = ["smoke", "d2l", "ml100k", "paper", "hidden-units", "activations", "depth", "devices"]
    for p in (REPO / "benchmarks" / "specs" / f"{n}.toml" for n in names):
        sw = sweeps.load_spec(p, data_dir=REPO.parent / "shared" / "data")
        assert sw.runs or sw.skipped, p
