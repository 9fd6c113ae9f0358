"""Cost models for AutoRec at scale: FLOP counts, a memory estimator, and a dense-matmul probe.

Framework-free (numpy, stdlib and psutil only); :func:`dense_matmul_gflops` imports torch lazily,
inside the function, so importing this module never imports a framework.

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
grows with the ratings, the dense one's with rows x columns.

**Memory** (:func:`estimate_memory`).  The peak resident memory of a run, as the maximum over its
stages (generate/load the ratings, split them, build the training matrix, train), each the sum of
named components, with the per-rating and per-parameter byte counts of this code base
(:class:`Footprint`; calibrated against measured peak RSS, see ``results/scale.md``).  The
``dense-full`` path is the seed (D2L) formulation, which densifies the whole matrix: it needs the
train matrix, the test matrix and the full reconstruction, ``3 R N`` float32 at the least.
:func:`check_memory` refuses a run whose estimate exceeds the budget with
:class:`~autorec.errors.MemoryBudgetError` before any work starts.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from autorec.errors import ConfigError, MemoryBudgetError

__all__ = [
    "PATHS", "SHAPES", "Workload", "Footprint", "MemoryEstimate", "epoch_flops", "flop_formula",
    "dense_full_bytes", "estimate_memory", "check_memory", "default_memory_limit", "total_memory",
    "parse_bytes", "format_bytes", "max_batch_nnz", "dense_matmul_gflops", "optimizer_bytes",
    "epoch_traffic_bytes", "stream_bandwidth_gbs",
]

#: paths the estimator knows: the torch backend's two training paths, and the seed's formulation
PATHS = ("sparse", "dense", "dense-full")

#: (n_users, n_items, n_ratings) of the real datasets (as ``autorec.data.synthetic.SHAPES``)
SHAPES: dict[str, tuple[int, int, int]] = {
    "ml-100k": (943, 1682, 100_000),
    "ml-1m": (6040, 3706, 1_000_209),
    "ml-10m": (69_878, 10_677, 10_000_054),
    "ml-20m": (138_493, 26_744, 20_000_263),
    "ml-25m": (162_541, 59_047, 25_000_095),
    "netflix": (480_189, 17_770, 100_480_507),
}

F32 = 4
GB = 1e9
GiB = 1024 ** 3


# ====================================================================== the workload
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
    def from_shape(cls, n_users: int, n_items: int, nnz: int, *, based: str = "item",
                   hidden: Iterable[int] = (500,), batch_size: int = 256) -> "Workload":
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
            if k == 0:                       # sparse input: forward + weight gradient
                total += 2 * 2 * w.nnz * s[1]
            elif k == n_layers - 1:          # sampled output: forward + weight grad + input grad
                total += 3 * 2 * w.nnz * s[k]
            else:                            # dense middle layer
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


def epoch_traffic_bytes(w: Workload, path: str, optimizer: str = "adam") -> dict[str, int]:
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
    """
    per_param = {"adam": 7, "sgd": 3}.get(optimizer, 7)
    s = w.sizes
    outer = s[0] * s[1] + s[-2] * s[-1]
    steps = w.steps_per_epoch
    out = {"optimizer": steps * per_param * F32 * w.n_params,
           "gradient writes": steps * F32 * w.n_params,
           "weight reads": steps * 3 * F32 * outer}
    if path == "sparse":
        out["observed entries"] = 4 * 12 * w.nnz
    else:
        out["dense batch tensors"] = 10 * F32 * w.n_rows * w.n_in
    out["total"] = sum(out.values())
    return out


# ====================================================================== memory
def parse_bytes(text: "str | int | float", *, total: int | None = None) -> int:
    """``"19GB"``, ``"19.5G"``, ``"512MiB"``, ``"80%"`` (of ``total``, default the machine's RAM),
    or a plain number of bytes."""
    if isinstance(text, bool):
        raise ConfigError(f"memory size {text!r} is not a size")
    if isinstance(text, (int, float)):
        if text <= 0:
            raise ConfigError(f"memory size {text!r} must be > 0")
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%|[kKmMgGtT]?i?[bB]?)?\s*", str(text))
    if not m:
        raise ConfigError(f"memory size {text!r} is not a size: write e.g. 19GB, 512MiB, 80% or a byte count")
    value = float(m.group(1))
    unit = (m.group(2) or "").lower()
    if unit == "%":
        if not 0 < value <= 100:
            raise ConfigError(f"memory size {text!r}: a percentage must be in (0, 100]")
        return int(value / 100.0 * (total if total is not None else total_memory()))
    mult = {"": 1, "b": 1}
    for i, p in enumerate("kmgt", start=1):
        mult[p] = mult[p + "b"] = 1000 ** i
        mult[p + "i"] = mult[p + "ib"] = 1024 ** i
    if unit not in mult:
        raise ConfigError(f"memory size {text!r}: unknown unit {m.group(2)!r} (use B, KB, MB, GB, GiB or %)")
    out = int(value * mult[unit])
    if out <= 0:
        raise ConfigError(f"memory size {text!r} must be > 0")
    return out


