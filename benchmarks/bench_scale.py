"""pytest-benchmark: one AutoRec training epoch (hidden 500) at ML-1M and ML-10M shape, on the sparse
path (native kernels and torch's sparse operators) and the dense masked path.

Run (skipped by the default test run, ``--benchmark-skip`` is in addopts)::

    THP_MEM_ALLOC_ENABLE=1 pytest benchmarks/bench_scale.py --benchmark-only \\
        --benchmark-autosave --benchmark-storage=results/benchmarks
    THP_MEM_ALLOC_ENABLE=1 pytest benchmarks/bench_scale.py --benchmark-only \\
        --benchmark-storage=results/benchmarks --benchmark-compare

(``THP_MEM_ALLOC_ENABLE=1`` must be set before torch is imported: torch's allocator then uses huge
pages for large tensors, as the scale runner does.)  Only the epoch is timed: the model, its
training matrix and optimizer are built in the untimed setup of each round.  ``-k ml-1m`` selects
the small shape; ML-10M rows take seconds (sparse) to about a minute (dense) per round.  A row
whose memory estimate (:func:`autorec.scale.estimate_memory`) exceeds 80% of RAM is skipped with
the estimate ("does not fit").
"""

from __future__ import annotations

import os

import pytest

from autorec import scale as sc

torch = pytest.importorskip("torch", reason="torch not installed (pip install .[torch])")

CASES = [(shape, based, path, kernel)
         for shape in ("ml-1m", "ml-10m")
         for based in ("item", "user")
         for path, kernel in (("sparse", "native"), ("sparse", "torch"), ("dense", None))]

_TRAIN: dict[str, object] = {}


def _train(shape: str):
    """The train part of a seeded random 90/10 split (5% of it held out) of a synthetic set of
    the shape, generated once per session."""
    if shape not in _TRAIN:
        from autorec.data.synthetic import generate_like
        from autorec.splits import make_split

        r = generate_like(shape, seed=0)
        _TRAIN[shape] = make_split(r, "random", seed=0).data(r).train
    return _TRAIN[shape]


def _rounds(shape: str, path: str) -> int:
    if shape == "ml-10m" and path == "dense":
        return 1
    return int(os.environ.get("AUTOREC_BENCH_ROUNDS", "3"))


@pytest.mark.parametrize("shape,based,path,kernel", CASES,
                         ids=[f"{s}-{b}-{p}{'-' + k if k else ''}" for s, b, p, k in CASES])
def test_one_epoch(benchmark, shape, based, path, kernel):
    from autorec.models.autorec.torch import AutoRecTorch, native

    if kernel == "native" and not native.available():
        pytest.skip(f"native kernels unavailable: {native.unavailable_reason()}")
    n_users, n_items, n = sc.SHAPES[shape]
    est = sc.estimate_memory(n_users, n_items, n, based=based, hidden=(500,), batch_size=256, path=path)
    limit = sc.default_memory_limit()
    if est.total > limit:
        pytest.skip(f"does not fit: needs {sc.format_bytes(est.total)}, limit {sc.format_bytes(limit)}")
    train = _train(shape)
    extra = {"fused_optimizer": True}
    if kernel:
        extra["sparse_kernel"] = kernel
    cfg = dict(based=based, path=path, hidden=(500,), batch_size=256, epochs=1, extra=extra)
    epoch = {"n": 0}

    def setup():
        # the process's thread count, kept (make_trainer sets config.threads)
        trainer = AutoRecTorch({**cfg, "threads": torch.get_num_threads()}).make_trainer(train, None)
        epoch["n"] += 1
        return (trainer,), {}

    def one_epoch(trainer):
        return trainer.train_epoch(1)

    stats = benchmark.pedantic(one_epoch, setup=setup, rounds=_rounds(shape, path), iterations=1)
    w = sc.Workload.from_shape(n_users, n_items, len(train), based=based, hidden=(500,), batch_size=256)
    benchmark.extra_info.update({
        "shape": shape, "based": based, "path": path, "kernel": kernel, "n_train": len(train),
        "flops_per_epoch": sc.epoch_flops(w, path), "train_loss": stats["train_loss"],
        "threads": torch.get_num_threads(), "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "config": AutoRecTorch(cfg).params(),
    })
