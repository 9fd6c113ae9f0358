"""Compiling the suite's C++ kernels on first use and loading them with ctypes (framework-free).

A :class:`NativeLibrary` is one C++ source file: compiled with the system C++ compiler (``$CXX``,
else ``g++``/``c++``/``clang++``) into a per-machine cache (``$AUTOREC_KERNEL_DIR``, else the
``kernels`` folder of :func:`autorec.cache.cache_dir`), keyed by the source, the flag sets, the
compiler and the CPU, written atomically, and loaded once per process.  The flag sets are tried in
order; :meth:`NativeLibrary.available` says whether one worked and
:meth:`NativeLibrary.unavailable_reason` why not.  Users: the sparse AutoRec kernels
(:mod:`autorec.models.autorec.torch.native_build`) and the biased-MF SGD epoch
(:mod:`baselines.sgd`).
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
from collections.abc import Callable, Sequence
from pathlib import Path

from autorec.cache import cache_dir
from autorec.errors import ConfigError

ENV_KERNEL_DIR = "AUTOREC_KERNEL_DIR"

#: flag sets of a kernel that must round as the code it replaces: no fused multiply-add (GCC would
#: contract ``a * b + c`` under -march=native), no reassociation (no -ffast-math)
EXACT_FLAGS = (["-O3", "-march=native", "-ffp-contract=off"], ["-O2", "-ffp-contract=off"])


def kernel_dir() -> Path:
    """Where compiled kernels are cached: ``$AUTOREC_KERNEL_DIR``, else ``cache_dir("kernels")``."""
    override = os.environ.get(ENV_KERNEL_DIR)
    return Path(override) if override else cache_dir("kernels")


def compiler() -> str | None:
    """The C++ compiler: ``$CXX`` when it runs, else the first of g++, c++, clang++ on the PATH."""
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


def _compile(cxx: str, source: str, target: Path, flag_sets: Sequence[Sequence[str]]) -> str | None:
    """Compile ``source`` into ``target`` with the first flag set that works; ``None`` on success,
    else what every attempt said."""
    errors = []
    for flags in flag_sets:
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


class NativeLibrary:
    """One C++ source compiled on first use (``stem``: the cached library's name prefix) and loaded
    with ctypes; ``declare`` sets the C signatures of its functions."""

    def __init__(
        self,
        source: Path,
        stem: str,
        flag_sets: Sequence[Sequence[str]],
        declare: Callable[[ctypes.CDLL], None],
    ) -> None:
        self.source = source
        self.stem = stem
        self.flag_sets = tuple(tuple(f) for f in flag_sets)
        self.declare = declare
        self._lock = threading.Lock()
        self._lib: ctypes.CDLL | None = None
        self._reason: str | None = None

    def _build(self) -> tuple[ctypes.CDLL | None, str | None]:
        cxx = compiler()
        if cxx is None:
            return None, "no C++ compiler found (set $CXX or install g++)"
        try:
            version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"C++ compiler {cxx} does not run: {exc}"
        try:
            source = self.source.read_text()
        except OSError as exc:
            return None, f"cannot read the kernel source {self.source}: {exc}"
        # the flag sets are part of the key: a changed flag rebuilds the library
        flags = [list(f) for f in self.flag_sets]
        parts = [source, repr(tuple(flags)), cxx, *version.splitlines()[:1], platform.machine(), _cpu_flags()]
        key = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        folder = kernel_dir()
        target = folder / f"{self.stem}_{key[:20]}.so"
        if not target.exists():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return None, f"cannot create the kernel cache folder {folder}: {exc}"
            failed = _compile(cxx, source, target, self.flag_sets)
            if failed is not None:
                return None, f"compiling {self.source.name} with {cxx} failed: {failed}"
        try:
            lib = ctypes.CDLL(str(target))
        except OSError as exc:
            return None, f"cannot load the compiled kernels {target}: {exc}"
        self.declare(lib)
        return lib, None

    def load(self) -> ctypes.CDLL | None:
        """The loaded library, compiled first if needed; ``None`` when that failed (see
        :meth:`unavailable_reason`).  Tried once per process."""
        if self._lib is not None or self._reason is not None:
            return self._lib
        with self._lock:
            if self._lib is None and self._reason is None:
                self._lib, self._reason = self._build()
        return self._lib

    def available(self) -> bool:
        """True when the library is compiled (or cached) and loaded on this machine."""
        return self.load() is not None

    def unavailable_reason(self) -> str | None:
        """Why :meth:`available` is False (``None`` when it is True)."""
        self.load()
        return self._reason

    def require(self, setting: str, instead: str) -> ctypes.CDLL:
        """The loaded library, else a :class:`ConfigError`: ``setting`` (what asked for it) is not
        available here, why, and what to use ``instead``."""
        lib = self.load()
        if lib is None:
            raise ConfigError(f"{setting} is not available here: {self._reason}; install a C++ compiler or {instead}")
        return lib


def resolve_exact(
    kernel: str,
    lib: NativeLibrary,
    differs: Callable[[], str | None],
    *,
    fallback: str,
    setting: str,
    what: str,
    reproduces: str,
) -> tuple[str, str | None]:
    """The implementation a fit uses where a C++ kernel (``lib``) reproduces another one bitwise
    (``fallback``, e.g. "numpy") -- ``kernel`` is "native", ``fallback`` or "auto" -- and, when
    ``auto`` fell back, why.  ``differs()`` is the once-per-process self-check (None: bitwise the
    same).  "native" that cannot be built here, or that differs, is a :class:`ConfigError` naming
    ``setting``; ``what`` names the kernel in notes ("native epoch"), ``reproduces`` what it must
    reproduce ("this numpy (1.23.5)")."""
    if kernel == fallback:
        return fallback, None
    if kernel == "native":
        lib.require(setting, f"use kernel='{fallback}'")
        found = differs()
        if found is not None:
            raise ConfigError(
                f"{setting} does not reproduce {reproduces} here: {found}; use kernel='{fallback}' or 'auto'"
            )
        return "native", None
    if not lib.available():
        return fallback, f"{what} unavailable: {lib.unavailable_reason()}"
    found = differs()
    if found is not None:
        return fallback, f"{what} differs from {reproduces}: {found}"
    return "native", None