def format_bytes(n: float) -> str:
    """Bytes as GB (10^9) with one decimal at and above 1 GB, MB below."""
    n = float(n)
    if abs(n) >= GB:
        return f"{n / GB:.1f} GB"
    return f"{n / 1e6:.0f} MB"


def total_memory() -> int:
    """The machine's RAM in bytes (psutil; ``/proc/meminfo`` as a fallback)."""
    try:
        import psutil
        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover - psutil is a dependency
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read the machine's memory size")  # pragma: no cover


def default_memory_limit(fraction: float = 0.8) -> int:
    """The default ``--max-memory``: ``fraction`` (80 %) of the machine's RAM."""
    return int(fraction * total_memory())


@dataclass(frozen=True)
class Footprint:
    """Bytes per rating / parameter / batch entry of each part of this code base's pipeline.

    Ratings table: users + items (int32) + rating (float32) + timestamp (int64) = 20 B per rating.
    Split: the index arrays (int64, 8 B per rating), plus the transient sorts/keys of the split
    checks and of the content hash.  A part as :class:`~autorec.interactions.Interactions`: 12 B per
    rating.  The CSR training matrix: data float32 + indices int32 = 8 B per rating (+ the COO
    arrays it is built from while it is built).  The torch model's own copy of its training matrix
    (none: it keeps references to the train part and its CSR and builds int64 index tensors per
    batch, counted with the batch).  Model state: weights,
    gradients and the two Adam moments, 4 float32 per parameter; a checkpoint holds the serialised
    optimizer state and a copy of the weights while it is written (3 float32 per parameter, measured
    1.5x the Adam state).  Activations: per observed entry
    of a batch on the sparse path, per dense input element of a batch on the dense path, and per
    (batch row x hidden unit) on both.
    """

    runtime: int = 450 * 10**6           # python, numpy/scipy/pandas, torch and its thread pools, the
                                         # kernels, the matmul probe: measured 440-470 MB at ML-1M shape
    table_per_rating: int = 20
    generate_transient_per_rating: int = 16   # measured 14 B/rating at ML-10M shape
    split_index_per_rating: int = 8
    split_transient_per_rating: int = 56      # measured 52 (np.unique / intersect1d / isin sorts, hash)
    part_per_rating: int = 12
    csr_per_rating: int = 8
    csr_transient_per_rating: int = 8         # measured: peak 22.6 B/rating with the parts held
    model_matrix_per_rating: int = 0     # the torch model references the train part and its CSR (counted)
    state_floats_per_param: int = 4      # weight, gradient, Adam m and v
    checkpoint_floats_per_param: int = 3
    sparse_bytes_per_batch_nnz: int = 64
    dense_floats_per_batch_input: int = 6
    floats_per_batch_hidden: int = 8
    predict_bytes_per_pair: int = 64


DEFAULT_FOOTPRINT = Footprint()


def optimizer_bytes(w: Workload, optimizer: str = "adam") -> int:
    """Bytes of weights + gradients + optimizer state: 4 floats per parameter for Adam, 3 for SGD
    with momentum / Rprop, 2 for plain SGD."""
    floats = {"adam": 4, "sparse-adam": 4, "rprop": 4, "sgd": 2, "lbfgs": 2 + 2 * 10}.get(optimizer)
    if floats is None:
        raise ConfigError(f"optimizer={optimizer!r}: no memory model (known: adam, sparse-adam, sgd, rprop, lbfgs)")
    return floats * F32 * w.n_params


def dense_full_bytes(n_rows: int, n_in: int) -> int:
    """The seed (D2L) formulation's dense matrices: train input, test matrix and the full
    reconstruction it evaluates, each ``n_rows x n_in`` float32 (a lower bound: no temporaries)."""
    return 3 * F32 * int(n_rows) * int(n_in)


def max_batch_nnz(row_counts, batch_size: int) -> int:
    """An upper bound on the observed entries of any batch of ``batch_size`` rows: the sum of the
    ``batch_size`` largest row counts (exact for the worst batch any shuffle can draw)."""
    import numpy as np

    counts = np.asarray(row_counts, dtype=np.int64)
    k = min(int(batch_size), len(counts))
    if k == 0:
        return 0
    if k == len(counts):
        return int(counts.sum())
    return int(np.partition(counts, len(counts) - k)[len(counts) - k:].sum())


