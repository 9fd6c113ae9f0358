"""Thread control and the environment record that goes into every raw result.

Importing mxnet resets torch's intra-op thread count to 1, so thread counts are always set
explicitly (:func:`set_threads`, called after the frameworks are imported) and recorded
(:func:`environment`).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_threads(n: int | None = None) -> int:
    """Set the intra-op thread count of every framework already imported (and of BLAS via
    threadpoolctl when available).  Returns the count set.  Frameworks are never imported here."""
    n = int(n or default_threads())
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)
    if "mxnet" in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(n)  # mxnet reads it for new engines
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover
        pass
    return n


def thread_counts() -> dict:
    out: dict = {"cpu_affinity": default_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    if "torch" in sys.modules:
        import torch

        out["torch_intra_op"] = torch.get_num_threads()
        out["torch_inter_op"] = torch.get_num_interop_threads()
    if "mxnet" in sys.modules:
        out["mxnet_omp"] = os.environ.get("OMP_NUM_THREADS") or os.environ.get("MXNET_CPU_WORKER_NTHREADS")
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


def contended(load_before, load_after, own_threads: float, margin: float = CONTENTION_MARGIN) -> bool:
    """True when the machine was visibly busier than the run itself: the 1-minute load average above
    ``margin`` when the run started, or above the run's own threads plus ``margin`` when it ended (a
    long run raises the load average by its own threads).  Unknown loads (``()``) count as quiet."""
    before = load_before[0] if load_before else 0.0
    after = load_after[0] if load_after else 0.0
    return before > margin or after > float(own_threads) + margin


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


def git_commit(path: str | None = None) -> str | None:
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
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=path or os.path.dirname(os.path.abspath(__file__)),
        )
        return commit + ("-dirty" if dirty.stdout.strip() else "")
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
