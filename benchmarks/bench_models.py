"""pytest-benchmark: what one training epoch and one test-set prediction cost, for every model x
backend (x training path for AutoRec), on ML-100K (skips without a local copy) and on synthetic
data of ML-1M's shape (scaled by ``AUTOREC_BENCH_FRACTION``, see ``benchmarks/conftest.py``).

Each (dataset, case) has two benchmarks, run one after the other:

- ``epoch``: one training epoch of an iterative model (``make_trainer`` in the untimed setup,
  then ``train_epoch(1)``, ``train_epoch(2)``, ... one per round); a one-shot model (scikit-surprise,
  the Gibbs samplers) is built in the untimed setup and one whole ``fit`` is timed, with the small
  iteration count of :attr:`Case.iterations` (recorded in ``extra_info``);
- ``predict``: ``predict`` of the whole test set (cold start and clipping included) by the model
  the ``epoch`` benchmark trained (run alone, e.g. ``-k predict``, it trains the same model
  untimed first).

``extra_info`` holds the case, the resolved config, the epochs trained (or the fit's iterations),
the last train loss, the test RMSE / MAE after that training, the data sizes, threads, CPU and
machine.  Skipped by the default test run (``--benchmark-skip`` in pyproject).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from autorec.metrics import mae, rmse
from autorec.models.base import IterativeRecommender, Recommender, TrainFacts

# surprise's SVDpp.estimate sums the user's implicit factors in Python for every pair, and our fit
# scores the whole train part with it: one fit takes ~45 s on ML-100K here (the epoch itself ~1 s).
SVDPP_HEAVY = "scikit-surprise's SVD++ fit scores every train pair in Python (~45 s on ML-100K)"


@dataclass(frozen=True)
class Case:
    """One model in one backend (AutoRec: in one training path) and the parameters it is built with.

    ``iterations``: a one-shot model's iteration count for the timed fit (merged into the
    parameters, stated in ``extra_info``).  ``heavy``: why one round costs most of a minute: such a
    case runs one round on ML-100K and is opt-in (``large``) on the ML-1M shape."""

    name: str
    backend: str
    params: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    iterations: dict[str, int] = field(default_factory=dict)
    heavy: str = ""

    @property
    def id(self) -> str:
        return "-".join(p for p in (self.name, self.backend, self.path) if p)


#: AutoRec's training paths: (backend, path id, parameters)
AUTOREC_PATHS = [
    ("torch", "dense", {"path": "dense"}),
    ("torch", "sparse", {"path": "sparse", "extra": {"sparse_kernel": "torch"}}),
    ("torch", "sparse-native", {"path": "sparse", "extra": {"sparse_kernel": "native"}}),
    ("mxnet", "dense", {"path": "dense"}),
    ("mxnet", "sparse", {"path": "sparse"}),
]

CASES = [
    Case("global-mean", "numpy"),
    Case("bias-only", "numpy"),
    Case("als", "numpy", {"factors": 32}),
    Case("biased-mf", "numpy", {"factors": 32, "kernel": "numpy"}, path="loop"),
    Case("biased-mf", "numpy", {"factors": 32, "kernel": "native"}, path="native"),
    Case("biased-mf", "torch", {"factors": 32}),
    Case("d2l-mf", "torch"),
    Case("d2l-mf", "mxnet"),
    Case("surprise-svd", "surprise", iterations={"n_epochs": 1}),
    Case("surprise-svdpp", "surprise", iterations={"n_epochs": 1}, heavy=SVDPP_HEAVY),
    Case("bayesian-mf", "myfm", iterations={"n_iter": 5}),
    Case("bayesian-svdpp", "myfm", {"kernel": "myfm"}, path="myfm-predict", iterations={"n_iter": 5}),
    Case("bayesian-svdpp", "myfm", {"kernel": "native"}, path="native-predict", iterations={"n_iter": 5}),
] + [
    Case(name, backend, params, path=path)
    for name in ("i-autorec", "u-autorec")
    for backend, path, params in AUTOREC_PATHS
]

#: benchmark datasets (conftest's ``resolve_dataset``); heavy cases run by default on the first only
DATASETS = ("ml-100k", "ml-1m-shape")
PHASES = {"epoch": "one training epoch (one-shot models: one fit)", "predict": "test-set prediction"}


def _params(case: Case, dataset: str) -> Any:
    large = case.heavy and dataset != DATASETS[0]
    return pytest.param(dataset, case, id=f"{dataset}-{case.id}", marks=[pytest.mark.large] if large else [])


class Subject:
    """A case on a split, trained one step per round: a step is one epoch of the model's trainer
    (iterative models, the trainer made before the first step) or one whole fit of a freshly built
    model (one-shot models).  ``steps`` rounds make the same model whether timed or not."""

    def __init__(self, ref: Any, case: Case, data: Any, steps: int, threads: int) -> None:
        self.case, self.data, self.steps, self.ref = case, data, steps, ref
        cls = ref.load()
        params = {**case.params, **case.iterations}
        if "threads" in cls.Config.field_names():
            params["threads"] = threads  # models that set threads at fit start get the session's count
        if issubclass(cls, IterativeRecommender):
            params["epochs"] = steps  # configured for exactly the epochs it runs
        self.params = params
        self.model: Recommender = self.ref.build(params)
        self.trainer: Any = None
        self.done = 0
        self.last: dict[str, Any] = {}

    def prepare(self) -> None:
        """Untimed: the trainer before the first epoch, or a fresh one-shot model before each fit."""
        if not isinstance(self.model, IterativeRecommender):
            self.model = self.ref.build(self.params)
        elif self.trainer is None:
            self.trainer = self.model.make_trainer(self.data.split.train, None)

    def step(self) -> None:
        self.done += 1
        if isinstance(self.model, IterativeRecommender):
            self.last = dict(self.trainer.train_epoch(self.done))
        else:
            self.last = dict(self.model.fit(self.data.split.train, None).history[-1])

    def train_untimed(self) -> Subject:
        for _ in range(self.steps):
            self.prepare()
            self.step()
        return self

    def fitted(self) -> Recommender:
        """The trained model, ready to predict (an iterative model driven epoch by epoch records the
        train facts ``fit`` records before training)."""
        if isinstance(self.model, IterativeRecommender) and self.model.facts is None:
            self.model.facts = TrainFacts.of(self.data.split.train)
        return self.model

    def info(self) -> dict[str, Any]:
        if isinstance(self.model, IterativeRecommender):
            done: dict[str, Any] = {"epochs_trained": self.done}
        else:
            done = {"one_fit": self.case.iterations or "no iterations"}
        return {
            "model": self.case.name,
            "backend": self.case.backend,
            "path": self.case.path or None,
            "params": self.case.params,
            "config": self.model.params(),
            **done,
            "train_loss": self.last.get("train_loss"),
            "heavy": self.case.heavy or None,
        }


def _metrics(pred: np.ndarray, model: Recommender, test: Any) -> dict[str, Any]:
    return {
        "test_rmse": rmse(pred, test.ratings),
        "test_mae": mae(pred, test.ratings),
        "n_cold_start": int(model.cold_mask(test.users, test.items).sum()),
    }


#: the most recently trained subject, handed from a case's epoch benchmark to its predict benchmark
_LAST: dict[tuple[str, str], Subject] = {}


@pytest.mark.parametrize("phase", list(PHASES))
@pytest.mark.parametrize("dataset,case", [_params(c, d) for d in DATASETS for c in CASES])
def test_model(bench, bench_data, dataset: str, case: Case, phase: str) -> None:
    """The ``epoch`` or ``predict`` benchmark of ``case`` on ``dataset`` (see the module doc)."""
    ref = bench.require(case.name, case.backend, case.params)
    data = bench_data(dataset)
    rounds = 1 if case.heavy else bench.settings.rounds
    key = (dataset, case.id)
    test = data.split.test
    where = {"data": data, "subject": case.id, "phase": PHASES[phase], "rounds": rounds}
    if phase == "epoch":
        _LAST.clear()
        subject = Subject(ref, case, data, rounds, bench.settings.threads)
        bench.run(subject.step, setup=subject.prepare, **where)
        _LAST[key] = subject
        model = subject.fitted()
        pred = model.predict(test.users, test.items)
    else:
        subject = _LAST.get(key) or Subject(ref, case, data, rounds, bench.settings.threads).train_untimed()
        model = subject.fitted()
        pred = bench.run(lambda: model.predict(test.users, test.items), **where)
    bench.record(**subject.info(), **_metrics(pred, model, test))