@dataclass
class MemoryEstimate:
    """Estimated peak resident memory of one run: ``stages`` maps a stage to its components
    (bytes); ``total`` is the largest stage's sum; ``peak_stage`` names it."""

    path: str
    workload: Workload
    stages: dict[str, dict[str, int]]
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def stage_totals(self) -> dict[str, int]:
        return {k: int(sum(v.values())) for k, v in self.stages.items()}

    @property
    def total(self) -> int:
        return max(self.stage_totals.values())

    @property
    def peak_stage(self) -> str:
        t = self.stage_totals
        return max(t, key=t.get)

    def describe(self) -> str:
        parts = sorted(self.stages[self.peak_stage].items(), key=lambda kv: -kv[1])
        body = ", ".join(f"{k} {format_bytes(v)}" for k, v in parts if v >= 1e6)
        return f"{format_bytes(self.total)} at the {self.peak_stage} stage ({body})"

    def to_dict(self) -> dict:
        return {"path": self.path, "workload": asdict(self.workload), "total_bytes": self.total,
                "peak_stage": self.peak_stage, "stage_totals": self.stage_totals,
                "stages": self.stages, "assumptions": self.assumptions}


def estimate_memory(n_users: int, n_items: int, n_ratings: int, *, based: str = "item",
                    hidden: Iterable[int] = (500,), batch_size: int = 256, path: str = "sparse",
                    optimizer: str = "adam", test_ratio: float = 0.1, valid_ratio: float = 0.05,
                    batch_nnz: int | None = None, batch_skew: float = 4.0, keep_ratings: bool = False,
                    checkpoint: bool = False, footprint: Footprint = DEFAULT_FOOTPRINT) -> MemoryEstimate:
    """Peak resident memory of training AutoRec on a dataset of this shape (see :class:`Footprint`).

    ``batch_nnz``: the largest batch's observed entries if known (:func:`max_batch_nnz` of the
    training matrix's row counts); otherwise ``batch_skew`` times the mean batch.  ``keep_ratings``:
    the full ratings table and split stay alive while training (the harness keeps the split data);
    the scale runner frees them before training.  ``checkpoint``: the run writes checkpoints
    (their transient copies count in the training stage).
    """
    if path not in PATHS:
        raise ConfigError(f"path={path!r} is not one of {list(PATHS)}")
    n = int(n_ratings)
    n_test = int(round(test_ratio * n))
    n_pool = n - n_test
    n_valid = int(round(valid_ratio * n_pool))
    n_train = n_pool - n_valid
    w = Workload.from_shape(n_users, n_items, n_train, based=based, hidden=hidden, batch_size=batch_size)
    fp = footprint
    table = fp.table_per_rating * n + 8 * (int(n_users) + int(n_items))
    split_idx = fp.split_index_per_rating * n
    parts = fp.part_per_rating * n
    held_data = (table + split_idx) if keep_ratings else 0
    train_part = fp.part_per_rating * (n_train + n_test + n_valid)
    csr = fp.csr_per_rating * n_train + 8 * (w.n_rows + 1)
    assumptions: dict[str, Any] = {"n_train": n_train, "n_valid": n_valid, "n_test": n_test,
                                   "keep_ratings": keep_ratings, "optimizer": optimizer}
    if batch_nnz is None:
        bnnz = int(min(n_train, math.ceil(batch_skew * w.mean_batch_nnz)))
        assumptions["batch_nnz"] = f"{batch_skew:g} x mean batch = {bnnz}"
    else:
        bnnz = int(batch_nnz)
        assumptions["batch_nnz"] = f"measured bound {bnnz}"
    b = min(w.batch_size, w.n_rows)
    hidden_act = fp.floats_per_batch_hidden * F32 * b * sum(w.hidden)

    stages: dict[str, dict[str, int]] = {
        "generate": {"runtime": fp.runtime, "ratings table": table,
                     "generator temporaries": fp.generate_transient_per_rating * n},
        "split": {"runtime": fp.runtime, "ratings table": table, "split indices": split_idx,
                  "split checks and hash": fp.split_transient_per_rating * n},
        "parts": {"runtime": fp.runtime, "ratings table": table, "split indices": split_idx,
                  "train/valid/test parts": parts},
        "matrix": {"runtime": fp.runtime, "held ratings + split": held_data,
                   "train/valid/test parts": train_part, "CSR matrix": csr,
                   "CSR construction": fp.csr_transient_per_rating * n_train},
    }
    model_state = optimizer_bytes(w, "adam" if optimizer in ("adam", "sparse-adam") else optimizer)
    train = {"runtime": fp.runtime, "held ratings + split": held_data,
             "train/valid/test parts": train_part, "CSR matrix": csr,
             "weights, gradients, optimizer state": model_state, "hidden activations": hidden_act}
    if path == "sparse":
        train["model's training matrix"] = fp.model_matrix_per_rating * n_train
        train["batch activations (per observed entry)"] = fp.sparse_bytes_per_batch_nnz * bnnz
    elif path == "dense":
        train["model's training matrix"] = fp.model_matrix_per_rating * n_train
        train["batch activations (dense rows)"] = fp.dense_floats_per_batch_input * F32 * b * w.n_in
    else:  # dense-full: the seed densifies the whole train and test matrices
        train["dense train + test matrices and reconstruction"] = dense_full_bytes(w.n_rows, w.n_in)
        train["batch activations (dense rows)"] = fp.dense_floats_per_batch_input * F32 * b * w.n_in
        assumptions["dense_full"] = "3 x rows x n_in float32 (train input, test matrix, full reconstruction)"
    if checkpoint:
        train["checkpoint being written"] = fp.checkpoint_floats_per_param * F32 * w.n_params
        assumptions["checkpoint"] = True
    stages["train"] = train
    return MemoryEstimate(path=path, workload=w, stages=stages, assumptions=assumptions)


