"""Tables, CSVs and plots regenerated from the raw result files ONLY.

:func:`build_report` is a pure function of the raw files (plus ``verdict.json``, which ``verify``
derives from them): the same files give byte-identical outputs whatever their order on disk; no
timestamp of its own is written; everything is sorted.  Outputs under ``--out`` (default
``results/``):

- ``README.md``: header (hardware and versions read from the raw files), the verdict, one table per
  dataset and split group (model, backend, path, devices, test RMSE mean +- 95% t-interval over
  seeds/folds, MAE, valid RMSE, fit seconds, seconds per epoch, peak MB, n runs), the D2L
  reproduction table, paper-style tables (I- vs U-AutoRec next to the AutoRec paper's published
  numbers, activations, hidden units) where results exist, and the failed runs (listed, never
  averaged);
- ``*.csv``: the same tables;
- ``plots/*.png`` (matplotlib, Agg): validation RMSE per epoch per model (test RMSE marked at the
  mean best epoch), RMSE vs hidden units, seconds per epoch per backend / devices.

Split groups: the folds of one protocol are replicates of one table: ``canonical:u1`` ..
``canonical:u5`` form ``canonical:u1-u5``; ``kfold:k=5,fold=j`` form ``kfold:k=5``; other specs
(``random:test_ratio=0.1``, ``d2l-random:...``, ``files:...``) are their own group, replicated by seed.

Split integrity: every raw file records ``split_sha256``.  Files of the same dataset, split spec,
seed and validation ratio must agree; a file that disagrees with the others is refused with an
error naming it (:class:`SplitMismatchError`).  With ``recompute=True`` each split is also
recomputed (:func:`benchmarks.harness.load_data`) and every file is checked against it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from autorec.errors import DataError
from benchmarks import algorithms, harness

# The AutoRec paper's published test RMSE (Sedhain, Menon, Sanner, Xie 2015: 90/10 random splits,
# hidden 500, cold start rated 3), by (dataset, based).
PUBLISHED = {
    ("ml-1m", "item"): 0.831,
    ("ml-1m", "user"): 0.874,
    ("ml-10m", "item"): 0.782,
    ("ml-10m", "user"): 0.867,
}
PUBLISHED_SOURCE = "Sedhain et al. 2015 (AutoRec paper), published test RMSE"

#: a configuration "chosen as the best" (paper-style tables, verify) must have been run on at
#: least this many split instances: a 3-seed ablation's mean validation RMSE is neither comparable
#: with a 5- or 10-split mean nor enough for a paired test
MIN_REPLICATES = 5
MANIFEST = ".report-files"


class SplitMismatchError(DataError):
    """A raw file's ``split_sha256`` does not match its split."""


# =============================================================================== loading
@dataclass
class RawSet:
    ok: list[dict]
    failed: list[dict]
    files: dict[str, str]          # file name -> sha256 of its bytes (every file read)
    duplicates: list[str]


def load_records(raw_dir: str | os.PathLike, *, strict: bool = True) -> RawSet:
    """Every raw file of ``raw_dir`` (sorted by name; each record gets ``_file``).  Unreadable
    files raise :class:`DataError` naming them (``strict``) or are skipped."""
    ok, failed, files, dup = [], [], {}, []
    seen: dict[str, str] = {}
    for path in harness.raw_files(raw_dir):
        try:
            rec = harness.read_raw(path)
        except DataError:
            if strict:
                raise
            continue
        files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        rec["_file"] = path.name
        rid = rec.get("run_id")
        if rid in seen:
            dup.append(f"{path.name} repeats run {rid[:16]} of {seen[rid]}")
            continue
        seen[rid] = path.name
        (ok if rec["status"] == "ok" else failed).append(rec)
    return RawSet(ok, failed, files, dup)


