"""Aggregation of raw records into table rows, and the markdown / CSV text of the tables.

**Replicates.**  Runs that differ only in their split instance (split spec and seed) are replicates
of one configuration; a :class:`Row` is one configuration on one dataset and split group.  The
folds of one protocol form one group: ``canonical:u1`` .. ``canonical:u5`` form
``canonical:u1-u5``, ``kfold:k=5,fold=j`` form ``kfold:k=5``; any other spec is its own group,
replicated by seed.  Test RMSE is the mean over replicates +- the half-width of the 95% t-interval.

**Contended timings.**  A run whose ``conditions.contended`` is set was timed on a machine busier than
the run itself.  Timing columns average the quiet runs only and mark a row with † when contended runs
were left out, or average the contended runs and mark it with ‡ when there is no quiet one; the
CSVs carry the count of contended runs beside the means.

**Choosing a best configuration** (:func:`select_best`): among configurations run on at least
:data:`MIN_REPLICATES` split instances first (a 3-seed ablation's mean is neither comparable with a
5- or 10-split mean nor enough for a paired test); only when none has that many are all considered.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from autorec.jsonio import canonical_json
from benchmarks.report.inputs import RawRun

MIN_REPLICATES = 5

T = TypeVar("T")


# =============================================================================== grouping
def split_group(spec: str) -> str:
    """The table a split spec belongs to (its folds / seeds are replicates)."""
    if re.fullmatch(r"canonical:(?:fold=)?u[1-5]", spec):
        return "canonical:u1-u5"
    m = re.fullmatch(r"kfold:(.*)", spec)
    if m:
        args = dict(a.split("=", 1) for a in m.group(1).split(",") if "=" in a)
        return f"kfold:k={args.get('k', '5')}"
    return spec


def params_text(params: dict[str, Any], drop: Iterable[str] = ("seed",)) -> str:
    dropped = set(drop)
    return canonical_json({k: v for k, v in params.items() if k not in dropped})


def config_key(run: RawRun) -> tuple:
    """What makes runs replicates of one configuration: everything in the identity but the split
    instance (spec and seed) and the content hashes."""
    i = run.rec.identity
    return (i.model, i.backend, i.devices, params_text(i.params), i.cold_start_policy, i.split.valid_ratio, i.refit)


def name_of(run: RawRun) -> str:
    return run.rec.label or run.rec.display_name


def describe(run: RawRun) -> str:
    """Name, backend, path and (other than one CPU) devices in one line: ``I-AutoRec (torch, dense)``."""
    rec = run.rec
    bits = [rec.backend] + ([str(rec.params["path"])] if rec.params.get("path") else [])
    if rec.identity.devices != ("cpu",):
        bits.append(",".join(rec.identity.devices))
    return f"{name_of(run)} ({', '.join(bits)})"


# =============================================================================== statistics
def mean(values: Iterable[float | int | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    return math.fsum(vals) / len(vals) if vals else None


def t_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the half-width of the 95% t-interval (``None`` with fewer than 2 values)."""
    from scipy import stats

    n = len(values)
    m = math.fsum(values) / n
    if n < 2:
        return m, None
    sd = math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))
    return m, float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


@dataclass(frozen=True)
class Cost:
    """Timing means of a row: over its quiet runs, or over its contended runs when it has no quiet
    one (``basis``: ``quiet`` / ``contended``); ``n_contended`` runs were measured under contention."""

    fit_s: float | None
    s_epoch: float | None
    basis: str
    n_contended: int

    @property
    def mark(self) -> str:
        if self.basis == "contended":
            return "‡"
        return "†" if self.n_contended else ""


def cost(runs: Sequence[RawRun]) -> Cost:
    quiet = [r for r in runs if not r.contended]
    used = quiet or list(runs)
    return Cost(
        mean(r.rec.timing.fit for r in used),
        mean(r.rec.timing.per_epoch for r in used),
        "quiet" if quiet else "contended",
        len(runs) - len(quiet),
    )


