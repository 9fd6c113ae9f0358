"""Runs forked from a zygote (:mod:`benchmarks.harness.zygote`): the same records as a fresh worker's,
one zygote per framework and job slot, and a fresh worker wherever a zygote cannot be used."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import sys
import threading
import time

import pytest

from benchmarks import harness
from benchmarks.harness import zygote
from tests.test_harness_helpers import REPO, SYN, TOY, execute1

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv(zygote.ENV_FRESH, raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    zygote.pool().close()  # a test's zygotes do not outlive it


def _plan(**kw):
    return harness.plan_run(**{"dataset": SYN, "split": "random", "seed": 0, "model": "bias-only", **kw})


def _forked(rec) -> bool:
    """Forked from a zygote, as the record's structured field and its memory note both say."""
    forked = "zygote" in rec.memory.measured
    assert rec.conditions is not None and rec.conditions.worker_start == ("forked" if forked else "fresh")
    return forked


def _same_numbers(a, b) -> None:
    assert a.ok and b.ok
    assert a.metrics == b.metrics
    assert a.fit is not None and b.fit is not None
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in a.fit.history] == [
        {k: v for k, v in row.items() if k != "seconds"} for row in b.fit.history
    ]
    if a.refit is not None or b.refit is not None:
        assert a.refit is not None and b.refit is not None
        assert dataclasses.replace(a.refit, fit_seconds=0.0) == dataclasses.replace(b.refit, fit_seconds=0.0)


@pytest.mark.parametrize(
    "model,params",
    [("bias-only", {}), ("als", {"factors": 8, "epochs": 4}), ("biased-mf", {"factors": 8, "epochs": 3})],
)
def test_forked_run_records_the_fresh_workers_numbers(tmp_path, monkeypatch, model, params):
    plan = _plan(model=model, params=params)
    forked = execute1(plan, tmp_path / "forked")
    monkeypatch.setenv(zygote.ENV_FRESH, "1")
    fresh = execute1(plan, tmp_path / "fresh")
    assert _forked(forked) and not _forked(fresh), (forked.memory.measured, fresh.memory.measured)
    assert "since exec" in fresh.memory.measured
    _same_numbers(forked, fresh)


@needs_torch
def test_forked_torch_run_records_the_fresh_workers_numbers(tmp_path, monkeypatch):
    params = {"hidden": [16], "epochs": 3, "path": "sparse", "extra": {"sparse_kernel": "auto"}}
    plan = _plan(model="i-autorec", params=params, refit=True)
    forked = execute1(plan, tmp_path / "forked")
    monkeypatch.setenv(zygote.ENV_FRESH, "1")
    fresh = execute1(plan, tmp_path / "fresh")
    assert _forked(forked) and "torch._dynamo" in forked.memory.measured and not _forked(fresh)
    _same_numbers(forked, fresh)


def test_one_zygote_per_framework_reused_by_the_slots_runs(tmp_path):
    out = tmp_path / "raw"
    recs = [execute1(_plan(seed=s), out) for s in (0, 1, 2)]
    assert all(_forked(r) and r.ok for r in recs)
    live = list(zygote.pool().zygotes.values())
    assert len(live) == 1 and live[0].alive() and not live[0].busy
    pid = live[0].proc.pid
    execute1(_plan(model=TOY), out)  # another module: a second zygote, the first kept
    assert len(zygote.pool().zygotes) == 2 and pid in {z.proc.pid for z in zygote.pool().zygotes.values()}


