"""The pytest-benchmark suite's plumbing: options, the ``large`` marker, data, thread and round
settings, what every benchmark records, and the closing "where the time went" summary.
(``tests/conftest.py`` is not visible from here.)  See docs/benchmarks.md for the user's view.

Run from the repository root::

    pytest --benchmark-only                                    # the default set (ML-100K + ML-1M shape)
    pytest --benchmark-only --bench-large                      # also the large shapes (ML-1M full, ML-10M)
    pytest --benchmark-only -m large                           # only the large shapes
    pytest benchmarks --benchmark-only --benchmark-autosave --benchmark-storage=results/benchmarks
    pytest benchmarks --benchmark-only --benchmark-storage=results/benchmarks --benchmark-compare

The default test run (``pytest``) collects the benchmarks (an import error shows) and skips them
(``--benchmark-skip`` is in pyproject's addopts).  Benchmarks marked ``large`` are skipped unless
``--bench-large`` is given or the ``-m`` expression names ``large``.

Environment (read once per session, recorded in every benchmark's ``extra_info``):

``AUTOREC_DATA_DIR``
    the folder holding ``ml-100k/`` (else ``../shared/data`` beside the checkout, else the cache);
    the ML-100K benchmarks skip, saying so, without a complete local copy (never downloaded).
``AUTOREC_BENCH_FRACTION`` (default 0.2)
    scales the synthetic ML-1M-shaped set: ratings by the fraction, users and items by its square
    root (ML-1M's density); 1 is the real shape (its half of the run then takes about 5x longer).
``AUTOREC_BENCH_ROUNDS`` (default 3)
    timed rounds per benchmark (the table's median is the number to read; a case marked heavy in
    ``bench_models.py`` runs one).
``AUTOREC_BENCH_THREADS`` (default: all cores of the process's affinity)
    intra-op threads of every framework and of BLAS, set before every round.
"""

from __future__ import annotations

import os
import platform
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from autorec import env
from autorec.jsonio import to_plain

REPO = Path(__file__).resolve().parents[1]
LARGE_HINT = "large shape: opt in with --bench-large (or -m large)"
COST_KEY = "bench_cost"  # user property: the (dataset, subject) a benchmark's wall time is booked to
CONTENDED_KEY = "bench_contended"  # user property: the machine was busier than the benchmark itself


@dataclass(frozen=True)
class Settings:
    """The session's benchmark settings (from the environment, see the module doc)."""

    rounds: int
    threads: int
    fraction: float

    @classmethod
    def from_environ(cls) -> Settings:
        fraction = float(os.environ.get("AUTOREC_BENCH_FRACTION", "0.2"))
        if not 0 < fraction <= 1:
            raise pytest.UsageError(f"AUTOREC_BENCH_FRACTION={fraction:g} must be in (0, 1]")
        return cls(
            rounds=max(1, int(os.environ.get("AUTOREC_BENCH_ROUNDS", "3"))),
            threads=max(1, int(os.environ.get("AUTOREC_BENCH_THREADS", str(env.default_threads())))),
            fraction=fraction,
        )


SETTINGS = Settings.from_environ()


def machine() -> dict[str, Any]:
    """Where the numbers come from: host, architecture, CPU model, cores and the thread setting."""
    return {
        "machine": platform.node(),
        "arch": platform.machine(),
        "cpu_model": env.cpu_model(),
        "cpu_affinity": env.default_threads(),
        "threads": SETTINGS.threads,
    }


