"""Every plot of the report (matplotlib, Agg), as PNG files with deterministic bytes.

Each function takes rows or verdicts already computed from the raw records, writes one PNG
atomically and returns whether it drew anything (``False``: nothing to show, no file written).
The bytes depend only on the inputs: the PNG carries no software or time metadata.

- :func:`forest`: the verdict per dataset: each split's paired difference AutoRec - best MF, their
  mean with its 95% CI, the zero line;
- :func:`accuracy_vs_cost`: test RMSE (mean +- 95% CI) against fit seconds, one point per
  configuration, the Pareto front (no configuration both cheaper and better) drawn;
- :func:`learning_curves`: validation RMSE per epoch, mean over runs with its 95% CI band, one panel
  per model family, the y-axis cut to the region around the best epochs;
- :func:`rmse_vs_hidden`: test RMSE against hidden units with 95% CI error bars (the AutoRec
  paper's Figure 2 shape).
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autorec.atomic import atomic_write
from autorec.errors import MissingDependencyError
from benchmarks.report.tables import Row, t_interval

if TYPE_CHECKING:
    from benchmarks.verify import Verdict

FAMILIES = {"autorec": "AutoRec", "mf": "matrix factorisation", "baseline": "baselines"}
MARKERS = {"autorec": "o", "mf": "s", "baseline": "^"}
WINNER_COLOURS = {"autorec": "tab:green", "mf": "tab:red", "": "tab:gray"}
OUTCOMES = {
    "autorec": "AutoRec significantly better",
    "mf": "best MF significantly better",
    "": "neither (Holm p >= α)",
}


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(
            "the report's plots need matplotlib: pip install '.[plot]' (or run `autorec-bench report --no-plots`)"
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9})
    return plt


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    _plt().close(fig)
    data = buf.getvalue()
    atomic_write(path, lambda fh: fh.write(data))


def _legend_right(ax: Any) -> None:
    """A legend outside the axes on the right: it never covers the data nor cuts its labels."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


