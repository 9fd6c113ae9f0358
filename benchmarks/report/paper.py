"""The paper-style comparison: measured numbers next to the AutoRec paper's published ones.

Protocol of the paper (Sedhain, Menon, Sanner, Xie 2015): random 90/10 splits, hidden 500, cold
start rated 3.  For each dataset with results on a random 90/10 split, each model the paper
reports (I-AutoRec, U-AutoRec, BiasedMF = our ``biased-mf``) and backend gets one measured row:
the configuration of the main comparison with the lowest mean validation RMSE, among those run on
at least :data:`~benchmarks.report.tables.MIN_REPLICATES` splits first, the paper's cold start
(``constant:3``) preferred; deep (several hidden layers) AutoRec excluded.  Published numbers are
always labelled "(published)"; models the paper reports but the suite does not run (LLORMA, I-RBM)
are listed with their published number only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from benchmarks.report import tables
from benchmarks.report.tables import Row

#: the AutoRec paper's Table 1, test RMSE, by dataset and model
PUBLISHED = {
    "ml-1m": {"I-AutoRec": 0.831, "U-AutoRec": 0.874, "BiasedMF": 0.845, "LLORMA": 0.833, "I-RBM": 0.854},
    "ml-10m": {"I-AutoRec": 0.782, "U-AutoRec": 0.867},
}
SOURCE = "Sedhain et al. 2015 (AutoRec paper), Table 1, published test RMSE"
PAPER_NAMES = {"i-autorec": "I-AutoRec", "u-autorec": "U-AutoRec", "biased-mf": "BiasedMF"}
PROTOCOL_GROUP = "random:test_ratio=0.1"


@dataclass(frozen=True)
class PaperRow:
    dataset: str
    model: str  # the paper's name
    backend: str
    row: Row | None  # None: published only
    published: float | None


def _eligible(r: Row) -> bool:
    hidden = r.params.get("hidden")
    deep = isinstance(hidden, list) and len(hidden) > 1
    return r.group == PROTOCOL_GROUP and r.model in PAPER_NAMES and not deep


def paper_rows(rows: list[Row]) -> list[PaperRow]:
    """Measured rows (best per dataset, paper model and backend) and published-only rows."""
    candidates: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for r in rows:
        if _eligible(r):
            candidates[(r.dataset, PAPER_NAMES[r.model], r.backend)].append(r)
    out = []
    for (ds, model, backend), rs in sorted(candidates.items()):
        best, _ = tables.select_best(
            rs,
            n=lambda r: r.n,
            rank=lambda r: (r.cold_start != "constant:3", r.metric("valid_rmse") or math.inf, r.test_rmse, r.config),
        )
        out.append(PaperRow(ds, model, backend, best, PUBLISHED.get(ds, {}).get(model)))
    for ds in sorted({p.dataset for p in out}):
        measured = {p.model for p in out if p.dataset == ds}
        for model, value in sorted(PUBLISHED.get(ds, {}).items()):
            if model not in measured:
                out.append(PaperRow(ds, model, "—", None, value))
    out.sort(key=lambda p: (p.dataset, p.row is None, p.model, p.backend))
    return out


HEADER = [
    "dataset",
    "model",
    "backend",
    "config",
    "measured test RMSE",
    "n",
    "cold start",
    "published",
    "measured - published",
]
CSV_HEADER = [
    "dataset",
    "model",
    "backend",
    "config",
    "test_rmse_mean",
    "test_rmse_ci95",
    "n_runs",
    "cold_start",
    "published",
]


def render(rows: list[Row]) -> tuple[list[str], str | None]:
    """The markdown of the section and its CSV (``None`` when there is nothing to compare)."""
    prow = paper_rows(rows)
    if not prow:
        return ["No AutoRec or biased-mf results of the main comparison on a random 90/10 split yet.", ""], None
    md = [
        "Measured on random 90/10 splits (per dataset, model and backend: the configuration of the main comparison "
        "with the lowest mean validation RMSE, preferring those run on at least "
        f"{tables.MIN_REPLICATES} splits, then the paper's cold start `constant:3`) next to the **published** "
        f"numbers ({SOURCE}; '—' where the paper has none, 'not run' where the suite has none).",
        "",
    ]
    cells, csv = [], []
    for p in prow:
        pub = "—" if p.published is None else f"{p.published:.3f} (published)"
        r = p.row
        if r is None:
            cells.append([p.dataset, p.model, "—", "", "not run", "—", "—", pub, "—"])
            csv.append([p.dataset, p.model, "", "", None, None, 0, "", p.published])
            continue
        gap = "—" if p.published is None else f"{r.test_rmse - p.published:+.4f}"
        ci = f" ± {r.ci:.4f}" if r.ci is not None else ""
        cells.append(
            [p.dataset, p.model, p.backend, r.config, f"{r.test_rmse:.4f}{ci}", str(r.n), r.cold_start, pub, gap]
        )
        csv.append([p.dataset, p.model, p.backend, r.config, r.test_rmse, r.ci, r.n, r.cold_start, p.published])
    return md + tables.md_table(HEADER, cells) + [""], tables.csv_text(CSV_HEADER, csv)