# =============================================================================== rows
@dataclass
class Row:
    """One configuration on one dataset and split group, aggregated over its replicates."""

    dataset: str
    group: str
    name: str
    model: str
    backend: str
    family: str
    devices: tuple[str, ...]
    path: str
    runs: list[RawRun]
    test_rmse: float
    ci: float | None
    config: str = ""  # the parameters that tell this row from its neighbours (label_configs)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.runs[0].rec.params.items() if k != "seed"}

    @property
    def cold_start(self) -> str:
        return self.runs[0].rec.identity.cold_start_policy

    def metric(self, name: str) -> float | None:
        """Mean of ``metrics.<name>`` over the runs."""
        return mean(getattr(r.rec.metrics, name) for r in self.runs)

    @property
    def refit_rmse(self) -> float | None:
        """Mean refit test RMSE, when every run was refitted."""
        if any(r.rec.refit is None for r in self.runs):
            return None
        return mean(r.rec.refit.test_rmse for r in self.runs if r.rec.refit)

    @property
    def cost(self) -> Cost:
        return cost(self.runs)

    @property
    def peak_mb(self) -> float | None:
        return mean(r.rec.memory.peak_rss for r in self.runs)

    @property
    def epochs(self) -> float | None:
        return mean(r.rec.fit.epochs_run if r.rec.fit else None for r in self.runs)

    def label(self) -> str:
        """:func:`describe` plus the config text (plot legends)."""
        return describe(self.runs[0]) + (f" {self.config}" if self.config else "")


def aggregate(runs: Iterable[RawRun]) -> list[Row]:
    """One :class:`Row` per (dataset, split group, configuration), sorted by dataset, group and test
    RMSE; rows sharing dataset, group, name, backend, devices and path get the parameters that tell
    them apart as their ``config`` text."""
    buckets: dict[tuple, list[RawRun]] = defaultdict(list)
    for r in runs:
        buckets[(r.rec.dataset, split_group(r.rec.split.spec), config_key(r))].append(r)
    rows = []
    for (dataset, group, _), members in buckets.items():
        members.sort(key=lambda r: (r.rec.split.spec, r.rec.split.seed, r.file))
        first = members[0].rec
        m, ci = t_interval([r.rec.metrics.test_rmse for r in members if r.rec.metrics])
        rows.append(
            Row(
                dataset,
                group,
                name_of(members[0]),
                first.model,
                first.backend,
                first.family,
                first.identity.devices,
                str(first.params.get("path", "")),
                members,
                m,
                ci,
            )
        )
    label_configs(rows, lambda r: (r.dataset, r.group, r.name, r.backend, r.devices, r.path))
    rows.sort(key=lambda r: (r.dataset, r.group, r.test_rmse, r.name, r.backend, r.devices, r.config))
    return rows


def label_configs(rows: list[Row], within: Callable[[Row], tuple]) -> None:
    """Rows with the same ``within(row)`` get the parameters (and cold-start policy) that differ."""
    by: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        by[within(r)].append(r)
    for same in by.values():
        if len(same) < 2:
            continue
        params = [s.params for s in same]
        keys = sorted({k for p in params for k in p if len({canonical_json(q.get(k)) for q in params}) > 1})
        policies = {s.cold_start for s in same}
        for s, p in zip(same, params):
            parts = [f"{k}={short(p.get(k))}" for k in keys]
            if len(policies) > 1:
                parts.append(f"cold={s.cold_start}")
            s.config = " ".join(parts)


def natural(value: Any) -> tuple:
    """Sort key for parameter values: numbers and lists of numbers by value, the rest as text."""
    if isinstance(value, bool) or value is None:
        return (1, (), str(value))
    if isinstance(value, (int, float)):
        return (0, (value,), "")
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return (0, tuple(value), "")
    if isinstance(value, list):  # e.g. device lists: fewer first
        return (1, (len(value),), json.dumps(value))
    return (1, (), json.dumps(value, sort_keys=True))


