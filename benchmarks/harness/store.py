"""The raw results folder: where a run's record lives, whether a run is finished, who is running it.

Every run has one file, :func:`path_for` (a readable prefix plus the first 16 hex digits of its
``run_id``), written atomically by :func:`benchmarks.record.write` and read by
:func:`benchmarks.record.read`; :func:`load` reads a whole folder.  :func:`is_finished` is the one
"is this run done" check: a record of that ``run_id`` with status ``ok``.  A failure record is not
finished: the next ``run`` / ``sweep`` tries again, and the new attempt replaces it.

**Claims** make one writer per run, across processes and machines sharing the folder: before a run
starts, its runner creates ``.claims/<run_id>`` (written to a side file, then hard-linked into
place: atomic and exclusive, also on NFS; ``O_CREAT | O_EXCL`` where links are not supported),
holding host, pid, the process's start time and the run's timeout; it removes the claim once the
record is written (or the run is interrupted). A runner killed or interrupted between writing the
record and removing its claim leaves a stale claim of a finished run, which no runner would take
over: :func:`clean_stale_claims` removes those when a batch starts and when a run is skipped. A
claim is *stale*, and is taken over, when its process is gone (same host: no such pid, or a pid
reused by a younger process) or when it is older than the run's timeout plus :data:`STALE_GRACE_S`
(the only test possible across hosts). Taking over renames the stale file away first, so of two
runners only one removes it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autorec import env
from autorec.errors import ConfigError, DataError
from benchmarks import record
from benchmarks.record import RunRecord

DEFAULT_RAW = Path("results") / "raw"
CLAIMS = ".claims"
#: seconds past a run's timeout after which its claim is stale even when its host cannot be asked
STALE_GRACE_S = 60.0
#: a claim being created: ``<run_id>.new-<token>``, hard-linked to ``<run_id>`` (see ``_create``)
NEW = ".new-"


# ====================================================================== files
def _slug(text: str, limit: int) -> str:
    s = re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-.") or "x"
    return s[:limit].strip("-.") or "x"


def path_for(raw_dir: str | os.PathLike, plan: Any) -> Path:
    """The record file of ``plan`` (a :class:`~benchmarks.harness.plan.RunPlan`) in ``raw_dir``."""
    i = plan.identity
    dev = "cpu" if tuple(i.devices) == ("cpu",) else "x".join(_slug(d, 12) for d in i.devices)
    prefix = "_".join(
        [
            _slug(i.data.name, 32),
            _slug(i.split.spec, 40),
            _slug(i.model, 32) + "-" + _slug(i.backend, 12),
            dev,
            f"s{i.split.seed}",
        ]
    )
    return Path(raw_dir) / f"{prefix}_{plan.run_id[:16]}.json"


def raw_files(raw_dir: str | os.PathLike) -> list[Path]:
    """The record files of a folder (``*.json``; hidden temp files excluded), sorted by name."""
    d = Path(raw_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("*.json") if not p.name.startswith("."))


def load(
    raw_dir: str | os.PathLike, strict: bool = True, on_error: Callable[[DataError], None] | None = None
) -> list[RunRecord]:
    """Every record of a folder, in file-name order.  ``strict``: a file that is not a valid record
    raises :class:`DataError` naming it; otherwise it is skipped (and passed to ``on_error``)."""
    out = []
    for path in raw_files(raw_dir):
        try:
            out.append(record.read(path))
        except DataError as exc:
            if strict:
                raise
            if on_error is not None:
                on_error(exc)
    return out


def read_if_valid(path: str | os.PathLike) -> RunRecord | None:
    """The record in ``path``, or ``None`` when there is none or it is unreadable."""
    try:
        return record.read(path)
    except DataError:
        return None


def is_finished(path: str | os.PathLike, run_id: str) -> bool:
    """True when ``path`` holds a successful record of ``run_id`` (THE "already done" check)."""
    rec = read_if_valid(path)
    return rec is not None and rec.run_id == run_id and rec.ok


def check_writable(raw_dir: str | os.PathLike, create: bool = True) -> Path:
    """Prove records can be written to ``raw_dir`` before any training: create it (and its claims
    folder) and write a probe file; with ``create=False`` (a dry run) only check that its nearest
    existing ancestor is a writable folder.  :class:`ConfigError` naming the folder otherwise."""
    d = Path(raw_dir)
    try:
        if not create:
            probe = next(p for p in [d, *d.absolute().parents] if p.exists())
            if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
                raise PermissionError(f"{probe} is not a writable folder")
            return d
        (d / CLAIMS).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=d, prefix=".write-test-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"results folder {d} is not writable ({exc.strerror or exc}); choose another --out or fix its permissions"
        ) from None
    return d


def clean_stale_temp(raw_dir: str | os.PathLike, min_age_s: float = 600.0) -> int:
    """Remove temp files a killed writer left behind (never complete records).  Only those older
    than ``min_age_s``: a younger one may be another live sweep's record being written."""
    n = 0
    now = time.time()
    for p in Path(raw_dir).glob(".*.tmp") if Path(raw_dir).is_dir() else []:
        try:
            if now - p.stat().st_mtime > min_age_s:
                p.unlink()
                n += 1
        except OSError:
            pass
    return n


