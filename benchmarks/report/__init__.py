"""``autorec-bench report``: results/README.md, the CSVs and the plots, regenerated from the raw
records only.

:func:`build_report` is a pure function of the raw files: the same files give byte-identical outputs
whatever their order or times on disk; it writes no timestamp of its own and sorts everything.  The
verdict it shows is computed from the same records by :func:`benchmarks.verify.verdicts` with the
default protocol (what ``autorec-bench verify`` prints), so it can never be stale.  Outputs under
``out_dir`` (default ``results/``):

- ``README.md``: the verdict table (one row per dataset) with its sentences and forest plot; the
  environment (read from the raw files); per dataset and split group the main comparison (the tuned
  configurations: see :mod:`benchmarks.report.tables` for the rule), its learning curves and its
  accuracy-vs-cost plot; the paper comparison (published numbers labelled); the D2L reproduction;
  each ablation in its own section; runs outside a sweep; failed runs (listed, never averaged); scale;
- ``*.csv``: the same tables, ``runs.csv`` every run;
- ``plots/*.png`` (:mod:`benchmarks.report.plots`).

Files an earlier report wrote and this one did not are removed (the list is kept in
``.report-files``).  A raw file that cannot be read, or whose split hash disagrees with its split,
stops the report with an error naming the file before anything is written.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from autorec.atomic import atomic_write
from benchmarks import verify
from benchmarks.harness.store import DEFAULT_RAW
from benchmarks.report import paper, plots, sections, tables, verdict
from benchmarks.report.inputs import RawRun, check_splits, load_raw, recompute_splits
from benchmarks.report.sections import ABLATIONS, section
from benchmarks.report.tables import Row, aggregate, csv_rows, csv_text, md_table, sizes_text, slug, table

MANIFEST = ".report-files"

ENV_FIELDS: list[tuple[str, Callable[[RawRun], object]]] = [
    ("CPU", lambda r: r.rec.environment.get("cpu_model")),
    ("CPU cores", lambda r: r.rec.environment.get("cpu_count")),
    ("GPU", lambda r: ", ".join(r.rec.environment.get("gpu") or []) or "none"),
    ("platform", lambda r: r.rec.environment.get("platform")),
    ("python", lambda r: r.rec.environment.get("python")),
    ("numpy", lambda r: r.rec.environment.get("numpy")),
    ("scipy", lambda r: r.rec.environment.get("scipy")),
    ("torch", lambda r: r.rec.environment.get("torch")),
    ("mxnet", lambda r: r.rec.environment.get("mxnet")),
    ("scikit-surprise", lambda r: r.rec.environment.get("scikit-surprise")),
    ("threads per run", lambda r: r.rec.conditions.threads if r.rec.conditions else None),
    ("git commit", lambda r: r.rec.git_commit),
]

MAIN_TEXT = (
    "The tuned comparison: the runs of every sweep but the D2L reproduction and the ablations "
    f"({', '.join(f'`{s}`' for s in ABLATIONS)}), which have their own sections below. Test RMSE: mean over "
    "seeds / folds ± the half-width of the 95% t-interval. Timings: wall seconds of `fit` and the median "
    "wall seconds of one epoch (its validation pass included), means over runs. Peak MB: peak RSS of the "
    "run's own worker process (interpreter and frameworks included). Cold start: the policy each run "
    "records (test pairs with an unseen user or item get it; predictions are clipped to the scale)."
)


class _Outputs:
    """What one report writes: text files (written at the end) and plots (drawn when enabled)."""

    def __init__(self, out_dir: Path, plots: bool):
        self.out_dir, self.plots = out_dir, plots
        self.texts: dict[str, str] = {}
        self.names: set[str] = set()

    def put(self, name: str, text: str) -> None:
        self.texts[name] = text
        self.names.add(name)

    def plot(self, name: str, draw: Callable[[Path], bool], alt: str) -> list[str]:
        """Draw ``name`` (a path under ``out_dir``); the markdown that shows it, or nothing."""
        if not self.plots or not draw(self.out_dir / name):
            return []
        self.names.add(name)
        return [f"![{alt}]({name})", ""]


def build_report(
    raw_dir: str | os.PathLike = DEFAULT_RAW,
    out_dir: str | os.PathLike = "results",
    *,
    plots: bool = True,
    recompute: bool = False,
    data_dir: str | None = None,
) -> list[Path]:
    """Regenerate README.md, the CSVs and the plots under ``out_dir`` from the raw files of
    ``raw_dir``; returns the files written.  ``recompute``: also materialise every split whose data
    is at hand (under ``data_dir``) and refuse files that do not match it."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    raw = load_raw(raw_dir)
    check_splits(raw.all)
    notes = recompute_splits(raw.all, data_dir=data_dir) if recompute else []
    out = _Outputs(out_dir, plots)
    by_section: dict[str, list[RawRun]] = defaultdict(list)
    for r in raw.ok:
        by_section[section(r)].append(r)
    md = [
        "# autorec-bench results",
        "",
        f"Generated by `autorec-bench report` from {len(raw.all)} raw result files ({len(raw.ok)} ok, "
        f"{len(raw.failed)} failed); regenerate, do not edit. Every number below is computed from those files.",
        "",
    ]
    md += _verdict(raw.ok, out)
    if raw.all:
        md += ["## Environment", ""] + _env_lines(raw.all) + [""]
    if raw.duplicates:
        md += ["Duplicate files ignored: " + "; ".join(sorted(raw.duplicates)), ""]
    main_rows = aggregate(by_section["main"])
    md += _main(main_rows, out)
    md += ["## Paper comparison", ""]
    lines, text = paper.render(main_rows)
    md += lines
    if text:
        out.put("paper.csv", text)
    md += _d2l(aggregate(by_section["d2l"]), out)
    md += sections.render([r for s in ABLATIONS for r in by_section[s]], out.put, out.plot)
    md += _other(aggregate(by_section["other"]), out)
    md += _failed(raw.failed, out)
    if notes:
        md += ["## Split checks", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Scale", ""] + _scale(raw_dir, out) + ["## Every run", "", "All runs, one line each: `runs.csv`."]
    out.put("runs.csv", _runs_csv(raw.ok))
    out.put("README.md", "\n".join(md).rstrip() + "\n")
    for name, text in sorted(out.texts.items()):
        data = text.encode("utf-8")
        atomic_write(out_dir / name, lambda fh, data=data: fh.write(data))
    names = sorted(out.names)
    _prune(out_dir, names)
    return [out_dir / n for n in names]


# =============================================================================== sections
def _verdict(runs: list[RawRun], out: _Outputs) -> list[str]:
    results = verify.verdicts(runs)
    lines, text = verdict.render(results)
    if text:
        out.put("verdict.csv", text)
    plot = out.plot("plots/verdict.png", lambda p: plots.forest(results, p), "the verdict per dataset")
    return ["## Verdict", ""] + lines + plot


def _env_lines(runs: list[RawRun]) -> list[str]:
    rows = []
    for label, get in ENV_FIELDS:
        counts = Counter(str(get(r)) for r in runs)
        value = (
            next(iter(counts)) if len(counts) == 1 else "; ".join(f"{v} ({n} runs)" for v, n in sorted(counts.items()))
        )
        rows.append([label, value])
    return md_table(["", "value (from the raw files)"], rows)


def _by_group(rows: list[Row]) -> list[tuple[str, str, list[Row]]]:
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r.dataset, r.group)].append(r)
    return [(ds, g, rs) for (ds, g), rs in sorted(groups.items())]


