"""Sweeps and tuning on a Dask cluster (``--executor dask``): a local cluster of 2 worker processes
on 127.0.0.1 runs a small spec end to end with the same records as the local executor, a worker
killed mid-run leaves its run retried (or recorded as failed, never half-written), two sweeps on
one store at once run each run once, and tuner workers share one study."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from autorec.errors import ConfigError
from benchmarks import harness
from benchmarks.cli import main as cli
from benchmarks.harness import store
from benchmarks.harness.dask_executor import DaskExecutor, connect
from benchmarks.sweep import load_spec
from tests.test_harness_helpers import SYN, TOY
from tests.tuning_helpers import SLOW, counted, spec_for, study_of, tiny, write_parts

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.distributed

SMALL = f'''
name = "small"
datasets = ["{SYN}"]
splits = ["random"]
seeds = [0, 1]
[[model]]
name = "bias-only"
[[model]]
name = "als"
params = {{epochs = 3, factors = 4}}
'''


def sleepy(seconds: float, runs: int = 1) -> str:
    """A spec of ``runs`` toy runs of about ``seconds`` each (long enough to be killed mid-run)."""
    seeds = list(range(runs))
    return f'''
name = "sleepy"
datasets = ["{SYN}"]
splits = ["random"]
seeds = {seeds}
[[model]]
name = "{TOY}"
params = {{mode = "sleep", sleep = {seconds / 4}, epochs = 4}}
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two worker processes (one thread each) and their scheduler on 127.0.0.1."""
    home = tmp_path_factory.mktemp("cluster")
    with pytest.MonkeyPatch.context() as mp:  # the workers inherit this environment
        mp.setenv("AUTOREC_CACHE_DIR", str(home / "cache"))
        mp.setenv("OMP_NUM_THREADS", "1")
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as c:
            yield c