def test_each_thread_has_its_own_zygotes(tmp_path):
    seen = []

    def slot(seed: int) -> None:
        rec = execute1(_plan(seed=seed), tmp_path / "raw")
        seen.append((rec.ok, _forked(rec), [z.proc.pid for z in zygote.pool().zygotes.values()]))
        zygote.pool().close()

    threads = [threading.Thread(target=slot, args=(s,)) for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(ok and forked for ok, forked, _ in seen)
    assert seen[0][2] != seen[1][2]


def test_more_threads_verbose_or_opted_out_start_fresh_workers(tmp_path, monkeypatch):
    out = tmp_path / "raw"
    rec = harness.execute(_plan(seed=1), out, threads=2).record
    assert rec is not None and rec.ok and not _forked(rec)  # BLAS / OpenMP pools exist after import
    monkeypatch.setenv(zygote.ENV_FRESH, "1")
    rec = execute1(_plan(seed=2), out)
    assert rec.ok and not _forked(rec)
    assert not zygote.pool().zygotes


def test_a_zygote_that_cannot_start_falls_back_to_fresh_workers(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zygote, "preload_for", lambda plan: ("benchmarks.harness.worker", "no_such_module_here"))
    rec = execute1(_plan(), tmp_path / "raw")
    assert rec.ok and not _forked(rec)
    err = capsys.readouterr().err
    assert "no_such_module_here" in err and "fresh workers" in err
    assert zygote.pool().failed and not zygote.pool().zygotes
    rec = execute1(_plan(seed=1), tmp_path / "raw")  # remembered: not retried, no second note
    assert rec.ok and "no_such_module_here" not in capsys.readouterr().err


def test_a_zygote_with_threads_refuses_to_fork(tmp_path):
    mod = tmp_path / "threaded_at_import.py"
    mod.write_text("import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    with pytest.raises(zygote.ZygoteError, match="2 threads after importing"):
        zygote.Zygote(("threaded_at_import",), env)


def test_a_zygote_that_dies_at_start_is_reported_with_its_status_and_output(tmp_path):
    mod = tmp_path / "dies_at_import.py"
    mod.write_text("import os, sys\nprint('dies_at_import: giving up', file=sys.stderr, flush=True)\nos._exit(3)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    with pytest.raises(zygote.ZygoteError, match="did not start") as err:
        zygote.Zygote(("dies_at_import",), env)
    assert "exited with status 3" in str(err.value) and "dies_at_import: giving up" in str(err.value)


def test_crash_kill_and_timeout_of_a_forked_run(tmp_path):
    out = tmp_path / "raw"
    rec = execute1(_plan(model=TOY, params={"mode": "crash"}), out)
    assert rec.status == "failed" and rec.error is not None and "status 3" in rec.error.message
    rec = execute1(_plan(model=TOY, params={"mode": "kill"}), out)
    assert rec.status == "failed" and rec.error is not None and "signal SIGKILL" in rec.error.message
    rec = execute1(_plan(model=TOY, params={"mode": "sleep", "sleep": 30.0}, timeout_s=3), out)
    assert rec.status == "failed" and rec.error is not None and "timeout of 3 s" in rec.error.message
    # the zygote survived its runs' deaths and runs the next one
    rec = execute1(_plan(model=TOY, seed=4), out)
    assert rec.ok and _forked(rec)
    assert len(zygote.pool().zygotes) == 1


def test_peak_rss_of_a_forked_run_is_its_own(tmp_path):
    out = tmp_path / "raw"
    small = execute1(_plan(model=TOY), out).memory
    big = execute1(_plan(model=TOY, params={"mode": "alloc", "alloc_mb": 160}, seed=1), out).memory
    assert "zygote" in big.measured and big.peak_rss is not None and small.peak_rss is not None
    assert big.peak_rss - small.peak_rss > 120  # a run's peak does not carry over to the next run
    small_again = execute1(_plan(model=TOY, seed=2), out).memory
    assert small_again.peak_rss is not None and small_again.peak_rss < small.peak_rss + 20


def _run_in_thread(plan, out):
    box: dict = {}

    def go() -> None:
        try:
            box["rec"] = execute1(plan, out)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            box["exc"] = exc
        finally:
            box["pool"] = list(zygote.pool().zygotes.values())

    t = threading.Thread(target=go)
    t.start()
    return t, box


def _active_run(timeout: float = 20.0):
    from benchmarks.harness import launch

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with launch._ACTIVE_LOCK:
            runs = [p for p in launch._ACTIVE.values() if isinstance(p, zygote.RunHandle)]
        if runs:
            return runs[0]
        time.sleep(0.05)
    raise AssertionError("no forked run started")


def test_sigterm_to_a_forked_run_is_an_interrupt_and_the_zygote_ignores_it(tmp_path):
    gate = tmp_path / "gate"  # never opened: the run waits in its first epoch until it is stopped
    t, box = _run_in_thread(_plan(model=TOY, params={"mode": "gate", "gate": str(gate)}), tmp_path / "raw")
    run = _active_run()
    os.kill(run.zygote.proc.pid, signal.SIGTERM)  # as a process-group SIGTERM would reach it
    deadline = time.monotonic() + 60
    while not (tmp_path / "gate.waiting").exists():  # the run is in its first epoch
        assert time.monotonic() < deadline and t.is_alive(), box
        time.sleep(0.02)
    # the zygote ignored its SIGTERM (checked while the run's thread lives: the zygote dies with the
    # thread that started it, PR_SET_PDEATHSIG)
    assert run.zygote.proc.poll() is None
    run.send_signal(signal.SIGTERM)
    t.join(30)
    assert isinstance(box.get("exc"), harness.Interrupted), box
    assert not harness.raw_files(tmp_path / "raw")  # an interrupted run records nothing


def test_a_zygote_dying_mid_run_gives_a_failure_record_that_says_so(tmp_path):
    t, box = _run_in_thread(_plan(model=TOY, params={"mode": "sleep", "sleep": 20.0}), tmp_path / "raw")
    run = _active_run()
    time.sleep(0.5)
    run.zygote.proc.kill()
    t.join(30)
    rec = box["rec"]
    assert rec.status == "failed" and rec.error is not None and "zygote failed" in rec.error.message
    assert "killed by signal SIGKILL" in rec.error.message
    assert rec.memory.peak_rss is None


def test_signal_names_also_for_signals_python_has_no_name_for():
    assert zygote.signal_name(9) == "SIGKILL" and zygote.signal_name(40) == "40"


def test_exit_codes_as_the_interpreter_maps_them(capsys):
    assert zygote._exit_code(SystemExit(None)) == 0 and zygote._exit_code(SystemExit(4)) == 4
    assert zygote._exit_code(SystemExit("bad job")) == 1 and "bad job" in capsys.readouterr().err


def test_gpu_and_data_parallel_plans_are_not_forked():
    from types import SimpleNamespace

    ident = SimpleNamespace(model="i-autorec", backend="torch", devices=["cpu"])
    assert zygote.preload_for(SimpleNamespace(launcher="single", identity=ident)) is not None
    assert zygote.preload_for(SimpleNamespace(launcher="ddp", identity=ident)) is None
    gpu = SimpleNamespace(model="i-autorec", backend="torch", devices=["cuda:0"])
    assert zygote.preload_for(SimpleNamespace(launcher="single", identity=gpu)) is None


def test_pool_limit_closes_the_least_recently_used_zygote(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = zygote.ZygotePool(limit=1)
    a = p.get(("benchmarks.harness.worker",), env)
    assert a is not None and p.get(("benchmarks.harness.worker",), env) is a  # reused
    b = p.get(("benchmarks.harness.worker", "baselines.simple"), env)
    assert b is not None and b is not a and list(p.zygotes.values()) == [b]
    a.proc.wait(10)  # the least recently used one was closed
    p.close()


def test_an_edited_source_gets_a_new_zygote_and_closes_the_stale_one(tmp_path, monkeypatch):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = zygote.ZygotePool(limit=4)
    mods = ("benchmarks.harness.worker",)
    a, other = p.get(mods, env), p.get((*mods, "baselines.simple"), env)
    stamp = zygote.sources_stamp()
    monkeypatch.setattr(zygote, "sources_stamp", lambda: (stamp[0] + "-edited", stamp[1]))  # a source edited
    b = p.get(mods, env)
    assert a is not None and b is not None and b is not a and b.alive()
    a.proc.wait(10)  # the stale zygote of the same module set was closed, the other set's kept
    assert other is not None and other.alive() and set(p.zygotes.values()) == {b, other}
    p.close()


def test_sources_stamp_sees_edits_additions_removals_and_older_copies(tmp_path):
    pkg = tmp_path / "autorec"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "k.cpp").write_text("int f();\n")
    (pkg / "notes.txt").write_text("not a source\n")
    first = zygote.sources_stamp(tmp_path)
    assert first[1] == 2
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"")
    (pkg / "notes.txt").write_text("still not a source\n")
    assert zygote.sources_stamp(tmp_path) == first
    (pkg / "a.py").write_text("x = 2\n")
    edited = zygote.sources_stamp(tmp_path)
    assert edited != first and edited[1] == 2
    # a copy that keeps an older modification time (cp -p, rsync -a): still another stamp
    old = (pkg / "k.cpp").stat().st_mtime_ns
    (pkg / "k.cpp").write_text("int g();\n")
    os.utime(pkg / "k.cpp", ns=(old, old))
    assert zygote.sources_stamp(tmp_path) != edited
    (pkg / "b.py").write_text("")
    assert zygote.sources_stamp(tmp_path)[1] == 3
    (pkg / "b.py").unlink()
    (pkg / "k.cpp").unlink()
    assert zygote.sources_stamp(tmp_path)[1] == 1
