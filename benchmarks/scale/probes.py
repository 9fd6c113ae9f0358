"""What this machine can do, measured in the row's own worker: the dense float32 matmul rate (the
practical compute limit an epoch's FLOPs are compared with) and the main-memory bandwidth (the
limit its memory traffic is compared with).  Both with torch, in the worker's thread setting."""

from __future__ import annotations

import os
import statistics
import time

import torch

from autorec.errors import ConfigError
from autorec.scale.workload import F32


def dense_matmul_gflops(n: int = 2048, *, repeats: int = 7) -> dict:
    """Float32 ``(n, n) @ (n, n)`` with ``torch.mm``: ``repeats`` timed products after one warm-up;
    ``gflops`` is the median rate (``2 n^3 / seconds``), ``shapes`` the product's details."""
    if repeats < 3:
        raise ConfigError(f"repeats={repeats!r}: at least 3 timed products are needed for a median")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen, dtype=torch.float32)
    b = torch.randn(n, n, generator=gen, dtype=torch.float32)
    out = torch.empty(n, n, dtype=torch.float32)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    flop = 2.0 * n * n * n
    shape = {
        "m": n,
        "k": n,
        "n": n,
        "median_seconds": med,
        "gflops": flop / med / 1e9,
        "best_gflops": flop / min(times) / 1e9,
    }
    return {
        "gflops": shape["gflops"],
        "dtype": "float32",
        "library": "torch.mm",
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "shapes": [shape],
        "load_avg": list(os.getloadavg()),
    }


def stream_bandwidth_gbs(n_bytes: int = 256 * 10**6, *, repeats: int = 5) -> dict:
    """Main-memory bandwidth: ``c = a + b`` on float32 arrays of ``n_bytes`` each (3 x n_bytes
    moved per add), median GB/s over ``repeats`` after a warm-up."""
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
    return {
        "gbs": 3 * F32 * n / med / 1e9,
        "bytes_per_array": F32 * n,
        "kernel": "torch.add(a, b, out=c)",
        "threads": torch.get_num_threads(),
        "repeats": repeats,
    }
