"""The targets of the scale work (issue 6), checked against the measured rows.

Each target reads the *main* row of a shape, model and path: the spec's batch size (untagged), the
native kernels on the sparse path (:func:`pick`); a variant row (``b256``) never stands in for it.
"""

from __future__ import annotations

from typing import Any

from benchmarks.record import RunRecord
from benchmarks.scale.records import outcome, row_of, scale_of, train_losses

TARGETS: tuple[tuple[str, str, Any, str], ...] = (
    ("ml-1m", "speedup", 4.0, "ML-1M shape: sparse >= 4x faster per epoch than dense-masked"),
    ("ml-10m", "speedup", 20.0, "ML-10M shape: sparse >= 20x faster per epoch than dense-masked"),
    ("ml-20m", "epoch", (60.0, 8e9), "ML-20M shape, I-AutoRec, hidden 500: epoch <= 60 s, peak RSS <= 8 GB"),
    ("netflix", "epoch", (300.0, 20e9), "Netflix shape, I-AutoRec, hidden 500: epoch <= 5 min, peak RSS <= 20 GB"),
    ("ml-10m", "gflops", 0.25, "ML-10M shape, sparse path: achieved GFLOP/s >= 25% of measured dense matmul GFLOP/s"),
)


def pick(recs: list[RunRecord], shape: str, based: str, path: str, kernel: str = "native") -> RunRecord | None:
    """The main (untagged: the spec's batch size) measured row of that shape, model, path and kernel."""
    for r in recs:
        row = row_of(r)
        if (
            (row.shape, row.based, row.path) == (shape, based, path)
            and outcome(r) == "measured"
            and (path != "sparse" or row.kernel == kernel)
            and not row.tag
        ):
            return r
    return None


def _speedup(ok: list[RunRecord], shape: str, goal: float) -> tuple[list[str], list[bool]]:
    parts, mets = [], []
    for based in ("item", "user"):
        s, d = pick(ok, shape, based, "sparse"), pick(ok, shape, based, "dense")
        if s and d:
            sp = scale_of(d)["seconds_per_epoch"] / scale_of(s)["seconds_per_epoch"]
            text = f"{row_of(s).model_label} {sp:.1f}x"
            if "extrapolation" not in scale_of(d):  # the same epochs: the losses must agree
                ls, ld = train_losses(s)[-1], train_losses(d)[-1]
                gap = abs(ls - ld) / max(abs(ld), 1e-12)
                text += f" (final train loss differs by {100 * gap:.2g}%)"
            parts.append(text)
            mets.append(sp >= goal)
    return parts, mets


def target_results(records: list[RunRecord]) -> list[dict[str, Any]]:
    """Each target of :data:`TARGETS` with its measured value and whether it is met (``None``:
    not measured)."""
    ok = [r for r in records if outcome(r) == "measured"]
    out = []
    for shape, kind, goal, text in TARGETS:
        res: dict[str, Any] = {"target": text, "shape": shape, "met": None, "measured": "not measured"}
        if kind == "speedup":
            parts, mets = _speedup(ok, shape, goal)
            if parts:
                res["measured"] = "; ".join(parts)
                res["met"] = all(mets)
        elif kind == "epoch":
            s = pick(ok, shape, "item", "sparse")
            if s:
                sec, mem = goal
                spe, peak = scale_of(s)["seconds_per_epoch"], scale_of(s)["peak_rss_bytes"]
                res["measured"] = f"{spe:.1f} s/epoch, peak RSS {peak / 1e9:.2f} GB"
                res["met"] = spe <= sec and peak <= mem
        elif kind == "gflops":
            parts, mets = [], []
            for based in ("item", "user"):
                s = pick(ok, shape, based, "sparse")
                if s:
                    f = scale_of(s)
                    parts.append(
                        f"{row_of(s).model_label} {f['achieved_gflops']:.1f} GFLOP/s = "
                        f"{100 * f['matmul_fraction']:.0f}% of {f['matmul']['gflops']:.0f}"
                    )
                    mets.append(f["matmul_fraction"] >= goal)
            if parts:
                res["measured"] = "; ".join(parts)
                res["met"] = mets[0]
                res["note"] = "met is judged on I-AutoRec (the first entry)"
        out.append(res)
    return out
