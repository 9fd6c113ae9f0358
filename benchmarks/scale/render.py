"""``results/scale.md``, ``scale.csv`` and ``scale_epoch_time.png`` from the scale records.

:func:`render_scale` is a pure function of the records (sorted here, no timestamps of its own): the
same records give byte-identical files whatever their order.  ``autorec-bench report`` calls it on
``<raw>/scale``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autorec import scale as sc
from benchmarks.record import RunRecord
from benchmarks.scale.plot import plot_scale
from benchmarks.scale.records import (
    contended,
    epoch_seconds,
    n_train,
    outcome,
    peak_rss_bytes,
    row_of,
    scale_of,
    train_losses,
)
from benchmarks.scale.spec import shape_key
from benchmarks.scale.targets import pick, pick_sparse, target_results

INTRO = [
    "FLOPs of one training epoch (matrix products only, forward + backward, 2 per multiply-add; "
    "elementwise work and the optimizer update not counted), with `h` the hidden size:",
    "",
    "- dense (masked) path: `10 * rows * n_in * h` (first layer: forward + weight gradient; "
    "decoder: forward + weight gradient + input gradient);",
    "- sparse path: `10 * nnz * h` (encoder: sparse x dense forward + weight gradient; decoder "
    "evaluated at the observed entries only: forward + both gradients).",
    "",
    "Rows are the AutoRec matrix's rows (items for I-AutoRec, users for U-AutoRec), `n_in` its "
    "width; `nnz` the training ratings. s/epoch is the median of the timed epochs; "
    "GFLOP/s = FLOPs / s/epoch; % matmul compares with the dense matmul rate measured in the same "
    "worker. Peak RSS is the worker process's peak resident set (data generation, split, training "
    "and evaluation included): its VmHWM, or for rows recorded before that (raw field "
    "`peak_rss_source`) its `ru_maxrss`, which also counts the ~50 MB parent at fork.",
    "",
]

BOUNDS_TEXT = (
    "Two lower bounds per row, for the epoch actually timed: compute (FLOPs ÷ the measured matmul "
    "rate) and memory traffic (the traffic model of `autorec.scale.epoch_traffic_bytes` ÷ the "
    "bandwidth measured in the same worker, `c = a + b` on 256 MB float32 arrays). The traffic "
    "model counts, per optimizer step, Adam's 7 float32 reads/writes per parameter, the gradient "
    "writes and the weight reads of the first and last layers; per epoch, the observed entries "
    "(sparse) or the dense batch tensors (dense). Steps x parameters = 2 rows x n_in x h / batch, "
    "so with a dense-parameter optimizer this part grows with rows x n_in, not with the ratings."
)

CSV_HEADER = [
    "row_id", "status", "shape", "model", "path", "kernel", "n_users", "n_items", "n_ratings", "n_train",
    "n_train_timed", "rows", "n_in", "hidden", "batch_size", "density", "seconds_per_epoch",
    "seconds_per_epoch_measured", "timing_mode", "epoch_seconds", "ratings_per_second", "flops_per_epoch",
    "achieved_gflops", "matmul_gflops", "matmul_fraction", "peak_rss_bytes", "estimate_bytes", "limit_bytes",
    "final_train_loss", "test_rmse", "load_avg_before", "load_avg_after",
]  # fmt: skip


def _gb(x: float | None) -> str:
    return "—" if x is None else f"{x / 1e9:.2f}"


def _num(x: Any) -> str:
    return "" if x is None else f"{float(x):.6g}"


def _csv_row(r: RunRecord) -> list:
    row, s = row_of(r), scale_of(r)
    w = row.workload(n_train(r))
    measured = outcome(r) == "measured"
    loads = r.conditions
    return [
        row.row_id, "ok" if measured else outcome(r), row.shape, row.model_label, row.path, row.sparse_kernel or "",
        row.n_users, row.n_items, row.n_ratings, n_train(r), s.get("n_train_timed", ""), w.n_rows, w.n_in,
        "-".join(str(h) for h in row.hidden), row.batch_size, f"{row.n_ratings / (row.n_users * row.n_items):.6g}",
        _num(s.get("seconds_per_epoch")), _num(r.timing.per_epoch), s.get("timing_mode", ""),
        " ".join(_num(x) for x in epoch_seconds(r)), _num(s.get("ratings_per_second")), s.get("flops_per_epoch", ""),
        _num(s.get("achieved_gflops")), _num((s.get("matmul") or {}).get("gflops")), _num(s.get("matmul_fraction")),
        s.get("peak_rss_bytes", ""), s["estimate"]["total_bytes"], s["limit_bytes"],
        _num(train_losses(r)[-1] if measured else None), _num(r.metrics.test_rmse if r.metrics else None),
        " ".join(str(x) for x in (loads.load_before if loads else ())),
        " ".join(str(x) for x in (loads.load_after if loads else ())),
    ]  # fmt: skip


def _csv(recs: list[RunRecord]) -> str:
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(CSV_HEADER)
    for r in recs:
        wr.writerow(_csv_row(r))
    return buf.getvalue()


def _machine(ok: list[RunRecord]) -> list[str]:
    envs = sorted(
        {
            (
                r.environment.get("cpu_model"),
                r.environment.get("cpu_count"),
                r.environment.get("torch"),
                scale_of(r).get("torch_threads"),
                (scale_of(r).get("env_flags") or {}).get("THP_MEM_ALLOC_ENABLE"),
            )
            for r in ok
            if r.environment
        },
        key=str,
    )
    if not envs:
        return []
    loads = [x for r in ok if r.conditions for x in (r.conditions.load_before[:1] + r.conditions.load_after[:1])]
    mm = [scale_of(r)["matmul"]["gflops"] for r in ok]
    return [
        "Machine: "
        + "; ".join(
            f"{c} ({n} cores), torch {t}, {th} threads, THP_MEM_ALLOC_ENABLE={thp}" for c, n, t, th, thp in envs
        )
        + ".",
        f"Load average (1 min) at row start/end: {min(loads):.2f} to {max(loads):.2f}. "
        f"Dense float32 matmul (torch.mm, measured in each row's worker): {min(mm):.0f} to {max(mm):.0f} GFLOP/s.",
        "",
    ]


def _targets(recs: list[RunRecord]) -> list[str]:
    md = [
        "## Targets",
        "",
        "A sparse target reads the faster of the two exact native rows of its shape and model; "
        "[Adam fused] marks the row with Adam fused into the gradient passes.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for t in target_results(recs):
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else "**no**")
        md.append(f"| {t['target']} | {t['measured']} | {met} |")
    return md + [""]


def _notes(r: RunRecord) -> str:
    s = scale_of(r)
    note = "" if s["timing_mode"] == "full epochs" else s["timing_mode"]
    if contended(r):
        c = r.conditions
        before = c.load_before[0] if c and c.load_before else "?"
        after = c.load_after[0] if c and c.load_after else "?"
        mm_after = (s.get("matmul_after") or {}).get("gflops", float("nan"))
        note = (note + "; " if note else "") + (
            f"**contended** (load {before} -> {after}, matmul {s['matmul']['gflops']:.0f} -> {mm_after:.0f} GFLOP/s)"
        )
    if r.metrics is not None:
        note = (note + "; " if note else "") + f"test RMSE {r.metrics.test_rmse:.4f}"
    resumed = r.fit.extra.get("resumed_from_epoch") if r.fit else None
    if resumed:
        note += f"; resumed after epoch {resumed}"
    return note


def _measurement(r: RunRecord) -> str:
    row, s = row_of(r), scale_of(r)
    w = row.workload(n_train(r))
    head = f"| {row.shape} | {row.model_label} | {row.path_label} | {row.batch_size} | "
    size = f"{w.n_rows} x {w.n_in}"
    est = s["estimate"]["total_bytes"]
    kind = outcome(r)
    if kind == "measured":
        return (
            head + f"{s['n_train_timed']} | {size} | {s['seconds_per_epoch']:.2f} | "
            f"{' '.join(f'{x:.2f}' for x in epoch_seconds(r))} | {s['ratings_per_second']:.3g} | "
            f"{s['flops_per_epoch'] / 1e9:.0f} | {s['achieved_gflops']:.1f} | {100 * s['matmul_fraction']:.0f}% | "
            f"{_gb(s['peak_rss_bytes'])} | {_gb(est)} | {_notes(r)} |"
        )
    limit = s["limit_bytes"]
    if kind in ("refused", "estimate"):
        what = (
            f"**does not fit: needs {est / 1e9:.1f} GB** (limit {limit / 1e9:.1f} GB)"
            if kind == "refused"
            else f"fits: needs {est / 1e9:.1f} GB (limit {limit / 1e9:.1f} GB); not run"
        )
        return head + f"{n_train(r)} | {size} | — | — | — | — | — | — | — | {est / 1e9:.2f} | {what}: {s['reason']} |"
    err = (r.error.message if r.error else "").strip().splitlines()
    return (
        head + f"— | {size} | — | — | — | — | — | — | {_gb(peak_rss_bytes(r))} | {_gb(est)} | "
        f"**failed** ({r.error.type if r.error else '?'}): {err[-1][:120] if err else ''} |"
    )


def _speedups(ok: list[RunRecord]) -> list[str]:
    pairs = []
    for shape in sorted({row_of(r).shape for r in ok}, key=shape_key):
        for based in ("item", "user"):
            s, d = pick_sparse(ok, shape, based), pick(ok, shape, based, "dense")
            st = pick(ok, shape, based, "sparse", "torch")
            sn = pick(ok, shape, based, "sparse", "native")
            sf = pick(ok, shape, based, "sparse", "native-fused")
            if s and d:
                w = row_of(s).workload(n_train(s))
                ratio = sc.epoch_flops(w, "dense") / sc.epoch_flops(w, "sparse")
                spe = scale_of(s)["seconds_per_epoch"]
                native_vs_torch = f"{scale_of(st)['seconds_per_epoch'] / spe:.1f}x" if st else "—"
                speedup = scale_of(d)["seconds_per_epoch"] / spe
                fused = (
                    f"{scale_of(sn)['seconds_per_epoch'] / scale_of(sf)['seconds_per_epoch']:.2f}x"
                    if sn and sf
                    else "—"
                )
                pairs.append(
                    f"| {shape} | {row_of(s).model_label} | {row_of(s).path_label} | {speedup:.1f}x | {ratio:.0f}x "
                    f"| {native_vs_torch} | {fused} |"
                )
    if not pairs:
        return []
    return [
        "## Sparse vs dense",
        "",
        "The sparse row is the faster of the exact native variants (torch's Adam, or Adam fused into the gradient "
        "passes); the last column is native s/epoch ÷ fused s/epoch.",
        "",
        "| shape | model | sparse row | dense s/epoch ÷ sparse s/epoch | FLOP ratio (dense ÷ sparse) | "
        "native kernels vs torch sparse ops | Adam fused: speedup |",
        "|---|---|---|---|---|---|---|",
        *pairs,
        "",
    ]  # fmt: skip


def _estimator(ok: list[RunRecord]) -> list[str]:
    md = [
        "## Memory estimator vs measured peak RSS",
        "",
        "| row | estimate GB | peak stage | measured peak RSS GB | measured / estimate |",
        "|---|---|---|---|---|",
    ]
    for r in ok:
        s = scale_of(r)
        e, peak = s["estimate"], s["peak_rss_bytes"]
        md.append(
            f"| {s['row_id']} | {e['total_bytes'] / 1e9:.2f} | {e['peak_stage']} | {peak / 1e9:.2f} | "
            f"{peak / e['total_bytes']:.2f} |"
        )
    return md + [""]


def _bounds(ok: list[RunRecord]) -> list[str]:
    md = [
        "## What bounds the epoch",
        "",
        BOUNDS_TEXT,
        "",
        "| row | measured s | compute bound s | traffic GB | of which optimizer GB | bandwidth GB/s | "
        "traffic bound s | measured ÷ max(bounds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ok:
        s = scale_of(r)
        t, meas = s["traffic_bytes_per_epoch"], r.timing.per_epoch or 0.0
        fb, tb = s["flop_bound_seconds"], s["bandwidth_bound_seconds"]
        md.append(
            f"| {s['row_id']} | {meas:.2f} | {fb:.2f} | {t['total'] / 1e9:.1f} | {t['optimizer'] / 1e9:.1f} | "
            f"{s['bandwidth']['gbs']:.1f} | {tb:.2f} | {meas / max(fb, tb):.1f} |"
        )
    return md + [""]


def _profiles(ok: list[RunRecord]) -> list[str]:
    md = [
        "## Where the time goes (torch.profiler, self CPU time)",
        "",
        "`_Encode`/`_EncodeBackward`/`_Decode`/`_DecodeBackward` are the native sparse kernels, "
        "`_fused_adam_` the optimizer step, `uniform_` the dropout masks; on the rows with Adam fused "
        "(`-native-fused`), `native::encode`/`native::decode` are the forward kernels, and "
        "`native::decode_backward_adam`/`native::encode_backward_adam` compute the wide weights' "
        "gradients and apply their Adam step in the same pass; `native::decode_step_adam` (rows "
        "recorded after the one-pass decoder landed) is the decoder's forward, backward and Adam step "
        "in one pass.",
        "",
    ]
    for r in ok:
        p = scale_of(r)["profile"]
        top = ", ".join(f"{o['name']} {100 * o['share']:.0f}%" for o in p["ops"][:7])
        md.append(f"- {row_of(r).row_id} ({p['scope']}): {top}")
    return md + [""]


def render_scale(records: Iterable[RunRecord], out_dir: str | os.PathLike, plots: bool = True) -> list[Path]:
    """Write ``scale.md``, ``scale.csv`` and (``plots``) ``scale_epoch_time.png`` under ``out_dir``
    from the scale records (records without a scale section are ignored); the paths written."""
    recs = sorted((r for r in records if r.scale is not None), key=lambda r: row_of(r).sort_key)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.csv").write_text(_csv(recs))
    written = [out / "scale.md", out / "scale.csv"]
    ok = [r for r in recs if outcome(r) == "measured"]
    md = [
        "# AutoRec at scale: sparse vs dense, synthetic data of the real shapes",
        "",
        "Generated by `python -m benchmarks.scale` (raw files: `results/raw/scale/*.json`) and rendered by "
        "`benchmarks.scale.render_scale`; do not edit by hand.",
        "",
        *_machine(ok),
        *INTRO,
        *_targets(recs),
        "## Measurements",
        "",
        "| shape | model | path | batch | ratings (train) | rows x n_in | s/epoch | epochs timed | ratings/s | "
        "GFLOP/epoch | GFLOP/s | % matmul | peak RSS GB | est. GB | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[_measurement(r) for r in recs],
        "",
        *_speedups(ok),
    ]
    if ok:
        md += _estimator(ok) + _bounds(ok)
    profiled = [r for r in ok if scale_of(r).get("profile")]
    if profiled:
        md += _profiles(profiled)
    if plots and plot_scale(ok, out / "scale_epoch_time.png"):
        written.append(out / "scale_epoch_time.png")
        md += ["## Time per epoch vs ratings", "", "![time per epoch vs ratings](scale_epoch_time.png)", ""]
    (out / "scale.md").write_text("\n".join(md).rstrip() + "\n")
    return written
