"""Cost models of AutoRec at scale: the FLOPs and memory traffic of a training epoch, and the peak
memory of a whole run, computed from the shape of the data alone (framework-free: numpy, stdlib and
psutil).

=============  ===============================================================================
module         job
=============  ===============================================================================
``workload``   :class:`Workload` (rows, width, ratings, hidden sizes, batch), :func:`epoch_flops`,
               :func:`flop_formula`, :func:`epoch_traffic_bytes`
``memory``     :func:`estimate_memory` -> :class:`MemoryEstimate` (per stage, per component),
               :func:`check_memory`, byte sizes (:func:`parse_bytes`, :func:`format_bytes`)
=============  ===============================================================================

The scale runner (:mod:`benchmarks.scale`) refuses rows whose estimate exceeds the memory budget and
compares the measured epoch time with these models; the machine probes it compares against (dense
matmul rate, memory bandwidth) live with it (:mod:`benchmarks.scale.probes`).
"""

from autorec.scale.memory import (
    DEFAULT_FOOTPRINT,
    Footprint,
    MemoryEstimate,
    check_memory,
    default_memory_limit,
    dense_full_bytes,
    estimate_memory,
    format_bytes,
    max_batch_nnz,
    optimizer_bytes,
    parse_bytes,
    total_memory,
)
from autorec.scale.workload import PATHS, SHAPES, Workload, epoch_flops, epoch_traffic_bytes, flop_formula

__all__ = [
    "DEFAULT_FOOTPRINT",
    "PATHS",
    "SHAPES",
    "Footprint",
    "MemoryEstimate",
    "Workload",
    "check_memory",
    "default_memory_limit",
    "dense_full_bytes",
    "epoch_flops",
    "epoch_traffic_bytes",
    "estimate_memory",
    "flop_formula",
    "format_bytes",
    "max_batch_nnz",
    "optimizer_bytes",
    "parse_bytes",
    "total_memory",
]
