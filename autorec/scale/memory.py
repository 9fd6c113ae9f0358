"""How much memory a run of AutoRec needs, before it starts.

:func:`estimate_memory` gives the peak resident memory of a run as the maximum over its stages
(generate/load the ratings, split them, build the training matrix, train), each the sum of named
components, with the per-rating and per-parameter byte counts of this code base (:class:`Footprint`;
calibrated against measured peak RSS, see ``results/scale.md``).  The ``dense-full`` path is the
seed (D2L) formulation, which densifies the whole matrix: it needs the train matrix, the test matrix
and the full reconstruction, ``3 R N`` float32 at the least.  :func:`check_memory` refuses a run
whose estimate exceeds the budget with :class:`~autorec.errors.MemoryBudgetError` before any work
starts; :func:`parse_bytes` reads a budget (``19GB``, ``80%``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from autorec.errors import ConfigError, MemoryBudgetError
from autorec.scale.workload import F32, PATHS, Workload

#: one gigabyte as every size here is printed (10^9 bytes)
GB = 1e9


def parse_bytes(text: str | int | float, *, total: int | None = None) -> int:
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
        mult[p] = mult[p + "b"] = 1000**i
        mult[p + "i"] = mult[p + "ib"] = 1024**i
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
    batch, counted with the batch).  Model state (weights, gradients, optimizer state) is
    :func:`optimizer_bytes`; a checkpoint holds the serialised optimizer state and a copy of the
    weights while it is written (3 float32 per parameter, measured 1.5x the Adam state).
    Activations: per observed entry of a batch on the sparse path, per dense input element of a
    batch on the dense path, and per (batch row x hidden unit) on both.
    """

    # python, numpy/scipy/pandas, torch and its thread pools, the kernels, the matmul probe:
    # measured 440-470 MB at ML-1M shape
    runtime: int = 450 * 10**6
    table_per_rating: int = 20
    generate_transient_per_rating: int = 16  # measured 14 B/rating at ML-10M shape
    split_index_per_rating: int = 8
    split_transient_per_rating: int = 56  # measured 52 (np.unique / intersect1d / isin sorts, hash)
    part_per_rating: int = 12
    csr_per_rating: int = 8
    csr_transient_per_rating: int = 8  # measured: peak 22.6 B/rating with the parts held
    model_matrix_per_rating: int = 0  # the torch model references the train part and its CSR (counted)
    checkpoint_floats_per_param: int = 3
    sparse_bytes_per_batch_nnz: int = 64
    dense_floats_per_batch_input: int = 6
    floats_per_batch_hidden: int = 8


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
    counts = np.asarray(row_counts, dtype=np.int64)
    k = min(int(batch_size), len(counts))
    if k == 0:
        return 0
    if k == len(counts):
        return int(counts.sum())
    return int(np.partition(counts, len(counts) - k)[len(counts) - k :].sum())


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
        return max(t, key=lambda k: t[k])

    def describe(self) -> str:
        parts = sorted(self.stages[self.peak_stage].items(), key=lambda kv: -kv[1])
        body = ", ".join(f"{k} {format_bytes(v)}" for k, v in parts if v >= 1e6)
        return f"{format_bytes(self.total)} at the {self.peak_stage} stage ({body})"

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "workload": asdict(self.workload),
            "total_bytes": self.total,
            "peak_stage": self.peak_stage,
            "stage_totals": self.stage_totals,
            "stages": self.stages,
            "assumptions": self.assumptions,
        }


def estimate_memory(
    n_users: int,
    n_items: int,
    n_ratings: int,
    *,
    based: str = "item",
    hidden: Iterable[int] = (500,),
    batch_size: int = 256,
    path: str = "sparse",
    optimizer: str = "adam",
    test_ratio: float = 0.1,
    valid_ratio: float = 0.05,
    batch_nnz: int | None = None,
    batch_skew: float = 4.0,
    keep_ratings: bool = False,
    checkpoint: bool = False,
    footprint: Footprint = DEFAULT_FOOTPRINT,
) -> MemoryEstimate:
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
    assumptions: dict[str, Any] = {
        "n_train": n_train,
        "n_valid": n_valid,
        "n_test": n_test,
        "keep_ratings": keep_ratings,
        "optimizer": optimizer,
    }
    if batch_nnz is None:
        bnnz = int(min(n_train, math.ceil(batch_skew * w.mean_batch_nnz)))
        assumptions["batch_nnz"] = f"{batch_skew:g} x mean batch = {bnnz}"
    else:
        bnnz = int(batch_nnz)
        assumptions["batch_nnz"] = f"measured bound {bnnz}"
    b = min(w.batch_size, w.n_rows)
    hidden_act = fp.floats_per_batch_hidden * F32 * b * sum(w.hidden)

    stages: dict[str, dict[str, int]] = {
        "generate": {
            "runtime": fp.runtime,
            "ratings table": table,
            "generator temporaries": fp.generate_transient_per_rating * n,
        },
        "split": {
            "runtime": fp.runtime,
            "ratings table": table,
            "split indices": split_idx,
            "split checks and hash": fp.split_transient_per_rating * n,
        },
        "parts": {
            "runtime": fp.runtime,
            "ratings table": table,
            "split indices": split_idx,
            "train/valid/test parts": parts,
        },
        "matrix": {
            "runtime": fp.runtime,
            "held ratings + split": held_data,
            "train/valid/test parts": train_part,
            "CSR matrix": csr,
            "CSR construction": fp.csr_transient_per_rating * n_train,
        },
    }
    model_state = optimizer_bytes(w, "adam" if optimizer in ("adam", "sparse-adam") else optimizer)
    train = {
        "runtime": fp.runtime,
        "held ratings + split": held_data,
        "train/valid/test parts": train_part,
        "CSR matrix": csr,
        "weights, gradients, optimizer state": model_state,
        "hidden activations": hidden_act,
    }
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
        hint = (
            "use path='sparse'"
            if estimate.path != "sparse"
            else "use a smaller hidden size or batch, or a machine with more memory"
        )
        raise MemoryBudgetError(
            f"{what} does not fit: needs {format_bytes(estimate.total)} (estimate: {estimate.describe()}; "
            f"{w.n_rows} rows x {w.n_in} columns, {w.nnz} training ratings, hidden {list(w.hidden)}, "
            f"path {estimate.path}) but the memory limit is {format_bytes(limit)} (--max-memory); "
            f"{hint}, or raise --max-memory if the machine has the memory"
        )
