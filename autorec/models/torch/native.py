"""Native CPU kernels for AutoRec's sparse training path (opt-in: ``extra={"sparse_kernel": "native"}``).

torch's CPU sparse operators (``torch.sparse.mm``, ``sampled_addmm`` and their backward passes)
run at a few GFLOP/s on AutoRec's shapes: each observed entry gathers a row of a large weight
matrix from main memory, and the transposed products re-sort the batch every step.  The kernels
here compute the same five products of one sparse step in *column order* (a counting-sort CSC of
the batch, built once per batch), so each weight row is read from memory once per batch and the
per-entry work hits a cache-resident ``(batch, h)`` block:

- ``encode``:  ``Z = X @ W0^T``  (``W0^T`` stored ``(n_in, h)``), gradient ``dW0^T = X^T @ dZ``;
- ``decode``:  ``out[k] = H[row_k] . W1[col_k]`` at the observed entries only, gradients
  ``dH = G @ W1`` and ``dW1 = G^T @ H`` (``G``: the sparse gradient at the observed entries).

Per step the cost is O(nnz * h) plus O(n_in * h) to write the dense weight gradients (the
optimizer reads and writes every parameter anyway).  The math is exactly that of the torch path
(float32, summation order differs); ``tests/test_scale_native.py`` checks loss and gradients
against it.

The C++ source below is compiled on first use with the system C++ compiler (``$CXX``, else
``g++``/``c++``/``clang++``) into a per-machine cache (``$AUTOREC_KERNEL_DIR``, else
``$AUTOREC_CACHE_DIR/kernels``, else ``~/.cache/autorec-bench/kernels``), written atomically, and
loaded with ctypes.  :func:`available` says whether that worked and :func:`unavailable_reason` why
not; the model refuses ``sparse_kernel="native"`` with a :class:`~autorec.errors.ConfigError` when
it did not.  Threads: ``torch.get_num_threads()``.

Memory note: each step's backward writes two ``(n_in, h)`` weight gradients.  Fresh buffers cost
a page fault and a kernel zeroing per page (at ML-10M width more than the kernels themselves), so
the trainer hands last step's gradients back to a per-network :class:`GradPool`
(:func:`recycle_grads`) and the kernels overwrite every element of a reused buffer.  For the other
large allocations, ``THP_MEM_ALLOC_ENABLE=1`` in the environment *before torch is imported* makes
torch's CPU allocator use transparent huge pages (the scale runner sets it for both paths and
records it).

Measured and rejected: tiling the hidden dimension so each thread's ``(batch, tile)`` block stays
in L2 was 1.6-8.6x *slower* at ML-10M shape (tiles of 256 down to 32 floats) (every tile re-walks the column index and reads the
weight rows in strided pieces); the per-entry row update is bound by L2/L3 traffic of the
``(batch, h)`` block, not by the FMA units.
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

import torch

from autorec.errors import ConfigError

__all__ = ["KERNELS", "available", "unavailable_reason", "library_path", "resolve_kernel", "Batch",
           "encode", "decode", "TransposedLinear", "store_first_layer_transposed", "sparse_sse", "hidden",
           "GradPool", "grad_pool", "recycle_grads"]

#: values of ``extra["sparse_kernel"]``: torch's sparse operators, these kernels, or these kernels
#: when they are available and the device is the CPU
KERNELS = ("torch", "native", "auto")

_SOURCE = r"""
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>
#include <algorithm>
#ifdef _OPENMP
#include <omp.h>
#endif
typedef int64_t i64;

// Run f(lo, hi, t) on nt threads over [0, n) split at the given boundaries.  With OpenMP this is
// the process's OpenMP pool (torch's own libgomp when torch is loaded first), so the kernels and
// torch's operators share threads instead of competing with its spinning workers.
template <class F> static void run_split(const std::vector<i64>& cut, F f) {
    int nt = (int)cut.size() - 1;
    if (nt <= 1) { f(cut[0], cut[1], 0); return; }
#ifdef _OPENMP
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        if (t < nt) f(cut[t], cut[t + 1], t);
    }
#else
    std::vector<std::thread> ts;
    for (int t = 1; t < nt; ++t) ts.emplace_back(f, cut[t], cut[t + 1], t);
    f(cut[0], cut[1], 0);
    for (auto& th : ts) th.join();