def check_splits(records: Iterable[dict]) -> None:
    """Refuse files whose ``split_sha256`` disagrees with the other files of the same split."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("split_sha256"):
            groups[(r["dataset"], r["split"]["spec"], r["seed"], r.get("valid_ratio"))].append(r)
    bad: list[str] = []
    for key, recs in sorted(groups.items(), key=lambda kv: json.dumps(kv[0], default=str)):
        counts = Counter(r["split_sha256"] for r in recs)
        if len(counts) < 2:
            continue
        ranked = counts.most_common()
        if ranked[0][1] == ranked[1][1]:
            names = sorted(r["_file"] for r in recs)
            bad.append(f"{', '.join(names)}: split {key[1]} (seed {key[2]}) of {key[0]} has "
                       f"{len(counts)} different split_sha256 values and no majority")
            continue
        majority = ranked[0][0]
        for r in sorted(recs, key=lambda r: r["_file"]):
            if r["split_sha256"] != majority:
                bad.append(f"{r['_file']}: split_sha256 {r['split_sha256'][:16]}... does not match the "
                           f"{ranked[0][1]} other file(s) of split {key[1]} (seed {key[2]}) of {key[0]} "
                           f"({majority[:16]}...)")
    if bad:
        raise SplitMismatchError("refusing raw files whose split does not match:\n  " + "\n  ".join(bad))


def recompute_splits(records: Iterable[dict], *, data_dir=None, offline: bool = True, cache_dir=None) -> list[str]:
    """Recompute every split (where its data is at hand) and refuse files that do not match it.
    Returns notes about splits that could not be recomputed."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("split_sha256"):
            groups[(r["dataset"], r["split"]["spec"], r["seed"], r.get("valid_ratio", 0.05))].append(r)
    bad, notes = [], []
    for key in sorted(groups, key=lambda k: json.dumps(k, default=str)):
        ds, spec, seed, vr = key
        ok, where = harness.dataset_available(ds, data_dir)
        if not ok:
            notes.append(f"{ds}: not recomputed ({where})")
            continue
        try:
            sha = harness.load_data(ds, spec, seed=int(seed), valid_ratio=float(vr), data_dir=data_dir,
                                    offline=offline, cache_dir=cache_dir).split.sha256
        except Exception as exc:
            notes.append(f"{ds} {spec} seed {seed}: not recomputed ({type(exc).__name__}: {exc})")
            continue
        for r in sorted(groups[key], key=lambda r: r["_file"]):
            if r["split_sha256"] != sha:
                bad.append(f"{r['_file']}: split_sha256 {r['split_sha256'][:16]}... but split {spec} (seed "
                           f"{seed}) of {ds} hashes to {sha[:16]}...")
    if bad:
        raise SplitMismatchError("refusing raw files whose split does not match:\n  " + "\n  ".join(bad))
    return sorted(set(notes))


# =============================================================================== grouping
def split_group(spec: str) -> str:
    """The table a split spec belongs to (its folds / seeds are replicates)."""
    m = re.fullmatch(r"canonical:(?:fold=)?(u[1-5])", spec)
    if m:
        return "canonical:u1-u5"
    m = re.fullmatch(r"kfold:(.*)", spec)
    if m:
        args = dict(a.split("=", 1) for a in m.group(1).split(",") if "=" in a)
        return f"kfold:k={args.get('k', '5')}"
    return spec


def params_key(params: dict, drop: Iterable[str] = ("seed",)) -> str:
    return harness._canonical_json({k: v for k, v in sorted(params.items()) if k not in set(drop)})


def variant_key(rec: dict) -> tuple:
    """What makes runs replicates of one configuration: everything but the split and the seed."""
    return (rec["model"], rec["backend"], tuple(rec.get("devices") or ["cpu"]), params_key(rec.get("params", {})),
            rec.get("cold_start_policy"), rec.get("valid_ratio"))


def t_interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of the 95% t-interval (None with fewer than 2 values)."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    from scipy import stats
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def _mean(values) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return math.fsum(vals) / len(vals) if vals else None


def _name(rec: dict) -> str:
    return rec.get("label") or rec.get("display_name") or algorithms.display_name(rec["model"], rec.get("params", {}))


@dataclass
class Row:
    dataset: str
    group: str
    name: str
    model: str
    backend: str
    devices: tuple
    path: str
    config: str                # the parameters that tell this row from its neighbours
    n: int
    test_rmse: float
    ci: float | None
    test_mae: float | None
    valid_rmse: float | None
    fit_s: float | None
    s_epoch: float | None
    peak_mb: float | None
    epochs: float | None
    records: list

    @property
    def family(self) -> str:
        return self.records[0].get("family") or algorithms.family(self.model)


def aggregate(records: list[dict]) -> list[Row]:
    """One :class:`Row` per (dataset, split group, configuration), sorted."""
    buckets: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        buckets[(r["dataset"], split_group(r["split"]["spec"]), variant_key(r))].append(r)
    rows = []
    for (ds, group, vkey), recs in buckets.items():
        recs = sorted(recs, key=lambda r: (r["split"]["spec"], r["seed"], r["_file"]))
        mean, ci = t_interval([r["metrics"]["test_rmse"] for r in recs])
        first = recs[0]
        rows.append(Row(ds, group, _name(first), first["model"], first["backend"], vkey[2],
                        str(first.get("params", {}).get("path", "")) if first.get("family", algorithms.family(
                            first["model"])) == "autorec" else "", "", len(recs), mean, ci,
                        _mean(r["metrics"].get("test_mae") for r in recs),
                        _mean(r["metrics"].get("valid_rmse") for r in recs),
                        _mean(r["timing"].get("fit_seconds") for r in recs),
                        _mean(r["timing"].get("seconds_per_epoch") for r in recs),
                        _mean((r.get("memory") or {}).get("peak_rss_mb") for r in recs),
                        _mean(r.get("epochs_run") for r in recs), recs))
    _label_configs(rows)
    rows.sort(key=lambda r: (r.dataset, r.group, r.test_rmse, r.name, r.backend, r.devices, r.config))
    return rows


