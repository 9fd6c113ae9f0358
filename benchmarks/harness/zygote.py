"""Workers forked from a process that has already imported the run's framework (a *zygote*).

A fresh ``python -m benchmarks.harness.worker`` spends about 0.3 s importing the harness and then
its framework: torch 1.2-1.6 s plus ``torch._dynamo``, which the first ``torch.optim`` call imports
(1.1 s: sympy and pandas come with it), MXNet about 2 s, myfm 0.5 s.  The ML-100K main job starts 54
workers, so that is about 80 s of its CPU time on 2 cores.  A zygote is a process of the same
interpreter, environment and working directory as a worker would have, started once per job slot and
framework, that imports the worker and the framework and then waits; each run is a ``fork`` of it
that runs the job exactly as ``python -m benchmarks.harness.worker JOB.json`` would, in a process of
its own that ends with the run.  The zygote never computes anything, so no state of one run reaches
another, and it is single-threaded when it forks (nothing it imports starts a thread; checked at
start).  What differs from an ``exec``'d worker: the run's peak RSS (VmHWM) starts from the memory
it inherits (the imported modules' heap; library code only once the run touches it), not from the
import-time peak a fresh worker goes through, so it is its own (on the main job -73 to +13 MB against
a fresh worker's; the record's ``conditions.worker_start`` says which, ``memory.measured`` what it
counts); and the ``worker`` timing no longer contains those imports (nor, for torch, the first fit
the ``torch._dynamo`` import).

Memory: a sweep keeps its zygotes until its job slots end, one per model module and slot, at most 12
per slot (the main job: 9 per slot, 60-330 MB RSS each, much of it shared library pages).

Protocol (a Unix socket pair; the launcher keeps one end, the zygote inherits the other): the zygote
writes ``{"ready": true}`` (or ``{"ready": false, "error": ...}``) once imported; per
run the launcher sends ``{"job": PATH, "cwd": DIR}`` with two file descriptors (the events pipe's
write end, the run's log), the zygote forks and answers ``{"pid": PID}`` with a pidfd of the run (the
launcher signals through it), reaps the child with ``wait4`` and answers ``{"status": S, "maxrss_kb":
K}``.  The child dies with the zygote and the
zygote with the launcher thread that started it (``PR_SET_PDEATHSIG``).

Used by :func:`benchmarks.harness.launch.launch` for single-process CPU runs on one thread (not DDP,
not GPU devices, not scale rows; with more threads, BLAS and OpenMP start thread pools at import)
unless ``AUTOREC_FRESH_WORKERS=1``; a zygote that cannot start (an import fails) makes the launcher
fall back to fresh workers for that module set, with a note on stderr.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from autorec.env import die_with_parent

ENV_FRESH = "AUTOREC_FRESH_WORKERS"
REPO = Path(__file__).resolve().parents[2]
#: modules a zygote of a backend imports besides the model's own module (which imports its
#: framework): torch.optim imports torch._dynamo at the first optimizer
EXTRA_PRELOAD = {"torch": ("torch._dynamo",)}
BASE_PRELOAD = ("benchmarks.harness.worker",)
_MSG = 65536


def enabled() -> bool:
    """Zygotes are used unless ``AUTOREC_FRESH_WORKERS`` is set to a true value."""
    return os.environ.get(ENV_FRESH, "").strip().lower() not in ("1", "true", "yes", "on")


def _send(sock: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    data = (json.dumps(obj) + "\n").encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)


class _Lines:
    """Newline-delimited JSON messages from a socket (with the file descriptors that came along)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf, self.fds = sock, b"", []

    def read(self, timeout: float | None = None) -> dict | None:
        """The next message, ``None`` at end of stream; :class:`TimeoutError` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            data, fds, _flags, _addr = socket.recv_fds(self.sock, _MSG, 4)  # TimeoutError (socket.timeout)
            self.fds.extend(fds)
            if not data:
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def take_fds(self) -> list[int]:
        fds, self.fds = self.fds, []
        return fds


# ====================================================================== the zygote process
#: signals the zygote ignores (a process-group SIGINT / SIGTERM / SIGHUP reaches its run, which
#: handles it as a fresh worker would: status 130, no record); the run gets them back
_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _exit_code(exc: SystemExit) -> int:
    """The status the interpreter would exit with for ``exc`` (printing its message, as it does)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _run(req: dict, events_fd: int, log_fd: int, modules: list[str], zygote_pid: int) -> int:
    """The forked run: the worker's ``main`` on the job, as ``python -m benchmarks.harness.worker``."""
    die_with_parent()
    if os.getppid() != zygote_pid:  # the zygote died before the line above: do not run orphaned
        return 1
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the worker installs its own handler
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.chdir(req["cwd"])
    from benchmarks.harness import worker

    worker.FORKED_FROM = tuple(modules)
    sys.argv = [worker.__file__, req["job"]]
    try:
        return worker.main([req["job"]], events_fd=events_fd)
    except KeyboardInterrupt:  # outside the worker's own handling: interrupted, as a fresh worker
        return 130
    except SystemExit as exc:
        return _exit_code(exc)