# ---------------------------------------------------------------------- options and markers
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-large",
        action="store_true",
        default=False,
        help="autorec-bench: also run the benchmarks marked 'large' (ML-1M full shape, ML-10M)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"large: a benchmark at a large data shape ({LARGE_HINT})")
    config.pluginmanager.register(TimeLedger(), "autorec-bench-time-ledger")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--benchmark-only`` deselects the other tests (rather than listing ~900 skips after the
    tables); large benchmarks skip unless opted in; mxnet's own deprecation warnings (emitted when a
    benchmark first imports it) stay out of the benchmarks' summary."""
    if config.getoption("benchmark_only", False):
        others = [item for item in items if "benchmark" not in getattr(item, "fixturenames", ())]
        if others:
            config.hook.pytest_deselected(items=others)
            items[:] = [item for item in items if "benchmark" in getattr(item, "fixturenames", ())]
    here = Path(__file__).parent
    opted_in = config.getoption("--bench-large") or "large" in (config.getoption("markexpr") or "")
    skip = pytest.mark.skip(reason=LARGE_HINT)
    for item in items:
        if not item.path.is_relative_to(here):
            continue
        item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning:mxnet"))
        if not opted_in and item.get_closest_marker("large") is not None:
            item.add_marker(skip)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Stable facts only: pytest-benchmark warns on ``--benchmark-compare`` when these differ."""
    versions = {k: v for k, v in env.environment().items() if k not in ("threads", "platform")}
    machine_info["autorec_bench"] = to_plain({**machine(), "fraction": SETTINGS.fraction, **versions})


# ---------------------------------------------------------------------- data
_SHAPE = re.compile(r"(?P<shape>[a-z0-9-]+)-shape(?:@(?P<fraction>[0-9.]+))?")


def resolve_dataset(name: str) -> tuple[str, str]:
    """A benchmark dataset name -> (its label in tables, the harness dataset).  ``SHAPE-shape@F``
    is synthetic data of a real dataset's shape at fraction ``F`` (``synthetic:SHAPE@F``; without
    ``@F`` the session's ``AUTOREC_BENCH_FRACTION``); any other name is a registered dataset."""
    m = _SHAPE.fullmatch(name)
    if m is None:
        return name, name
    fraction = m["fraction"] or f"{SETTINGS.fraction:g}"
    return f"{m['shape']}-shape@{fraction}", f"synthetic:{m['shape']}@{fraction}"


@dataclass(frozen=True)
class BenchData:
    """A split as the benchmarks use it: ``label`` (what tables say), ``source`` (the harness
    dataset) and the split."""

    label: str
    source: str
    split: Any

    def info(self) -> dict[str, Any]:
        train = self.split.train
        return {
            "dataset": self.label,
            "data_source": self.source,
            "n_users": train.n_users,
            "n_items": train.n_items,
            "n_train": len(train),
            "n_test": len(self.split.test),
        }


@pytest.fixture(scope="session")
def bench_data() -> Callable[[str], BenchData]:
    """``bench_data(name)``: the random 90/10 split (seed 0, 5% of train held out) of a dataset
    (:func:`resolve_dataset`), loaded once per session through the harness; skips, saying why, when
    a registered dataset has no complete local copy (nothing is downloaded)."""
    from autorec.splits import SplitSpec
    from benchmarks.harness import DataSource, availability, load_data, parse_dataset, shared_data_dir

    source = DataSource(data_dir=shared_data_dir(), offline=True)
    loaded: dict[str, BenchData] = {}

    def get(name: str) -> BenchData:
        if name not in loaded:
            label, text = resolve_dataset(name)
            ref = parse_dataset(text)
            where = availability(ref, source)
            if not where.local:
                pytest.skip(f"{label}: {where.where}")
            split = load_data(ref, SplitSpec.parse("random"), seed=0, valid_ratio=0.05, source=source)
            loaded[name] = BenchData(label, ref.name, split)
        return loaded[name]

    return get


