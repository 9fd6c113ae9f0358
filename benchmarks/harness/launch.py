"""Executing planned runs: one fresh worker process per run, one claim per run, one record per run.

:func:`execute` skips a run that is finished (a successful record of its ``run_id``), claims it
(:mod:`benchmarks.harness.store`; a run another live runner claims is left to it), starts
``python -m benchmarks.harness.worker`` with the thread count set in its environment (and
recorded), dying with its parent (``PR_SET_PDEATHSIG``), relays its progress events, enforces the
run's timeout, reaps it with ``wait4``, adds what only the parent knows (wall time, the load average
before and after, hence whether the timings were contended) and writes the record atomically.  A
worker that dies without a record (crash, timeout, out of memory) becomes a failure record; a
worker interrupted by SIGINT / SIGTERM records nothing (:class:`Interrupted`).

An :class:`Executor` decides where runs execute; :class:`LocalExecutor` runs ``jobs`` of them at a
time in this machine's thread pool.  A distributed executor (e.g. Dask workers sharing the raw
folder) implements the same ``map``: plans, workers, records and claims stay as they are.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from autorec import env as hostenv
from autorec.env import die_with_parent
from autorec.errors import ConfigError
from autorec.jsonio import dumps
from benchmarks import record
from benchmarks.harness import store, zygote
from benchmarks.harness.plan import RunPlan
from benchmarks.record import Conditions, ErrorInfo, Memory, RunRecord

REPO = Path(__file__).resolve().parents[2]
EventFn = Callable[[dict], None]


class Interrupted(Exception):
    """A worker was interrupted (SIGINT / SIGTERM): nothing is recorded for that run (the caller
    turns it into KeyboardInterrupt)."""


#: the subfolder of a raw folder that keeps the failure records of forced reruns of finished runs
FAILED_RERUNS = "failed-reruns"


@dataclass
class Outcome:
    """What became of one run: ``ok`` / ``failed`` (a record was written; a forced rerun of a
    finished run that failed writes it under ``FAILED_RERUNS`` and keeps the successful one),
    ``skipped`` (already finished) or ``claimed`` (another live runner holds it: ``holder``)."""

    plan: RunPlan
    path: Path
    status: str
    record: RunRecord | None = None
    seconds: float = 0.0
    holder: store.Claim | None = None

    @property
    def summary(self) -> str:
        what = self.plan.describe()
        if self.status == "skipped":
            return f"{what}: already done ({self.path.name})"
        if self.status == "claimed":
            held = self.holder.describe() if self.holder else "another runner"
            return f"{what}: skipped, another sweep runs it ({held})"
        rec = self.record
        if self.status == "failed" or rec is None or rec.metrics is None:
            err = rec.error if rec is not None else None
            text = f"{err.type}: {err.message[:200]}" if err is not None else "no record"
            return f"{what}: FAILED {text}"
        m = rec.metrics
        return f"{what}: test RMSE {m.test_rmse:.4f}, MAE {m.test_mae:.4f} ({self.seconds:.1f} s)"


@dataclass
class Tally:
    """Outcomes of a batch of runs, and the lines that close it (failures say where to look)."""

    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0, "skipped": 0, "claimed": 0})
    failed: list[Outcome] = field(default_factory=list)
    claimed: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if outcome.status == "failed":
            self.failed.append(outcome)
        elif outcome.status == "claimed":
            self.claimed.append(outcome)

    def closing_lines(self) -> list[str]:
        lines = []
        if self.failed:
            lines.append(
                f"{len(self.failed)} run(s) FAILED; each failure record holds the error and traceback "
                "(rerun the same command to try them again: a failure is never counted as done):"
            )
            for o in self.failed:
                err = o.record.error if o.record is not None else None
                why = f"{err.type}: {err.message.splitlines()[0][:160]}" if err else "?"
                lines.append(f"  {o.path}  {why}")
        if self.claimed:
            lines.append(
                f"{len(self.claimed)} run(s) skipped because another live sweep claims them; rerun this "
                "command once it ends to pick up whatever it leaves"
            )
        return lines


# ====================================================================== execute
def execute(
    plan: RunPlan,
    out_dir: str | os.PathLike = store.DEFAULT_RAW,
    *,
    threads: int | None = None,
    thread_policy: str | None = None,
    force: bool = False,
    on_event: EventFn | None = None,
    verbose: bool = False,
) -> Outcome:
    """Run ``plan`` in a fresh worker process and write its record under ``out_dir`` (see the
    module docstring).  ``force`` reruns a finished run; ``on_event`` receives the worker's events
    (``{"event": "epoch", "epoch", "epochs", "train_loss", "valid_rmse"}``, ``{"event": "stage"}``)."""
    if not plan.materialised:
        raise ConfigError(f"{plan.describe()}: its split was never materialised (a dry-run plan); plan it again")
    out_dir = Path(out_dir)
    path = store.path_for(out_dir, plan)
    if not force and store.is_finished(path, plan.run_id):
        store.clean_stale_claims(out_dir, [plan.run_id])  # one its finished runner could not release
        return Outcome(plan, path, "skipped", store.read_if_valid(path))
    mine: store.Claim | None = None
    try:
        with _signals_held():  # a Ctrl-C between taking the claim and the try below left it behind
            mine, holder = store.try_claim(out_dir, plan.run_id, plan.timeout_s)
        if mine is None:
            return Outcome(plan, path, "claimed", store.read_if_valid(path), holder=holder)
        if not force and store.is_finished(path, plan.run_id):  # finished by another runner meanwhile
            return Outcome(plan, path, "skipped", store.read_if_valid(path))
        if threads is None:  # the default: AUTOREC_THREADS / OMP_NUM_THREADS, else the cores idle now
            threads, how = hostenv.default_thread_count()
            thread_policy = thread_policy or how
        rec, seconds = launch(
            plan, int(threads), thread_policy or f"{threads} as given", on_event=on_event, verbose=verbose
        )
        side = out_dir / FAILED_RERUNS / path.name
        if not rec.ok and store.is_finished(path, plan.run_id):
            # a forced rerun that failed (timeout, divergence, out of memory) never replaces the
            # successful record: its failure goes beside the raw files, where no report reads it
            # (and batch.failures still counts it until an attempt succeeds)
            record.write(side, rec)
            return Outcome(plan, side, rec.status, rec, seconds)
        record.write(path, rec)
        if rec.ok:
            side.unlink(missing_ok=True)  # an earlier forced rerun's failure is history now
        return Outcome(plan, path, rec.status, rec, seconds)
    finally:
        if mine is not None:
            with _signals_held():
                store.release(out_dir, mine)


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back (their Python handlers called when the block ends) in the main
    thread, where the sweep turns them into KeyboardInterrupt: taking or releasing a claim is not cut in
    half.  Python-level, not a signal mask: the kernel may deliver a signal to any of the process's
    threads, and Python then runs its handler in the main thread at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, Any]] = []
    held = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if callable(handler):  # handled in Python (SIG_DFL / SIG_IGN are left as they are)
            held[sig] = handler
            signal.signal(sig, lambda s, frame: pending.append((s, frame)))
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
        for sig, frame in pending[:1]:  # now: e.g. KeyboardInterrupt, after the claim is settled
            held[sig](sig, frame)


def launch(
    plan: RunPlan,
    threads: int,
    thread_policy: str,
    *,
    on_event: EventFn | None = None,
    verbose: bool = False,
    job: dict[str, Any] | None = None,
    env_defaults: dict[str, str] | None = None,
) -> tuple[RunRecord, float]:
    """One worker process for ``plan`` (no claim, nothing written): its record with the parent's
    wall time and the run's conditions, and the seconds it took.  ``job``: a job of another kind
    than an ordinary run (``{"kind": "scale", "options": {...}}``, see
    :data:`benchmarks.harness.worker.JOB_KINDS`); ``env_defaults``: environment variables the
    worker gets unless this process has them set."""
    busy_before = hostenv.busy_cores(0.2)  # instantaneous: the load average still counts a run just ended
    load_before = hostenv.load_average()
    t0 = time.perf_counter()
    env = {**(env_defaults or {}), **os.environ}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)  # set explicitly for every run, recorded in its environment
    env["PYTHONUNBUFFERED"] = "1"
    # one-thread runs only: BLAS and OpenMP runtimes start their pools at import when allowed more
    # threads, and a process with threads is not forked
    use = job is None and not verbose and threads == 1 and zygote.enabled()
    modules = zygote.preload_for(plan) if use else None
    zyg = zygote.pool().get(modules, env) if modules else None  # before the pipe: nothing to leak
    with tempfile.TemporaryDirectory(prefix="autorec-run-") as tmp:
        tmp = Path(tmp)
        rfd, wfd = os.pipe()
        result = tmp / "record.json"
        spec = {"plan": plan, "threads": threads, "result": str(result), "events_fd": wfd, **(job or {})}
        (tmp / "job.json").write_text(dumps(spec))
        log_path = tmp / "worker.log"
        cmd = [sys.executable, "-m", "benchmarks.harness.worker", str(tmp / "job.json")]
        with open(log_path, "wb") as log:
            try:
                proc: Any = None
                if zyg is not None:
                    try:
                        proc = zyg.start(tmp / "job.json", wfd, log.fileno())
                    except zygote.ZygoteError as exc:  # a fresh worker instead
                        log.write(f"note: {exc}; this run starts a fresh worker\n".encode())
                        log.flush()
                        zyg = None
                if proc is None:
                    proc = subprocess.Popen(
                        cmd,
                        env=env,
                        cwd=os.getcwd(),
                        stdin=subprocess.DEVNULL,
                        stdout=None if verbose else log,
                        stderr=None if verbose else log,
                        pass_fds=(wfd,),
                        preexec_fn=die_with_parent,  # a killed sweep takes its workers along
                    )
            finally:
                os.close(wfd)
            with _ACTIVE_LOCK:
                _ACTIVE[proc.pid] = proc
            events = os.fdopen(rfd, "r")
            reader = threading.Thread(target=_read_events, args=(events, on_event), daemon=True)
            reader.start()
            try:
                note = None
                if zyg is not None:
                    status, maxrss_kb, timed_out, note = _wait_forked(proc, plan.timeout_s)
                    if note:
                        log.write(f"\n{note}\n".encode())
                        log.flush()
                else:
                    status, rusage, timed_out = _wait(proc, plan.timeout_s)
                    maxrss_kb = rusage.ru_maxrss
            finally:
                with _ACTIVE_LOCK:
                    _ACTIVE.pop(proc.pid, None)
            reader.join(timeout=5)
            events.close()
        seconds = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        sig = -code if code < 0 else None
        if not timed_out and (code == 130 or sig in (signal.SIGINT, signal.SIGTERM)):
            raise Interrupted(f"{plan.describe()}: interrupted")
        rec = store.read_if_valid(result) if result.is_file() else None
        if rec is None or rec.run_id != plan.run_id:
            rec = _crash_record(
                plan,
                timed_out,
                sig,
                code,
                _log_tail(log_path),
                None if maxrss_kb is None else maxrss_kb / 1024.0,
                note,
            )
    load_after = hostenv.load_average()
    conditions = Conditions(
        threads=threads,
        thread_policy=thread_policy,
        cpu_count=os.cpu_count(),
        load_before=load_before,
        load_after=load_after,
        contended=hostenv.contended(load_before, load_after, threads, busy_before=busy_before),
        busy_before=busy_before,
        worker_start="fresh" if zyg is None else "forked",
    )
    timing = dataclasses.replace(rec.timing, wall=round(seconds, 3))
    return dataclasses.replace(rec, timing=timing, conditions=conditions), seconds


def _crash_record(
    plan: RunPlan,
    timed_out: bool,
    sig: int | None,
    code: int,
    log: str,
    maxrss_mb: float | None,
    note: str | None = None,
) -> RunRecord:
    """The failure record of a worker that left none (``note``: why, where the launcher knows better
    than the exit status; ``maxrss_mb`` None where nothing reaped the worker for us)."""
    if note:
        why = note
    elif timed_out:
        why = f"the run exceeded its timeout of {plan.timeout_s:g} s and was killed"
    elif sig is not None:
        why = f"the worker was killed by signal {zygote.signal_name(sig)}" + (
            " (out of memory?)" if sig == signal.SIGKILL else ""
        )
    else:
        why = f"the worker exited with status {code} without writing a record"
    if maxrss_mb is None:
        memory = Memory(peak_rss=None, measured="not known: the worker did not report, and its zygote failed")
    else:
        memory = Memory(
            peak_rss=round(maxrss_mb, 1),
            measured="ru_maxrss of the worker from wait4 (the worker did not report; on Linux this can "
            "include the parent's RSS at fork time)",
        )
    return plan.record("failed", error=ErrorInfo(type="WorkerCrashed", message=why, traceback=log), memory=memory)


def _log_tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _read_events(fh, on_event: EventFn | None) -> None:
    try:
        for line in fh:
            if on_event is None:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            try:
                on_event(ev)
            except Exception:  # a progress display must never break a run
                pass
    except (OSError, ValueError):
        pass


def _wait(proc: subprocess.Popen, timeout_s: float | None):
    """Reap ``proc`` with ``os.wait4`` (its own rusage), polling so that KeyboardInterrupt and the
    timeout are honoured.  Returns (status, rusage, timed_out)."""
    deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
    timed_out = False
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return status, rusage, timed_out
            if deadline is not None and not timed_out and time.monotonic() > deadline:
                timed_out = True
                proc.kill()
            time.sleep(0.05)
    except KeyboardInterrupt:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, OSError):
            proc.kill()
        raise


def _wait_forked(run: zygote.RunHandle, timeout_s: float | None) -> tuple[int, int | None, bool, str | None]:
    """:func:`_wait` for a run forked by a zygote (which reaps it and reports): (status, peak RSS in
    kB or None, timed_out, a note for the log when the zygote itself failed)."""
    deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
    timed_out = False
    try:
        while True:
            try:
                status, maxrss_kb = run.result(0.5)
                return status, maxrss_kb, timed_out, None
            except TimeoutError:
                pass
            except zygote.ZygoteError as exc:  # the zygote died, and the run with it (PR_SET_PDEATHSIG)
                run.kill()
                run.close()
                why = f"the run's zygote failed while the run was going on: {exc}"
                return signal.SIGKILL, None, timed_out, why  # SIGKILL: a wait status "killed by SIGKILL"
            if deadline is not None and not timed_out and time.monotonic() > deadline:
                timed_out = True
                run.kill()
    except BaseException:  # interrupted: stop the run; its zygote's report is never read
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(timeout=5)
        except subprocess.TimeoutExpired:
            run.kill()
        run.close()
        run.zygote.close()
        raise


# the workers this process started and that still run, so an interrupt can stop them
_ACTIVE: dict[int, Any] = {}  # subprocess.Popen or zygote.RunHandle
_ACTIVE_LOCK = threading.Lock()


def terminate_active() -> None:
    """Stop every worker this process started and that still runs (on an interrupt)."""
    with _ACTIVE_LOCK:
        procs = list(_ACTIVE.values())
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except (subprocess.TimeoutExpired, OSError, ChildProcessError):
            try:
                p.kill()
            except OSError:
                pass


# ====================================================================== executors
class Executor(Protocol):
    """Where runs execute.  ``map(fn, plans)`` calls ``fn(plan)`` (:func:`execute` with the batch's
    settings) for every plan and yields the outcomes as runs finish; when the consumer stops
    (an interrupt), no further run starts and the running ones are stopped."""

    def map(self, fn: Callable[[RunPlan], Outcome], plans: Sequence[RunPlan]) -> Iterator[Outcome]: ...


class LocalExecutor:
    """``jobs`` runs at a time on this machine (threads, each waiting on its worker process)."""

    def __init__(self, jobs: int = 1) -> None:
        if int(jobs) < 1:
            raise ConfigError(f"jobs={jobs} must be >= 1")
        self.jobs = int(jobs)

    def map(self, fn: Callable[[RunPlan], Outcome], plans: Sequence[RunPlan]) -> Iterator[Outcome]:
        if self.jobs == 1:
            for plan in plans:
                yield fn(plan)
            return
        with cf.ThreadPoolExecutor(max_workers=self.jobs) as pool:
            order = {pool.submit(fn, p): k for k, p in enumerate(plans)}
            try:
                remaining: Iterable[cf.Future] = set(order)
                while remaining:
                    done, remaining = cf.wait(remaining, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                    for f in sorted(done, key=order.__getitem__):
                        yield f.result()
            except BaseException:  # interrupted (or the consumer stopped): start nothing more
                for f in order:
                    f.cancel()
                terminate_active()
                raise
