"""Thread control and the environment record that goes into every raw result.

Importing mxnet resets torch's intra-op thread count to 1, so thread counts are always set
explicitly (:func:`set_threads`, called after the frameworks are imported) and recorded
(:func:`environment`).
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
import warnings
from functools import lru_cache
from importlib import metadata

#: ``AUTOREC_OMP_WAIT_POLICY``: how OpenMP workers (torch's and mxnet's libgomp, the native kernels)
#: wait between parallel regions.  ``runtime`` (the default) leaves the OpenMP runtime's own policy
#: (libgomp's workers spin a while, then sleep); ``passive`` makes them sleep at once; ``active``
#: spins.  Measured here (results/contention.md): passive keeps a 2-thread torch run beside a busy
#: core near 1-thread speed, but costs up to 2.6x on a quiet machine (fine-grained models such as
#: D2L MF pay a wake-up per parallel region), so the default is the runtime's, and contention is
#: handled by the thread count (:func:`auto_threads`).  An ``OMP_WAIT_POLICY`` the user set is never
#: overridden.
WAIT_POLICY_VAR = "AUTOREC_OMP_WAIT_POLICY"
WAIT_POLICIES = ("runtime", "passive", "active")
DEFAULT_WAIT_POLICY = "runtime"
#: frameworks whose OpenMP runtime reads ``OMP_WAIT_POLICY`` once, when it is loaded
_OPENMP_USERS = ("torch", "mxnet")
_wait_policy_state: dict = {}


def wait_policy(policy: str | None = None) -> str:
    """``policy``, else :data:`WAIT_POLICY_VAR`, else :data:`DEFAULT_WAIT_POLICY`, normalised;
    :class:`ValueError` naming the variable for an unknown one."""
    name = (policy or os.environ.get(WAIT_POLICY_VAR) or DEFAULT_WAIT_POLICY).strip().lower()
    if name not in WAIT_POLICIES:
        raise ValueError(f"{WAIT_POLICY_VAR}={name!r} is not one of {list(WAIT_POLICIES)}")
    return name


def wait_policy_env(policy: str | None = None) -> dict[str, str]:
    """The environment variables a policy (:func:`wait_policy`) sets: ``{}`` for ``runtime``."""
    name = wait_policy(policy)
    return {} if name == "runtime" else {"OMP_WAIT_POLICY": name.upper()}


def apply_wait_policy() -> dict:
    """Set ``OMP_WAIT_POLICY`` in this process's environment as :data:`WAIT_POLICY_VAR` asks (unless
    the user set it) before torch or mxnet load their OpenMP runtime; child processes inherit it.
    Called when :mod:`autorec` is imported.  Returns (and keeps, for :func:`thread_counts`) what was
    decided: the policy, the variable's value, and whether it can take effect here (``False`` when
    torch or mxnet was imported first: their runtime read the environment already)."""
    try:
        policy = wait_policy()
        wanted = wait_policy_env(policy)
    except ValueError as exc:  # a typo must not break ``import autorec``: say so, keep the runtime's default
        warnings.warn(f"{exc}; leaving OMP_WAIT_POLICY to the OpenMP runtime", RuntimeWarning, stacklevel=2)
        wanted, policy = {}, "invalid"
    user_set = "OMP_WAIT_POLICY" in os.environ
    for key, value in wanted.items():
        os.environ.setdefault(key, value)
    late = [m for m in _OPENMP_USERS if m in sys.modules]
    _wait_policy_state.clear()
    _wait_policy_state.update(
        policy="user" if user_set else policy,
        OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY"),
        effective=not late,
        **({"loaded_before": late} if late else {}),
    )
    return dict(_wait_policy_state)


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------- the default thread count
#: ``AUTOREC_THREADS``: the thread count of every run that does not name one (an integer, or
#: ``auto``, the default); ``OMP_NUM_THREADS``, when set, is honoured the same way
THREADS_VAR = "AUTOREC_THREADS"
#: seconds over which /proc/stat is sampled, and how long a sample is reused
_SAMPLE_S, _SAMPLE_TTL_S = 0.1, 10.0
_auto_state: dict = {}
_written: dict[str, str] = {}  # environment variables set_threads set itself


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """``{cpu: (busy, total)}`` jiffies of the given CPUs from /proc/stat (``{}`` where unreadable)."""
    out: dict[int, tuple[int, int]] = {}
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                name, *vals = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    continue
                cpu = int(name[3:])
                if cpu not in cpus:
                    continue
                v = [int(x) for x in vals[:8]]
                idle = v[3] + v[4]  # idle + iowait
                out[cpu] = (sum(v) - idle, sum(v))
    except (OSError, ValueError):
        return {}
    return out


def busy_cores(window: float = _SAMPLE_S) -> float | None:
    """How many of this process's cores other work keeps busy now: the busy share of each core in
    its affinity over ``window`` seconds (this process sleeps meanwhile), summed; ``None`` where
    /proc/stat is unavailable."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return None
    a = _cpu_times(cpus)
    time.sleep(window)
    b = _cpu_times(cpus)
    if not a or not b:
        return None
    share = 0.0
    for cpu, (busy1, total1) in b.items():
        busy0, total0 = a.get(cpu, (busy1, total1))
        if total1 > total0:
            share += (busy1 - busy0) / (total1 - total0)
    return round(share, 2)