@pytest.fixture
def address(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOREC_CACHE_DIR", os.environ.get("AUTOREC_CACHE_DIR") or str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    cluster.wait_for_workers(2, timeout=120)  # a killed worker is back
    return cluster.scheduler_address


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def _sweep(spec: Path, out: Path, *extra: str) -> int:
    return cli(["sweep", str(spec), "--out", str(out), "--threads", "1", "--no-progress", *extra])


def _records(raw: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in store.raw_files(raw)}


def test_small_spec_on_dask_equals_the_local_executor(address, tmp_path, capsys):
    spec = _spec(tmp_path, SMALL)
    assert _sweep(spec, tmp_path / "dask", "--executor", "dask", "--address", address) == 0
    assert "4 ok, 0 failed" in capsys.readouterr().out
    assert _sweep(spec, tmp_path / "local") == 0
    dask, local = _records(tmp_path / "dask"), _records(tmp_path / "local")
    assert sorted(dask) == sorted(local) and len(dask) == 4
    for name, rec in dask.items():
        other = local[name]
        assert rec["status"] == other["status"] == "ok"
        assert rec["run_id"] == other["run_id"] and rec["identity"] == other["identity"]  # split hashes included
        assert rec["identity"]["split"]["sha256"] is not None
        assert rec["metrics"] == other["metrics"]
        assert [h.get("valid_rmse") for h in rec["fit"]["history"]] == [
            h.get("valid_rmse") for h in other["fit"]["history"]
        ]
        assert rec["conditions"]["threads"] == 1
    assert not list((tmp_path / "dask" / ".claims").iterdir())  # every claim released
    # rerun: every run is finished, nothing is submitted again
    assert _sweep(spec, tmp_path / "dask", "--executor", "dask", "--address", address) == 0
    assert "4 already done, 0 to run" in capsys.readouterr().out
    assert _records(tmp_path / "dask") == dask


def _running_worker(raw: Path) -> tuple[int, psutil.Process] | None:
    """The pid of the Dask worker whose run is in progress (its claim's process) and the run's
    worker process (``benchmarks.harness.worker``, its child)."""
    for path in (raw / ".claims").glob("*"):
        claim = store.read_claim(path)
        if claim is None or claim.pid <= 0:
            continue
        try:
            for child in psutil.Process(claim.pid).children():
                if "benchmarks.harness.worker" in " ".join(child.cmdline()):
                    return claim.pid, child
        except psutil.Error:
            continue
    return None


def _kill_mid_run(spec: Path, raw: Path, address: str) -> tuple[int, list[int]]:
    """Sweep ``spec`` on Dask in a thread and SIGKILL the Dask worker whose run is in progress;
    returns the worker's pid and the sweep's exit status."""
    status: list[int] = []
    options = ("--executor", "dask", "--address", address)
    sweep = threading.Thread(target=lambda: status.append(_sweep(spec, raw, *options)))
    sweep.start()
    deadline = time.monotonic() + 120
    while (running := _running_worker(raw)) is None:
        assert time.monotonic() < deadline and sweep.is_alive(), "no run was seen in progress"
        time.sleep(0.05)
    pid, run_process = running
    os.kill(pid, signal.SIGKILL)
    sweep.join(timeout=240)
    assert not sweep.is_alive()
    assert not run_process.is_running() or run_process.status() == psutil.STATUS_ZOMBIE  # died with its worker
    return pid, status


@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_the_run_retried(address, tmp_path):
    spec, raw = _spec(tmp_path, sleepy(4.0)), tmp_path / "raw"
    killed, status = _kill_mid_run(spec, raw, address)
    assert status == [0]
    (rec,) = store.load(raw)  # one record, complete and valid (strict load)
    assert rec.ok and rec.run_id == load_spec(spec).plans[0].run_id
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    assert not list((raw / ".claims").iterdir())


@pytest.mark.slow
def test_a_run_dask_gives_up_on_is_recorded_as_failed(cluster, address, tmp_path):
    spec, raw = _spec(tmp_path, sleepy(4.0)), tmp_path / "raw"
    allowed = cluster.scheduler.allowed_failures
    cluster.scheduler.allowed_failures = 0  # the first dead worker fails the task (KilledWorker)
    try:
        _, status = _kill_mid_run(spec, raw, address)
    finally:
        cluster.scheduler.allowed_failures = allowed
    assert status == [0]
    (rec,) = store.load(raw)
    assert rec.status == "failed" and rec.error is not None and rec.error.type == "WorkerLost"
    assert "KilledWorker" in rec.error.message
    assert harness.failures(load_spec(spec).plans, raw) == [store.path_for(raw, load_spec(spec).plans[0])]


@pytest.mark.slow
def test_two_sweeps_on_one_store_at_once_run_each_run_once(address, tmp_path):
    plans = load_spec(_spec(tmp_path, sleepy(1.0, runs=4))).plans
    raw = (tmp_path / "raw").absolute()
    tallies: list[harness.Tally] = []

    def sweep() -> None:
        tallies.append(harness.run_batch(plans, raw, executor=DaskExecutor(address, raw), threads=1, progress=False))

    both = [threading.Thread(target=sweep) for _ in range(2)]
    for t in both:
        t.start()
    for t in both:
        t.join(timeout=300)
    assert len(tallies) == 2
    assert sum(t.counts["ok"] for t in tallies) == len(plans)  # no run ran twice, none was lost
    assert all(t.counts["failed"] == 0 for t in tallies)
    recs = store.load(raw)
    assert sorted(r.run_id for r in recs) == sorted(p.run_id for p in plans) and all(r.ok for r in recs)


def _tune(split: str, results: Path, *extra: str) -> int:
    return cli(["tune", "--dataset", "tiny", "--split", split, "--rating-scale", "1,5", "--model", SLOW,
                "--trials", "4", "--threads", "1", "--results", str(results), "--quiet", *extra])  # fmt: skip


@pytest.mark.slow
def test_tuner_workers_on_dask_share_one_study(address, tmp_path):
    split = write_parts(tmp_path, tiny())
    assert _tune(split, tmp_path / "local") == 0
    assert _tune(split, tmp_path / "one", "--executor", "dask", "--address", address) == 0
    assert _tune(split, tmp_path / "two", "--executor", "dask", "--address", address, "--workers", "2") == 0
    local, one, two = (
        counted(spec_for(tmp_path, name=study_of(tmp_path / r).study_name, storage=_url(tmp_path / r)))
        for r in ("local", "one", "two")
    )
    assert one == local and len(local) == 4  # one worker at a time: the single-machine study, trial for trial
    assert 4 <= len(two) <= 5  # two at once: the budget holds (a race adds at most one trial) ...
    assert len({json.dumps(p, sort_keys=True) for _, p, _ in two}) == len(two)  # ... no configuration twice
    config = (tmp_path / "one" / "tuning" / "tiny").glob("*.toml")
    text = next(config).read_text()
    assert "--executor dask" in text and "--workers 1" in text  # the command that reproduces the study


def _url(results: Path) -> str:
    (db,) = (results / "tuning" / "tiny").glob("*.db")
    return f"sqlite:///{db}"


def test_executor_options_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    spec = _spec(tmp_path, SMALL)
    assert _sweep(spec, tmp_path / "raw", "--executor", "dask") == 2
    assert _sweep(spec, tmp_path / "raw", "--address", "tcp://127.0.0.1:1") == 2
    assert _sweep(spec, tmp_path / "raw", "--executor", "dask", "--address", "tcp://127.0.0.1:1", "--jobs", "2") == 2
    assert _tune("random", tmp_path, "--workers", "2") == 2
    err = capsys.readouterr().err
    assert "needs --address" in err and "add --executor dask" in err and "--jobs is for --executor local" in err
    assert "--address and --workers are for --executor dask" in err
    assert not (tmp_path / "raw").exists()
    monkeypatch.setattr("benchmarks.harness.dask_executor.CONNECT_S", 1.0)
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        connect("tcp://127.0.0.1:1")
    with pytest.raises(ConfigError, match="absolute"):
        DaskExecutor("tcp://127.0.0.1:1", "results/raw")