def select_best(
    items: Sequence[T], *, n: Callable[[T], int], rank: Callable[[T], tuple], min_runs: int = MIN_REPLICATES
) -> tuple[T | None, int]:
    """The item with the lowest ``rank`` among those with ``n(item) >= min_runs`` (among all when
    none has that many), and how many items were passed over for having fewer runs."""
    if not items:
        return None, 0
    enough = sum(n(i) >= min_runs for i in items)
    best = min(items, key=lambda i: (n(i) < min_runs, *rank(i)))
    return best, (len(items) - enough if enough else 0)


# =============================================================================== formatting
def short(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(short(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def num(v: float | None, nd: int = 4) -> str:
    return "—" if v is None else f"{v:.{nd}f}"


def sec(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3g}" if v < 1 else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def pval(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"


def rmse_ci(m: float, ci: float | None) -> str:
    return f"{m:.4f} ± {ci:.4f}" if ci is not None else f"{m:.4f} (n=1)"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else (f"{v:.6f}" if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


# =============================================================================== the standard table
CSV_HEADER = [
    "dataset",
    "split_group",
    "model",
    "registry_name",
    "backend",
    "path",
    "devices",
    "config",
    "test_rmse_mean",
    "test_rmse_ci95",
    "refit_test_rmse_mean",
    "test_mae_mean",
    "valid_rmse_mean",
    "fit_seconds_mean",
    "seconds_per_epoch_mean",
    "timing_basis",
    "n_contended",
    "peak_rss_mb_mean",
    "epochs_run_mean",
    "n_runs",
]

CONTENTION_NOTE = (
    "† timing mean over the quiet runs only: the row's other runs were measured while the machine was "
    "busier than the run itself (`conditions.contended`), see `runs.csv`. ‡ every run of the row was "
    "measured under contention: its timings are not comparable with the others."
)


def table(rows: list[Row]) -> list[str]:
    """The markdown table of ``rows`` (a refit column when any row has one; the contention footnote
    when a timing is marked)."""
    refit = any(r.refit_rmse is not None for r in rows)
    header = ["model", "backend", "path", "devices", "config", "test RMSE (mean ± 95% CI)"]
    header += ["refit test RMSE"] * refit + ["test MAE", "valid RMSE", "fit s", "s/epoch", "peak MB", "epochs", "n"]
    cells = []
    for r in rows:
        c = r.cost
        cells.append(
            [r.name, r.backend, r.path or "—", ",".join(r.devices), r.config, rmse_ci(r.test_rmse, r.ci)]
            + [num(r.refit_rmse)] * refit
            + [
                num(r.metric("test_mae")),
                num(r.metric("valid_rmse")),
                sec(c.fit_s) + c.mark,
                sec(c.s_epoch) + c.mark,
                "—" if r.peak_mb is None else f"{r.peak_mb:.0f}",
                "—" if r.epochs is None else f"{r.epochs:.1f}",
                str(r.n),
            ]
        )
    out = md_table(header, cells)
    if any(r.cost.mark for r in rows):
        out += ["", CONTENTION_NOTE]
    return out


def csv_rows(rows: list[Row]) -> list[list[Any]]:
    out = []
    for r in rows:
        c = r.cost
        out.append(
            [
                r.dataset,
                r.group,
                r.name,
                r.model,
                r.backend,
                r.path,
                ",".join(r.devices),
                r.config,
                r.test_rmse,
                r.ci,
                r.refit_rmse,
                r.metric("test_mae"),
                r.metric("valid_rmse"),
                c.fit_s,
                c.s_epoch,
                c.basis,
                c.n_contended,
                r.peak_mb,
                r.epochs,
                r.n,
            ]
        )
    return out


def sizes_text(runs: Sequence[RawRun]) -> str:
    """train / validation / test sizes of the runs (a range when they differ)."""
    sizes = sorted({(s.n_train, s.n_valid, s.n_test) for r in runs if (s := r.rec.sizes)})
    if not sizes:
        return "—"
    if len(sizes) == 1:
        return "/".join(str(x) for x in sizes[0])
    lo, hi = sizes[0], sizes[-1]
    return " / ".join(f"{a}–{b}" for a, b in zip(lo, hi))
