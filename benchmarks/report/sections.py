"""Which section of the report a run belongs to, and the ablation sections.

**Sections** (:func:`section`), decided by the sweep that wrote a record:

- ``d2l``: every run on a ``d2l-random`` split (the D2L chapter's protocol);
- an ablation (:data:`ABLATIONS`: the sweeps ``hidden-units``, ``activations``, ``depth``,
  ``devices``): each in its own section, never in the main table;
- ``other``: runs written by ``autorec-bench run`` outside a sweep;
- ``main``: every other sweep (``ml100k``, ``paper``, a dataset's tuned comparison): the tuned
  comparison that the main table per dataset shows.

**Ablation tables.**  An ablation varies a few parameters (:attr:`Ablation.varies`) around a base
configuration.  Identical runs are stored once, under the sweep that ran them first (the
activations sweep's sigmoid run *is* the hidden-units sweep's 500-unit run), so an ablation's
tables are built from the runs of every ablation sweep: one table per *neighbourhood* (dataset,
split group, model, backend, devices, cold start and every parameter but the varied ones) that
holds a run of this ablation's own sweep, narrowed by :attr:`Ablation.select` (hidden units: one
hidden layer; depth: the stacks next to one layer of their first width).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import plots, tables
from benchmarks.report.inputs import RawRun
from benchmarks.report.tables import Row


def _hidden(r: Row) -> list:
    h = r.params.get("hidden")
    return h if isinstance(h, list) else [h]


def _single_layer(rows: list[Row]) -> list[Row]:
    return [r for r in rows if len(_hidden(r)) == 1]


def _stacks(rows: list[Row]) -> list[Row]:
    firsts = {_hidden(r)[0] for r in rows if len(_hidden(r)) > 1}
    return [r for r in rows if len(_hidden(r)) > 1 or _hidden(r)[0] in firsts] if firsts else []


@dataclass(frozen=True)
class Ablation:
    title: str
    varies: tuple[str, ...]
    select: Callable[[list[Row]], list[Row]] = list


#: ablation sweeps (benchmarks/specs/<name>.toml) -> what their section shows
ABLATIONS = {
    "hidden-units": Ablation("Hidden units", ("hidden",), _single_layer),
    "activations": Ablation("Activation functions", ("hidden_activation", "output_activation")),
    "depth": Ablation("Depth", ("hidden",), _stacks),
    "devices": Ablation("Devices", ("devices",)),
}
ABLATIONS_TEXT = (
    "Each ablation sweep in its own section, never in the main comparison; the config column names what it varies. "
    "A run two sweeps share (the activations sweep's sigmoid run is the hidden-units sweep's 500-unit run) is "
    "stored once and shown in both."
)
HIDDEN_TEXT = (
    "The paper shows this as a curve (Fig. 2: RMSE falls as hidden units grow and flattens towards 500); it "
    "tabulates no numbers, so none are shown as published here."
)


def section(run: RawRun) -> str:
    """``"d2l"``, an ablation sweep's name, ``"other"`` or ``"main"`` (module docstring)."""
    rec = run.rec
    if tables.split_group(rec.split.spec).startswith("d2l-random"):
        return "d2l"
    if rec.sweep in ABLATIONS:
        return rec.sweep
    return "other" if rec.sweep is None else "main"


def neighbourhood(r: Row, varies: tuple[str, ...]) -> tuple:
    """What the rows of one ablation table share: everything but the varied parameters."""
    devices = () if "devices" in varies else r.devices
    drop = ("seed", "devices", *varies)
    return (r.dataset, r.group, r.model, r.backend, devices, r.cold_start, tables.params_text(r.params, drop))


def ablation_tables(runs: list[RawRun], sweep: str) -> list[list[Row]]:
    """The tables of ablation ``sweep`` from ``runs`` (the runs of every ablation sweep), each
    sorted by the varied values, their ``config`` naming them."""
    ab = ABLATIONS[sweep]
    rows = [dataclasses.replace(r) for r in tables.aggregate(runs)]  # own copies: config is relabelled here
    own = {neighbourhood(r, ab.varies) for r in rows if any(x.rec.sweep == sweep for x in r.runs)}
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        key = neighbourhood(r, ab.varies)
        if key in own:
            groups[key].append(r)
    out = []
    for key in sorted(groups, key=repr):
        chosen = ab.select(sorted(groups[key], key=lambda r: tuple(tables.natural(r.params.get(k)) for k in ab.varies)))
        if chosen:
            tables.label_configs(chosen, lambda r: ())
            out.append(chosen)
    return out


def render(
    runs: list[RawRun],
    put: Callable[[str, str], None],
    plot: Callable[[str, Callable[[Path], bool], str], list[str]],
) -> list[str]:
    """The markdown of the ablation sections (``runs``: the runs of every ablation sweep); writes
    their CSVs with ``put`` and the hidden-units plot with ``plot``."""
    md = ["## Ablations", "", ABLATIONS_TEXT, ""]
    for sweep, ab in ABLATIONS.items():
        md += [f"### {ab.title}", ""]
        found = ablation_tables(runs, sweep)
        if not found:
            md += [f"No results of the `{sweep}` sweep yet (`benchmarks/specs/{sweep}.toml`).", ""]
            continue
        for rows in found:
            r = rows[0]
            where = f"{r.model}, {r.backend}" + ("" if "devices" in ab.varies else f" ({','.join(r.devices)})")
            md += [f"{where}, {r.dataset} — {r.group}, cold start {r.cold_start}:", ""] + tables.table(rows) + [""]
        put(f"ablation_{tables.slug(sweep)}.csv", tables.csv_text(tables.CSV_HEADER, tables.csv_rows(sum(found, []))))
        if sweep == "hidden-units":
            series = [
                (f"{t[0].name} ({t[0].backend}), {t[0].dataset} {t[0].group}", [(_hidden(r)[0], r) for r in t])
                for t in found
            ]
            draw = lambda p, series=series: plots.rmse_vs_hidden(series, p)
            md += [HIDDEN_TEXT, ""] + plot("plots/rmse_vs_hidden.png", draw, "RMSE vs hidden units")
    return md
