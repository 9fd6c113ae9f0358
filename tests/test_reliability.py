"""Issue 12, the harness's rows: each fault injected, the message asserted, no result lost or wrongly
kept.  (Rows 2, 9 and 10, the data layer's, are tested with it; row 4's report/verify half with them.)"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from autorec import data, env
from autorec.data import generate
from autorec.errors import DataError
from benchmarks import harness, record
from benchmarks.cli import main as cli
from benchmarks.harness import store
from tests.test_harness_helpers import SYN, TOY, cli_env, execute1


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("AUTOREC_DATA_DIR", raising=False)
    monkeypatch.setenv("AUTOREC_DATA_URL", "http://127.0.0.1:9/never")  # no test may download
    monkeypatch.chdir(tmp_path)


def _run(*args: str) -> list[str]:
    return ["run", "--threads", "1", *args]


def _toy_spec(tmp_path: Path, modes: list[str], params: str = "", name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(
        f'datasets = ["{SYN}"]\nsplits = ["random"]\n[[model]]\nname = "{TOY}"\n'
        f"params = {{{params}}}\ngrid = {{mode = {json.dumps(modes)}}}\n"
    )
    return p


# ====================================================================== row 1: identity = content
def _csv_split(folder: Path, edit: bool = False) -> None:
    rng = np.random.default_rng(0)
    pairs = rng.choice(60 * 40, size=900, replace=False)
    ratings = rng.integers(1, 6, size=900)
    if edit:
        ratings[5] = ratings[5] % 5 + 1  # one rating changed, same paths, same shape
    rows = [f"{u},{i},{r}" for u, i, r in zip(pairs // 40 + 1, pairs % 40 + 1, ratings)]
    (folder / "train.csv").write_text("user,item,rating\n" + "\n".join(rows[:800]) + "\n")
    (folder / "test.csv").write_text("user,item,rating\n" + "\n".join(rows[800:]) + "\n")


def test_edited_files_split_is_another_run(tmp_path, capsys):
    out = tmp_path / "raw"
    cmd = _run("--dataset", "mine", "--split", "files:train.csv,test.csv", "--rating-scale", "1,5",
               "--model", "bias-only", "--out", str(out))  # fmt: skip
    _csv_split(tmp_path)
    assert cli(cmd) == 0
    (first,) = harness.load(out)
    _csv_split(tmp_path, edit=True)  # the same command, edited content
    capsys.readouterr()
    assert cli(cmd) == 0
    assert "already done" not in capsys.readouterr().out
    recs = {r.run_id: r for r in harness.load(out)}
    assert len(recs) == 2 and first.run_id in recs  # the old content's result is kept, the new one added
    (second,) = [r for r in recs.values() if r.run_id != first.run_id]
    assert second.identity.split.sha256 != first.identity.split.sha256
    assert second.identity.data.sha256 != first.identity.data.sha256


def _fake_ml100k(folder: Path, edit: bool = False) -> Path:
    """A complete ML-100K-shaped copy (synthetic content, the registered counts) under ``folder``."""
    r = generate(943, 1682, 100_000, seed=7, name="ml-100k")
    ratings = r.ratings.astype(int)
    if edit:
        ratings[123] = ratings[123] % 5 + 1
    (folder / "ml-100k").mkdir(parents=True)
    assert r.timestamps is not None
    lo, hi = data.get("ml-100k").timestamps or (0, 1)
    stamps = lo + (r.timestamps - r.timestamps.min()) % (hi - lo)  # within the release's time range
    lines = (f"{u}\t{i}\t{v}\t{t}" for u, i, v, t in zip(r.user_ids[r.users], r.item_ids[r.items], ratings, stamps))
    (folder / "ml-100k" / "u.data").write_text("\n".join(lines) + "\n")
    return folder


def test_another_data_copy_is_another_run(tmp_path):
    a, b, same = (_fake_ml100k(tmp_path / n, edit=n == "b") for n in ("a", "b", "same"))
    plans = {
        n: harness.plan_run(dataset="ml-100k", model="global-mean", data_dir=d) for n, d in zip("abs", (a, b, same))
    }
    assert plans["a"].identity.data.sha256 != plans["b"].identity.data.sha256
    assert plans["a"].run_id != plans["b"].run_id
    assert plans["a"].run_id == plans["s"].run_id  # identity is the content, not the folder
    out = tmp_path / "raw"
    assert harness.execute(plans["a"], out, threads=1).status == "ok"
    assert harness.execute(plans["b"], out, threads=1).status == "ok"  # not "skipped": another run
    assert harness.execute(plans["s"], out, threads=1).status == "skipped"
    assert len(harness.raw_files(out)) == 2


# ====================================================================== row 3: failures are never done
def test_a_failed_run_is_tried_again_and_said_so(tmp_path, capsys):
    out = tmp_path / "raw"
    cmd = _run("--dataset", SYN, "--model", TOY, "--set", "mode=diverge", "--out", str(out))
    assert cli(cmd) == 1
    (path,) = harness.raw_files(out)
    text = capsys.readouterr().out
    assert "1 run(s) FAILED" in text and str(path) in text and "TrainingDivergedError" in text
    assert cli(cmd) == 1  # a new attempt, not "already done"
    assert "already done" not in capsys.readouterr().out
    assert harness.raw_files(out) == [path] and not harness.load(out)[0].ok


def test_a_timed_out_run_reruns_with_a_larger_timeout(tmp_path, capsys):
    out = tmp_path / "raw"
    base = _run("--dataset", SYN, "--model", TOY, "--set", "mode=sleep", "--set", "sleep=1.5", "--out", str(out))
    assert cli([*base, "--timeout", "1"]) == 1
    (failed,) = harness.load(out)
    assert not failed.ok and failed.error is not None and "timeout of 1 s" in failed.error.message
    assert cli([*base, "--timeout", "120"]) == 0  # the timeout is no part of the identity: the same run
    (rec,) = harness.load(out)
    assert rec.ok and rec.run_id == failed.run_id  # the failure record replaced by the new attempt


def test_a_forced_rerun_that_fails_keeps_the_successful_record(tmp_path, capsys):
    out = tmp_path / "raw"
    base = _run("--dataset", SYN, "--model", TOY, "--set", "mode=sleep", "--set", "sleep=1.5", "--out", str(out))
    assert cli([*base, "--timeout", "120"]) == 0
    (path,) = harness.raw_files(out)
    good = path.read_bytes()
    assert cli([*base, "--timeout", "1", "--force"]) == 1
    assert path.read_bytes() == good and harness.raw_files(out) == [path]  # the result is not lost
    side = out / harness.launch.FAILED_RERUNS / path.name
    failed = record.read(side)
    assert not failed.ok and failed.error is not None and "timeout of 1 s" in failed.error.message
    assert str(side) in capsys.readouterr().out  # the failure is reported where it was written
    plan = harness.plan_run(dataset=SYN, model=TOY, params={"mode": "sleep", "sleep": 1.5})
    assert plan.run_id == failed.run_id
    assert harness.failures([plan], out) == [side]  # the latest attempt failed: --strict and summary say so
    assert cli([*base, "--timeout", "120", "--force"]) == 0
    assert not side.exists() and harness.failures([plan], out) == []


def test_a_sweep_moves_aside_what_a_newer_model_version_replaced(tmp_path, capsys):
    """After a version bump the sweep writes new files beside the old; report and verify would
    refuse the pair, so the sweep moves the old one to superseded/ once the new one exists."""
    import dataclasses

    from benchmarks.report.inputs import load_raw

    out = tmp_path / "raw"
    plan = harness.plan_run(dataset=SYN, model="bias-only")
    new = execute1(plan, out)
    ident = dataclasses.replace(new.identity, model_version=new.identity.model_version - 1)
    old = dataclasses.replace(new, identity=ident, run_id=ident.run_id)
    old_path = record.write(out / f"{SYN.split(':')[0]}_{old.run_id[:16]}_old.json", old)
    other = harness.plan_run(dataset=SYN, model="bias-only", seed=1)
    kept = record.write(out / "unrelated.json", execute1(other, tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="several versions of their model"):
        load_raw(out)
    harness.run_batch([plan], out, progress=False, log=print)
    assert "a newer version of its model's record replaces it" in capsys.readouterr().out
    assert not old_path.exists() and (out / "superseded" / old_path.name).is_file() and kept.is_file()
    assert {r.rec.run_id for r in load_raw(out).ok} == {new.run_id, other.run_id}


def test_strict_holds_on_resume(tmp_path, capsys):
    out = tmp_path / "raw"
    spec = _toy_spec(tmp_path, ["ok", "diverge"])
    assert cli(["sweep", str(spec), "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "1 ok, 1 failed" in text and "1 run(s) FAILED" in text
    # resumed with --strict: the failure is tried again, fails again, and the exit status says so
    assert cli(["sweep", str(spec), "--out", str(out), "--no-progress", "--strict", "--threads", "1"]) == 1
    assert "--strict: 1 run(s)" in capsys.readouterr().out
    # an old failure that is not tried again (another live sweep claims it) still fails --strict
    (failed,) = [r for r in harness.load(out) if not r.ok]
    mine, _ = store.try_claim(out, failed.run_id, None)  # held by this (live) process
    assert mine is not None
    assert cli(["sweep", str(spec), "--out", str(out), "--no-progress", "--strict", "--threads", "1"]) == 1
    text = capsys.readouterr().out
    assert "another sweep runs it" in text and "--strict: 1 run(s)" in text
    store.release(out, mine)


# ====================================================================== row 4: messages, not tracebacks
@pytest.mark.parametrize(
    "model,assignment,expected",
    [
        ("bias-only", "epochs=ten", "epochs='ten': must be an integer"),
        ("bias-only", "epochs=2.5", "epochs=2.5: must be an integer"),
        ("biased-mf", "lr=abc", "lr='abc': must be a number"),
        ("biased-mf", "batch_size=1.5", "batch_size=1.5: must be an integer"),
        ("als", 'reg="x"', "reg='x': must be a number"),
        ("bias-only", "reg_user", "expected KEY=VALUE"),
    ],
)
def test_bad_values_are_messages(tmp_path, capsys, model, assignment, expected):
    out = tmp_path / "raw"
    assert cli(_run("--dataset", SYN, "--model", model, "--set", assignment, "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    if "=" in assignment:
        assert model in err  # the message names the model
    assert not harness.raw_files(out)


def test_unwritable_results_folder_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for cmd in (_run("--dataset", SYN, "--model", "bias-only", "--out", str(blocker / "raw")),
                ["sweep", str(_toy_spec(tmp_path, ["ok"])), "--out", str(blocker / "raw")]):  # fmt: skip
        assert cli(cmd) == 2
        err = capsys.readouterr().err
        assert "not writable" in err and str(blocker / "raw") in err and "Traceback" not in err
    assert not (tmp_path / "cache" / "splits").exists()  # refused before the data was even touched
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert cli(_run("--dataset", SYN, "--model", "bias-only", "--out", str(ro / "raw"))) == 2
        assert "not writable" in capsys.readouterr().err


# ====================================================================== row 5: one writer per run
def test_claims_are_exclusive_and_stale_ones_taken_over(tmp_path):
    raw = tmp_path / "raw"
    mine, holder = store.try_claim(raw, "r1", None)
    assert mine is not None and holder is None
    again, holder = store.try_claim(raw, "r1", None)
    assert again is None and holder is not None and holder.pid == os.getpid()  # live: left to its holder
    store.release(raw, mine)
    assert not store.claim_path(raw, "r1").exists()
    # a claim of a process that is gone (this host) is stale
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"run_id": "r2", "host": socket.gethostname(), "pid": int(dead.stdout), "pid_start": None,
             "since": time.time(), "timeout_s": None, "token": "x"}  # fmt: skip
    store.claim_path(raw, "r2").write_text(json.dumps(stale))
    took, holder = store.try_claim(raw, "r2", None)
    assert took is not None and holder is None and store.read_claim(store.claim_path(raw, "r2")) == took
    # another host cannot be asked: its claim is stale only past the run's timeout (plus a grace)
    far = {**stale, "run_id": "r3", "host": "elsewhere", "pid": 1, "since": time.time() - 500, "timeout_s": 100.0}
    store.claim_path(raw, "r3").write_text(json.dumps(far))
    assert store.try_claim(raw, "r3", None)[0] is not None
    young = {**far, "run_id": "r4", "since": time.time() - 10}
    store.claim_path(raw, "r4").write_text(json.dumps(young))
    assert store.try_claim(raw, "r4", None)[0] is None


def test_a_claim_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    # a claim is written to a side file and linked into place: a runner killed while claiming
    # leaves no empty claim (which would block the run until it looked stale), and its side file
    # goes at the next batch start once its process is gone
    raw = tmp_path / "raw"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    doc = {"host": socket.gethostname(), "pid": int(dead.stdout), "pid_start": None, "since": time.time(),
           "timeout_s": None, "token": "t"}  # fmt: skip
    claims = raw / ".claims"
    claims.mkdir(parents=True)
    (claims / f"r1{store.NEW}t").write_text(json.dumps({"run_id": "r1", **doc}))  # killed before the link
    (claims / f"r2{store.NEW}u").write_text(json.dumps({"run_id": "r2", **doc, "pid": os.getpid()}))  # live
    (claims / f"r3{store.NEW}v").write_text('{"run_id": "r3", "ho')  # killed while writing it, just now
    mine, holder = store.try_claim(raw, "r1", None)
    assert mine is not None and holder is None  # the side file does not hold the run
    assert store.read_claim(store.claim_path(raw, "r1")) == mine
    assert store.clean_stale_claims(raw) == 1
    assert {p.name for p in claims.iterdir()} == {"r1", f"r2{store.NEW}u", f"r3{store.NEW}v"}
    later = time.time() + 3600  # an unreadable side file goes once it is older than the grace
    with monkeypatch.context() as m:
        m.setattr(store.time, "time", lambda: later)
        assert store.clean_stale_claims(raw) == 1
    assert {p.name for p in claims.iterdir()} == {"r1", f"r2{store.NEW}u"}

    # interrupted just before the link: neither a claim nor a side file is left
    def interrupted(*_a):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(store.os, "link", interrupted)
        with pytest.raises(KeyboardInterrupt):
            store.try_claim(raw, "r4", None)
    assert {p.name for p in claims.iterdir()} == {"r1", f"r2{store.NEW}u"}

    # a filesystem without hard links: the claim is created in place, whole, and still exclusive
    def unsupported(*_a):
        raise PermissionError(1, "Operation not permitted")

    with monkeypatch.context() as m:
        m.setattr(store.os, "link", unsupported)
        mine, holder = store.try_claim(raw, "r4", None)
        assert mine is not None and store.read_claim(store.claim_path(raw, "r4")) == mine
        again, holder = store.try_claim(raw, "r4", None)
        assert again is None and holder == mine
    assert {p.name for p in claims.iterdir()} == {"r1", f"r2{store.NEW}u", "r4"}


def test_a_claim_of_a_killed_unreaped_process_is_stale(tmp_path):
    # a runner killed (a Dask worker, SIGKILL) stays a zombie until its parent reaps it, and a
    # loaded machine reaps late: kill(pid, 0) still finds it, but its claim must be taken over
    raw = tmp_path / "raw"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while env.proc_stat(child.pid) is not None and env.proc_stat(child.pid)[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        zombie = {"run_id": "z", "host": socket.gethostname(), "pid": child.pid, "pid_start": None,
                  "since": time.time(), "timeout_s": None, "token": "x"}  # fmt: skip
        store.claim_path(raw, "z").parent.mkdir(parents=True, exist_ok=True)
        store.claim_path(raw, "z").write_text(json.dumps(zombie))
        assert store.read_claim(store.claim_path(raw, "z")).stale()
        assert store.try_claim(raw, "z", None)[0] is not None
    finally:
        child.wait()


def test_a_claim_of_an_exiting_process_is_stale(monkeypatch):
    # a SIGKILLed Dask worker closes its sockets (the scheduler retries its run on another worker)
    # while it still tears down, before it shows as a zombie: the kernel flags it PF_EXITING then
    me = os.getpid()
    state, flags, start = env.proc_stat(me)
    live = store.Claim("e", socket.gethostname(), me, start, time.time(), None, "x")
    assert not live.stale() and not flags & env.PF_EXITING
    monkeypatch.setattr(env, "proc_stat", lambda pid: (state, flags | env.PF_EXITING, start))
    assert live.stale()
    monkeypatch.setattr(env, "proc_stat", lambda pid: (state, flags, start + 1))  # pid reused
    assert live.stale()


def test_a_starting_sweep_leaves_another_sweeps_writes_alone(tmp_path):
    raw = store.check_writable(tmp_path / "raw")
    young, old = raw / ".rec.json.young.tmp", raw / ".rec.json.old.tmp"
    young.write_text("being written by a live sweep")
    old.write_text("left by a killed writer")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert store.clean_stale_temp(raw) == 1 and young.exists() and not old.exists()


def test_a_ctrl_c_just_after_claiming_still_releases_the_claim(tmp_path, monkeypatch):
    """Ctrl-C landing between taking a run's claim and the block that releases it left the claim behind
    (seen once in CI: an interrupted sweep's .claims was not empty)."""
    import signal

    plan = harness.plan_run(dataset=SYN, model=TOY)
    out = tmp_path / "raw"
    real = store.try_claim

    def claim_then_interrupt(*a, **kw):
        got = real(*a, **kw)
        os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt at the next step it takes
        return got

    monkeypatch.setattr(store, "try_claim", claim_then_interrupt)
    # Ctrl-C's handler, whatever this process inherited (a background job starts with SIGINT ignored);
    # threads started by earlier tests may be the ones the kernel delivers the signal to
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    busy = threading.Thread(target=time.sleep, args=(2,), daemon=True)
    busy.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            harness.execute(plan, out)
    finally:
        signal.signal(signal.SIGINT, before)
    assert not list((out / store.CLAIMS).iterdir())


def test_a_claim_left_on_a_finished_run_is_cleaned_up(tmp_path, monkeypatch):
    # a runner interrupted (SIGINT, SIGKILL) after writing its record but before releasing its claim
    # leaves a claim on a finished run, which no runner takes over: the next batch, or the next
    # execute that skips the run, removes it; live claims and young set-aside files stay
    raw = tmp_path / "raw"
    plans = [harness.plan_run(dataset=SYN, model="bias-only", seed=s) for s in (0, 1)]
    for plan in plans:
        execute1(plan, raw)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = {"host": socket.gethostname(), "pid": int(dead.stdout), "pid_start": None, "since": time.time(),
            "timeout_s": None, "token": "x"}  # fmt: skip
    live = {**gone, "pid": os.getpid(), "pid_start": store._process_start(os.getpid())}
    far = {**gone, "host": "elsewhere", "pid": 1}  # another host's, young: cannot be judged stale yet
    claims = {plans[0].run_id: gone, plans[1].run_id: gone, "other-live": live, "other-far": far}
    for run_id, doc in claims.items():
        store.claim_path(raw, run_id).write_text(json.dumps({"run_id": run_id, **doc}))
    for name in ("r.stale-1", "r.stale-2"):  # set aside by takeovers (just now: one may be in flight)
        store.claim_path(raw, name).write_text("{}")

    # execute skipping a finished run removes that run's stale claim, and only that one
    assert harness.execute(plans[0], raw, threads=1).status == "skipped"
    left = {p.name for p in (raw / ".claims").iterdir()}
    assert left == {plans[1].run_id, "other-live", "other-far", "r.stale-1", "r.stale-2"}
    # a batch start removes every stale claim in the folder
    tally = harness.run_batch(plans, raw, threads=1, progress=False, log=lambda *_: None)
    assert tally.counts["skipped"] == 2
    assert {p.name for p in (raw / ".claims").iterdir()} == {"other-live", "other-far", "r.stale-1", "r.stale-2"}
    # an aside file renamed aside more than the grace ago goes (an hour on: both asides, nothing live)
    later = time.time() + 3600
    with monkeypatch.context() as m:
        m.setattr(store.time, "time", lambda: later)
        assert store.clean_stale_claims(raw) == 2
    assert {p.name for p in (raw / ".claims").iterdir()} == {"other-live", "other-far"}


def test_two_sweeps_never_train_the_same_run(tmp_path):
    # every run waits at a gate: the first sweep holds its first run until the second sweep has
    # said that it leaves that run to it, however late the second starts on a loaded machine
    out, gate = tmp_path / "raw", tmp_path / "gate"
    spec = tmp_path / "two.toml"
    spec.write_text(
        f'datasets = ["{SYN}"]\nsplits = ["random"]\nseeds = [0, 1, 2, 3]\n[[model]]\nname = "{TOY}"\n'
        f'params = {{mode = "gate", gate = "{gate}", epochs = 2}}\n'
    )
    cmd = [sys.executable, "-m", "benchmarks", "sweep", str(spec), "--out", str(out), "--no-progress", "--threads", "1"]
    env = {**cli_env(tmp_path), "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / ".claims").is_dir() or not list((out / ".claims").iterdir()):
        assert time.monotonic() < deadline and first.poll() is None, "the first sweep never claimed a run"
        time.sleep(0.05)
    second = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert second.stdout is not None
    second_out = []
    watchdog = threading.Timer(90, gate.touch)  # a sweep that never says so fails the test, not hangs it
    watchdog.start()
    for line in second.stdout:  # until it has passed the first sweep's run by
        second_out.append(line)
        if "another sweep runs it" in line:
            break
    gate.touch()
    watchdog.cancel()
    rest, err = second.communicate(timeout=180)
    first_out, _ = first.communicate(timeout=180)
    second_text = "".join(second_out) + rest
    assert first.returncode == 0 and second.returncode == 0, err
    assert "another sweep runs it" in second_text  # said so
    ok = [re.search(r"done in \S+: (\d+) ok", text) for text in (first_out, second_text)]
    assert sum(int(m.group(1)) for m in ok if m) == 4  # every run trained exactly once, by one of the two
    recs = harness.load(out)
    assert len(recs) == 4 and all(r.ok for r in recs) and not list((out / ".claims").iterdir())


# ====================================================================== row 6: divergence
def test_divergence_names_epoch_and_config_and_keeps_the_history(tmp_path):
    plan = harness.plan_run(dataset=SYN, model=TOY, params={"mode": "diverge", "epochs": 4})
    rec = execute1(plan, tmp_path / "raw")
    assert rec.error is not None and rec.fit is not None
    assert rec.status == "failed" and rec.error.type == "TrainingDivergedError" and rec.error.epoch == 2
    assert (
        "toy (numpy)" in rec.error.message and "epoch 2" in rec.error.message and "mode='diverge'" in rec.error.message
    )
    assert [row["epoch"] for row in rec.fit.history] == [1] and rec.fit.history[0]["valid_rmse"] is not None
    assert rec.metrics is None and rec.sizes is None


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_autorec_divergence_names_epoch_and_config(tmp_path):
    diverging = {"optimizer": "sgd", "lr": 1000.0, "hidden": [8], "batch_size": 8, "epochs": 3}
    plan = harness.plan_run(dataset=SYN, model="i-autorec", backend="torch", params=diverging)
    rec = execute1(plan, tmp_path / "raw")
    assert rec.error is not None and rec.fit is not None and rec.error.epoch is not None
    assert rec.status == "failed" and rec.error.type == "TrainingDivergedError"
    assert rec.error.epoch is not None and f"epoch {rec.error.epoch}" in rec.error.message
    assert "lr=1000" in rec.error.message
    assert len(rec.fit.history) == rec.error.epoch - 1


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_a_divergence_with_a_finite_loss_is_a_failure_not_a_clipped_number(tmp_path):
    """Adam at lr=1000 takes MF's predictions to about 1e8 with a finite loss; clipped to the scale
    they gave a plausible test RMSE (2.29) in an ``ok`` record.  With or without validation it fails."""
    params = {"optimizer": "adam", "lr": 1000.0, "epochs": 3}
    # validated every epoch: the fit stops there; no validation part: the test predictions refuse
    for valid_ratio, error in ((0.05, "TrainingDivergedError"), (0.0, "FloatingPointError")):
        plan = harness.plan_run(dataset=SYN, model="biased-mf", backend="torch", params=params, valid_ratio=valid_ratio)
        rec = execute1(plan, tmp_path / f"raw{valid_ratio}")
        assert rec.status == "failed" and rec.metrics is None
        assert rec.error is not None and rec.error.type == error
        assert "scale widths outside 1..5" in rec.error.message and "the model diverged" in rec.error.message


# ====================================================================== row 7: --dry-run checks everything
def test_dry_run_reports_every_spec_error_at_once(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text(
        'datasets = ["ml-99k"]\nsplits = ["random:test_ratio=2"]\n'
        '[[model]]\nname = "no-such-model"\n[[model]]\nname = "bias-only"\nparams = {reg_user = -1}\n'
    )
    assert cli(["sweep", str(spec), "--dry-run", "--out", str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err
    for problem in ("ml-99k", "test_ratio", "no-such-model", "reg_user=-1"):
        assert problem in err, problem
    assert "Traceback" not in err


def test_dry_run_checks_data_availability(tmp_path, capsys):
    spec = tmp_path / "ml1m.toml"
    spec.write_text('datasets = ["ml-1m"]\nsplits = ["random"]\n[[model]]\nname = "bias-only"\n')
    (tmp_path / "empty").mkdir()
    base = ["sweep", str(spec), "--dry-run", "--out", str(tmp_path / "raw"), "--data-dir", str(tmp_path / "empty")]
    assert cli([*base, "--offline"]) == 2  # offline and no copy: an error saying what to do
    err = capsys.readouterr().err
    assert "ml-1m is not available locally" in err and "--data-dir" in err
    assert cli(base) == 0  # online: it would download, and from where; nothing is downloaded
    text = capsys.readouterr().out
    assert "http://127.0.0.1:9/never/ml-1m.zip" in text and "1 runs valid" in text and "todo" in text
    assert not (tmp_path / "cache" / "datasets").exists()


# ====================================================================== row 8: timings carry their conditions
def test_contention_rule():
    assert not env.contended((0.3, 0.2, 0.1), (1.2, 0.5, 0.2), own_threads=1)
    assert env.contended((2.0, 1.0, 1.0), (1.0, 1.0, 1.0), own_threads=1)  # busy at the start
    assert env.contended((0.1,), (4.0,), own_threads=2)  # busier than its own 2 threads at the end
    assert not env.contended((), (), own_threads=1)
    assert len(env.load_average()) == 3
    # an instantaneous sample at the start wins over the lagging load average (a run that just ended)
    assert not env.contended((2.0, 1.0, 1.0), (1.0,), own_threads=2, busy_before=0.05)
    assert env.contended((0.1,), (1.0,), own_threads=2, busy_before=1.0)


@pytest.mark.parametrize("load,flagged", [(0.2, False), (6.0, True)])
def test_timings_carry_their_conditions(tmp_path, monkeypatch, load, flagged):
    monkeypatch.setattr(env, "load_average", lambda: (load, load, load))  # a quiet or a loaded machine
    monkeypatch.setattr(env, "busy_cores", lambda window=0.1: load / 2)  # ... and the same now
    c = execute1(harness.plan_run(dataset=SYN, model="bias-only"), tmp_path / "raw").conditions
    assert c is not None
    assert c.contended is flagged and c.load_before == (load,) * 3 and c.load_after == (load,) * 3
    assert c.busy_before == load / 2
    assert c.threads == 1 and "1" in c.thread_policy and c.cpu_count == os.cpu_count()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_records_say_dirty_for_edited_code_not_for_rewritten_results(tmp_path):
    """A sweep rewrites tracked result files while it runs; its records' ``git_commit`` says
    ``-dirty`` only when code differs from the commit (asked from any folder of the checkout)."""
    repo = tmp_path / "repo"
    for rel in ("results/raw/run.json", "autorec/model.py", "README.md"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("v1\n")
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    (repo / "results/raw/run.json").write_text("v2\n")
    assert env.git_commit(str(repo)) == head and env.git_commit(str(repo / "autorec")) == head
    for rel in ("autorec/model.py", "README.md"):
        (repo / rel).write_text("v2\n")
        assert env.git_commit(str(repo)) == head + "-dirty" and env.git_commit(str(repo / "results")) == head + "-dirty"
        subprocess.run(["git", "checkout", "-q", "--", rel], cwd=repo, check=True)