# =============================================================================== the verdict
def forest(verdicts: Sequence[Verdict], path: Path) -> bool:
    decided = [v for v in verdicts if v.decisive is not None and v.autorec and v.mf]
    if not decided:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.0, 1.2 + 1.1 * len(decided)))
    labels = []
    for y, v in enumerate(reversed(decided)):
        st = v.decisive
        assert st is not None and v.autorec and v.mf
        refit = v.compare == "refit"
        diffs = [
            (p.autorec_refit_test_rmse or 0.0) - (p.mf_refit_test_rmse or 0.0)
            if refit
            else p.autorec_test_rmse - p.mf_test_rmse
            for p in v.pairs
        ]
        colour = WINNER_COLOURS[v.winner]
        ax.scatter(diffs, [y + 0.18] * len(diffs), s=14, color=colour, alpha=0.55, lw=0, zorder=2)
        ax.errorbar(
            [st.mean_diff],
            [y],
            xerr=[[st.mean_diff - st.ci_low], [st.ci_high - st.mean_diff]],
            fmt="s",
            ms=7,
            color=colour,
            ecolor=colour,
            elinewidth=2,
            capsize=5,
            zorder=3,
        )
        labels.append(
            f"{v.dataset}: {v.autorec.name}\nvs {v.mf.name}\n{st.n_pairs} pairs, Holm p = {v.holm_pvalue:.2g}"
        )
    ax.axvline(0.0, color="black", ls="--", lw=1, zorder=1)
    ax.set_yticks(range(len(decided)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(-0.6, len(decided) - 0.4)
    lo, hi = ax.get_xlim()
    span = max(abs(lo), abs(hi))
    ax.set_xlim(-span, span)  # zero in the middle: the side a result falls on is the answer
    ax.text(0.02, 1.01, "← AutoRec better", transform=ax.transAxes, ha="left", va="bottom", fontsize=8)
    ax.text(0.98, 1.01, "best MF better →", transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
    basis = "refit test RMSE" if any(v.compare == "refit" for v in decided) else "test RMSE"
    ax.set_xlabel(f"AutoRec − best MF, {basis} (dots: one split; square and bar: mean, 95% CI)")
    ax.set_title("The verdict per dataset (both sides chosen by validation RMSE)", fontsize=10, pad=16)
    ax.grid(alpha=0.3, axis="x")
    for winner in [w for w in OUTCOMES if any(v.winner == w for v in decided)]:
        ax.plot([], [], "s", color=WINNER_COLOURS[winner], label=OUTCOMES[winner])
    _legend_right(ax)
    _save(fig, path)
    return True


# =============================================================================== accuracy vs cost
def pareto(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both x (cost) and y (error), by increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def accuracy_vs_cost(rows: Sequence[Row], path: Path, title: str) -> bool:
    rows = [r for r in rows if r.cost.fit_s]
    if len(rows) < 2:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for k, r in enumerate(rows):
        c = r.cost
        hollow = c.basis == "contended"
        ax.errorbar(
            [c.fit_s],
            [r.test_rmse],
            yerr=[r.ci or 0.0],
            fmt=MARKERS.get(r.family, "D"),
            ms=7,
            capsize=3,
            color=f"C{k % 10}",
            mfc="none" if hollow else f"C{k % 10}",
            label=r.label() + (" (timed under contention)" if hollow else ""),
        )
    pts = [(float(r.cost.fit_s or 0.0), r.test_rmse) for r in rows]
    front = pareto(pts)
    ax.step(
        [pts[i][0] for i in front],
        [pts[i][1] for i in front],
        where="post",
        color="black",
        lw=1,
        ls="--",
        alpha=0.6,
        label="Pareto front (cheaper and better)",
        zorder=1,
    )
    ax.set_xscale("log")
    ax.set_xlabel("fit seconds (mean over runs; log scale)")
    ax.set_ylabel("test RMSE (mean ± 95% CI)")
    ax.set_title(f"{title}: accuracy vs cost (● AutoRec, ■ MF, ▲ baselines)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    _legend_right(ax)
    _save(fig, path)
    return True


# =============================================================================== learning curves
def _curve(row: Row) -> tuple[list[int], list[float], list[float]] | None:
    """Epochs, mean validation RMSE and the 95% CI half-width per epoch, over the epochs at least
    half of the row's runs reached (the tail of one long run is not a mean)."""
    per: dict[int, list[float]] = defaultdict(list)
    for r in row.runs:
        for h in r.rec.fit.history if r.rec.fit else ():
            v = h.get("valid_rmse")
            if isinstance(v, (int, float)) and math.isfinite(v):
                per[int(h["epoch"])].append(float(v))
    need = max(1, math.ceil(row.n / 2))
    xs = [e for e in sorted(per) if len(per[e]) >= need]
    if len(xs) < 2:
        return None
    stats = [t_interval(per[e]) for e in xs]
    return xs, [m for m, _ in stats], [h or 0.0 for _, h in stats]


def learning_curves(rows: Sequence[Row], path: Path, title: str) -> bool:
    curves = [(r, c) for r in rows if (c := _curve(r)) is not None]
    if not curves:
        return False
    families = [f for f in FAMILIES if any(r.family == f for r, _ in curves)]
    families += sorted({r.family for r, _ in curves} - set(families))
    bests = [min(c[1]) for _, c in curves]
    lo = min(bests) - 0.01
    hi = max(max(bests) + 0.03, lo + 0.08)  # the region where configurations differ, not the first epochs
    plt = _plt()
    fig, axes = plt.subplots(len(families), 1, figsize=(8.0, 2.9 * len(families)), squeeze=False)
    for ax, fam in zip(axes[:, 0], families):
        for k, (r, (xs, ys, half)) in enumerate(rc for rc in curves if rc[0].family == fam):
            colour = f"C{k % 10}"
            ax.plot(xs, ys, color=colour, lw=1.4, label=r.label())
            ax.fill_between(
                xs, [y - h for y, h in zip(ys, half)], [y + h for y, h in zip(ys, half)], color=colour, alpha=0.15, lw=0
            )
        ax.set_ylim(lo, hi)
        ax.set_title(FAMILIES.get(fam, fam), fontsize=9, loc="left")
        ax.set_ylabel("validation RMSE")
        ax.grid(alpha=0.3)
        _legend_right(ax)
    axes[-1, 0].set_xlabel("epoch")
    fig.suptitle(
        f"{title}: validation RMSE per epoch (mean over runs, 95% CI band; y-axis cut to the best epochs)", fontsize=9
    )
    fig.tight_layout()
    _save(fig, path)
    return True


# =============================================================================== hidden units
def rmse_vs_hidden(series: Sequence[tuple[str, list[tuple[int, Row]]]], path: Path) -> bool:
    """``series``: (label, [(hidden units, row)]) with at least two widths each."""
    series = [(label, pts) for label, pts in series if len(pts) >= 2]
    if not series:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for k, (label, pts) in enumerate(series):
        pts = sorted(pts, key=lambda p: p[0])
        ax.errorbar(
            [h for h, _ in pts],
            [r.test_rmse for _, r in pts],
            yerr=[r.ci or 0.0 for _, r in pts],
            marker="o",
            ms=4,
            capsize=3,
            color=f"C{k % 10}",
            label=label,
        )
    widths = sorted({h for _, pts in series for h, _ in pts})
    ax.set_xscale("log")
    ax.set_xticks(widths)
    ax.set_xticklabels([str(w) for w in widths])
    ax.minorticks_off()
    ax.set_xlabel("hidden units (log scale)")
    ax.set_ylabel("test RMSE (mean ± 95% CI)")
    ax.set_title(
        "RMSE vs hidden units (the AutoRec paper's Fig. 2: falls as units grow, flattens towards 500)", fontsize=9
    )
    ax.grid(alpha=0.3)
    _legend_right(ax)
    _save(fig, path)
    return True