def auto_threads() -> int:
    """The default thread count: the cores of this process's affinity that other work leaves idle
    (at least 1), sampled at the start of a fit and reused for :data:`_SAMPLE_TTL_S` seconds.
    Measured here (results/contention.md): with one of 2 cores busy, 2 threads made torch runs up
    to 4.7x slower than 1 (and ALS's numpy BLAS 87x before it was pinned to one thread), while on a
    quiet machine 2 threads are up to 1.4x faster: so all the cores when idle, one fewer per busy core."""
    now = time.monotonic()
    if _auto_state and now - _auto_state["at"] < _SAMPLE_TTL_S:
        return int(_auto_state["threads"])
    cores = default_threads()
    busy = busy_cores()
    threads = cores if busy is None else max(1, min(cores, cores - int(busy + 0.5)))
    _auto_state.clear()
    _auto_state.update(at=now, threads=threads, cores=cores, busy_cores=busy)
    return threads


def _find_prctl():
    """libc's ``prctl``, looked up once in the parent: as a ``preexec_fn`` the lookup (a ``dlopen``) would
    run in the forked child of a multi-threaded process, where the loader's lock may be held."""
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - not Linux / no glibc
        return None


_PRCTL = _find_prctl()


def die_with_parent() -> None:
    """Be killed (SIGKILL) when the parent thread ends (Linux ``PR_SET_PDEATHSIG``; nothing elsewhere):
    a killed launcher takes its children along.  Call it in a child after fork (a ``preexec_fn``), or
    first thing in a child process (then check that the parent is not already gone)."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


#: the most threads a run may ask for: far past any machine's cores, and below the counts at which
#: torch's OpenMP pool crashes the process (10**6 threads: SIGSEGV at the first operator)
MAX_THREADS = 1024


def check_threads(n: int | None, where: str = "--threads") -> None:
    """:class:`~autorec.errors.ConfigError` for a thread count outside 1..:data:`MAX_THREADS`."""
    from autorec.errors import ConfigError

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS):
        raise ConfigError(f"{where} {n!r} must be a whole number from 1 to {MAX_THREADS}")


def resolve_threads(n: int | None = None) -> int:
    """``n`` when given, else :func:`default_thread_count`'s count."""
    return int(n) if n else default_thread_count()[0]


