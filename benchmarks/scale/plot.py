"""The log-log plot of seconds per epoch against training ratings, one line per model, path and kernel."""

from __future__ import annotations

import io
from pathlib import Path

from benchmarks.record import RunRecord
from benchmarks.scale.records import n_train, row_of, scale_of

STYLES = {"sparse (native": "-", "sparse (torch": ":", "dense": "--"}


def plot_scale(measured: list[RunRecord], path: Path) -> bool:
    """Draw the plot of the measured rows into ``path`` (PNG, no metadata that changes between
    runs); False when there is nothing to draw."""
    if not measured:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9})
    series: dict[str, list[tuple[int, float, bool]]] = {}
    for r in sorted(measured, key=lambda r: row_of(r).sort_key):
        row, s = row_of(r), scale_of(r)
        point = (n_train(r), float(s["seconds_per_epoch"]), "extrapolation" in s)
        series.setdefault(f"{row.model_label}, {row.path_label}", []).append(point)
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for name in sorted(series):
        pts = sorted(series[name])
        ls = next((v for k, v in STYLES.items() if k in name), "-")
        marker = "o" if name.startswith("I-") else "s"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker=marker, label=name)
        for x, y, extrapolated in pts:
            if extrapolated:
                ax.plot([x], [y], marker=marker, mfc="white", color="black", ms=7, ls="none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training ratings per epoch")
    ax.set_ylabel("seconds per epoch (median)")
    ax.set_title("AutoRec time per epoch vs ratings (hollow black: extrapolated dense)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return True
