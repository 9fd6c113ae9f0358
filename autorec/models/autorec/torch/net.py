"""The AutoRec network in PyTorch, and its two training paths (one objective).

- ``path="dense"``: every batch is densified from CSR into a ``(batch, n_in)`` input; the output is
  multiplied by the observed mask (as D2L's ``pred * sign(x)``) and compared with the input.
- ``path="sparse"``: the batch stays a ``torch.sparse_csr_tensor``; the first layer is
  ``torch.sparse.mm(X, W_0^T)`` (O(nnz * h)), the middle layers are dense ``(batch, h)``, and the
  output layer is evaluated at the observed entries only with ``torch.sparse.sampled_addmm`` (the
  row-wise dot of each observed entry's hidden vector and decoder row, O(nnz * h)), plus the bias
  gathered at the observed columns.  No ``(batch, n_in)`` tensor is ever built on this path; with
  ``kernel="native"`` the sparse products run in :mod:`.native` instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "tanh": torch.tanh,
    "elu": F.elu,
    "selu": F.selu,
}

#: elements (pairs x hidden units) per chunk of :meth:`AutoRecNet.decode_pairs` on the CPU (1 MB buffers)
PAIR_CHUNK = 1 << 18

#: ``(global batch rows, offset, stride)``: which rows of a global batch a call holds (see ``_drop``)
DropBatch = tuple[int, int, int]


def drop_batch(n_rows: int, batch_rows: int | None = None, offset: int = 0, stride: int = 1) -> DropBatch:
    """The :data:`DropBatch` of a call holding ``n_rows`` rows (the whole batch by default)."""
    return (int(batch_rows if batch_rows is not None else n_rows), int(offset), int(stride))


def csr_tensor(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    """A ``torch.sparse_csr_tensor`` of the given CSR arrays (torch's beta warning silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, val, size=(n_rows, n_cols), check_invariants=False)


class AutoRecNet(nn.Module):
    """The encoder-decoder stack ``sizes = [n_in, *hidden, n_in]`` (``layers[k]`` is ``W{k}, b{k}``).

    ``forward(crow, col, val, n_rows)`` takes one CSR batch and returns the sum of squared errors at
    its observed entries along the configured path (one entry point, so DistributedDataParallel
    can wrap it)."""

    def __init__(self, sizes: list[int], activations: list[str], dropout: float, path: str, kernel: str = "torch"):
        super().__init__()
        self.sizes = list(sizes)
        self.activations = list(activations)
        self.dropout = float(dropout)
        self.path = path
        # nn.Linear per layer (the first a native.TransposedLinear with the native kernels)
        self.layers: Any = nn.ModuleList(nn.Linear(sizes[k], sizes[k + 1]) for k in range(len(sizes) - 1))
        self.kernel = kernel
        if kernel == "native":  # first-layer weight stored (n_in, h)-contiguous for the kernels
            from autorec.models.autorec.torch import native

            native.store_first_layer_transposed(self)

    @property
    def n_in(self) -> int:
        return self.sizes[0]

    def output(self, z: torch.Tensor) -> torch.Tensor:
        """The output activation."""
        return ACTIVATIONS[self.activations[-1]](z)

    def _drop(self, h: torch.Tensor, batch: DropBatch | None) -> torch.Tensor:
        """Inverted dropout.  The keep mask is drawn for the whole *global* batch, ``(batch_rows,
        width)``, and this call keeps its rows ``offset::stride`` (``batch = (batch_rows, offset,
        stride)``): a data-parallel rank then draws exactly the masks the single-device run draws for
        the same rows."""
        if not self.training or self.dropout <= 0:
            return h
        if batch is None:
            keep = torch.rand(h.shape, device=h.device) >= self.dropout
        else:
            rows, offset, stride = batch
            keep = (torch.rand((rows, h.shape[1]), device=h.device) >= self.dropout)[offset::stride]
        return h * keep.to(h.dtype) * (1.0 / (1.0 - self.dropout))

    def hidden_tail(self, z0: torch.Tensor, batch: DropBatch | None = None) -> torch.Tensor:
        """From the first layer's pre-activation to the last hidden representation (activations,
        dropout on every hidden output, dense middle layers)."""
        h = self._drop(ACTIVATIONS[self.activations[0]](z0), batch)
        for k in range(1, len(self.layers) - 1):
            h = self._drop(ACTIVATIONS[self.activations[k]](self.layers[k](h)), batch)
        return h

    def forward_dense(self, x: torch.Tensor, batch: DropBatch | None = None) -> torch.Tensor:
        """The full reconstruction ``(batch, n_in)`` of dense inputs."""
        h = self.hidden_tail(self.layers[0](x), batch)
        return self.output(self.layers[-1](h))

    def hidden_sparse(self, x_csr: torch.Tensor, batch: DropBatch | None = None) -> torch.Tensor:
        """The last hidden representation of a sparse CSR batch: ``sparse.mm(X, W0^T) + b0`` first."""
        first = self.layers[0]
        z0 = torch.sparse.mm(x_csr, first.weight.t()) + first.bias
        return self.hidden_tail(z0, batch)

    def decode_observed(self, h: torch.Tensor, pattern_csr: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """The outputs at the stored entries of ``pattern_csr`` (in its CSR order) only."""
        last = self.layers[-1]
        z = torch.sparse.sampled_addmm(pattern_csr, h, last.weight.t(), beta=0.0).values()
        return self.output(z + last.bias[col])

    def decode_pairs(self, h: torch.Tensor, local: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """Outputs at arbitrary (row-of-h, column) pairs: row-wise dot with gathered decoder rows,
        ``(h[local] * W[col]).sum(dim=1) + b[col]``.  On the CPU in chunks of
        :data:`PAIR_CHUNK` elements through two reused buffers, which gives the same floats (the
        products are elementwise, and each pair's sum is its own row's reduction) without the
        ``(pairs, h)`` temporaries: on ML-100K's validation pairs 5-7x faster, and a group of 1M
        pairs at h = 500 no longer needs 6 GB."""
        last = self.layers[-1]
        W = last.weight
        if h.device.type != "cpu":  # one kernel each (a GPU reduction's order may depend on the shape)
            return self.output((h[local] * W[col]).sum(dim=1) + last.bias[col])
        n, width = int(local.numel()), int(h.shape[1])
        # at least two pairs a chunk: torch reduces a lone long row (>= 32768 elements) on several
        # threads, in another order than a row among others
        step = max(2, PAIR_CHUNK // max(width, 1))
        bounds = [*range(0, n, step), n]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            del bounds[-2]  # a last pair alone joins the chunk before it
        z = torch.empty(n, dtype=h.dtype)
        a = torch.empty(min(step + 1, n), width, dtype=h.dtype)
        b = torch.empty(min(step + 1, n), width, dtype=W.dtype)
        for s, e in zip(bounds[:-1], bounds[1:]):
            hs, ws = a[: e - s], b[: e - s]
            torch.index_select(h, 0, local[s:e], out=hs)
            torch.index_select(W, 0, col[s:e], out=ws)
            torch.sum(hs.mul_(ws), dim=1, out=z[s:e])
        return self.output(z + last.bias[col])

    def decode_all(self, h: torch.Tensor) -> torch.Tensor:
        """The full ``(rows, n_in)`` output from hidden representations."""
        last = self.layers[-1]
        return self.output(torch.addmm(last.bias, h, last.weight.t()))

    def forward(
        self,
        crow: torch.Tensor,
        col: torch.Tensor,
        val: torch.Tensor,
        n_rows: int,
        batch_rows: int | None = None,
        offset: int = 0,
        stride: int = 1,
    ) -> torch.Tensor:
        """Sum of squared errors at the observed entries of a CSR batch of ``n_rows`` rows: the rows
        ``offset::stride`` of a global batch of ``batch_rows`` rows (default: the whole batch)."""
        batch = drop_batch(n_rows, batch_rows, offset, stride)
        if n_rows == 0:
            # an empty share of a global batch (data-parallel): draw the same dropout masks as the
            # other ranks (keeps the RNG streams aligned) and return a zero that touches every
            # parameter, so the gradient all-reduce sees all of them
            if self.training and self.dropout > 0:
                for width in self.sizes[1:-1]:
                    torch.rand((batch[0], width), device=val.device)
            return sum((p.sum() for p in self.parameters()), torch.zeros((), device=val.device)) * 0.0
        if self.path == "sparse" and self.kernel == "native":
            from autorec.models.autorec.torch import native

            return native.sparse_sse(self, crow, col, val, n_rows, self.output, batch)
        x = csr_tensor(crow, col, val, n_rows, self.n_in)
        if self.path == "dense":
            xd = x.to_dense()
            mask = csr_tensor(crow, col, torch.ones_like(val), n_rows, self.n_in).to_dense()
            out = self.forward_dense(xd, batch)
            return ((out * mask - xd) ** 2).sum()
        h = self.hidden_sparse(x, batch)
        pred = self.decode_observed(h, x, col)
        return ((pred - val) ** 2).sum()