def default_thread_count() -> tuple[int, str]:
    """The thread count of a run that names none, and how it was chosen: :data:`THREADS_VAR` or
    ``OMP_NUM_THREADS`` when set to an integer (a launcher's or the user's choice), else
    :func:`auto_threads`."""
    for var in (THREADS_VAR, "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if var == "OMP_NUM_THREADS" and value and value == _written.get(var):
            continue  # set_threads wrote it for mxnet: not a choice to honour
        if value and value != "auto":
            try:
                n = int(value)
            except ValueError:
                raise ValueError(f"{var}={value!r} is not a thread count (an integer, or auto)") from None
            if n > MAX_THREADS:
                raise ValueError(f"{var}={value!r} is more than {MAX_THREADS} threads")
            return max(1, n), f"{var}={value}"
    n = auto_threads()
    return n, thread_choice()


def auto_state() -> dict:
    """The last :func:`auto_threads` sample (``{}`` before any): threads, cores, busy_cores."""
    return {k: v for k, v in _auto_state.items() if k != "at"}


def thread_choice() -> str:
    """How the last automatic thread count was chosen, for records and logs."""
    if not _auto_state:
        return "not sampled"
    s = _auto_state
    busy = "unknown" if s["busy_cores"] is None else f"{s['busy_cores']:g}"
    return f"auto: {s['threads']} of {s['cores']} cores ({busy} busy with other work at the start)"


def set_threads(n: int | None = None, *, mxnet: bool = False) -> int:
    """Set the intra-op thread count of every framework already imported (and of BLAS via
    threadpoolctl when available) to ``n``, or to :func:`resolve_threads`'s default.  Returns the
    count set.  Frameworks are never imported here.  ``mxnet``: the caller computes with MXNet, and is
    warned where MXNet's matrix products keep another count (fixed at its import)."""
    n = resolve_threads(n)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)
    if "mxnet" in sys.modules:
        mxnet_threads_at_import()  # before the variable is written below
        os.environ["OMP_NUM_THREADS"] = _written["OMP_NUM_THREADS"] = str(n)  # mxnet reads it for new engines
        _set_mxnet_omp(n, warn=mxnet)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover
        pass
    return n


_mxnet_at_import: list[str | None] = []  # OMP_NUM_THREADS as mxnet found it at import (once seen)


def mxnet_threads_at_import() -> str | None:
    """``OMP_NUM_THREADS`` when mxnet was imported (``None``: unset), read the first time this process
    sees mxnet imported, before :func:`set_threads` writes the variable."""
    if not _mxnet_at_import:
        _mxnet_at_import.append(os.environ.get("OMP_NUM_THREADS") or None)
    return _mxnet_at_import[0]


def _set_mxnet_omp(n: int, *, warn: bool) -> None:
    """MXNet's own operator threads (its OpenMP kernels) are set through its C API.  Its engine's
    worker threads, which run the matrix products in OpenBLAS, took ``OMP_NUM_THREADS`` at import and
    keep it: a fit asking for another count from Python ran on the import's (2 cores busy for
    ``threads=1``), so that is said, and recorded (:func:`thread_counts`)."""
    import ctypes

    import mxnet

    at_import = mxnet_threads_at_import()
    setter = getattr(mxnet.base._LIB, "MXSetNumOMPThreads", None)
    if setter is not None:
        mxnet.base.check_call(setter(ctypes.c_int(n)))
    # unset at import, OpenMP's default is every core
    effective = at_import.strip() if at_import is not None else str(os.cpu_count() or 1)
    if warn and effective != str(n):
        how = f"with OMP_NUM_THREADS={at_import}" if at_import is not None else "without OMP_NUM_THREADS (all cores)"
        warnings.warn(
            f"mxnet was imported {how}: its matrix products keep that many threads, not the {n} asked for; set "
            f"OMP_NUM_THREADS={n} before importing mxnet (autorec-bench run, sweep and tune do)",
            RuntimeWarning,
            stacklevel=3,
        )