def check_memory(estimate: MemoryEstimate, limit: int, *, what: str = "this run") -> None:
    """Raise :class:`MemoryBudgetError` when ``estimate.total`` exceeds ``limit`` bytes."""
    if estimate.total > int(limit):
        w = estimate.workload
        hint = ("use path='sparse'" if estimate.path != "sparse"
                else "use a smaller hidden size or batch, or a machine with more memory")
        raise MemoryBudgetError(
            f"{what} does not fit: needs {format_bytes(estimate.total)} (estimate: {estimate.describe()}; "
            f"{w.n_rows} rows x {w.n_in} columns, {w.nnz} training ratings, hidden {list(w.hidden)}, "
            f"path {estimate.path}) but the memory limit is {format_bytes(limit)} (--max-memory); "
            f"{hint}, or raise --max-memory if the machine has the memory")


# ====================================================================== the dense-matmul probe
def dense_matmul_gflops(n: int = 2048, *, repeats: int = 7, threads: int | None = None,
                        shapes: Iterable[tuple[int, int, int]] | None = None) -> dict:
    """Measured float32 dense matmul throughput of this machine with torch (the practical limit).

    Times ``repeats`` products of ``(m, k) @ (k, n)`` after one warm-up each and reports the median
    GFLOP/s (``2 m k n / seconds``) per shape; ``gflops`` is the best shape's median.  Threads: the
    current torch setting unless ``threads`` is given (restored afterwards).
    """
    import torch

    shapes = list(shapes) if shapes is not None else [(n, n, n)]
    if repeats < 3:
        raise ConfigError(f"repeats={repeats!r}: at least 3 timed products are needed for a median")
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        results = []
        gen = torch.Generator().manual_seed(0)
        for (m, k, nn) in shapes:
            a = torch.randn(m, k, generator=gen, dtype=torch.float32)
            b = torch.randn(k, nn, generator=gen, dtype=torch.float32)
            out = torch.empty(m, nn, dtype=torch.float32)
            torch.mm(a, b, out=out)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                torch.mm(a, b, out=out)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            results.append({"m": m, "k": k, "n": nn, "median_seconds": med,
                            "gflops": 2.0 * m * k * nn / med / 1e9,
                            "best_gflops": 2.0 * m * k * nn / min(times) / 1e9})
        return {"gflops": max(r["gflops"] for r in results), "dtype": "float32", "library": "torch.mm",
                "threads": torch.get_num_threads(), "repeats": repeats, "shapes": results,
                "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    finally:
        torch.set_num_threads(old)


def stream_bandwidth_gbs(n_bytes: int = 256 * 10**6, *, repeats: int = 5) -> dict:
    """Measured main-memory bandwidth with torch: ``c = a + b`` on float32 arrays of ``n_bytes``
    each (3 x n_bytes moved per add), median GB/s over ``repeats`` after a warm-up."""
    import torch

    if repeats < 3:
        raise ConfigError(f"repeats={repeats!r}: at least 3 timed runs are needed for a median")
    n = max(int(n_bytes) // F32, 1)
    a = torch.ones(n, dtype=torch.float32)
    b = torch.ones(n, dtype=torch.float32)
    c = torch.empty(n, dtype=torch.float32)
    torch.add(a, b, out=c)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.add(a, b, out=c)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"gbs": 3 * F32 * n / med / 1e9, "bytes_per_array": F32 * n, "kernel": "torch.add(a, b, out=c)",
            "threads": torch.get_num_threads(), "repeats": repeats}