def _serve(sock: socket.socket, modules: list[str]) -> int:
    for sig in _IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    try:
        for name in modules:
            importlib.import_module(name)
        threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
        if threads != 1:  # forking a multi-threaded process is unsafe: refuse, the launcher falls back
            raise RuntimeError(f"{threads} threads after importing {modules}: not forking")
    except BaseException as exc:
        _send(sock, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    _send(sock, {"ready": True})
    lines = _Lines(sock)
    zygote_pid = os.getpid()
    while True:
        req = lines.read()
        if req is None:
            return 0
        events_fd, log_fd = lines.take_fds()
        pid = os.fork()
        if pid == 0:  # the run
            code = 1
            try:
                sock.close()
                code = _run(req, events_fd, log_fd, modules, zygote_pid)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    ctypes.CDLL(None).fflush(None)  # C stdio of native code, which os._exit skips
                finally:
                    os._exit(code)
        os.close(events_fd)
        os.close(log_fd)
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else -1
        if pidfd >= 0:  # the launcher signals the run through it: never a recycled pid
            _send(sock, {"pid": pid}, [pidfd])
            os.close(pidfd)
        else:  # pragma: no cover - Linux < 5.3
            _send(sock, {"pid": pid})
        _, status, rusage = os.wait4(pid, 0)
        _send(sock, {"status": status, "maxrss_kb": rusage.ru_maxrss})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 1:
        print("usage: python -m benchmarks.harness.zygote FD [MODULE ...]  (internal)", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(argv[0]))
    return _serve(sock, list(argv[1:]))


# ====================================================================== the launcher's side
class ZygoteError(RuntimeError):
    """A zygote could not start or stopped answering."""


class RunHandle:
    """A run forked by a zygote: what :func:`benchmarks.harness.launch.launch` needs of a process.
    Signals go through a pidfd where the kernel has them (never to a recycled pid)."""

    def __init__(self, zygote: Zygote, pid: int, pidfd: int | None) -> None:
        self.zygote, self.pid, self.pidfd = zygote, pid, pidfd

    def send_signal(self, sig: int) -> None:
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, sig)
            else:  # pragma: no cover - Linux < 5.3
                os.kill(self.pid, sig)
        except (ProcessLookupError, OSError):
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def result(self, timeout: float | None = None) -> tuple[int, int]:
        """``(wait status, peak RSS in kB)`` once the run ends (the zygote reaped it);
        :class:`TimeoutError` after ``timeout`` s.  Only the launching thread calls this."""
        out = self.zygote.result(timeout)
        self.close()
        return out

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the run's process is gone (any thread); ``subprocess.TimeoutExpired`` after
        ``timeout`` s (as ``Popen.wait``, for :func:`~benchmarks.harness.launch.terminate_active`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.pidfd is not None:
                try:
                    if select.select([self.pidfd], [], [], 0.05)[0]:  # readable: it has ended
                        return
                except (OSError, ValueError):  # closed: the launching thread has its status
                    return
            else:  # pragma: no cover - Linux < 5.3
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"run {self.pid}", timeout or 0.0)

    def close(self) -> None:
        if self.pidfd is not None:
            try:
                os.close(self.pidfd)
            except OSError:
                pass
            self.pidfd = None