def thread_counts() -> dict:
    out: dict = {"cpu_affinity": default_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    out["omp_wait"] = dict(_wait_policy_state) or {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
    if _auto_state:
        out["auto"] = auto_state()
    if "torch" in sys.modules:
        import torch

        out["torch_intra_op"] = torch.get_num_threads()
        out["torch_inter_op"] = torch.get_num_interop_threads()
    if "mxnet" in sys.modules:
        out["mxnet_omp"] = os.environ.get("OMP_NUM_THREADS") or os.environ.get("MXNET_CPU_WORKER_NTHREADS")
        out["mxnet_omp_at_import"] = mxnet_threads_at_import()  # what its matrix products run with
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = [{"api": i.get("internal_api"), "threads": i.get("num_threads")} for i in threadpool_info()]
    except ImportError:  # pragma: no cover
        pass
    return out


#: load beyond a run's own threads above which its timings count as contended
CONTENTION_MARGIN = 1.5


def load_average() -> tuple[float, ...]:
    """The 1-, 5- and 15-minute load averages (rounded to 0.01); ``()`` where the OS has none."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:  # pragma: no cover - not available on this platform
        return ()


#: share of a core that other work may keep busy at a run's start before its timings count as contended
BUSY_MARGIN = 0.5


def contended(
    load_before, load_after, own_threads: float, margin: float = CONTENTION_MARGIN, busy_before: float | None = None
) -> bool:
    """True when the machine was visibly busier than the run itself: at the start, other work kept
    more than :data:`BUSY_MARGIN` of a core busy (``busy_before``, an instantaneous
    :func:`busy_cores` sample) or, where no such sample exists, the 1-minute load average was above
    ``margin`` (it lags: after another run it still counts that run); or, at the end, the load
    average was above the run's own threads plus ``margin`` (a long run raises it by its own
    threads).  Unknown loads (``()``) count as quiet."""
    before = load_before[0] if load_before else 0.0
    after = load_after[0] if load_after else 0.0
    start = busy_before > BUSY_MARGIN if busy_before is not None else before > margin
    return start or after > float(own_threads) + margin


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_models() -> list[str]:
    """GPU names, from torch if it is imported and sees CUDA, else from nvidia-smi if present."""
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0:
            return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        pass
    return []


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """Process ``pid``'s state letter, kernel flags and start time in clock ticks since boot (from
    ``/proc/<pid>/stat``), else ``None`` (no such process, or no ``/proc``).  The start time never
    changes for a process and, unlike a wall-clock start (``psutil``'s ``create_time``: boot time +
    ticks, and the boot time moves when NTP adjusts the clock), compares exactly between calls."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[6]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


#: ``PF_EXITING`` in a task's ``/proc/<pid>/stat`` flags: set as soon as the process starts to exit
#: (a SIGKILLed process's sockets may close, and a Dask scheduler retry its run elsewhere, before
#: it shows as a zombie)
PF_EXITING = 0x4


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` is a live process of this host (and, given ``start_ticks``, the one that
    started then, not a later one reusing its pid): it exists, and is neither exiting (killed, still
    tearing down) nor a zombie (dead, not yet reaped by its parent: its work is over, though
    ``kill(pid, 0)`` still finds it).  Another user's process is judged the same way (``/proc``
    says which process it is); without ``/proc``, a process that exists counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    stat = proc_stat(pid)
    if stat is None:
        return True
    state, flags, start = stat
    return state not in ("Z", "X") and not flags & PF_EXITING and (start_ticks is None or start == start_ticks)


def process_memory_bytes(field: str = "VmHWM") -> int | None:
    """``VmHWM`` (peak RSS since exec) or ``VmRSS`` (now) of this process in bytes, from
    /proc/self/status; ``None`` where that does not exist.  Prefer VmHWM to ``ru_maxrss`` for a
    worker's peak: Linux carries the parent's RSS at fork over the exec into ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


#: paths whose changes do not make a checkout "dirty": the benchmark results, which a sweep itself
#: rewrites while it runs (its later records would otherwise all say "-dirty")
NOT_CODE = ("results",)


def git_commit(path: str | None = None) -> str | None:
    """The checked-out commit, with ``-dirty`` when a tracked file outside :data:`NOT_CODE` differs
    from it (with a git too old for pathspec magic: any tracked file), ``-unknown`` when git cannot
    say; None outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=path or os.path.dirname(os.path.abspath(__file__)),
        )
        if out.returncode != 0:
            return None
        commit = out.stdout.strip()
        code = [":/", *(f":(top,exclude){p}" for p in NOT_CODE)]  # the whole checkout but the results
        for pathspec in (["--", *code], []):  # the second: a git without the exclude magic
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no", *pathspec],
                capture_output=True,
                text=True,
                timeout=10,
                cwd=path or os.path.dirname(os.path.abspath(__file__)),
            )
            if dirty.returncode == 0:
                return commit + ("-dirty" if dirty.stdout.strip() else "")
        return commit + "-unknown"
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Versions, thread counts, CPU and GPU: the ``environment`` block of a raw result."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "pandas": _version("pandas"),
        "torch": _version("torch"),
        "mxnet": _version("mxnet"),
        "scikit-surprise": _version("scikit-surprise"),
        "threads": thread_counts(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_models(),
    }