def _label_configs(rows: list[Row]) -> None:
    """Rows sharing (dataset, group, name, backend, devices, path) get the parameters that differ."""
    by: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        by[(r.dataset, r.group, r.name, r.backend, r.devices, r.path)].append(r)
    for same in by.values():
        if len(same) < 2:
            continue
        params = [{k: v for k, v in s.records[0].get("params", {}).items() if k != "seed"} for s in same]
        policies = {s.records[0].get("cold_start_policy") for s in same}
        keys = sorted({k for p in params for k in p if len({harness._canonical_json(q.get(k)) for q in params}) > 1})
        for s, p in zip(same, params):
            parts = [f"{k}={_short(p.get(k))}" for k in keys]
            if len(policies) > 1:
                parts.append(f"cold={s.records[0].get('cold_start_policy')}")
            s.config = " ".join(parts)


def _short(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(_short(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# =============================================================================== formatting
def _f(v: float | None, nd: int = 4) -> str:
    return "—" if v is None else f"{v:.{nd}f}"


def _sec(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3g}" if v < 1 else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else (f"{v:.6f}" if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _dev(devices: tuple) -> str:
    return ",".join(devices)


MAIN_HEADER = ["model", "backend", "path", "devices", "config", "test RMSE (mean ± 95% CI)", "test MAE",
               "valid RMSE", "fit s", "s/epoch", "peak MB", "epochs", "n"]
CSV_HEADER = ["dataset", "split_group", "model", "registry_name", "backend", "path", "devices", "config",
              "test_rmse_mean", "test_rmse_ci95", "test_mae_mean", "valid_rmse_mean", "fit_seconds_mean",
              "seconds_per_epoch_mean", "peak_rss_mb_mean", "epochs_run_mean", "n_runs"]


def _main_cells(r: Row) -> list[str]:
    ci = f" ± {r.ci:.4f}" if r.ci is not None else " (n=1)"
    return [r.name, r.backend, r.path or "—", _dev(r.devices), r.config or "", f"{r.test_rmse:.4f}{ci}",
            _f(r.test_mae), _f(r.valid_rmse), _sec(r.fit_s), _sec(r.s_epoch),
            "—" if r.peak_mb is None else f"{r.peak_mb:.0f}", "—" if r.epochs is None else f"{r.epochs:.1f}",
            str(r.n)]


def _csv_row(r: Row) -> list[Any]:
    return [r.dataset, r.group, r.name, r.model, r.backend, r.path, _dev(r.devices), r.config, r.test_rmse,
            r.ci, r.test_mae, r.valid_rmse, r.fit_s, r.s_epoch, r.peak_mb, r.epochs, r.n]


# =============================================================================== special tables
def d2l_rows(rows: list[Row]) -> list[Row]:
    """The D2L reproduction: every row on a ``d2l-random`` split."""
    return [r for r in rows if r.group.startswith("d2l-random")]


def paper_rows(rows: list[Row]) -> list[dict]:
    """I- vs U-AutoRec per dataset on random 90/10 splits: the configuration with the lowest mean
    validation RMSE per (dataset, based, backend), preferring configurations run on at least
    :data:`MIN_REPLICATES` splits, then the paper's cold start (constant 3), next to the published
    number."""
    best: dict[tuple, Row] = {}
    for r in rows:
        if r.family != "autorec" or not r.group.startswith("random:test_ratio=0.1"):
            continue
        p = r.records[0].get("params", {})
        based = p.get("based", "item")
        if isinstance(p.get("hidden"), list) and len(p["hidden"]) > 1:
            continue
        key = (r.dataset, based, r.backend)
        paper_cold = r.records[0].get("cold_start_policy") == "constant:3"
        rank = (r.n < MIN_REPLICATES, not paper_cold, r.valid_rmse if r.valid_rmse is not None else math.inf, r.test_rmse, r.config)
        if key not in best or rank < best[key][0]:
            best[key] = (rank, r)
    out = []
    for (ds, based, backend), (_, r) in sorted(best.items()):
        out.append({"dataset": ds, "model": "I-AutoRec" if based == "item" else "U-AutoRec", "backend": backend,
                    "row": r, "published": PUBLISHED.get((ds, based))})
    return out


def vary_tables(rows: list[Row], keys: tuple[str, ...]) -> list[tuple[tuple, list[tuple[Any, Row]]]]:
    """AutoRec rows that differ only in ``keys`` (same dataset, group, backend, devices, other
    params): one table per such family, with >= 2 distinct values."""
    fam: dict[tuple, list[tuple[Any, Row]]] = defaultdict(list)
    for r in rows:
        if r.family != "autorec":
            continue
        p = r.records[0].get("params", {})
        if any(k not in p for k in keys):
            continue
        rest = params_key(p, drop=("seed",) + keys)
        value = tuple(harness._canonical_json(p[k]) for k in keys)
        fam[(r.dataset, r.group, r.backend, r.devices, r.records[0].get("cold_start_policy"), rest)].append((value, r))
    out = []
    for key in sorted(fam, key=lambda k: json.dumps(k, default=str)):
        entries = fam[key]
        if len({v for v, _ in entries}) >= 2:
            out.append((key, sorted(entries, key=lambda e: _sort_value(e[0]))))
    return out


def _n_layers(hidden_json: str) -> int:
    """How many hidden layers a canonical-JSON ``hidden`` value holds."""
    h = json.loads(hidden_json)
    return len(h) if isinstance(h, list) else 1


def _sort_value(value: tuple) -> tuple:
    out = []
    for v in value:
        x = json.loads(v)
        if isinstance(x, list) and all(isinstance(i, (int, float)) for i in x):
            out.append((0, tuple(x), ""))
        elif isinstance(x, (int, float)):
            out.append((0, (x,), ""))
        else:
            out.append((1, (), str(x)))
    return tuple(out)


# =============================================================================== verdict
def verdict_block(out_dir: Path, files: dict[str, str]) -> tuple[list[str], dict | None]:
    path = out_dir / "verdict.json"
    if not path.is_file():
        return ["No verdict yet: run `autorec-bench verify --dataset ml-100k`."], None
    try:
        v = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); rerun `autorec-bench verify`") from None
    inputs = v.get("inputs", {})
    stale = sorted(f for f, h in inputs.items() if files.get(f) != h)
    lines = [f"**{v.get('sentence', '')}**", ""]
    if stale:
        lines += [f"*Stale: {len(stale)} of the {len(inputs)} raw files this verdict used changed or are gone "
                  f"(e.g. {stale[0]}); rerun `autorec-bench verify`.*", ""]
    s = v.get("stats") or {}
    if s:
        a, b = v.get("autorec", {}), v.get("mf", {})
        lines += _md_table(["", "AutoRec", "MF"], [
            ["configuration", a.get("name", ""), b.get("name", "")],
            ["backend", a.get("backend", ""), b.get("backend", "")],
            ["mean valid RMSE (selection)", _f(a.get("valid_rmse_mean")), _f(b.get("valid_rmse_mean"))],
            ["mean test RMSE (paired splits)", _f(s.get("autorec_test_mean")), _f(s.get("mf_test_mean"))],
        ])
        lines += [""] + _md_table(
            ["paired splits", "mean diff (AutoRec - MF)", "95% CI", "paired t p", "Wilcoxon p", "exit code"],
            [[str(s.get("n_pairs")), f"{s.get('mean_diff'):+.4f}",
              f"[{s.get('ci_low'):+.4f}, {s.get('ci_high'):+.4f}]", _fmt_p(s.get("t_pvalue")),
              _fmt_p(s.get("wilcoxon_pvalue")), str(v.get("exit_code"))]])
    for note in v.get("notes", []):
        lines += ["", f"- {note}"]
    lines += ["", f"Selection rule: {v.get('selection', '')}"]
    return lines, v


def _fmt_p(p) -> str:
    return "—" if p is None else f"{p:.3g}"


# =============================================================================== plots
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9})
    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_bytes(path, buf.getvalue())