#endif
}
static std::vector<i64> even_cut(i64 n, int nt) {
    if (nt < 1) nt = 1;
    if (n < nt) nt = n > 0 ? (int)n : 1;
    std::vector<i64> cut(nt + 1);
    for (int t = 0; t <= nt; ++t) cut[t] = n * t / nt;
    return cut;
}
// Split columns [0, N) so each thread gets about the same rows + entries (cost ~ 1 + nnz_j).
static std::vector<i64> column_cut(i64 N, const i64* colptr, int nt) {
    if (nt < 1) nt = 1;
    if (N < nt) return even_cut(N, nt);
    i64 total = N + colptr[N];
    std::vector<i64> cut(nt + 1);
    cut[0] = 0; cut[nt] = N;
    for (int t = 1; t < nt; ++t) {
        i64 target = total * t / nt, lo = cut[t - 1], hi = N;
        while (lo < hi) { i64 mid = (lo + hi) / 2; if (mid + colptr[mid] < target) lo = mid + 1; else hi = mid; }
        cut[t] = lo;
    }
    return cut;
}

extern "C" {

// The batch's entries in column order: colptr[N+1], and for each column-ordered entry p its row
// crow[p], its position cpos[p] in the CSR arrays and its value cval[p] = vals[cpos[p]].
// Returns 0, or -1 for a column out of range.
int ar_csc_build(i64 B, i64 N, const i64* indptr, const i64* cols, const float* vals, i64* colptr,
                 int32_t* crow, i64* cpos, float* cval) {
    std::memset(colptr, 0, sizeof(i64) * (N + 1));
    const i64 nnz = indptr[B];
    for (i64 k = 0; k < nnz; ++k) {
        i64 j = cols[k];
        if (j < 0 || j >= N) return -1;
        colptr[j + 1]++;
    }
    for (i64 j = 0; j < N; ++j) colptr[j + 1] += colptr[j];
    std::vector<i64> next(colptr, colptr + N);
    for (i64 b = 0; b < B; ++b)
        for (i64 k = indptr[b]; k < indptr[b + 1]; ++k) {
            i64 p = next[cols[k]]++;
            crow[p] = (int32_t)b; cpos[p] = k; cval[p] = vals[k];
        }
    return 0;
}

// Sum the per-thread partial (B, h) blocks scratch[(t-1) * B * h] (t = 1..used-1) into Z.
static void reduce_rows(i64 B, i64 h, float* Z, const float* scratch, int used) {
    if (used <= 1) return;
    run_split(even_cut(B, used), [&](i64 a, i64 e, int) {
        for (int t = 1; t < used; ++t) {
            const float* s = scratch + (i64)(t - 1) * B * h;
            for (i64 b = a; b < e; ++b) {
                float* zz = Z + b * h; const float* ss = s + b * h;
                #pragma omp simd
                for (i64 c = 0; c < h; ++c) zz[c] += ss[c];
            }
        }
    });
}

// Z[B, h] = S @ W, S the batch pattern holding the column-ordered values cv, W [N, h].
// Column order: each row of W is read once per batch; thread t > 0 accumulates into
// scratch[(t-1) * B * h], then the blocks are reduced.
void ar_spmm(i64 B, i64 N, i64 h, const i64* colptr, const int32_t* crow, const float* cv,
             const float* W, float* Z, float* scratch, int nt) {
    std::vector<i64> cut = column_cut(N, colptr, nt);
    const int used = (int)cut.size() - 1;
    run_split(cut, [&](i64 a, i64 e, int t) {
        float* z = t == 0 ? Z : scratch + (i64)(t - 1) * B * h;
        std::memset(z, 0, sizeof(float) * B * h);
        for (i64 j = a; j < e; ++j) {
            const float* w = W + j * h;
            for (i64 p = colptr[j]; p < colptr[j + 1]; ++p) {
                float* zz = z + (i64)crow[p] * h;
                const float v = cv[p];
                #pragma omp simd
                for (i64 c = 0; c < h; ++c) zz[c] += v * w[c];
            }
        }
    });
    reduce_rows(B, h, Z, scratch, used);
}

// D[N, h] = S^T @ G (S holding the column-ordered values cv), G [B, h]; every row of D is
// written (zero for columns without entries).
void ar_spmm_t(i64 N, i64 h, const i64* colptr, const int32_t* crow, const float* cv,
               const float* G, float* D, int nt) {
    run_split(column_cut(N, colptr, nt), [&](i64 a, i64 e, int) {
        for (i64 j = a; j < e; ++j) {
            float* d = D + j * h;
            std::memset(d, 0, sizeof(float) * h);
            for (i64 p = colptr[j]; p < colptr[j + 1]; ++p) {
                const float* g = G + (i64)crow[p] * h;
                const float v = cv[p];
                #pragma omp simd
                for (i64 c = 0; c < h; ++c) d[c] += v * g[c];
            }
        }
    });
}

// out[k] = H[row_k] . W[col_k] (+ bias[col_k] when bias is not null) for every entry k, written
// at its CSR position cpos; H [B, h], W [N, h].
void ar_sddmm(i64 N, i64 h, const i64* colptr, const int32_t* crow, const i64* cpos,
              const float* H, const float* W, const float* bias, float* out, int nt) {
    std::vector<float> acc((size_t)colptr[N] + 1);  // column-ordered results, scattered at the end
    float* ac = acc.data();
    run_split(column_cut(N, colptr, nt), [&](i64 a, i64 e, int) {
        for (i64 j = a; j < e; ++j) {
            const float* w = W + j * h;
            for (i64 p = colptr[j]; p < colptr[j + 1]; ++p) {
                const float* x = H + (i64)crow[p] * h;
                float s = 0.0f;
                #pragma omp simd reduction(+:s)
                for (i64 c = 0; c < h; ++c) s += x[c] * w[c];
                ac[p] = bias ? s + bias[j] : s;
            }
        }
        for (i64 p = colptr[a]; p < colptr[e]; ++p) out[cpos[p]] = ac[p];
    });
}

// Row order: Z[b, :] = sum_k vals[k] * W[cols[k], :] accumulated in place (no scratch); best
// when W is cache-resident (small n_in).
void ar_spmm_rows(i64 B, i64 h, const i64* indptr, const i64* cols, const float* vals,
                  const float* W, float* Z, int nt) {
    std::vector<i64> cut = even_cut(B, nt);
    run_split(cut, [&](i64 a, i64 e, int) {
        for (i64 b = a; b < e; ++b) {
            float* z = Z + b * h;
            std::memset(z, 0, sizeof(float) * h);
            for (i64 k = indptr[b]; k < indptr[b + 1]; ++k) {
                const float* w = W + cols[k] * h;
                const float v = vals[k];
                #pragma omp simd
                for (i64 c = 0; c < h; ++c) z[c] += v * w[c];
            }
        }
    });
}

// The decoder's backward in one column-ordered pass: dH = S_g @ W and dW = S_g^T @ H, with S_g
// the batch pattern holding the output gradients g (CSR order).  Every row of dW is written, and
// when db is not null, db[j] = the sum of column j's gradients (the decoder bias's gradient).
void ar_decode_backward(i64 B, i64 N, i64 h, const i64* colptr, const int32_t* crow, const i64* cpos,
                        const float* g, const float* W, const float* H, float* dH, float* dW,
                        float* db, float* scratch, int nt) {
    std::vector<i64> cut = column_cut(N, colptr, nt);
    const int used = (int)cut.size() - 1;
    std::vector<float> gcol((size_t)colptr[N] + 1);  // g in column order: no random load per entry
    float* gc = gcol.data();
    run_split(cut, [&](i64 a, i64 e, int t) {
        for (i64 p = colptr[a]; p < colptr[e]; ++p) gc[p] = g[cpos[p]];
        float* dh = t == 0 ? dH : scratch + (i64)(t - 1) * B * h;
        std::memset(dh, 0, sizeof(float) * B * h);
        for (i64 j = a; j < e; ++j) {
            const float* w = W + j * h;
            float* d = dW + j * h;
            std::memset(d, 0, sizeof(float) * h);
            if (db) {
                float sb = 0.0f;
                for (i64 p = colptr[j]; p < colptr[j + 1]; ++p) sb += gc[p];
                db[j] = sb;
            }
            for (i64 p = colptr[j]; p < colptr[j + 1]; ++p) {
                const i64 b = crow[p];
                const float gv = gc[p];
                float* dhb = dh + b * h;
                const float* hb = H + b * h;
                #pragma omp simd
                for (i64 c = 0; c < h; ++c) { dhb[c] += gv * w[c]; d[c] += gv * hb[c]; }
            }
        }
    });
    reduce_rows(B, h, dH, scratch, used);
}

int ar_version() { return 3; }
int ar_openmp() {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
}
"""

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_reason: str | None = None
_path: Path | None = None


def _cache_dir() -> Path:
    if os.environ.get("AUTOREC_KERNEL_DIR"):
        return Path(os.environ["AUTOREC_KERNEL_DIR"])
    if os.environ.get("AUTOREC_CACHE_DIR"):
        return Path(os.environ["AUTOREC_CACHE_DIR"]) / "kernels"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autorec-bench" / "kernels"


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


# -fopenmp first: the library then needs libgomp.so.1, which resolves to the copy torch has already
# loaded (same soname), so the kernels run on torch's OpenMP pool; without OpenMP they use
# std::thread (and can contend with torch's spinning workers)
_FLAG_SETS = (["-O3", "-march=native", "-fopenmp"], ["-O3", "-march=native", "-fopenmp-simd"],
              ["-O3", "-fopenmp-simd"], ["-O3"])


def _build() -> tuple[ctypes.CDLL | None, str | None, Path | None]:
    cxx = _compiler()
    if cxx is None:
        return None, "no C++ compiler found (set $CXX or install g++)", None
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout.splitlines()[:1]
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"C++ compiler {cxx} does not run: {exc}", None
    key = hashlib.sha256("\n".join([_SOURCE, cxx, *version, platform.machine(), _cpu_flags()])
                         .encode()).hexdigest()[:20]
    folder = _cache_dir()
    target = folder / f"autorec_sparse_{key}.so"
    if not target.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return None, f"cannot create the kernel cache folder {folder}: {exc}", None
        errors = []
        for flags in _FLAG_SETS:
            fd, tmp_so = tempfile.mkstemp(dir=folder, prefix=".build-", suffix=".so")
            os.close(fd)
            src = tmp_so[:-3] + ".cpp"
            try:
                with open(src, "w") as fh:
                    fh.write(_SOURCE)
                proc = subprocess.run([cxx, *flags, "-std=c++17", "-shared", "-fPIC", "-pthread", src,
                                       "-o", tmp_so], capture_output=True, text=True, timeout=300)
                if proc.returncode == 0:
                    os.replace(tmp_so, target)
                    break
                errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-400:]}")
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{' '.join(flags)}: {exc}")
            finally:
                for p in (src, tmp_so):
                    if os.path.exists(p):
                        os.unlink(p)
        else:
            return None, f"compiling the native kernels with {cxx} failed: " + " | ".join(errors), None
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as exc:
        return None, f"cannot load the native kernels {target}: {exc}", None
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
    lib.ar_openmp.restype = cint
    return lib, None, target


def _load() -> ctypes.CDLL | None:
    global _lib, _reason, _path
    if _lib is not None or _reason is not None:
        return _lib
    with _lock:
        if _lib is None and _reason is None:
            _lib, _reason, _path = _build()
    return _lib


def available() -> bool:
    """True when the native kernels are compiled (or cached) and loaded on this machine."""
    return _load() is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (``None`` when it is True)."""
    _load()
    return _reason


def library_path() -> Path | None:
    _load()
    return _path


def uses_openmp() -> bool:
    """Whether the loaded kernels run on the process's OpenMP pool (else std::thread)."""
    lib = _load()
    return bool(lib is not None and lib.ar_openmp())


def resolve_kernel(value, device_type: str = "cpu") -> str:
    """``"torch"`` or ``"native"`` for the ``extra["sparse_kernel"]`` knob (default ``"torch"``);
    :class:`ConfigError` for an unknown value, or ``"native"`` where it cannot run."""
    value = "torch" if value is None else value
    if value not in KERNELS:
        raise ConfigError(f"extra['sparse_kernel']={value!r} is not one of {list(KERNELS)}")
    if value == "auto":
        return "native" if device_type == "cpu" and available() else "torch"
    if value == "native":
        if device_type != "cpu":
            raise ConfigError(f"extra['sparse_kernel']='native' runs on the CPU only, not on "
                              f"{device_type}; use 'torch' or 'auto'")
        _lib_or_raise()
    return value


def _lib_or_raise() -> ctypes.CDLL:
    lib = _load()
    if lib is None:
        raise ConfigError(f"sparse_kernel='native' is not available here: {_reason}; install a C++ "
                          "compiler or use extra={'sparse_kernel': 'torch'}")
    return lib


def _p(t: torch.Tensor) -> int:
    return t.data_ptr()


def _threads() -> int:
    return max(1, int(torch.get_num_threads()))


def _check_dense(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.device.type != "cpu":
        raise ConfigError(f"sparse_kernel='native' runs on the CPU only; {name} is on {t.device} "
                          "(use extra={'sparse_kernel': 'torch'} on GPUs)")
    if t.dtype != torch.float32:
        t = t.float()
    return t if t.is_contiguous() else t.contiguous()


class GradPool:
    """Recycled ``(n_in, h)`` weight-gradient buffers of one network.

    Every step's backward writes the two wide weight gradients into buffers of ``n_in x h`` floats;
    fresh ones cost a page fault and a kernel zeroing per page (more than the kernels themselves at
    ML-10M width).  The trainer hands last step's gradients back (:func:`recycle_grads`) before
    ``zero_grad``, and the kernels overwrite every element of a recycled buffer, so no value carries
    over from one step to the next."""

    def __init__(self):
        self._free: dict[tuple[int, int], list[torch.Tensor]] = {}

    def take(self, n: int, h: int) -> torch.Tensor:
        free = self._free.get((n, h))
        return free.pop() if free else torch.empty(n, h, dtype=torch.float32)

    def give(self, t: torch.Tensor) -> None:
        free = self._free.setdefault(tuple(t.shape), [])
        if len(free) < 2:
            free.append(t)

    def __len__(self) -> int:
        return sum(len(v) for v in self._free.values())


def grad_pool(net) -> GradPool:
    """The network's :class:`GradPool` (created on first use)."""
    pool = net.__dict__.get("_native_grad_pool")
    if pool is None:
        pool = GradPool()
        net.__dict__["_native_grad_pool"] = pool
    return pool


def _wide_weights(net) -> list[torch.Tensor]:
    first = net.layers[0]
    w0 = first.weight_t if isinstance(first, TransposedLinear) else None
    return [w for w in (w0, net.layers[-1].weight) if w is not None]


def recycle_grads(net) -> None:
    """Move the wide weights' gradients (plain, contiguous float32 CPU tensors that own their
    memory) into the network's :class:`GradPool` and clear them; call it where ``zero_grad`` would
    drop them (after the optimizer step)."""
    pool = grad_pool(net)
    for w in _wide_weights(net):
        g = w.grad
        if (g is not None and g._base is None and g.is_contiguous() and g.dtype == torch.float32
                and g.device.type == "cpu" and g.shape == w.shape):
            w.grad = None
            pool.give(g)


class Batch:
    """One CSR batch (``n_rows`` rows of width ``n_cols``) and its column-ordered index, built once
    and shared by the encoder and decoder kernels of a step."""

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, n_rows: int, n_cols: int,
                 pool: GradPool | None = None):
        lib = _lib_or_raise()
        self.n_rows, self.n_cols = int(n_rows), int(n_cols)
        if self.n_rows >= 2 ** 31:
            raise ValueError(f"native Batch: {self.n_rows} rows in one batch (the kernels index rows with int32)")
        self.crow = crow.to(torch.int64).contiguous()
        self.col = col.to(torch.int64).contiguous()
        self.val = _check_dense(val, "the batch values")
        self.pool = pool
        nnz = int(self.col.numel())
        if self.crow.numel() != self.n_rows + 1 or int(self.crow[-1]) != nnz:
            raise ValueError(f"native Batch: row pointer of length {self.crow.numel()} ending at "
                             f"{int(self.crow[-1])} does not describe {self.n_rows} rows / {nnz} entries")
        self.colptr = torch.empty(self.n_cols + 1, dtype=torch.int64)
        self.ccrow = torch.empty(nnz, dtype=torch.int32)
        self.cpos = torch.empty(nnz, dtype=torch.int64)
        self.cval = torch.empty(nnz, dtype=torch.float32)
        rc = lib.ar_csc_build(self.n_rows, self.n_cols, _p(self.crow), _p(self.col), _p(self.val),
                              _p(self.colptr), _p(self.ccrow), _p(self.cpos), _p(self.cval))
        if rc != 0:
            raise ValueError(f"native Batch: a column index is outside [0, {self.n_cols})")

    @property
    def nnz(self) -> int:
        return int(self.col.numel())

    def _column_values(self, vals: torch.Tensor) -> torch.Tensor:
        """Entry values (CSR order) in the batch's column order."""
        if vals is self.val:
            return self.cval
        vals = _check_dense(vals, "the entry values")
        if vals.numel() != self.nnz:
            raise ValueError(f"native Batch: {vals.numel()} entry values for {self.nnz} entries")
        return vals[self.cpos].contiguous()

    def _wide(self, h: int) -> torch.Tensor:
        return self.pool.take(self.n_cols, h) if self.pool is not None else torch.empty(self.n_cols, h)

    def spmm(self, vals: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``S @ W`` with S this batch's pattern holding ``vals``: ``(n_rows, h)``."""
        lib = _lib_or_raise()
        W = _check_dense(W, "the weight")
        cv = self._column_values(vals)
        h = W.shape[1]
        nt = _threads()
        out = torch.empty(self.n_rows, h, dtype=torch.float32)
        scratch = torch.empty(max(nt - 1, 0) * self.n_rows * h if nt > 1 else 1, dtype=torch.float32)
        lib.ar_spmm(self.n_rows, self.n_cols, h, _p(self.colptr), _p(self.ccrow), _p(cv), _p(W), _p(out),
                    _p(scratch), nt)
        return out

    def spmm_rows(self, vals: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``S @ W`` in row order (each output row accumulated in place)."""
        lib = _lib_or_raise()
        W = _check_dense(W, "the weight")
        vals = _check_dense(vals, "the entry values")
        out = torch.empty(self.n_rows, W.shape[1], dtype=torch.float32)
        lib.ar_spmm_rows(self.n_rows, W.shape[1], _p(self.crow), _p(self.col), _p(vals), _p(W), _p(out),
                         _threads())
        return out

    def decode_backward(self, g: torch.Tensor, W: torch.Tensor, H: torch.Tensor, with_bias: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(S_g @ W, S_g^T @ H, bias gradient)`` in one pass: the decoder's input and weight
        gradients, and with ``with_bias`` the per-column sums of ``g`` (else ``None``)."""
        lib = _lib_or_raise()
        W = _check_dense(W, "the weight")
        H = _check_dense(H, "the hidden representation")
        g = _check_dense(g, "the output gradient")
        h = W.shape[1]
        nt = _threads()
        dH = torch.empty(self.n_rows, h, dtype=torch.float32)
        dW = self._wide(h)
        db = torch.empty(self.n_cols, dtype=torch.float32) if with_bias else None
        scratch = torch.empty(max(nt - 1, 0) * self.n_rows * h if nt > 1 else 1, dtype=torch.float32)
        lib.ar_decode_backward(self.n_rows, self.n_cols, h, _p(self.colptr), _p(self.ccrow), _p(self.cpos),
                               _p(g), _p(W), _p(H), _p(dH), _p(dW), None if db is None else _p(db),
                               _p(scratch), nt)
        return dH, dW, db

    def column_sums(self, vals: torch.Tensor) -> torch.Tensor:
        """Per-column sums of entry values (CSR order): ``(n_cols,)``."""
        vals = _check_dense(vals, "the entry values")
        return torch.zeros(self.n_cols, dtype=torch.float32).index_add_(0, self.col, vals)

    def spmm_t(self, vals: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """``S^T @ G``: ``(n_cols, h)``, every row written."""
        lib = _lib_or_raise()
        G = _check_dense(G, "the dense operand")
        cv = self._column_values(vals)
        h = G.shape[1]
        out = self._wide(h)
        lib.ar_spmm_t(self.n_cols, h, _p(self.colptr), _p(self.ccrow), _p(cv), _p(G), _p(out),
                      _threads())
        return out

    def sddmm(self, H: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``H[row_k] . W[col_k]`` (``+ bias[col_k]``) for every entry k, in CSR order: ``(nnz,)``."""
        lib = _lib_or_raise()
        H = _check_dense(H, "the hidden representation")
        W = _check_dense(W, "the weight")
        b = None if bias is None else _check_dense(bias.detach(), "the bias")
        out = torch.empty(self.nnz, dtype=torch.float32)
        lib.ar_sddmm(self.n_cols, H.shape[1], _p(self.colptr), _p(self.ccrow), _p(self.cpos),
                     _p(H), _p(W), None if b is None else _p(b), _p(out), _threads())
        return out


class _Encode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, W_t: torch.Tensor, batch: Batch) -> torch.Tensor:  # W_t: (n_in, h)
        ctx.batch = batch
        return batch.spmm(batch.val, W_t)

    @staticmethod
    def backward(ctx, dZ: torch.Tensor):
        batch = ctx.batch
        dW = batch.spmm_t(batch.val, dZ) if ctx.needs_input_grad[0] else None
        return dW, None


class _Decode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, batch: Batch) -> torch.Tensor:
        ctx.batch = batch  # W: (n_in, h); b: (n_in,) or None
        ctx.has_bias = b is not None
        ctx.save_for_backward(H, W)
        return batch.sddmm(H, W, b)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        H, W = ctx.saved_tensors
        batch = ctx.batch
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = ctx.has_bias and ctx.needs_input_grad[2]
        if need_h and need_w:
            dH, dW, db = batch.decode_backward(g, W, H, with_bias=need_b)
        else:
            dH = batch.spmm(g, W) if need_h else None
            dW = batch.spmm_t(g, H) if need_w else None
            db = batch.column_sums(g) if need_b else None
        return dH, dW, db, None


def encode(W_t: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``X @ W_t`` for the batch's values X (``W_t``: ``(n_in, h)``, the transposed first-layer
    weight); differentiable in ``W_t``."""
    return _Encode.apply(W_t, batch)


def decode(H: torch.Tensor, W: torch.Tensor, batch: Batch, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``H[row_k] . W[col_k] (+ bias[col_k])`` at the batch's entries (``W``: ``(n_in, h)``, the
    last-layer weight; ``bias``: its ``(n_in,)`` bias); differentiable in ``H``, ``W`` and ``bias``."""
    return _Decode.apply(H, W, bias, batch)


class TransposedLinear(torch.nn.Module):
    """``nn.Linear(n_in, h)`` whose weight is stored as a contiguous ``(n_in, h)`` parameter
    ``weight_t``; ``.weight`` is its ``(h, n_in)`` transpose view (same values and semantics as
    ``nn.Linear.weight``: reading, ``copy_`` into it and ``F.linear`` work unchanged).  The kernels
    read ``weight_t`` rows directly, and the optimizer updates a contiguous tensor."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_t = torch.nn.Parameter(linear.weight.detach().t().contiguous())
        self.bias = torch.nn.Parameter(linear.bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_t.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight_t.t(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, stored transposed"


def store_first_layer_transposed(net) -> None:
    """Replace the first layer by a :class:`TransposedLinear` holding the same weights, so
    ``weight.t()`` is the contiguous row-per-input matrix the kernels read (no copy per step)."""
    if not isinstance(net.layers[0], TransposedLinear):
        net.layers[0] = TransposedLinear(net.layers[0])


def hidden(net, batch: Batch, drop_batch=None) -> torch.Tensor:
    """The last hidden representation of a batch (first layer through the native encoder;
    ``drop_batch`` as ``AutoRecNet._hidden_tail``'s dropout argument)."""
    first = net.layers[0]
    # the (n_in, h) parameter itself, not a view of it: its gradient is then the kernel's output,
    # handed to the parameter without a copy (a view's gradient is cloned by AccumulateGrad)
    w_t = first.weight_t if isinstance(first, TransposedLinear) else first.weight.t()
    z0 = encode(w_t, batch) + first.bias
    return net._hidden_tail(z0, drop_batch)


def sparse_sse(net, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, n_rows: int,
               activation, drop_batch=None) -> torch.Tensor:
    """The batch's sum of squared errors at its observed entries, as the torch sparse path
    computes it (``AutoRecNet.forward``), through the native kernels."""
    batch = Batch(crow, col, val, n_rows, net.n_in, pool=grad_pool(net))
    h = hidden(net, batch, drop_batch)
    last = net.layers[-1]
    pred = activation(decode(h, last.weight, batch, last.bias))
    return ((pred - batch.val) ** 2).sum()
