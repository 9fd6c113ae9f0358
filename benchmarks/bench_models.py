"""pytest-benchmark: one training epoch, and the prediction of the whole test set, for every model x
backend (x dense / sparse for AutoRec), on ML-100K (skips without data) and on synthetic data of
ML-1M's shape.  RMSE, MAE, the resolved config and the data sizes go into ``benchmark.extra_info``.

Skipped by the default test run (``--benchmark-skip`` in pyproject).  Run::

    pytest benchmarks --benchmark-only --benchmark-autosave --benchmark-storage=results/benchmarks
    pytest benchmarks --benchmark-only --benchmark-storage=results/benchmarks --benchmark-compare
    pytest benchmarks --benchmark-only -k "autorec and ml100k"      # a subset
"""

from __future__ import annotations

import pytest

from autorec import env
from autorec.errors import MissingDependencyError
from autorec.models import registry
from autorec.models.registry import ModelRef

# (registry name, backend, parameters): every model x backend; AutoRec in both training paths
CASES = [
    ("global-mean", "numpy", {}),
    ("bias-only", "numpy", {}),
    ("als", "numpy", {"factors": 32}),
    ("biased-mf", "numpy", {"factors": 32}),
    ("biased-mf", "torch", {"factors": 32}),
    ("d2l-mf", "torch", {}),
    ("d2l-mf", "mxnet", {}),
    ("surprise-svd", "surprise", {}),
    ("surprise-svdpp", "surprise", {}),
] + [
    (name, backend, {"path": path})
    for name in ("i-autorec", "u-autorec")
    for backend in ("torch", "mxnet")
    for path in ("dense", "sparse")
]

DATASETS = {"ml100k": "ml100k_split", "ml1m-shape": "ml1m_shape_split"}


def _case_id(case) -> str:
    name, backend, params = case
    return "-".join([name, backend] + [str(v) for v in params.values()])


def _one_epoch(name: str, backend: str, params: dict, threads: int) -> tuple[ModelRef, dict]:
    algo = registry.get(name, backend)
    try:
        algo.check_dependencies()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    accepted = set(algo.load().Config.field_names())
    p = dict(params)
    ep = next((k for k in ("epochs", "n_epochs") if k in accepted), None)
    if ep is not None:
        p[ep] = 1
    if "patience" in accepted:
        p["patience"] = None
    if "threads" in accepted:
        p["threads"] = threads  # models that set threads at fit start get the same count
    return algo, p


def _info(benchmark, algo, model, data, dataset, threads, result=None):
    benchmark.extra_info.update(
        {
            "model": algo.name,
            "backend": algo.backend,
            "dataset": dataset,
            "n_train": len(data.train),
            "n_test": len(data.test),
            "threads": threads,
            "config": model.params(),
        }
    )
    if result is not None:
        benchmark.extra_info.update(
            {"test_rmse": result["rmse"], "test_mae": result["mae"], "n_cold_start": result["n_cold_start"]}
        )


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fit_one_epoch(benchmark, case, dataset, request, bench_rounds, bench_threads):
    """Wall time of ``fit`` for one epoch (model construction excluded); the RMSE after it."""
    data = request.getfixturevalue(DATASETS[dataset])
    name, backend, params = case
    algo, params = _one_epoch(name, backend, params, bench_threads)
    algo.load()
    env.set_threads(bench_threads)
    holder = {}

    def setup():
        holder["model"] = algo.build(params)
        env.set_threads(bench_threads)
        return (holder["model"],), {}

    def fit(model):
        model.fit(data.train, None)

    benchmark.pedantic(fit, setup=setup, rounds=bench_rounds, iterations=1, warmup_rounds=1)  # warm-up: lazy imports
    model = holder["model"]
    _info(benchmark, algo, model, data, dataset, bench_threads, model.evaluate(data.test))


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_predict_test_set(benchmark, case, dataset, request, bench_rounds, bench_threads):
    """Wall time of predicting the whole test set (cold start and clipping included) after one epoch."""
    data = request.getfixturevalue(DATASETS[dataset])
    name, backend, params = case
    algo, params = _one_epoch(name, backend, params, bench_threads)
    model = algo.build(params)
    env.set_threads(bench_threads)
    model.fit(data.train, None)
    result = benchmark.pedantic(model.evaluate, args=(data.test,), rounds=bench_rounds, iterations=1, warmup_rounds=1)
    _info(benchmark, algo, model, data, dataset, bench_threads, result)