def plot_epochs(rows: list[Row], path: Path, title: str) -> bool:
    rows = [r for r in rows if any(sum(isinstance(h.get("valid_rmse"), (int, float)) for h in x.get("history") or [])
                                   > 1 for x in r.records)]
    if not rows:
        return False
    rows = sorted(rows, key=lambda r: (r.test_rmse, r.name, r.backend))[:12]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for k, r in enumerate(rows):
        per: dict[int, list[float]] = defaultdict(list)
        for rec in r.records:
            for h in rec.get("history") or []:
                if isinstance(h.get("valid_rmse"), (int, float)):
                    per[int(h["epoch"])].append(float(h["valid_rmse"]))
        if not per:
            continue
        xs = sorted(per)
        ys = [math.fsum(per[x]) / len(per[x]) for x in xs]
        color = f"C{k % 10}"
        label = f"{r.name} ({r.backend}{', ' + r.path if r.path else ''}){' ' + r.config if r.config else ''}"
        ax.plot(xs, ys, color=color, lw=1.2, label=label[:60])
        best = _mean(rec.get("best_epoch") for rec in r.records)
        if best is not None:
            ax.plot([best], [r.test_rmse], marker="x", color=color, ms=7, ls="none")
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE")
    ax.set_title(title + "\nlines: validation RMSE (mean over runs); x: test RMSE at the mean best epoch", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_hidden(tables, path: Path) -> bool:
    if not tables:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k, (key, entries) in enumerate(tables):
        xs = [json.loads(v[0])[0] if isinstance(json.loads(v[0]), list) else json.loads(v[0]) for v, _ in entries]
        ys = [r.test_rmse for _, r in entries]
        errs = [r.ci or 0.0 for _, r in entries]
        first = entries[0][1]
        ax.errorbar(xs, ys, yerr=errs, marker="o", ms=4, capsize=3, color=f"C{k % 10}",
                    label=f"{first.name} ({first.backend}) {key[0]} {key[1]}"[:60])
    ax.set_xscale("log")
    ax.set_xlabel("hidden units")
    ax.set_ylabel("test RMSE (mean ± 95% CI)")
    ax.set_title("RMSE vs hidden units (cf. AutoRec paper Fig. 2)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)
    return True


def plot_time(rows: list[Row], path: Path, title: str) -> bool:
    """One bar per configuration, its runs on every split of the dataset pooled."""
    merged: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        if r.s_epoch is not None:
            merged[(r.name, r.backend, r.path, r.devices, params_key(r.records[0].get("params", {})))].append(r)
    if not merged:
        return False
    rows = []
    for key in sorted(merged):
        same = merged[key]
        recs = [x for r in same for x in r.records]
        first = same[0]
        rows.append(Row(first.dataset, "all", first.name, first.model, first.backend, first.devices, first.path,
                        first.config, len(recs), first.test_rmse, None, None, None, None,
                        _mean(x["timing"].get("seconds_per_epoch") for x in recs), None, None, recs))
    _label_configs(rows)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.28 * len(rows)))
    labels = [f"{r.name} ({r.backend}{', ' + r.path if r.path else ''}; {_dev(r.devices)}){' ' + r.config if r.config else ''}"[:70]
              for r in rows]
    ax.barh(range(len(rows)), [r.s_epoch for r in rows], color=[f"C{hash_index(r.backend)}" for r in rows])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per epoch (median epoch of each run, mean over runs)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)
    plt.close(fig)
    return True


