"""Compiling and loading the native kernels (``native.cpp`` beside this file) through
:class:`autorec.native_lib.NativeLibrary` (compiled on first use into the per-machine kernel cache,
``$AUTOREC_KERNEL_DIR``, loaded with ctypes).  :func:`available` says whether that worked and
:func:`unavailable_reason` why not.  The flag sets are tried in order: ``-fopenmp`` first, so the
library needs ``libgomp.so.1``, which resolves to the copy torch has already loaded (same soname)
and the kernels run on torch's OpenMP pool; without OpenMP they use ``std::thread`` (and can
contend with torch's spinning workers).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from autorec.native_lib import ENV_KERNEL_DIR, NativeLibrary, kernel_dir

__all__ = ["ENV_KERNEL_DIR", "SOURCE", "available", "kernel_dir", "library", "unavailable_reason"]

SOURCE = Path(__file__).with_name("native.cpp")

_FLAG_SETS = (
    ["-O3", "-march=native", "-fno-math-errno", "-fopenmp"],
    ["-O3", "-march=native", "-fno-math-errno", "-fopenmp-simd"],
    ["-O3", "-fopenmp-simd"],
    ["-O3"],
)


def _declare(lib: ctypes.CDLL) -> None:
    """The C signatures of the kernels."""
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.ar_csc_build.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, cint]
    lib.ar_csc_build.restype = cint
    # B, N, rows, indptr, indices, data, bptr, colptr, crow, cval, cpos, col, val, threads
    lib.ar_csc_gather.argtypes = [i64, i64, *[ptr] * 11, cint]
    lib.ar_csc_gather.restype = cint
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
    lib.ar_dots4_exact.argtypes = []
    lib.ar_dots4_exact.restype = cint
    lib.ar_dots4_agree.argtypes = [ptr, ptr, i64]
    lib.ar_dots4_agree.restype = cint


_KERNELS = NativeLibrary(SOURCE, "autorec_sparse", _FLAG_SETS, _declare)


def available() -> bool:
    """True when the native kernels are compiled (or cached) and loaded on this machine."""
    return _KERNELS.available()


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (``None`` when it is True)."""
    return _KERNELS.unavailable_reason()


def library() -> ctypes.CDLL:
    """The loaded kernels; :class:`ConfigError` saying why when they cannot run here."""
    return _KERNELS.require("sparse_kernel='native'", "use extra={'sparse_kernel': 'torch'}")