# ---------------------------------------------------------------------- one benchmark
class Bench:
    """A benchmark as this suite runs it: ``run`` files it under its table (``dataset: phase``) and
    its (dataset, subject) in the time summary, then times ``target`` for the session's rounds (the
    untimed ``setup`` before each round also sets the threads); ``record`` completes ``extra_info``
    (what ran, the machine, the load average before and after)."""

    def __init__(self, benchmark: Any, node: pytest.Item) -> None:
        self.benchmark = benchmark
        self.node = node
        self.settings = SETTINGS
        self.load_before = env.load_average()

    def require(self, name: str, backend: str, params: Mapping[str, Any]) -> Any:
        """The registry entry (:class:`~autorec.models.registry.ModelRef`) of ``name`` in
        ``backend``; skips, saying what to install, when its framework is missing or when
        ``params`` ask for native kernels that cannot be built here."""
        from autorec.errors import MissingDependencyError
        from autorec.models import registry

        ref = registry.get(name, backend)
        try:
            ref.check_dependencies()
        except MissingDependencyError as exc:
            pytest.skip(str(exc))
        if dict(params.get("extra") or {}).get("sparse_kernel") == "native":
            from autorec.models.autorec.torch import native

            if not native.available():
                pytest.skip(f"native kernels unavailable: {native.unavailable_reason()}")
        if params.get("kernel") == "native":  # biased-mf's C++ epoch, the Bayesian C++ posterior mean
            from baselines import bayes, sgd

            lib = bayes.NATIVE if ref.backend == "myfm" else sgd.NATIVE
            if not lib.available():
                pytest.skip(f"native {lib.source.name} unavailable: {lib.unavailable_reason()}")
        return ref

    def run(
        self,
        target: Callable[[], Any],
        *,
        data: BenchData,
        subject: str,
        phase: str,
        setup: Callable[[], Any] = lambda: None,
        rounds: int | None = None,
    ) -> Any:
        """``target``'s result of the last round."""
        self.benchmark.group = f"{data.label}: {phase}"  # read when the timing starts
        self.node.user_properties.append((COST_KEY, (data.label, subject)))
        self.benchmark.extra_info.update(to_plain({"subject": subject, "phase": phase, **data.info()}))

        def prepare() -> tuple[tuple, dict]:
            setup()
            env.set_threads(self.settings.threads)
            return (), {}

        return self.benchmark.pedantic(target, setup=prepare, rounds=rounds or self.settings.rounds, iterations=1)

    def record(self, **info: Any) -> None:
        after = env.load_average()
        contended = env.contended(self.load_before, after, self.settings.threads)
        self.node.user_properties.append((CONTENDED_KEY, contended))
        self.benchmark.extra_info.update(
            to_plain(
                {
                    **info,
                    **machine(),
                    "load_average_before": self.load_before,
                    "load_average_after": after,
                    "contended": contended,
                }
            )
        )


@pytest.fixture
def bench(benchmark: Any, request: pytest.FixtureRequest) -> Bench:
    """The :class:`Bench` of this test (it uses pytest-benchmark's ``benchmark`` fixture, so the
    ``--benchmark-skip`` / ``--benchmark-only`` rules apply)."""
    return Bench(benchmark, request.node)


# ---------------------------------------------------------------------- where the time went
class TimeLedger:
    """Books each benchmark's whole wall time (setup, untimed training and every round) to its
    (dataset, subject) and prints the totals after pytest-benchmark's tables: what to cut when a
    run is too slow; and how many benchmarks ran on a contended machine
    (:func:`autorec.env.contended`: their timings include other processes' load)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.owner: dict[str, tuple[str, str]] = {}
        self.contended: set[str] = set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] += report.duration
        for key, value in report.user_properties:
            if key == COST_KEY:
                self.owner[report.nodeid] = cast("tuple[str, str]", value)
            elif key == CONTENDED_KEY and value:
                self.contended.add(report.nodeid)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.owner:
            return
        per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for nodeid, (dataset, subject) in self.owner.items():
            per[dataset][subject] += self.seconds[nodeid]
        total = sum(sum(s.values()) for s in per.values())
        terminalreporter.write_sep("-", f"where the time went: {total:.0f} s of benchmarks (setup included)")
        for dataset, subjects in per.items():
            top = sorted(subjects.items(), key=lambda kv: -kv[1])
            head = ", ".join(f"{name} {s:.1f}" for name, s in top[:6])
            more = f", {len(top) - 6} more" if len(top) > 6 else ""
            terminalreporter.write_line(f"{dataset}: {sum(subjects.values()):.1f} s: {head}{more}")
        if self.contended:
            terminalreporter.write_line(
                f"contended: {len(self.contended)} of {len(self.owner)} benchmarks ran on a busy machine (load "
                "average above their own threads, autorec.env.contended): their timings include other processes' "
                "work (extra_info: load_average_before / _after)"
            )