def hash_index(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10


# =============================================================================== the report
def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _env_lines(records: list[dict]) -> list[str]:
    fields = [("CPU", lambda e, r: e.get("cpu_model")), ("CPU cores", lambda e, r: e.get("cpu_count")),
              ("GPU", lambda e, r: ", ".join(e.get("gpu") or []) or "none"),
              ("platform", lambda e, r: e.get("platform")), ("python", lambda e, r: e.get("python")),
              ("numpy", lambda e, r: e.get("numpy")), ("scipy", lambda e, r: e.get("scipy")),
              ("torch", lambda e, r: e.get("torch")), ("mxnet", lambda e, r: e.get("mxnet")),
              ("scikit-surprise", lambda e, r: e.get("scikit-surprise")),
              ("threads per run", lambda e, r: r.get("threads")),
              ("git commit", lambda e, r: r.get("git_commit"))]
    rows = []
    for label, get in fields:
        c = Counter(str(get(r.get("environment") or {}, r)) for r in records)
        if len(c) == 1:
            value = next(iter(c))
        else:
            value = "; ".join(f"{v} ({n} runs)" for v, n in sorted(c.items()))
        rows.append([label, value])
    return _md_table(["", "value (from the raw files)"], rows)


def build_report(raw_dir: str | os.PathLike = harness.DEFAULT_RAW, out_dir: str | os.PathLike = "results", *,
                 recompute: bool = False, data_dir=None, plots: bool = True) -> list[Path]:
    """Regenerate README.md, the CSVs and the plots from the raw files; returns the files written."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    raw = load_records(raw_dir)
    check_splits(raw.ok + raw.failed)
    notes = recompute_splits(raw.ok + raw.failed, data_dir=data_dir) if recompute else []
    rows = aggregate(raw.ok)
    written: dict[Path, bytes] = {}

    def put(name: str, text: str) -> None:
        written[out_dir / name] = text.encode("utf-8")

    md: list[str] = ["# autorec-bench results", "",
                     f"Generated by `autorec-bench report` from {len(raw.ok) + len(raw.failed)} raw result "
                     f"files ({len(raw.ok)} ok, {len(raw.failed)} failed); "
                     "regenerate, do not edit. Every number below is computed from those files.", ""]
    if raw.ok or raw.failed:
        md += ["## Environment", ""] + _env_lines(raw.ok + raw.failed) + [""]
    if raw.duplicates:
        md += ["Duplicate files ignored: " + "; ".join(sorted(raw.duplicates)), ""]
    md += ["## Verdict", ""]
    vlines, _ = verdict_block(out_dir, raw.files)
    md += vlines + [""]

    # ---- main tables
    md += ["## Results by dataset and split", "",
           "Test RMSE: mean over seeds / folds ± the half-width of the 95% t-interval. Timings: wall seconds "
           "of `fit` and the median wall seconds of one epoch (its validation pass included), means over "
           "runs. Peak MB: peak RSS of the "
           "run's own worker process (interpreter and frameworks included). Cold start: the policy each run "
           "records (test pairs with an unseen user or item get it; predictions are clipped to the scale).",
           ""]
    csv_rows: dict[str, list] = defaultdict(list)
    groups = sorted({(r.dataset, r.group) for r in rows})
    plot_files: list[str] = []
    for ds, group in groups:
        grows = [r for r in rows if (r.dataset, r.group) == (ds, group)]
        recs = [x for r in grows for x in r.records]
        replicates = sorted({(x["split"]["spec"], x["seed"]) for x in recs})
        pols = sorted({x.get("cold_start_policy") for x in recs})
        md += [f"### {ds} — {group}", "",
               f"{len(replicates)} split instance(s) (split, seed); cold start: {', '.join(pols)}; "
               f"train/valid/test sizes: {_sizes(recs)}.", ""]
        md += _md_table(MAIN_HEADER, [_main_cells(r) for r in grows]) + [""]
        name = f"table_{_slug(ds)}_{_slug(group)}.csv"
        put(name, _csv_text(CSV_HEADER, [_csv_row(r) for r in grows]))
        md += [f"CSV: `{name}`", ""]
        if plots:
            pname = f"plots/epochs_{_slug(ds)}_{_slug(group)}.png"
            if plot_epochs(grows, out_dir / pname, f"{ds} — {group}"):
                plot_files.append(pname)
                md += [f"![validation RMSE per epoch]({pname})", ""]
    # ---- D2L
    d2l = d2l_rows(rows)
    md += ["## D2L reproduction", ""]
    if d2l:
        md += ["The D2L AutoRec chapter's setting (`AutoRecConfig()` defaults: I-AutoRec, hidden 500, sigmoid / "
               "identity, dropout 0.05, Adam lr 0.002, wd 1e-5, 25 epochs, batch 256) and the D2L MF chapter's "
               "model, on D2L's `d2l-random` split, in both frameworks.", ""]
        md += _md_table(MAIN_HEADER, [_main_cells(r) for r in d2l]) + [""]
        gap = _framework_gaps(d2l)
        if gap:
            md += _md_table(["model", "dataset / split", "|torch - mxnet| test RMSE"], gap) + [""]
        put("d2l.csv", _csv_text(CSV_HEADER, [_csv_row(r) for r in d2l]))
    else:
        md += ["No results on a `d2l-random` split yet (`autorec-bench sweep benchmarks/specs/d2l.toml`).", ""]
    # ---- paper tables
    md += ["## Paper-style tables", ""]
    prow = paper_rows(rows)
    md += ["### I-AutoRec vs U-AutoRec", ""]
    if prow:
        md += [f"Measured on random 90/10 splits (the configuration with the lowest mean validation RMSE per "
               f"dataset, model and backend; the paper's cold start `constant:3` preferred) next to the "
               f"**published** numbers ({PUBLISHED_SOURCE}; '—' where the paper has none).", ""]
        cells, crow = [], []
        for e in prow:
            r = e["row"]
            pub = e["published"]
            ci = f" ± {r.ci:.4f}" if r.ci is not None else ""
            cells.append([e["dataset"], e["model"], e["backend"], r.config or "", f"{r.test_rmse:.4f}{ci}",
                          str(r.n), r.records[0].get("cold_start_policy", ""),
                          "—" if pub is None else f"{pub:.3f} (published)",
                          "—" if pub is None else f"{r.test_rmse - pub:+.4f}"])
            crow.append([e["dataset"], e["model"], e["backend"], r.config, r.test_rmse, r.ci, r.n,
                         r.records[0].get("cold_start_policy"), pub])
        md += _md_table(["dataset", "model", "backend", "config", "measured test RMSE", "n", "cold start",
                         "published", "measured - published"], cells) + [""]
        put("paper_i_vs_u.csv", _csv_text(["dataset", "model", "backend", "config", "test_rmse_mean",
                                           "test_rmse_ci95", "n_runs", "cold_start", "published"], crow))
    else:
        md += ["No AutoRec results on a random 90/10 split yet.", ""]
    md += ["### Activation functions", ""]
    act = vary_tables(rows, ("hidden_activation", "output_activation"))
    md += _vary_md(act, ["hidden g", "output f"], "activations.csv", put,
                   "No AutoRec results that differ only in their activations yet "
                   "(`benchmarks/specs/activations.toml`).")
    md += ["### Hidden units", ""]
    by_hidden = vary_tables(rows, ("hidden",))
    hid = []
    for key, entries in by_hidden:  # one hidden layer of varying width
        single = [(v, r) for v, r in entries if _n_layers(v[0]) == 1]
        if len({v for v, _ in single}) >= 2:
            hid.append((key, single))
    md += _vary_md(hid, ["hidden"], "hidden_units.csv", put,
                   "No AutoRec results that differ only in their hidden size yet (`benchmarks/specs/hidden-units.toml`).")
    if hid:
        md += ["The paper shows this as a curve (Fig. 2: RMSE falls as hidden units grow and flattens towards 500); "
               "it tabulates no numbers, so none are shown as published here.", ""]
        if plots and plot_hidden(hid, out_dir / "plots/rmse_vs_hidden.png"):
            plot_files.append("plots/rmse_vs_hidden.png")
            md += ["![RMSE vs hidden units](plots/rmse_vs_hidden.png)", ""]
    md += ["### Depth", ""]
    deep = []
    for key, entries in by_hidden:  # stacks of hidden layers, next to one layer of their first width
        firsts = {json.loads(v[0])[0] for v, _ in entries if _n_layers(v[0]) > 1}
        if firsts:
            deep.append((key, [(v, r) for v, r in entries
                               if _n_layers(v[0]) > 1 or json.loads(v[0]) in ([w] for w in firsts)]))
    md += _vary_md(deep, ["hidden"], "depth.csv", put,
                   "No AutoRec results that differ only in their stack of hidden layers yet "
                   "(`benchmarks/specs/depth.toml`).")
    # ---- timing
    md += ["## Time per epoch", ""]
    if rows and plots:
        for ds in sorted({r.dataset for r in rows}):
            pname = f"plots/time_{_slug(ds)}.png"
            if plot_time([r for r in rows if r.dataset == ds], out_dir / pname, f"{ds}: seconds per epoch"):
                plot_files.append(pname)
                md += [f"![seconds per epoch on {ds}]({pname})", ""]
    elif not rows:
        md += ["No results yet.", ""]
    # ---- failures
    md += ["## Failed runs", ""]
    if raw.failed:
        frows = []
        for f in sorted(raw.failed, key=lambda r: r["_file"]):
            err = f.get("error") or {}
            msg = " ".join(str(err.get("message", "")).split())
            frows.append([f["_file"], f["dataset"], f["split"]["spec"], str(f["seed"]), _name(f), f["backend"],
                          str(err.get("type", "")), msg[:160] + ("…" if len(msg) > 160 else "")])
        md += ["Listed, never averaged into the tables above.", ""]
        md += _md_table(["file", "dataset", "split", "seed", "model", "backend", "error", "message"], frows) + [""]
        put("failed.csv", _csv_text(["file", "dataset", "split", "seed", "model", "backend", "error", "message"],
                                    frows))
    else:
        md += ["None.", ""]
    if notes:
        md += ["## Split checks", ""] + [f"- {n}" for n in notes] + [""]
    # ---- scale (its own raw files under <raw>/scale, rendered by benchmarks.scale)
    md += ["## Scale", ""]
    scale_files = _render_scale(raw_dir / "scale", out_dir, plots)
    if scale_files:
        n_scale = len(list((raw_dir / "scale").glob("*.json")))
        md += [f"Sparse vs dense AutoRec on synthetic data of the ML-1M, ML-10M, ML-20M and Netflix shapes "
               f"({n_scale} raw files under `{(raw_dir / 'scale').as_posix()}`): see [scale.md](scale.md).", ""]
    else:
        md += ["No scale results yet (`python -m benchmarks.scale`).", ""]
    # ---- every run
    run_rows = []
    for r in sorted(raw.ok, key=lambda r: r["_file"]):
        run_rows.append([r["_file"], r["dataset"], r["split"]["spec"], r["seed"], _name(r), r["model"], r["backend"],
                         _dev(tuple(r.get("devices") or ["cpu"])), r.get("cold_start_policy"),
                         r["metrics"].get("test_rmse"), r["metrics"].get("test_mae"), r["metrics"].get("valid_rmse"),
                         r.get("best_epoch"), r.get("epochs_run"), r["timing"].get("fit_seconds"),
                         r["timing"].get("seconds_per_epoch"), (r.get("memory") or {}).get("peak_rss_mb"),
                         r.get("n_cold_start"), r.get("split_sha256")])
    put("runs.csv", _csv_text(["file", "dataset", "split", "seed", "model", "registry_name", "backend", "devices",
                               "cold_start", "test_rmse", "test_mae", "valid_rmse", "best_epoch", "epochs_run",
                               "fit_seconds", "seconds_per_epoch", "peak_rss_mb", "n_cold_start", "split_sha256"],
                              run_rows))
    md += ["All runs: `runs.csv`.", ""]
    put("README.md", "\n".join(md).rstrip() + "\n")
    for name, data in written.items():
        _write_bytes(name, data)
    all_files = sorted({p.relative_to(out_dir).as_posix() for p in written} | set(plot_files)
                       | {p.relative_to(out_dir).as_posix() for p in scale_files})
    _prune(out_dir, all_files)
    return [out_dir / f for f in all_files]


def _render_scale(scale_raw: Path, out_dir: Path, plots: bool) -> list[Path]:
    """``scale.md`` / ``scale.csv`` (/ the plot) from the scale raw files, when there are any."""
    if not scale_raw.is_dir() or not any(scale_raw.glob("*.json")):
        return []
    from benchmarks.scale import load_records as load_scale, render_scale
    files = render_scale(load_scale(scale_raw), out_dir, plots=plots)
    return [Path(f) for f in files]


def _prune(out_dir: Path, current: list[str]) -> None:
    """Remove the files an earlier report wrote and this one did not; record the new list."""
    man = out_dir / MANIFEST
    if man.is_file():
        for name in man.read_text().split("\n"):
            if name and name not in current and ".." not in name.split("/"):
                try:
                    (out_dir / name).unlink()
                except OSError:
                    pass
    _write_bytes(man, ("\n".join(current) + "\n").encode())


def _sizes(recs: list[dict]) -> str:
    c = Counter((x.get("n_train"), x.get("n_valid"), x.get("n_test")) for x in recs)
    if len(c) == 1:
        a, b, t = next(iter(c))
        return f"{a}/{b}/{t}"
    vals = sorted(c)
    return f"{vals[0][0]}–{vals[-1][0]} / {vals[0][1]}–{vals[-1][1]} / {vals[0][2]}–{vals[-1][2]}"


def _framework_gaps(rows: list[Row]) -> list[list[str]]:
    by: dict[tuple, dict[str, Row]] = defaultdict(dict)
    for r in rows:
        by[(r.name, r.dataset, r.group, r.config, r.path)][r.backend] = r
    out = []
    for (name, ds, group, config, path), d in sorted(by.items()):
        if "torch" in d and "mxnet" in d:
            out.append([f"{name}{' ' + path if path else ''}{' ' + config if config else ''}", f"{ds} / {group}",
                        f"{abs(d['torch'].test_rmse - d['mxnet'].test_rmse):.4f}"])
    return out


def _vary_md(tables, value_names: list[str], csv_name: str, put, empty: str) -> list[str]:
    if not tables:
        return [empty, ""]
    md, crow = [], []
    for key, entries in tables:
        ds, group, backend, devices, pol, _rest = key
        first = entries[0][1]
        md += [f"{first.name}, {backend} ({_dev(devices)}), {ds} — {group}, cold start {pol}:", ""]
        cells = []
        for value, r in entries:
            vals = [_short(json.loads(v)) for v in value]
            ci = f" ± {r.ci:.4f}" if r.ci is not None else ""
            cells.append(vals + [f"{r.test_rmse:.4f}{ci}", _f(r.valid_rmse), _sec(r.s_epoch), str(r.n)])
            crow.append([ds, group, first.name, backend, *vals, r.test_rmse, r.ci, r.valid_rmse, r.s_epoch, r.n])
        md += _md_table(value_names + ["test RMSE", "valid RMSE", "s/epoch", "n"], cells) + [""]
    put(csv_name, _csv_text(["dataset", "split_group", "model", "backend", *value_names, "test_rmse_mean",
                             "test_rmse_ci95", "valid_rmse_mean", "seconds_per_epoch_mean", "n_runs"], crow))
    return md
