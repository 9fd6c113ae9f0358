"""The shape of one AutoRec training configuration and the cost of one epoch on it.

**The workload.**  AutoRec reconstructs the rows of a sparse matrix: for I-AutoRec (``based="item"``)
the rows are the ``n_items`` items and the input width is ``n_users``; for U-AutoRec the reverse.
A :class:`Workload` holds ``n_rows``, ``n_in``, the number of training ratings ``nnz``, the hidden
layer sizes and the batch size.

**FLOPs of one training epoch** (:func:`epoch_flops`).  Only the matrix products are counted (2 per
multiply-add), forward and backward; elementwise work (activations, dropout, the loss) and the
optimizer update are not.  With layer sizes ``[N, h_1, ..., h_L, N]`` (``N = n_in``), ``R = n_rows``:

- ``dense`` (the seed's masked formulation: every row is a dense vector of width N, the output is
  masked by the input): each layer ``a -> b`` costs ``2 R a b`` forward, ``2 R a b`` for its weight
  gradient and ``2 R a b`` for its input gradient, except the first layer, whose input is data
  (no input gradient).  One hidden layer: ``F_dense = 4 R N h + 6 R N h = 10 R N h``.
- ``sparse`` (encoder input kept sparse, decoder evaluated only at the observed entries): the first
  layer costs ``2 nnz h_1`` forward (sparse x dense) plus ``2 nnz h_1`` for its weight gradient;
  the last layer costs ``2 nnz h_L`` forward (one dot product per observed entry) plus ``2 nnz h_L``
  each for its weight and input gradients; middle layers are dense, ``6 R a b``.
  One hidden layer: ``F_sparse = 4 nnz h + 6 nnz h = 10 nnz h``.

The ratio ``F_dense / F_sparse = R N / nnz`` is the inverse density: the sparse formulation's cost
grows with the ratings, the dense one's with rows x columns.  :func:`epoch_traffic_bytes` is the
matching lower bound on main-memory traffic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from autorec.data.synthetic import SHAPES
from autorec.errors import ConfigError

__all__ = ["F32", "PATHS", "SHAPES", "Workload", "epoch_flops", "epoch_traffic_bytes", "flop_formula"]

#: paths the cost models know: the torch backend's two training paths, and the seed's formulation
PATHS = ("sparse", "dense", "dense-full")

#: bytes of one float32
F32 = 4


@dataclass(frozen=True)
class Workload:
    """One AutoRec training configuration's shape: ``n_rows`` reconstructed rows of width ``n_in``,
    ``nnz`` training ratings, ``hidden`` layer sizes, ``batch_size`` rows per step."""

    n_rows: int
    n_in: int
    nnz: int
    hidden: tuple[int, ...] = (500,)
    batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("n_rows", "n_in", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"Workload.{name}={v!r} must be a positive integer")
        if not isinstance(self.nnz, int) or self.nnz < 0:
            raise ConfigError(f"Workload.nnz={self.nnz!r} must be a non-negative integer")
        if self.nnz > self.n_rows * self.n_in:
            raise ConfigError(f"Workload.nnz={self.nnz} exceeds n_rows x n_in = {self.n_rows * self.n_in}")
        hidden = tuple(int(h) for h in self.hidden)
        if not hidden or any(h <= 0 for h in hidden):
            raise ConfigError(f"Workload.hidden={list(self.hidden)!r}: sizes must be positive integers")
        object.__setattr__(self, "hidden", hidden)

    @classmethod
    def from_shape(
        cls,
        n_users: int,
        n_items: int,
        nnz: int,
        *,
        based: str = "item",
        hidden: Iterable[int] = (500,),
        batch_size: int = 256,
    ) -> Workload:
        """I-AutoRec (``based="item"``): rows are items, input width ``n_users``; U-AutoRec the reverse."""
        if based == "item":
            rows, width = n_items, n_users
        elif based == "user":
            rows, width = n_users, n_items
        else:
            raise ConfigError(f"based must be 'item' or 'user', got {based!r}")
        return cls(int(rows), int(width), int(nnz), tuple(hidden), int(batch_size))

    @property
    def sizes(self) -> list[int]:
        return [self.n_in, *self.hidden, self.n_in]

    @property
    def density(self) -> float:
        return self.nnz / float(self.n_rows * self.n_in)

    @property
    def n_params(self) -> int:
        s = self.sizes
        return sum(s[k] * s[k + 1] + s[k + 1] for k in range(len(s) - 1))

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_rows / self.batch_size)

    @property
    def mean_batch_nnz(self) -> float:
        return self.nnz / self.steps_per_epoch


# ====================================================================== FLOPs
def epoch_flops(w: Workload, path: str) -> int:
    """FLOPs of the matrix products of one training epoch (forward + backward) on ``path``
    (``dense`` / ``dense-full``: the masked dense formulation; ``sparse``).  See the module doc."""
    s = w.sizes
    n_layers = len(s) - 1
    R = w.n_rows
    if path in ("dense", "dense-full"):
        total = 0
        for k in range(n_layers):
            per = 2 * R * s[k] * s[k + 1]
            total += (2 if k == 0 else 3) * per
        return int(total)
    if path == "sparse":
        total = 0
        for k in range(n_layers):
            if k == 0:  # sparse input: forward + weight gradient
                total += 2 * 2 * w.nnz * s[1]
            elif k == n_layers - 1:  # sampled output: forward + weight grad + input grad
                total += 3 * 2 * w.nnz * s[k]
            else:  # dense middle layer
                total += 3 * 2 * R * s[k] * s[k + 1]
        return int(total)
    raise ConfigError(f"path={path!r} is not one of {list(PATHS)}")


def flop_formula(w: Workload, path: str) -> str:
    """The FLOP count of :func:`epoch_flops` as a formula, with this workload's numbers."""
    if len(w.hidden) == 1:
        h = w.hidden[0]
        if path == "sparse":
            return f"10 * nnz * h = 10 * {w.nnz} * {h}"
        return f"10 * rows * n_in * h = 10 * {w.n_rows} * {w.n_in} * {h}"
    if path == "sparse":
        return "4 nnz h_1 + 6 nnz h_L + sum_middle 6 rows a b"
    return "4 rows n_in h_1 + sum_middle 6 rows a b + 6 rows h_L n_in"


