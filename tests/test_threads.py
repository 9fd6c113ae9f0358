"""The default thread count (``autorec.env.default_thread_count``): an explicit count wins, then
``AUTOREC_THREADS`` / ``OMP_NUM_THREADS``, else the cores other work leaves idle at the start."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from autorec import env


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv(env.THREADS_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(env, "_auto_state", {})
    monkeypatch.setattr(env, "_written", {})


def test_an_explicit_count_wins(monkeypatch):
    monkeypatch.setenv(env.THREADS_VAR, "1")
    assert env.resolve_threads(3) == 3


@pytest.mark.parametrize("var", [env.THREADS_VAR, "OMP_NUM_THREADS"])
def test_the_environment_chooses_next(monkeypatch, var):
    monkeypatch.setattr(env, "busy_cores", lambda window=0.1: pytest.fail("must not sample"))
    monkeypatch.setenv(var, "3")
    assert env.default_thread_count() == (3, f"{var}=3")


def test_a_bad_thread_variable_names_itself(monkeypatch):
    monkeypatch.setenv(env.THREADS_VAR, "many")
    with pytest.raises(ValueError, match="AUTOREC_THREADS='many' is not a thread count"):
        env.resolve_threads(None)


@pytest.mark.parametrize("busy,cores,expected", [(0.0, 2, 2), (0.4, 2, 2), (1.0, 2, 1), (2.0, 2, 1), (1.0, 8, 7)])
def test_auto_leaves_the_busy_cores_to_their_work(monkeypatch, busy, cores, expected):
    monkeypatch.setattr(env, "default_threads", lambda: cores)
    monkeypatch.setattr(env, "busy_cores", lambda window=0.1: busy)
    n, how = env.default_thread_count()
    assert n == expected and how.startswith(f"auto: {expected} of {cores} cores")
    assert env.thread_counts()["auto"] == {"threads": expected, "cores": cores, "busy_cores": busy}


def test_without_proc_stat_auto_takes_every_core(monkeypatch):
    monkeypatch.setattr(env, "default_threads", lambda: 4)
    monkeypatch.setattr(env, "busy_cores", lambda window=0.1: None)
    assert env.auto_threads() == 4 and "unknown busy" in env.thread_choice()


def test_a_sample_is_reused_for_a_while(monkeypatch):
    calls = []
    monkeypatch.setattr(env, "busy_cores", lambda window=0.1: calls.append(1) or 0.0)
    env.auto_threads()
    env.auto_threads()
    assert len(calls) == 1


def test_omp_num_threads_written_for_mxnet_is_not_a_users_choice(monkeypatch):
    monkeypatch.setattr(env, "busy_cores", lambda window=0.1: 0.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setitem(env._written, "OMP_NUM_THREADS", "1")
    assert env.default_thread_count()[1].startswith("auto:")


@pytest.mark.skipif(env.default_threads() < 2, reason="needs 2 cores")
def test_busy_cores_sees_a_busy_neighbour():
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        env.busy_cores(0.5)  # let it start
        assert env.busy_cores(0.5) >= 0.5
    finally:
        proc.kill()
        proc.wait()


def test_als_solves_run_blas_on_one_thread(monkeypatch):
    """ALS's stacked small products gain nothing from BLAS threads and lose badly beside a busy core."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from baselines import als
    from tests.synthetic_parts import learnable

    seen = []
    real = als._stacked_solve

    def spy(a, b):
        seen.extend(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
        return real(a, b)

    monkeypatch.setattr(als, "_stacked_solve", spy)
    parts = learnable(seed=0)
    als.ALS(epochs=2, factors=4).fit(parts.train, None)
    assert seen and set(seen) == {1}


@pytest.mark.mxnet
@pytest.mark.skipif(importlib.util.find_spec("mxnet") is None, reason="mxnet not installed")
@pytest.mark.parametrize("at_import,asked,warns", [("2", 1, True), ("1", 1, False)])
def test_mxnet_threads_fixed_at_import_are_said_and_recorded(at_import, asked, warns):
    """MXNet's engine threads run its matrix products with the OMP_NUM_THREADS of its import: a fit
    asking for another count ran on 2 cores and recorded 1.  It is said, and recorded as it ran."""
    code = (
        "import warnings, mxnet; from autorec import env\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    env.set_threads({asked}, mxnet=True)\n"
        "c = env.thread_counts()\n"
        "n = len([x for x in w if 'matrix products keep' in str(x.message)])\n"
        "print(c['mxnet_omp_at_import'], c['mxnet_omp'], n)\n"
    )
    child = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", env.THREADS_VAR)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**child, "OMP_NUM_THREADS": at_import})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [at_import, str(asked), "1" if warns else "0"]