class Zygote:
    """One zygote process (see the module docstring): :meth:`start` forks a run in it."""

    def __init__(self, modules: tuple[str, ...], env: dict[str, str], timeout: float = 120.0) -> None:
        #: the zygote's own stdout and stderr (import warnings, a crash of the zygote itself; each run
        #: writes to its own log), quoted in the errors that end it
        self.log = tempfile.TemporaryFile(prefix="autorec-zygote-")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [sys.executable, "-m", "benchmarks.harness.zygote", str(theirs.fileno()), *modules]
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=os.getcwd(),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            pass_fds=(theirs.fileno(),),
            preexec_fn=die_with_parent,
        )
        theirs.close()
        self.sock, self.lines = ours, _Lines(ours)
        self.busy = False
        self.killed_by_close = False  # close() had to SIGKILL it
        try:
            msg = self.lines.read(timeout)
        except BaseException as exc:
            self.close()
            if not isinstance(exc, (OSError, ValueError)):  # TimeoutError is an OSError
                raise
            msg = {"ready": False, "error": f"no answer ({type(exc).__name__}: {exc})"}
        if not msg or not msg.get("ready"):
            why = (msg or {}).get("error", "it exited")
            raise self._fail(f"the zygote importing {', '.join(modules)} did not start: {why}")

    def start(self, job: Path, events_fd: int, log_fd: int) -> RunHandle:
        """Fork a run of ``job``; :class:`ZygoteError` (and the zygote closed) when that fails.  Any
        other interruption also closes the zygote: no message of it is left unread."""
        if self.busy:
            raise ZygoteError("this zygote already runs a job")
        try:
            _send(self.sock, {"job": str(job), "cwd": os.getcwd()}, [events_fd, log_fd])
            msg = self.lines.read(60.0)
        except BaseException as exc:
            if isinstance(exc, (OSError, ValueError)):
                raise self._fail(f"the zygote did not fork the run: {exc}") from exc
            self.close()
            raise
        fds = self.lines.take_fds()
        if not msg or "pid" not in msg:
            for fd in fds:
                os.close(fd)
            raise self._fail("the zygote did not fork the run (it exited)")
        self.busy = True
        return RunHandle(self, int(msg["pid"]), fds[0] if fds else None)

    def result(self, timeout: float | None) -> tuple[int, int]:
        """The running job's ``(status, peak RSS kB)``; :class:`TimeoutError` while it runs,
        :class:`ZygoteError` (the zygote closed) when the zygote is gone or garbled its answer."""
        try:
            msg = self.lines.read(timeout)
        except TimeoutError:
            raise
        except (OSError, ValueError) as exc:
            raise self._fail(f"the zygote stopped answering: {exc}") from exc
        self.busy = False
        if msg is None or "status" not in msg:
            raise self._fail("the zygote exited while the run was going on")
        return int(msg["status"]), int(msg.get("maxrss_kb", 0))

    def alive(self) -> bool:
        return self.proc.poll() is None and self.sock.fileno() >= 0

    def _fail(self, what: str) -> ZygoteError:
        """The zygote closed, and the error saying ``what`` went wrong, how it exited and the end of
        its own output."""
        self.close()
        code = self.proc.returncode
        if self.killed_by_close:
            what += " (the zygote did not end when asked and was killed)"
        elif code is not None and code < 0:
            what += f" (the zygote was killed by signal {signal_name(-code)})"
        elif code:
            what += f" (the zygote exited with status {code})"
        tail = _tail(self.log)
        return ZygoteError(what + (f"; the zygote's output ended with: {tail}" if tail else ""))

    def close(self) -> None:
        """End the zygote (closing its socket ends its loop) and wait for it; its output is kept for
        :meth:`_fail` until this object goes."""
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.killed_by_close = True
                self.proc.kill()
                self.proc.wait()

    def __del__(self) -> None:
        log = getattr(self, "log", None)
        if log is not None:
            log.close()


def signal_name(n: int) -> str:
    """``SIGKILL`` for 9; the number for a signal Python has no name for (most real-time ones)."""
    try:
        return signal.Signals(n).name
    except ValueError:
        return str(n)


def _tail(fh: Any, n: int = 2000) -> str:
    """The last ``n`` bytes of the file ``fh`` as text, stripped ("" when unreadable)."""
    try:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - n))
        return fh.read().decode(errors="replace").strip()
    except (OSError, ValueError):
        return ""