def epoch_traffic_bytes(
    w: Workload, path: str, optimizer: str = "adam", fused: bool = False, one_pass_decoder: bool = False
) -> dict[str, int]:
    """A lower bound on the main-memory traffic of one training epoch, by part (bytes).

    Per optimizer step, on both paths: Adam reads the weight, gradient and both moments and writes
    the weight and both moments (7 float32 per parameter; SGD: 3); the backward pass writes every
    gradient (1 float32 per parameter); the first and last layers' weights are read by the forward
    pass and the last one again by the backward pass (3 float32 per parameter of those layers).
    Per epoch, the sparse path streams each observed entry's index and value about 4 times
    (8 B index + 4 B value); the dense path writes and reads its dense ``(batch, n_in)`` tensors
    (the densified input and mask, output, masked output, difference and their gradients: about
    10 float32 passes per element).  Divided by the measured bandwidth it bounds the epoch time
    from below, as the FLOP count divided by the matmul rate does.

    ``fused`` (Adam fused into the wide weights' gradient passes, ``extra.fused_step``): the first and
    last layers' weights are read once by the forward pass and then read and written, with both
    moments, by the pass that computes their gradient and applies Adam (6 float32 per parameter, no
    gradient written or re-read).  ``one_pass_decoder`` (fused, identity output: the decoder's forward
    joins its gradient + Adam pass): the last layer's weight is not read by a separate forward pass
    (5 float32 per parameter of the decoder's).
    """
    per_param = {"adam": 7, "sgd": 3}.get(optimizer, 7)
    s = w.sizes
    outer = s[0] * s[1] + s[-2] * s[-1]
    steps = w.steps_per_epoch
    if fused:
        inner = w.n_params - outer
        out = {
            "optimizer": steps * F32 * (6 * outer + per_param * inner),
            "gradient writes": steps * F32 * inner,
            "weight reads": steps * F32 * (s[0] * s[1] if one_pass_decoder else outer),
        }
    else:
        out = {
            "optimizer": steps * per_param * F32 * w.n_params,
            "gradient writes": steps * F32 * w.n_params,
            "weight reads": steps * 3 * F32 * outer,
        }
    if path == "sparse":
        out["observed entries"] = 4 * 12 * w.nnz
    else:
        out["dense batch tensors"] = 10 * F32 * w.n_rows * w.n_in
    out["total"] = sum(out.values())
    return out