def _intro(rows: list[Row]) -> str:
    runs = [x for r in rows for x in r.runs]
    n_inst = len({(x.rec.split.spec, x.rec.split.seed) for x in runs})
    cold = ", ".join(sorted({r.cold_start for r in rows}))
    return f"{n_inst} split instance(s) (split, seed); cold start: {cold}; train/valid/test sizes: {sizes_text(runs)}."


def _main(rows: list[Row], out: _Outputs) -> list[str]:
    md = ["## Main comparison", "", MAIN_TEXT, ""]
    if not rows:
        return md + ["No results of a main sweep yet (`autorec-bench sweep benchmarks/specs/ml100k.toml`).", ""]
    for ds, group, rs in _by_group(rows):
        tag = f"{slug(ds)}_{slug(group)}"
        name = f"table_{tag}.csv"
        out.put(name, csv_text(tables.CSV_HEADER, csv_rows(rs)))
        md += [f"### {ds} — {group}", "", _intro(rs), ""] + table(rs) + ["", f"CSV: `{name}`", ""]
        md += out.plot(
            f"plots/curves_{tag}.png",
            lambda p, rs=rs, t=f"{ds} — {group}": plots.learning_curves(rs, p, t),
            "validation RMSE per epoch",
        )
        md += out.plot(
            f"plots/cost_{tag}.png",
            lambda p, rs=rs, t=f"{ds} — {group}": plots.accuracy_vs_cost(rs, p, t),
            "test RMSE vs fit seconds",
        )
    return md


def _d2l(rows: list[Row], out: _Outputs) -> list[str]:
    md = ["## D2L reproduction", ""]
    if not rows:
        return md + ["No results on a `d2l-random` split yet (`autorec-bench sweep benchmarks/specs/d2l.toml`).", ""]
    md += [
        "The D2L AutoRec chapter's setting (I-AutoRec, hidden 500, sigmoid / identity, dropout 0.05, Adam lr 0.002, "
        "wd 1e-5, 25 epochs, batch 256) and the D2L MF chapter's model, on D2L's `d2l-random` split, in both "
        "frameworks.",
        "",
    ]
    md += table(rows) + [""]
    gaps: dict[tuple, dict[str, Row]] = defaultdict(dict)
    for r in rows:
        gaps[(r.name, r.dataset, r.group, r.config, r.path)][r.backend] = r
    cells = [
        [
            f"{name}{' ' + path if path else ''}{' ' + config if config else ''}",
            f"{ds} / {group}",
            f"{abs(d['torch'].test_rmse - d['mxnet'].test_rmse):.4f}",
        ]
        for (name, ds, group, config, path), d in sorted(gaps.items())
        if "torch" in d and "mxnet" in d
    ]
    if cells:
        md += md_table(["model", "dataset / split", "|torch - mxnet| test RMSE"], cells) + [""]
    out.put("d2l.csv", csv_text(tables.CSV_HEADER, csv_rows(rows)))
    return md


