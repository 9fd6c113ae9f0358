"""Compiling and loading the native kernels (``native.cpp`` beside this file).

The C++ source is compiled on first use with the system C++ compiler (``$CXX``, else
``g++``/``c++``/``clang++``) into a per-machine cache (``$AUTOREC_KERNEL_DIR``, else the
``kernels`` folder of :func:`autorec.cache.cache_dir`), keyed by the source, the compiler and the
CPU, written atomically, and loaded with ctypes.  :func:`available` says whether that worked and
:func:`unavailable_reason` why not.  The flag sets are tried in order: ``-fopenmp`` first, so the
library needs ``libgomp.so.1``, which resolves to the copy torch has already loaded (same soname)
and the kernels run on torch's OpenMP pool; without OpenMP they use ``std::thread`` (and can
contend with torch's spinning workers).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from autorec.cache import cache_dir
from autorec.errors import ConfigError

SOURCE = Path(__file__).with_name("native.cpp")
ENV_KERNEL_DIR = "AUTOREC_KERNEL_DIR"

_FLAG_SETS = (
    ["-O3", "-march=native", "-fno-math-errno", "-fopenmp"],
    ["-O3", "-march=native", "-fno-math-errno", "-fopenmp-simd"],
    ["-O3", "-fopenmp-simd"],
    ["-O3"],
)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_reason: str | None = None


def kernel_dir() -> Path:
    """Where compiled kernels are cached: ``$AUTOREC_KERNEL_DIR``, else ``cache_dir("kernels")``."""
    override = os.environ.get(ENV_KERNEL_DIR)
    return Path(override) if override else cache_dir("kernels")


def _compiler() -> str | None:
    cxx = os.environ.get("CXX")
    if cxx and shutil.which(cxx):
        return shutil.which(cxx)
    for name in ("g++", "c++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compile(cxx: str, source: str, target: Path) -> str | None:
    """Compile ``source`` into ``target`` with the first flag set that works; ``None`` on success,
    else what every attempt said."""
    errors = []
    for flags in _FLAG_SETS:
        fd, tmp_so = tempfile.mkstemp(dir=target.parent, prefix=".build-", suffix=".so")
        os.close(fd)
        src = tmp_so[:-3] + ".cpp"
        try:
            with open(src, "w") as fh:
                fh.write(source)
            cmd = [cxx, *flags, "-std=c++17", "-shared", "-fPIC", "-pthread", src, "-o", tmp_so]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                os.replace(tmp_so, target)
                return None
            errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-400:]}")
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{' '.join(flags)}: {exc}")
        finally:
            for p in (src, tmp_so):
                if os.path.exists(p):
                    os.unlink(p)
    return " | ".join(errors)


def _declare(lib: ctypes.CDLL) -> None:
    """The C signatures of the kernels."""
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.ar_csc_build.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.ar_csc_build.restype = cint
    lib.ar_spmm.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, cint]
    lib.ar_spmm.restype = None
    lib.ar_spmm_t.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, cint]
    lib.ar_spmm_t.restype = None
    lib.ar_sddmm.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, cint]
    lib.ar_sddmm.restype = None
    lib.ar_spmm_rows.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, cint]
    lib.ar_spmm_rows.restype = None
    lib.ar_decode_backward.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, cint]
    lib.ar_decode_backward.restype = None
    dbl = ctypes.c_double
    adam = [dbl] * 6  # beta1, beta2, eps, weight decay, step size, sqrt of the second bias correction
    lib.ar_encode_backward_adam.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, *adam, cint]
    lib.ar_encode_backward_adam.restype = None
    lib.ar_decode_backward_adam.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.ar_decode_backward_adam.argtypes += [*adam, cint]
    lib.ar_decode_backward_adam.restype = None
    # B, N, h, colptr, crow, cv, W, bias, H, M, V, dH, db, scratch, mult, Adam, threads -> sum of e^2
    lib.ar_decode_step_adam.argtypes = [i64, i64, i64, *[ptr] * 11, dbl, *adam, cint]
    lib.ar_decode_step_adam.restype = dbl


def _build() -> tuple[ctypes.CDLL | None, str | None]:
    cxx = _compiler()
    if cxx is None:
        return None, "no C++ compiler found (set $CXX or install g++)"
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout.splitlines()[:1]
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"C++ compiler {cxx} does not run: {exc}"
    try:
        source = SOURCE.read_text()
    except OSError as exc:
        return None, f"cannot read the kernel source {SOURCE}: {exc}"
    # the flag sets are part of the key: a changed flag (e.g. -fno-math-errno) rebuilds the library
    parts = [source, repr(_FLAG_SETS), cxx, *version, platform.machine(), _cpu_flags()]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    folder = kernel_dir()
    target = folder / f"autorec_sparse_{key[:20]}.so"
    if not target.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return None, f"cannot create the kernel cache folder {folder}: {exc}"
        failed = _compile(cxx, source, target)
        if failed is not None:
            return None, f"compiling the native kernels with {cxx} failed: {failed}"
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as exc:
        return None, f"cannot load the native kernels {target}: {exc}"
    _declare(lib)
    return lib, None


def _load() -> ctypes.CDLL | None:
    global _lib, _reason
    if _lib is not None or _reason is not None:
        return _lib
    with _lock:
        if _lib is None and _reason is None:
            _lib, _reason = _build()
    return _lib


def available() -> bool:
    """True when the native kernels are compiled (or cached) and loaded on this machine."""
    return _load() is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (``None`` when it is True)."""
    _load()
    return _reason


def library() -> ctypes.CDLL:
    """The loaded kernels; :class:`ConfigError` saying why when they cannot run here."""
    lib = _load()
    if lib is None:
        raise ConfigError(
            f"sparse_kernel='native' is not available here: {_reason}; install a C++ compiler "
            "or use extra={'sparse_kernel': 'torch'}"
        )
    return lib