class ZygotePool:
    """This thread's zygotes, one per set of modules (a model's module and framework), started when
    first needed, at most ``limit`` of them (the least recently used is closed); a set whose zygote
    failed to start is remembered (``failed``) and launched fresh from then on.  The key also holds
    the working directory (a fresh worker finds modules there, a zygote where it started), the
    environment and a stamp of the project's sources (:func:`sources_stamp`; a zygote runs the code
    it imported, so a checkout or an edited file during a sweep gets a new zygote at the next run, and
    the stale one of that module set is closed): a forked run runs the code a fresh worker would.
    Installed packages are not watched: upgrading one during a sweep needs AUTOREC_FRESH_WORKERS=1 or
    a new sweep."""

    def __init__(self, limit: int = 12) -> None:
        self.zygotes: dict[tuple, Zygote] = {}  # in order of last use
        self.failed: dict[tuple, str] = {}
        self.limit = limit

    def get(self, modules: tuple[str, ...], env: dict[str, str]) -> Zygote | None:
        key = self._key(modules, env)
        z = self.zygotes.pop(key, None)
        if z is not None and (not z.alive() or z.busy):  # dead, or left busy by an exception path
            z.close()
            z = None
        if z is None and key not in self.failed:
            for stale in [k for k in self.zygotes if k[:3] == key[:3]]:  # the same runs on older code
                self.zygotes.pop(stale).close()
            while len(self.zygotes) >= self.limit:
                self.zygotes.pop(next(iter(self.zygotes))).close()
            try:
                z = Zygote(modules, env)
            except (ZygoteError, OSError) as exc:
                self.failed[key] = str(exc)
                print(f"note: {exc}; its runs start fresh workers", file=sys.stderr)
        if z is not None:
            self.zygotes[key] = z
        return z

    @staticmethod
    def _key(modules: tuple[str, ...], env: dict[str, str]) -> tuple:
        return (modules, os.getcwd(), tuple(sorted(env.items())), sources_stamp())

    def close(self) -> None:
        for z in self.zygotes.values():
            z.close()
        self.zygotes.clear()


#: the project's packages, whose sources a zygote imports
SOURCE_DIRS = ("autorec", "baselines", "benchmarks")


def sources_stamp(root: Path | None = None) -> tuple[str, int]:
    """``(digest, number of files)`` of the Python and C++ sources under the project's packages
    (``root``: the repository, by default this one): a hash of every file's path, size, inode and
    modification and change times, so it changes when a source is edited, added, removed or replaced,
    also by a copy that keeps an older modification time (``cp -p``, ``rsync -a``: the change time
    moves anyway); about 1 ms here."""
    digest = hashlib.sha256()
    count = 0
    for name in SOURCE_DIRS:
        for dirpath, dirnames, filenames in os.walk((root or REPO) / name):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                if f.endswith((".py", ".cpp")):
                    path = os.path.join(dirpath, f)
                    try:
                        st = os.stat(path)
                    except OSError:  # removed while we looked: the count says so
                        continue
                    digest.update(f"{path}\0{st.st_size}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
                    count += 1
    return digest.hexdigest(), count


_LOCAL = threading.local()


def pool() -> ZygotePool:
    """The calling thread's pool (zygotes die with the thread that started them)."""
    p = getattr(_LOCAL, "pool", None)
    if p is None:
        p = _LOCAL.pool = ZygotePool()
    return p


def preload_for(plan: Any) -> tuple[str, ...] | None:
    """The modules a zygote for ``plan`` imports, or None when the plan runs in a fresh worker: data
    parallel runs start processes of their own, and a GPU runtime must not be forked."""
    if getattr(plan, "launcher", "single") != "single":
        return None
    if any(not str(d).startswith("cpu") for d in plan.identity.devices):
        return None
    from autorec.models import registry

    ident = plan.identity
    try:
        ref = registry.get(ident.model, ident.backend)
    except Exception:  # an unknown model fails in the worker, with its message
        return None
    module = ref.target.partition(":")[0]
    return (*BASE_PRELOAD, module, *EXTRA_PRELOAD.get(ref.backend, ()))


if __name__ == "__main__":
    sys.exit(main())