# ====================================================================== claims
def _process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc``), else ``None``."""
    stat = env.proc_stat(pid)
    return None if stat is None else stat[2]


@dataclass(frozen=True)
class Claim:
    """Who runs a run: host, pid (and its start time), since when, under which timeout."""

    run_id: str
    host: str
    pid: int
    pid_start: int | None
    since: float
    timeout_s: float | None
    token: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"{self.host} pid {self.pid} since {when}"

    def stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self.timeout_s is not None and now - self.since > self.timeout_s + STALE_GRACE_S:
            return True
        return self.host == socket.gethostname() and not env.process_alive(self.pid, self.pid_start)


def claim_path(raw_dir: str | os.PathLike, run_id: str) -> Path:
    return Path(raw_dir) / CLAIMS / run_id


def read_claim(path: Path) -> Claim | None:
    """The claim in ``path``; ``None`` when there is none.  An unreadable claim (a writer killed
    while writing it: a side file, or a claim created without hard links) counts as stale once it is
    :data:`STALE_GRACE_S` old."""
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except OSError:
        return None
    try:
        doc = json.loads(text)
        return Claim(**doc)
    except (json.JSONDecodeError, TypeError):
        return Claim(path.name, "?", -1, None, mtime, 0.0, "")


def try_claim(raw_dir: str | os.PathLike, run_id: str, timeout_s: float | None) -> tuple[Claim | None, Claim | None]:
    """Claim ``run_id``: ``(mine, None)`` on success, ``(None, holder)`` when a live claim of
    another runner holds it.  A stale claim is taken over."""
    path = claim_path(raw_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    mine = Claim(run_id, socket.gethostname(), me, _process_start(me), time.time(), timeout_s, uuid.uuid4().hex)
    for _ in range(5):
        if _create(path, mine):
            return mine, None
        holder = read_claim(path)
        if holder is None:
            continue  # released meanwhile: try again
        if not holder.stale():
            return None, holder
        _remove_stale(path, holder)
    holder = read_claim(path)
    return None, holder or mine


def _create(path: Path, claim: Claim) -> bool:
    """Create the claim file ``path`` holding ``claim``; ``False`` when a claim is there already.
    The claim is written to a file of its own (``<run_id>.new-<token>``) and hard-linked into place,
    which fails when the name exists, so a claim appears whole: a writer killed half-way leaves
    that side file (:func:`clean_stale_claims` removes it once its process is gone), not an empty
    claim that would block the run until it looked stale.  Where hard links are not supported, the
    claim is created with ``O_EXCL`` and then written."""
    side = path.with_name(f"{path.name}{NEW}{claim.token}")
    text = json.dumps(claim.__dict__)
    try:
        side.write_text(text)
        try:
            os.link(side, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this filesystem
            pass
    finally:
        side.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return True


def _remove_stale(path: Path, stale: Claim) -> None:
    """Move a stale claim out of the way; if what was moved is not the claim judged stale (another
    runner replaced it meanwhile), put it back."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = read_claim(aside)
    if moved is not None and moved.token != stale.token:
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


def clean_stale_claims(raw_dir: str | os.PathLike, run_ids: Collection[str] | None = None) -> int:
    """Remove the stale claims in ``raw_dir`` (of ``run_ids`` only, when given): those a runner left
    when it was killed or interrupted after writing its record but before releasing its claim (the
    run is finished then, so no later runner would take the claim over), and claims set aside by a
    takeover that was itself interrupted (older than :data:`STALE_GRACE_S`).  Live claims stay.
    The side file of a claim being created is a claim too: it goes once its writer is gone (killed
    before it linked the claim into place).  Returns how many files went."""
    folder = Path(raw_dir) / CLAIMS
    if not folder.is_dir():
        return 0
    n = 0
    now = time.time()
    names = sorted(os.listdir(folder)) if run_ids is None else sorted(set(run_ids))
    for name in names:
        path = folder / name
        if ".stale-" in name:
            try:
                if now - path.stat().st_ctime > STALE_GRACE_S:  # renamed aside that long ago: no takeover in flight
                    path.unlink()
                    n += 1
            except OSError:
                pass
            continue
        held = read_claim(path)
        if held is not None and held.stale(now):
            _remove_stale(path, held)
            n += not path.exists()
    return n


def release(raw_dir: str | os.PathLike, claim: Claim) -> None:
    """Remove ``claim`` if it is still ours (a claim taken over from us is left alone)."""
    path = claim_path(raw_dir, claim.run_id)
    held = read_claim(path)
    if held is not None and held.token == claim.token:
        path.unlink(missing_ok=True)
