"""pytest-benchmark at the real shapes (opt-in: every benchmark here is marked ``large``): one
AutoRec training epoch (hidden 500, batch 256, fused Adam) on synthetic data of ML-1M's and
ML-10M's full shape, on the sparse path (native kernels, torch's sparse operators) and the dense
masked path, item- and user-based.

Run (``--bench-large`` or ``-m large`` opts in; ``-k ml-1m`` selects the smaller shape)::

    THP_MEM_ALLOC_ENABLE=1 pytest benchmarks/bench_scale.py --benchmark-only -m large \\
        --benchmark-autosave --benchmark-storage=results/benchmarks

(``THP_MEM_ALLOC_ENABLE=1`` must be set before torch is imported: torch's allocator then uses huge
pages for large tensors, as the scale runner does; it is recorded.)  As in ``bench_models.py``, the
trainer is made in the untimed setup and each round is the next epoch; ``extra_info`` holds the
FLOPs of an epoch (:func:`autorec.scale.epoch_flops`), the train loss and the config.  An ML-10M
round takes seconds (sparse) to about a minute (dense: one round).  A row whose memory estimate
(:func:`autorec.scale.estimate_memory`) exceeds 80% of RAM skips with the estimate.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from autorec import scale as sc

pytestmark = pytest.mark.large

SHAPES = ("ml-1m", "ml-10m")
#: (path, sparse kernel)
PATHS = [("sparse", "native"), ("sparse", "torch"), ("dense", None)]
CASES = [(shape, based, path, kernel) for shape in SHAPES for based in ("item", "user") for path, kernel in PATHS]
HIDDEN = (500,)
BATCH = 256


def _id(case: tuple) -> str:
    shape, based, path, kernel = case
    return f"{shape}-{based}-{path}" + (f"-{kernel}" if kernel else "")


@pytest.mark.parametrize("shape,based,path,kernel", CASES, ids=[_id(c) for c in CASES])
def test_one_epoch(bench, bench_data, shape: str, based: str, path: str, kernel: str | None) -> None:
    """One AutoRec epoch at ``shape``'s full size (see the module doc)."""
    extra: dict[str, Any] = {"fused_optimizer": True, **({"sparse_kernel": kernel} if kernel else {})}
    ref = bench.require("autorec", "torch", {"extra": extra})
    n_users, n_items, n_ratings = sc.SHAPES[shape]
    est = sc.estimate_memory(n_users, n_items, n_ratings, based=based, hidden=HIDDEN, batch_size=BATCH, path=path)
    limit = sc.default_memory_limit()
    if est.total > limit:
        pytest.skip(f"does not fit: needs {sc.format_bytes(est.total)}, limit {sc.format_bytes(limit)}")
    data = bench_data(f"{shape}-shape@1")
    train = data.split.train
    rounds = 1 if (shape, path) == ("ml-10m", "dense") else bench.settings.rounds
    params = {"based": based, "path": path, "hidden": HIDDEN, "batch_size": BATCH, "extra": extra}
    model = ref.build({**params, "epochs": rounds, "threads": bench.settings.threads})
    state: dict[str, Any] = {"trainer": None, "epoch": 0, "stats": {}}

    def setup() -> None:
        if state["trainer"] is None:
            state["trainer"] = model.make_trainer(train, None)

    def one_epoch() -> None:
        state["epoch"] += 1
        state["stats"] = state["trainer"].train_epoch(state["epoch"])

    subject = _id((shape, based, path, kernel))
    bench.run(one_epoch, setup=setup, data=data, subject=subject, phase="AutoRec epoch (hidden 500)", rounds=rounds)
    w = sc.Workload.from_shape(train.n_users, train.n_items, len(train), based=based, hidden=HIDDEN, batch_size=BATCH)
    bench.record(
        model="autorec",
        backend="torch",
        based=based,
        path=path,
        kernel=kernel,
        epochs_trained=state["epoch"],
        flops_per_epoch=sc.epoch_flops(w, path),
        train_loss=state["stats"].get("train_loss"),
        THP_MEM_ALLOC_ENABLE=os.environ.get("THP_MEM_ALLOC_ENABLE"),
        config=model.params(),
    )
