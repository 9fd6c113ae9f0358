"""Native CPU kernels for AutoRec's sparse training path (opt-in: ``extra={"sparse_kernel": "native"}``).

torch's CPU sparse operators (``torch.sparse.mm``, ``sampled_addmm`` and their backward passes)
run at a few GFLOP/s on AutoRec's shapes: each observed entry gathers a row of a large weight
matrix from main memory, and the transposed products re-sort the batch every step.  The kernels
(``native.cpp``, compiled on first use by :mod:`.native_build`) compute the same five products of
one sparse step in *column order* (a counting-sort CSC of the batch, built once per batch), so each
weight row is read from memory once per batch and the per-entry work hits a cache-resident
``(batch, h)`` block:

- ``encode``:  ``Z = X @ W0^T``  (``W0^T`` stored ``(n_in, h)``), gradient ``dW0^T = X^T @ dZ``;
- ``decode``:  ``out[k] = H[row_k] . W1[col_k]`` at the observed entries only, gradients
  ``dH = G @ W1`` and ``dW1 = G^T @ H`` (``G``: the sparse gradient at the observed entries).

Per step the cost is O(nnz * h) plus O(n_in * h) to write the dense weight gradients (the
optimizer reads and writes every parameter anyway).  The math is exactly that of the torch path
(float32, summation order differs); ``tests/test_scale_native.py`` checks loss and gradients
against it.  The model refuses ``sparse_kernel="native"`` with a
:class:`~autorec.errors.ConfigError` where the kernels cannot be built.  Threads:
``torch.get_num_threads()``.

With Adam, ``extra={"fused_step": True}`` (:class:`FusedAdam`) also fuses the optimizer's update of
the two wide weights into their gradient passes: the same algorithm, fewer passes over the weights.

Memory: each step's backward writes two ``(n_in, h)`` weight gradients.  Fresh buffers cost a page
fault and a kernel zeroing per page (at ML-10M width more than the kernels themselves), so the
trainer hands last step's gradients back to a per-network :class:`GradPool` (:func:`recycle_grads`)
and the kernels overwrite every element of a reused buffer.  For the other large allocations,
``THP_MEM_ALLOC_ENABLE=1`` in the environment *before torch is imported* makes torch's CPU
allocator use transparent huge pages (the scale runner sets it for both paths and records it).

What was measured to get here, and what was tried and rejected: docs/measurements.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.profiler import record_function

from autorec.errors import ConfigError
from autorec.models.autorec.torch.native_build import available, library, unavailable_reason
from autorec.models.autorec.torch.net import drop_batch

__all__ = [
    "KERNELS",
    "available",
    "unavailable_reason",
    "resolve_kernel",
    "Batch",
    "CsrRows",
    "encode",
    "decode",
    "TransposedLinear",
    "store_first_layer_transposed",
    "sparse_sse",
    "GradPool",
    "grad_pool",
    "recycle_grads",
    "FusedAdam",
    "adam_hyper",
]

#: values of ``extra["sparse_kernel"]``: torch's sparse operators, these kernels, or these kernels
#: when they are available and the device is the CPU
KERNELS = ("torch", "native", "auto")


def resolve_kernel(value: Any, device_type: str = "cpu") -> str:
    """``"torch"`` or ``"native"`` for the ``extra["sparse_kernel"]`` knob (default ``"torch"``);
    :class:`ConfigError` for an unknown value, or ``"native"`` where it cannot run."""
    value = "torch" if value is None else value
    if value not in KERNELS:
        raise ConfigError(f"extra['sparse_kernel']={value!r} is not one of {list(KERNELS)}")
    if value == "auto":
        return "native" if device_type == "cpu" and available() else "torch"
    if value == "native":
        if device_type != "cpu":
            raise ConfigError(
                f"extra['sparse_kernel']='native' runs on the CPU only, not on {device_type}; use 'torch' or 'auto'"
            )
        library()
    return value


def _opt_p(t: torch.Tensor | None) -> int | None:
    return None if t is None else _p(t)


def _p(t: torch.Tensor) -> int:
    return t.data_ptr()


def _threads() -> int:
    return max(1, int(torch.get_num_threads()))


def _check_dense(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.device.type != "cpu":
        raise ConfigError(
            f"sparse_kernel='native' runs on the CPU only; {name} is on {t.device} "
            "(use extra={'sparse_kernel': 'torch'} on GPUs)"
        )
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
        self._free: dict[tuple[int, ...], list[torch.Tensor]] = {}

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
        if (
            g is not None
            and g._base is None
            and g.is_contiguous()
            and g.dtype == torch.float32
            and g.device.type == "cpu"
            and g.shape == w.shape
        ):
            w.grad = None
            pool.give(g)


class CsrRows:
    """A CSR matrix's arrays as tensors, for :meth:`Batch.gather` to build batches of its rows from
    (made once per fit; the column indices and values are shared with the matrix, not copied, when
    they are already int32 / float32)."""

    def __init__(self, csr: Any):
        self.n_rows, self.n_cols = (int(n) for n in csr.shape)
        if self.n_cols >= 2**31:
            raise ValueError(f"native CsrRows: {self.n_cols} columns (the kernels index columns with int32)")
        self.row_nnz = np.diff(np.asarray(csr.indptr)).astype(np.int64)
        self.indptr = torch.from_numpy(np.ascontiguousarray(csr.indptr, dtype=np.int64))
        indices = np.asarray(csr.indices)
        if indices.dtype != np.int32 and indices.size and (int(indices.min()) < 0 or int(indices.max()) >= self.n_cols):
            # checked before the int32 cast, which would wrap such an index into range
            raise ValueError(f"native CsrRows: a column index is outside [0, {self.n_cols})")
        self.indices = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int32))
        self.data = torch.from_numpy(np.ascontiguousarray(csr.data, dtype=np.float32))
        if self.indices.numel() != int(self.indptr[-1]) or self.data.numel() != self.indices.numel():
            raise ValueError(
                f"native CsrRows: row pointer ending at {int(self.indptr[-1])} for {self.indices.numel()} "
                f"column indices and {self.data.numel()} values"
            )


class Batch:
    """One CSR batch (``n_rows`` rows of width ``n_cols``) and its column-ordered index, built once
    and shared by the encoder and decoder kernels of a step: from the batch's CSR arrays
    (``Batch(crow, col, val, ...)``), or from rows of a matrix with :meth:`gather`."""

    def __init__(
        self,
        crow: torch.Tensor,
        col: torch.Tensor,
        val: torch.Tensor,
        n_rows: int,
        n_cols: int,
        pool: GradPool | None = None,
    ):
        lib = library()
        self.n_rows, self.n_cols = int(n_rows), int(n_cols)
        if self.n_rows >= 2**31:
            raise ValueError(f"native Batch: {self.n_rows} rows in one batch (the kernels index rows with int32)")
        self.crow = crow.to(torch.int64).contiguous()
        col = col.to(torch.int64).contiguous()
        val = _check_dense(val, "the batch values")
        #: the batch's CSR column indices and values, and each column-ordered entry's CSR position
        #: (``None`` in a batch gathered with ``csr_order=False``)
        self.col: torch.Tensor | None = col
        self.val: torch.Tensor | None = val
        self.pool = pool
        nnz = int(col.numel())
        if self.crow.numel() != self.n_rows + 1 or int(self.crow[0]) != 0 or int(self.crow[-1]) != nnz:
            ends = f"from {int(self.crow[0])} to {int(self.crow[-1])}" if self.crow.numel() else "(empty)"
            raise ValueError(
                f"native Batch: row pointer of length {self.crow.numel()} {ends} "
                f"does not describe {self.n_rows} rows / {nnz} entries"
            )
        self.colptr = torch.empty(self.n_cols + 1, dtype=torch.int64)
        self.ccrow = torch.empty(nnz, dtype=torch.int32)
        cpos = torch.empty(nnz, dtype=torch.int64)
        self.cpos: torch.Tensor | None = cpos
        self.cval = torch.empty(nnz, dtype=torch.float32)
        rc = lib.ar_csc_build(
            self.n_rows,
            self.n_cols,
            _p(self.crow),
            _p(col),
            _p(val),
            _p(self.colptr),
            _p(self.ccrow),
            _p(cpos),
            _p(self.cval),
            _threads(),
        )
        if rc != 0:
            raise ValueError(f"native Batch: a column index is outside [0, {self.n_cols})")

    @classmethod
    def gather(cls, src: CsrRows, rows: Any, *, csr_order: bool = True, pool: GradPool | None = None) -> Batch:
        """The batch of ``src``'s rows ``rows`` (in that order), its column-ordered index built from
        ``src``'s arrays in place: the same batch as ``Batch`` over the rows' CSR slice, without
        copying the slice first.  With ``csr_order=False`` only the column-ordered arrays are made
        (``col``, ``val`` and ``cpos`` are ``None``), which is all the encoder product and the fused
        one-pass decoder and encoder steps read; the methods that need the others say so."""
        lib = library()
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise ValueError(f"native Batch.gather: rows must be a 1-D integer array, got {rows.dtype} {rows.shape}")
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= src.n_rows):
            raise ValueError(f"native Batch.gather: a row index is outside [0, {src.n_rows})")
        if len(rows) >= 2**31:
            raise ValueError(f"native Batch.gather: {len(rows)} rows in one batch (the kernels index rows with int32)")
        bptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(src.row_nnz[rows], out=bptr[1:])
        nnz = int(bptr[-1])
        self = cls.__new__(cls)
        self.n_rows, self.n_cols, self.pool = len(rows), src.n_cols, pool
        self.crow = torch.from_numpy(bptr)
        self.col = torch.empty(nnz, dtype=torch.int64) if csr_order else None
        self.val = torch.empty(nnz, dtype=torch.float32) if csr_order else None
        self.cpos = torch.empty(nnz, dtype=torch.int64) if csr_order else None
        self.colptr = torch.empty(self.n_cols + 1, dtype=torch.int64)
        self.ccrow = torch.empty(nnz, dtype=torch.int32)
        self.cval = torch.empty(nnz, dtype=torch.float32)
        rows_t = torch.from_numpy(np.ascontiguousarray(rows))
        rc = lib.ar_csc_gather(
            self.n_rows, self.n_cols, _p(rows_t), _p(src.indptr), _p(src.indices), _p(src.data), _p(self.crow),
            _p(self.colptr), _p(self.ccrow), _p(self.cval), _opt_p(self.cpos), _opt_p(self.col), _opt_p(self.val),
            _threads(),
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"native Batch.gather: a column index is outside [0, {self.n_cols})")
        return self

    @property
    def nnz(self) -> int:
        return int(self.cval.numel())

    def _csr(self, name: str) -> torch.Tensor:
        """The CSR-order array ``name`` (``col``, ``val``, ``cpos``); a batch gathered with
        ``csr_order=False`` has none."""
        t = getattr(self, name)
        if t is None:
            raise RuntimeError(f"native Batch: built without its CSR-order arrays (csr_order=False): no {name}")
        return t

    def _column_values(self, vals: torch.Tensor | None) -> torch.Tensor:
        """Entry values (CSR order; ``None``: the batch's own) in the batch's column order."""
        if vals is None or vals is self.val:
            return self.cval
        vals = _check_dense(vals, "the entry values")
        if vals.numel() != self.nnz:
            raise ValueError(f"native Batch: {vals.numel()} entry values for {self.nnz} entries")
        return vals[self._csr("cpos")].contiguous()

    def _wide(self, h: int) -> torch.Tensor:
        return self.pool.take(self.n_cols, h) if self.pool is not None else torch.empty(self.n_cols, h)

    def _scratch(self, h: int, nt: int) -> torch.Tensor:
        """The per-thread partial ``(n_rows, h)`` blocks of threads 1..nt-1 (the kernels reduce them
        into thread 0's output)."""
        return torch.empty((nt - 1) * self.n_rows * h if nt > 1 else 1, dtype=torch.float32)

    def spmm(self, vals: torch.Tensor | None, W: torch.Tensor) -> torch.Tensor:
        """``S @ W`` with S this batch's pattern holding ``vals`` (CSR order; ``None``: the batch's
        own values): ``(n_rows, h)``."""
        lib = library()
        W = _check_dense(W, "the weight")
        cv = self._column_values(vals)
        h = W.shape[1]
        nt = _threads()
        out = torch.empty(self.n_rows, h, dtype=torch.float32)
        scratch = self._scratch(h, nt)
        lib.ar_spmm(
            self.n_rows, self.n_cols, h, _p(self.colptr), _p(self.ccrow), _p(cv), _p(W), _p(out), _p(scratch), nt
        )
        return out

    def spmm_rows(self, vals: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``S @ W`` in row order (each output row accumulated in place)."""
        lib = library()
        W = _check_dense(W, "the weight")
        vals = _check_dense(vals, "the entry values")
        out = torch.empty(self.n_rows, W.shape[1], dtype=torch.float32)
        lib.ar_spmm_rows(
            self.n_rows, W.shape[1], _p(self.crow), _p(self._csr("col")), _p(vals), _p(W), _p(out), _threads()
        )
        return out

    def decode_backward(
        self, g: torch.Tensor, W: torch.Tensor, H: torch.Tensor, with_bias: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(S_g @ W, S_g^T @ H, bias gradient)`` in one pass: the decoder's input and weight
        gradients, and with ``with_bias`` the per-column sums of ``g`` (else ``None``)."""
        lib = library()
        W = _check_dense(W, "the weight")
        H = _check_dense(H, "the hidden representation")
        g = _check_dense(g, "the output gradient")
        h = W.shape[1]
        nt = _threads()
        dH = torch.empty(self.n_rows, h, dtype=torch.float32)
        dW = self._wide(h)
        db = torch.empty(self.n_cols, dtype=torch.float32) if with_bias else None
        scratch = self._scratch(h, nt)
        lib.ar_decode_backward(
            self.n_rows,
            self.n_cols,
            h,
            _p(self.colptr),
            _p(self.ccrow),
            _p(self._csr("cpos")),
            _p(g),
            _p(W),
            _p(H),
            _p(dH),
            _p(dW),
            None if db is None else _p(db),
            _p(scratch),
            nt,
        )
        return dH, dW, db

    def encode_backward_adam(self, dZ: torch.Tensor, W: torch.Tensor, M: torch.Tensor, V: torch.Tensor, hp) -> None:
        """The encoder's weight gradient ``X^T @ dZ`` fused with the Adam step of ``W`` ``(n_cols, h)``
        (``M``, ``V``: its moments, updated in place; ``hp``: :func:`adam_hyper`)."""
        lib = library()
        dZ = _check_dense(dZ, "the encoder output gradient")
        lib.ar_encode_backward_adam(
            self.n_cols, W.shape[1], _p(self.colptr), _p(self.ccrow), _p(self.cval), _p(dZ),
            _p(W), _p(M), _p(V), *hp, _threads(),
        )  # fmt: skip

    def decode_backward_adam(
        self, g: torch.Tensor, W: torch.Tensor, H: torch.Tensor, M: torch.Tensor, V: torch.Tensor, hp
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's backward fused with the Adam step of ``W`` ``(n_cols, h)``: returns ``dH``
        (computed with the weights before the step) and the bias gradient; ``W``, ``M``, ``V`` are
        updated in place."""
        lib = library()
        H = _check_dense(H, "the hidden representation")
        g = _check_dense(g, "the output gradient")
        h = W.shape[1]
        nt = _threads()
        dH = torch.empty(self.n_rows, h, dtype=torch.float32)
        db = torch.empty(self.n_cols, dtype=torch.float32)
        scratch = self._scratch(h, nt)
        lib.ar_decode_backward_adam(
            self.n_rows, self.n_cols, h, _p(self.colptr), _p(self.ccrow), _p(self._csr("cpos")), _p(g), _p(W),
            _p(H), _p(M), _p(V), _p(dH), _p(db), _p(scratch), *hp, nt,
        )  # fmt: skip
        return dH, db

    def decode_step_adam(
        self, H: torch.Tensor, W: torch.Tensor, bias: torch.Tensor, M: torch.Tensor, V: torch.Tensor, mult: float, hp
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The decoder's forward, backward and the Adam step of ``W`` in one pass, for an identity
        output and the loss ``mult * sse`` (``sse``: the sum of squared errors at the batch's entries
        against its values): returns ``dH`` (with the weights before the step), the bias gradient
        and ``sse`` (summed in double, rounded to float32: inf where a float32 loss overflows, as on
        the two-pass path); ``W``, ``M``, ``V`` are updated in place."""
        lib = library()
        H = _check_dense(H, "the hidden representation")
        b = _check_dense(bias.detach(), "the bias")
        h = W.shape[1]
        nt = _threads()
        dH = torch.empty(self.n_rows, h, dtype=torch.float32)
        db = torch.empty(self.n_cols, dtype=torch.float32)
        scratch = self._scratch(h, nt)
        sse = lib.ar_decode_step_adam(
            self.n_rows, self.n_cols, h, _p(self.colptr), _p(self.ccrow), _p(self.cval), _p(W), _p(b), _p(H),
            _p(M), _p(V), _p(dH), _p(db), _p(scratch), float(mult), *hp, nt,
        )  # fmt: skip
        return dH, db, float(sse)

    def column_sums(self, vals: torch.Tensor) -> torch.Tensor:
        """Per-column sums of entry values (CSR order): ``(n_cols,)``."""
        vals = _check_dense(vals, "the entry values")
        return torch.zeros(self.n_cols, dtype=torch.float32).index_add_(0, self._csr("col"), vals)

    def spmm_t(self, vals: torch.Tensor | None, G: torch.Tensor) -> torch.Tensor:
        """``S^T @ G`` (``vals`` as in :meth:`spmm`): ``(n_cols, h)``, every row written."""
        lib = library()
        G = _check_dense(G, "the dense operand")
        cv = self._column_values(vals)
        h = G.shape[1]
        out = self._wide(h)
        lib.ar_spmm_t(self.n_cols, h, _p(self.colptr), _p(self.ccrow), _p(cv), _p(G), _p(out), _threads())
        return out

    def sddmm(self, H: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``H[row_k] . W[col_k]`` (``+ bias[col_k]``) for every entry k, in CSR order: ``(nnz,)``."""
        lib = library()
        H = _check_dense(H, "the hidden representation")
        W = _check_dense(W, "the weight")
        b = None if bias is None else _check_dense(bias.detach(), "the bias")
        out = torch.empty(self.nnz, dtype=torch.float32)
        lib.ar_sddmm(
            self.n_cols,
            H.shape[1],
            _p(self.colptr),
            _p(self.ccrow),
            _p(self._csr("cpos")),
            _p(H),
            _p(W),
            None if b is None else _p(b),
            _p(out),
            _threads(),
        )
        return out


class _Encode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, W_t: torch.Tensor, batch: Batch) -> torch.Tensor:  # W_t: (n_in, h)
        ctx.batch = batch
        return batch.spmm(None, W_t)

    @staticmethod
    def backward(ctx, dZ: torch.Tensor):
        batch = ctx.batch
        dW = batch.spmm_t(None, dZ) if ctx.needs_input_grad[0] else None
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
    ``drop_batch`` as ``AutoRecNet.hidden_tail``'s dropout argument)."""
    first = net.layers[0]
    # the (n_in, h) parameter itself, not a view of it: its gradient is then the kernel's output,
    # handed to the parameter without a copy (a view's gradient is cloned by AccumulateGrad)
    w_t = first.weight_t if isinstance(first, TransposedLinear) else first.weight.t()
    z0 = encode(w_t, batch) + first.bias
    return net.hidden_tail(z0, drop_batch)


def sparse_sse(
    net, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, n_rows: int, activation, drop_batch=None
) -> torch.Tensor:
    """The batch's sum of squared errors at its observed entries, as the torch sparse path
    computes it (``AutoRecNet.forward``), through the native kernels."""
    batch = Batch(crow, col, val, n_rows, net.n_in, pool=grad_pool(net))
    h = hidden(net, batch, drop_batch)
    last = net.layers[-1]
    pred = activation(decode(h, last.weight, batch, last.bias))
    return ((pred - batch._csr("val")) ** 2).sum()


def adam_hyper(group: dict, state: dict) -> tuple[float, ...]:
    """Count one more Adam step in ``state["step"]`` and return the fused kernels' hyperparameters
    for it, as torch's Adam computes them (in double): ``(beta1, beta2, eps, weight_decay,
    lr / (1 - beta1^t), sqrt(1 - beta2^t))``."""
    beta1, beta2 = (float(b) for b in group["betas"])
    state["step"] += 1
    t = float(state["step"].item())
    step_size = float(group["lr"]) / (1.0 - beta1**t)
    bc2_sqrt = (1.0 - beta2**t) ** 0.5
    return (beta1, beta2, float(group["eps"]), float(group["weight_decay"]), step_size, bc2_sqrt)


class FusedAdam:
    """Adam on the two wide weights fused into their gradient passes (``extra={"fused_step": True}``).

    The same algorithm as :class:`torch.optim.Adam` (amsgrad and maximize off, coupled weight decay),
    float32, in fewer passes over the ``(n_in, h)`` weights: the decoder's backward updates each
    weight row right after reading it (``ar_decode_backward_adam``), and the encoder's weight
    gradient is summed per row and applied at once (``ar_encode_backward_adam``), so neither wide
    gradient is ever written to memory, and the optimizer does not re-read them.  With an identity
    output (AutoRec's, D2L's) the decoder's forward joins that pass too (``ar_decode_step_adam``:
    each entry's output, error and gradient are computed where the backward needs them), so the
    decoder weight is read once per step.  Per step, each wide parameter is read or written 7 times
    (6 for the decoder's with the identity output) instead of 9-10 (forward read, the unfused
    backward's gradient write, and Adam's 7 float reads/writes).

    Use: :meth:`train_step` runs one optimizer step's forward and backward for a batch and the wide
    weights' Adam steps; the backward of the hidden layers leaves their gradients in ``.grad`` as
    usual, and the optimizer's ``step()`` then updates every other parameter (the wide weights have
    no ``.grad``, so torch skips them).  The wide weights' moments live in the optimizer's own state
    (``exp_avg``, ``exp_avg_sq``, ``step``), so checkpoints and ``state_dict`` are those of plain
    Adam.  Rounding differs from torch's kernels (``tests/test_scale_native.py`` compares the
    parameters after several steps); the one-pass decoder gives bitwise the weights of the two-pass
    one (one dot-product routine, the same gradient arithmetic); its loss is summed in double and
    rounded to float32."""

    def __init__(self, net, opt: torch.optim.Optimizer):
        if not isinstance(opt, torch.optim.Adam):
            raise ConfigError(f"fused_step needs the Adam optimizer, not {type(opt).__name__}")
        if len(opt.param_groups) != 1:
            raise ConfigError("fused_step needs one optimizer parameter group")
        group = opt.param_groups[0]
        for key in ("amsgrad", "maximize", "capturable", "differentiable"):
            if group.get(key):
                raise ConfigError(f"fused_step supports plain Adam only, not {key}=True")
        first = net.layers[0]
        if not isinstance(first, TransposedLinear):
            raise ConfigError("fused_step needs the native kernels (the first layer stored transposed)")
        self.net, self.opt = net, opt
        self.w0, self.w1 = first.weight_t, net.layers[-1].weight
        #: the decoder's forward, backward and Adam step in one pass (identity output); ``False``:
        #: the forward product first, then the fused backward + Adam pass
        self.one_pass = net.activations[-1] == "identity"

    @property
    def csr_order(self) -> bool:
        """Whether :meth:`train_step` reads the batch's CSR-order arrays (the two-pass decoder's
        loss and gradient scatter do; the one-pass step reads the column-ordered ones only), as
        :meth:`Batch.gather`'s ``csr_order``."""
        return not self.one_pass

    def _state(self, p: torch.Tensor) -> dict:
        st = self.opt.state[p]
        if not st:  # as torch's Adam initialises it (a float32 step counter on the CPU)
            st["step"] = torch.tensor(0.0, dtype=torch.float32)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return st

    def train_step(self, batch: Batch, *, mult: float, check: Callable[[float], None]) -> tuple[float, float]:
        """One step on a batch of the network's width (with its CSR-order arrays where
        :attr:`csr_order` says so) for the loss ``mult * sse`` (``sse``: the batch's sum of squared
        errors at its observed entries, as :meth:`AutoRecNet.forward`): the wide weights take their
        Adam step, the other parameters get their ``.grad``.  ``check(loss)`` is called with the
        batch's loss before the encoder's pass (before any weight moves on the two-pass decoder; after
        the decoder's one-pass update, which a failing check leaves behind: the fit stops there).
        Returns ``(loss, sse)``."""
        net = self.net
        first, last = net.layers[0], net.layers[-1]
        if batch.n_cols != net.n_in:
            raise ValueError(f"FusedAdam.train_step: a batch of width {batch.n_cols} for a network of width {net.n_in}")
        with record_function("native::encode"):
            z0 = batch.spmm(None, self.w0.detach()).requires_grad_(True)
        hid = net.hidden_tail(z0 + first.bias, drop_batch(batch.n_rows))
        hd = hid.detach().contiguous()
        group = self.opt.param_groups[0]
        st1 = self._state(self.w1)
        if self.one_pass:
            with torch.no_grad(), record_function("native::decode_step_adam"):
                dH, db, sse_v = batch.decode_step_adam(
                    hd, self.w1, last.bias, st1["exp_avg"], st1["exp_avg_sq"], mult, adam_hyper(group, st1)
                )
            loss_v = sse_v * mult
            check(loss_v)
        else:
            with record_function("native::decode"):
                z = batch.sddmm(hd, self.w1.detach(), last.bias.detach()).requires_grad_(True)
            sse = ((net.output(z) - batch._csr("val")) ** 2).sum()
            loss = sse * mult
            loss.backward()
            loss_v, sse_v = torch.stack([loss.detach(), sse.detach()]).tolist()
            check(loss_v)
            with torch.no_grad(), record_function("native::decode_backward_adam"):
                dH, db = batch.decode_backward_adam(
                    _grad(z, "decoder outputs"), self.w1, hd, st1["exp_avg"], st1["exp_avg_sq"], adam_hyper(group, st1)
                )
        last.bias.grad = db if last.bias.grad is None else last.bias.grad + db
        hid.backward(dH)
        st0 = self._state(self.w0)
        with torch.no_grad(), record_function("native::encode_backward_adam"):
            dZ = _grad(z0, "encoder outputs")
            batch.encode_backward_adam(dZ, self.w0, st0["exp_avg"], st0["exp_avg_sq"], adam_hyper(group, st0))
        return loss_v, sse_v


def _grad(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.grad is None:  # the network's graph does not connect them (a bug, not a user error)
        raise RuntimeError(f"FusedAdam.train_step: the backward did not reach the {what}")
    return t.grad
