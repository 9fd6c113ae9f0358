"""Runs and tuner workers on a Dask cluster (``--executor dask --address tcp://HOST:8786``).

The only module that imports Dask, lazily (the ``cluster`` extra: ``pip install -e '.[cluster]'``);
``--executor local`` never touches it.  Dask rather than Ray: pure Python and pip-installable, a
scheduler and workers one starts by hand (``dask scheduler``, ``dask worker ADDRESS``) or on a
cluster one already has (SLURM, Kubernetes), and no object store to run: a run's result is its
record, which the run writes itself into the shared results folder, so a small
:class:`~benchmarks.harness.launch.Outcome` is all that travels back.  See ``docs/cluster.md``.

:class:`DaskExecutor` implements the :class:`~benchmarks.harness.launch.Executor` protocol: every
pending run is one Dask task calling the batch's task, i.e.
:func:`~benchmarks.harness.launch.execute` on a worker: the same fresh worker process, thread
count, timeout and claim as a local run, the record written atomically into the shared folder.

- Before any run, every connected worker must see the results folder (:func:`check_shared`: a
  probe file this process writes is read back on each worker), so no record lands in a worker's
  private folder.
- A Dask worker that dies mid-run takes its run's process with it (``PR_SET_PDEATHSIG``) and
  leaves no record (at most a hidden temp file): the scheduler runs the task again on another
  worker (``distributed.scheduler.allowed-failures`` times, default 3), and that runner takes the
  dead runner's claim over (at once on the same host; after the run's ``timeout_s`` plus a minute
  on another one).  A task that raised (e.g. its worker was stopped by SIGINT / SIGTERM) is
  retried ``retries`` times.  A run Dask gives up on gets a failure record written here
  (:func:`record_lost`), under a claim like any record; a rerun tries it again.
- Stopping this process (Ctrl-C) cancels the queued runs; the running ones finish and keep
  their records (a rerun skips them).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from autorec.errors import ConfigError
from benchmarks import record
from benchmarks.harness import store
from benchmarks.harness.launch import Outcome
from benchmarks.harness.plan import RunPlan
from benchmarks.record import ErrorInfo

#: seconds to reach the scheduler, and to wait for its first worker
CONNECT_S = 30.0
WORKERS_S = 60.0


def connect(address: str) -> Any:
    """A :class:`distributed.Client` of the scheduler at ``address`` with at least one worker;
    :class:`ConfigError` saying what to do otherwise (no ``distributed``, no scheduler, no worker)."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError(
            "--executor dask needs Dask distributed: pip install -e '.[cluster]' (-c requirements/pinned.txt)"
        ) from None
    try:
        client = Client(address, timeout=CONNECT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        client.wait_for_workers(1, timeout=WORKERS_S)
    except TimeoutError:
        client.close()
        raise ConfigError(
            f"the Dask scheduler at {address} has no worker after {WORKERS_S:g} s; start some with "
            f"`dask worker {address} --nthreads 1`"
        ) from None
    return client


def _probe(path: str, token: str) -> str | None:
    """On a worker: its host name when it reads ``token`` in ``path``, else ``None``."""
    try:
        return socket.gethostname() if Path(path).read_text() == token else None
    except OSError:
        return None


def check_shared(client: Any, folder: str | os.PathLike) -> None:
    """:class:`ConfigError` naming the workers that do not see ``folder`` (an absolute path this
    process has created) as this process does: a probe file written here is read on every worker."""
    token = uuid.uuid4().hex
    probe = Path(folder) / f".dask-probe-{token}.tmp"
    probe.write_text(token)
    try:
        seen = client.run(_probe, str(probe), token)
    finally:
        probe.unlink(missing_ok=True)
    blind = sorted(worker for worker, host in seen.items() if host is None)
    if blind:
        raise ConfigError(
            f"Dask worker(s) {', '.join(blind)} do not see the results folder {folder}: every worker must "
            "write into the same shared folder, mounted at the same path on every machine"
        )


#: seconds a lost run's record waits for a claim held on this host to go (its killed worker's run
#: process dying, or being reaped) before leaving the run to that holder
LOST_GRACE_S = 10.0


def record_lost(plan: RunPlan, results: str | os.PathLike, error: BaseException) -> Outcome:
    """The failure record of a run Dask gave up on (its workers died, or its task kept raising),
    written like any record: only if the run is not finished and no live runner claims it (a claim
    held on this host gets :data:`LOST_GRACE_S` to go: the lost worker's run may still be dying)."""
    path = store.path_for(results, plan)
    mine, holder = store.try_claim(results, plan.run_id, plan.timeout_s)
    deadline = time.monotonic() + LOST_GRACE_S
    while mine is None and holder is not None and holder.host == socket.gethostname() and time.monotonic() < deadline:
        time.sleep(0.2)  # the lost worker's run process may still be dying (a loaded machine)
        mine, holder = store.try_claim(results, plan.run_id, plan.timeout_s)
    if mine is None:
        return Outcome(plan, path, "claimed", store.read_if_valid(path), holder=holder)
    try:
        if store.is_finished(path, plan.run_id):
            return Outcome(plan, path, "skipped", store.read_if_valid(path))
        why = f"the Dask cluster gave up on this run: {type(error).__name__}: {error}"
        rec = plan.record("failed", error=ErrorInfo(type="WorkerLost", message=why))
        record.write(path, rec)
        return Outcome(plan, path, "failed", rec)
    finally:
        store.release(results, mine)


class DaskExecutor:
    """Every run a task on the Dask cluster at ``address``, writing into ``results`` (the shared
    raw folder, an absolute path every worker sees); a task that raised is retried ``retries``
    times (see the module docstring)."""

    def __init__(self, address: str, results: str | os.PathLike, *, retries: int = 2) -> None:
        if not Path(results).is_absolute():
            raise ConfigError(f"the shared results folder must be an absolute path, got {results}")
        self.address = address
        self.results = Path(results)
        self.retries = int(retries)

    def map(self, fn: Callable[[RunPlan], Outcome], plans: Sequence[RunPlan]) -> Iterator[Outcome]:
        from distributed import as_completed

        client = connect(self.address)
        pending: dict[Any, RunPlan] = {}
        try:
            check_shared(client, self.results)
            for plan in plans:
                key = f"autorec-run-{plan.run_id[:16]}-{uuid.uuid4().hex[:8]}"
                pending[client.submit(fn, plan, key=key, pure=False, retries=self.retries)] = plan
            for future in as_completed(list(pending), loop=client.loop):
                plan = pending.pop(future)
                if future.status == "finished":
                    yield future.result()
                else:  # erred (KilledWorker: its workers died) or cancelled by the scheduler
                    error = future.exception() if future.status == "error" else RuntimeError(future.status)
                    yield record_lost(plan, self.results, error)
        finally:
            if pending:
                client.cancel(list(pending))
            client.close()


def call_all(address: str, fn: Callable[..., Any], calls: Sequence[tuple], *, common: tuple = ()) -> Iterator[Any]:
    """``fn(*common, *args)`` for every ``args`` of ``calls``, each a task on the Dask cluster at
    ``address`` (e.g. tuner workers sharing one study); ``common`` (e.g. the data) is sent to the
    cluster once.  Yields the results as the calls finish; a call that failed raises its error
    (the others are cancelled)."""
    from distributed import as_completed

    client = connect(address)
    futures: list[Any] = []
    try:
        shared = client.scatter(list(common), hash=False) if common else []
        futures = [
            client.submit(fn, *shared, *args, key=f"autorec-call-{k}-{uuid.uuid4().hex[:8]}", pure=False)
            for k, args in enumerate(calls)
        ]
        for future in as_completed(futures, loop=client.loop):
            yield future.result()
    finally:
        client.cancel(futures)
        client.close()