def _other(rows: list[Row], out: _Outputs) -> list[str]:
    if not rows:
        return []
    md = ["## Runs outside a sweep", "", "Written by `autorec-bench run`; not part of any comparison above.", ""]
    for ds, group, rs in _by_group(rows):
        md += [f"### {ds} — {group}", "", _intro(rs), ""] + table(rs) + [""]
    out.put("other.csv", csv_text(tables.CSV_HEADER, csv_rows(rows)))
    return md


def _failed(failed: list[RawRun], out: _Outputs) -> list[str]:
    md = ["## Failed runs", ""]
    if not failed:
        return md + ["None.", ""]
    rows = []
    for f in sorted(failed, key=lambda r: r.file):
        err = f.rec.error
        msg = " ".join((err.message if err else "").split())
        rows.append(
            [
                f.file,
                f.rec.dataset,
                f.rec.split.spec,
                str(f.rec.split.seed),
                tables.name_of(f),
                f.rec.backend,
                err.type if err else "",
                msg[:160] + ("…" if len(msg) > 160 else ""),
            ]
        )
    header = ["file", "dataset", "split", "seed", "model", "backend", "error", "message"]
    out.put("failed.csv", csv_text(header, rows))
    return md + ["Listed, never averaged into the tables above.", ""] + md_table(header, rows) + [""]


def _runs_csv(ok: list[RawRun]) -> str:
    header = [
        "file",
        "dataset",
        "split",
        "seed",
        "model",
        "registry_name",
        "backend",
        "devices",
        "sweep",
        "cold_start",
        "test_rmse",
        "test_mae",
        "valid_rmse",
        "refit_test_rmse",
        "best_epoch",
        "epochs_run",
        "fit_seconds",
        "seconds_per_epoch",
        "contended",
        "worker_start",
        "peak_rss_mb",
        "n_cold_start",
        "split_sha256",
    ]
    rows = []
    for r in sorted(ok, key=lambda r: r.file):
        rec, m, fit = r.rec, r.rec.metrics, r.rec.fit
        rows.append(
            [
                r.file,
                rec.dataset,
                rec.split.spec,
                rec.split.seed,
                tables.name_of(r),
                rec.model,
                rec.backend,
                ",".join(rec.identity.devices),
                rec.sweep,
                rec.identity.cold_start_policy,
                m.test_rmse if m else None,
                m.test_mae if m else None,
                m.valid_rmse if m else None,
                rec.refit.test_rmse if rec.refit else None,
                fit.best_epoch if fit else None,
                fit.epochs_run if fit else None,
                rec.timing.fit,
                rec.timing.per_epoch,
                r.contended,
                rec.conditions.worker_start if rec.conditions else None,
                rec.memory.peak_rss,
                rec.sizes.n_cold_start if rec.sizes else None,
                rec.split.sha256,
            ]
        )
    return csv_text(header, rows)


# =============================================================================== scale, pruning
def _scale(raw_dir: Path, out: _Outputs) -> list[str]:
    """scale.md (+ csv, plot) from the scale runner's raw files under ``<raw>/scale``, rendered by
    :func:`benchmarks.scale.render_scale` (the one call into the scale runner)."""
    scale_raw = raw_dir / "scale"
    if not scale_raw.is_dir() or not any(scale_raw.glob("*.json")):
        return ["No scale results yet (`python -m benchmarks.scale`).", ""]
    from benchmarks.scale import load_records, render_scale

    files = render_scale(load_records(scale_raw), out.out_dir, plots=out.plots)
    out.names.update(Path(f).relative_to(out.out_dir).as_posix() for f in files)
    n = len(list(scale_raw.glob("*.json")))
    return [
        f"Sparse vs dense AutoRec on synthetic data of the ML-1M, ML-10M, ML-20M and Netflix shapes ({n} raw files "
        f"under `{scale_raw.as_posix()}`): see [scale.md](scale.md).",
        "",
    ]


def _prune(out_dir: Path, current: list[str]) -> None:
    """Remove the files an earlier report wrote and this one did not; record the new list."""
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        for name in manifest.read_text().split("\n"):
            if name and name not in current and ".." not in name.split("/"):
                (out_dir / name).unlink(missing_ok=True)
    text = ("\n".join(current) + "\n").encode()
    atomic_write(manifest, lambda fh: fh.write(text))
