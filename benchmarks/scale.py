"""The scale benchmark: AutoRec on synthetic data of the real datasets' shapes, sparse vs dense.

``python -m benchmarks.scale [--spec benchmarks/specs/scale.toml] [--only PATTERN ...]
[--max-memory 80%] [--out results/raw/scale] [--report results] [--force] [--resume] [--dry-run]``

Each row of the spec (a shape x I-/U-AutoRec x path [x kernel]) is:

1. estimated first (:func:`autorec.scale.estimate_memory`): a row whose estimate exceeds
   ``--max-memory`` is *refused up front* and recorded as "does not fit: needs N GB" (never run into
   the OOM killer); ``dense-full`` rows (the seed's formulation, which densifies the whole matrix)
   are estimate-only;
2. run in a fresh worker process (so its peak RSS, read with ``os.wait4``, is that row's alone):
   the worker measures the machine's dense float32 matmul GFLOP/s with torch (the practical limit),
   generates the synthetic ratings (:func:`autorec.data.synthetic.generate_like`), splits them
   (:func:`autorec.splits.make_split`), keeps only the train and test parts, checks the memory
   budget again with the exact worst-batch size, then trains ``epochs`` timed epochs
   (:meth:`AutoRecTorch.fit`, no validation inside the timed epochs) and evaluates the test part
   in bounded-memory batches (:func:`autorec.metrics.evaluate`);
3. written as one JSON raw file ``<out>/<row_id>.json`` (atomic), which makes the run resumable:
   finished rows are skipped unless ``--force``.  Large rows (``checkpoint_min_ratings``) write a
   checkpoint every epoch (``--checkpoint-dir``, default ``~/.cache/autorec-bench/scale-checkpoints``,
   removed once the row finishes); ``--resume`` continues a killed row from it.

Dense rows whose estimated epoch (FLOP model / measured matmul rate) exceeds
``dense_epoch_budget_s`` are timed on a random subset of their rows and the epoch time is scaled
by the number of steps (the dense path's cost per row does not depend on the ratings: every row
is a dense vector of width n_in); such rows are labelled "extrapolated" in the table.

:func:`render_scale` turns the raw records into ``results/scale.md``, ``results/scale.csv`` and
``results/scale_epoch_time.png`` (a pure function of the records; the harness report calls it).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from autorec import scale as sc
from autorec.atomic import atomic_write
from autorec.env import process_memory_bytes
from autorec.errors import AutoRecBenchError, ConfigError, MemoryBudgetError

SCHEMA = "autorec-bench/scale/1"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = Path(__file__).resolve().parent / "specs" / "scale.toml"
DEFAULT_OUT = Path("results/raw/scale")
SHAPE_ORDER = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "netflix")
PATH_ORDER = ("sparse", "dense", "dense-full")

# The targets of the scale work (issue 6), checked against the measurements by render_scale.
TARGETS = (
    ("ml-1m", "speedup", 4.0, "ML-1M shape: sparse >= 4x faster per epoch than dense-masked"),
    ("ml-10m", "speedup", 20.0, "ML-10M shape: sparse >= 20x faster per epoch than dense-masked"),
    ("ml-20m", "epoch", (60.0, 8e9), "ML-20M shape, I-AutoRec, hidden 500: epoch <= 60 s, peak RSS <= 8 GB"),
    ("netflix", "epoch", (300.0, 20e9), "Netflix shape, I-AutoRec, hidden 500: epoch <= 5 min, peak RSS <= 20 GB"),
    ("ml-10m", "gflops", 0.25, "ML-10M shape, sparse path: achieved GFLOP/s >= 25% of measured dense matmul GFLOP/s"),
)


# ====================================================================== rows
@dataclass(frozen=True)
class Row:
    """One measurement: a dataset shape, I-/U-AutoRec, a path, and (sparse) the kernel."""

    shape: str
    n_users: int
    n_items: int
    n_ratings: int
    based: str
    path: str
    kernel: str = "native"
    model: dict = field(default_factory=dict)       # AutoRecConfig params (based/path/epochs set here)
    epochs: int = 3
    seed: int = 0
    split: str = "random:test_ratio=0.1"
    valid_ratio: float = 0.05
    threads: int | None = None
    dense_epoch_budget_s: float = 120.0
    checkpoint: bool = False
    evaluate: bool = True
    profile_steps: int = 0
    probe_n: int = 2048
    tag: str = ""                                   # distinguishes variant rows (e.g. "b1024")

    @property
    def row_id(self) -> str:
        kern = f"-{self.kernel}" if self.path == "sparse" else ""
        return f"{self.shape}-{self.based}-{self.path}{kern}" + (f"-{self.tag}" if self.tag else "")

    @property
    def hidden(self) -> tuple[int, ...]:
        h = self.model.get("hidden", (500,))
        return tuple(int(x) for x in ([h] if isinstance(h, int) else h))

    @property
    def batch_size(self) -> int:
        return int(self.model.get("batch_size", 256))

    @property
    def test_ratio(self) -> float:
        from autorec.splits import SplitSpec
        spec = SplitSpec.parse(self.split)
        return float(spec.args.get("test_ratio", 0.1))

    def config(self) -> dict:
        extra = dict(self.model.get("extra", {}))
        if self.path == "sparse":
            extra["sparse_kernel"] = self.kernel
        params = {**self.model, "based": self.based, "path": "sparse" if self.path == "sparse" else "dense",
                  "epochs": int(self.epochs), "seed": int(self.seed), "extra": extra}
        if self.threads is not None:
            params["threads"] = int(self.threads)
        return params

    def estimate(self, batch_nnz: int | None = None) -> sc.MemoryEstimate:
        return sc.estimate_memory(self.n_users, self.n_items, self.n_ratings, based=self.based,
                                  hidden=self.hidden, batch_size=self.batch_size, path=self.path,
                                  optimizer=str(self.model.get("optimizer", "adam")), test_ratio=self.test_ratio,
                                  valid_ratio=self.valid_ratio, batch_nnz=batch_nnz, checkpoint=self.checkpoint)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Row":
        return cls(**d)


def _shape_counts(shape) -> tuple[str, int, int, int]:
    if isinstance(shape, str):
        if shape not in sc.SHAPES:
            raise ConfigError(f"scale spec: unknown shape {shape!r}; known: {', '.join(sc.SHAPES)} "
                              "(or a table {name=..., n_users=..., n_items=..., n_ratings=...})")
        return (shape, *sc.SHAPES[shape])
    if isinstance(shape, dict):
        try:
            return (str(shape["name"]), int(shape["n_users"]), int(shape["n_items"]), int(shape["n_ratings"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"scale spec: a custom shape needs name, n_users, n_items, n_ratings; got {shape!r}") \
                from None
    raise ConfigError(f"scale spec: a shape is a name or a table, got {shape!r}")


_SETTINGS = {"epochs": int, "seed": int, "split": str, "valid_ratio": float, "threads": int,
             "dense_epoch_budget_s": float, "checkpoint_min_ratings": int, "evaluate": bool,
             "profile_steps": int, "probe_n": int, "max_memory": str, "tag": str}


def load_spec(path: "str | os.PathLike") -> tuple[dict, list[Row]]:
    """``(settings, rows)`` of a scale spec (TOML: a ``[scale]`` table of settings, a
    ``[scale.model]`` AutoRecConfig table, and ``[[scale.rows]]`` grids of ``shapes`` x ``based`` x
    ``paths`` (x ``kernels`` for sparse), each optionally overriding settings or model keys)."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"scale spec {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scale spec {p} is not valid TOML: {exc}") from None
    top = doc.get("scale")
    if not isinstance(top, dict):
        raise ConfigError(f"scale spec {p}: needs a [scale] table")
    settings = {k: v for k, v in top.items() if k not in ("model", "rows")}
    for k, v in settings.items():
        if k not in _SETTINGS:
            raise ConfigError(f"scale spec {p}: unknown setting {k!r}; known: {sorted(_SETTINGS)}")
    model = dict(top.get("model", {}))
    grids = top.get("rows")
    if not grids:
        raise ConfigError(f"scale spec {p}: needs at least one [[scale.rows]] table")
    rows: list[Row] = []
    seen: set[str] = set()
    for gi, g in enumerate(grids):
        g = dict(g)
        shapes = g.pop("shapes", None)
        based = g.pop("based", ["item", "user"])
        paths = g.pop("paths", ["sparse", "dense"])
        kernels = g.pop("kernels", ["native"])
        gmodel = {**model, **g.pop("model", {})}
        over = {**settings, **g}
        for k in over:
            if k not in _SETTINGS:
                raise ConfigError(f"scale spec {p}: rows[{gi}] has unknown key {k!r}")
        if not shapes:
            raise ConfigError(f"scale spec {p}: rows[{gi}] needs shapes = [...]")
        for shape in shapes:
            name, nu, ni, nr = _shape_counts(shape)
            for b in based:
                if b not in ("item", "user"):
                    raise ConfigError(f"scale spec {p}: based {b!r} must be 'item' or 'user'")
                for path_ in paths:
                    if path_ not in sc.PATHS:
                        raise ConfigError(f"scale spec {p}: path {path_!r} is not one of {list(sc.PATHS)}")
                    for kern in (kernels if path_ == "sparse" else ["-"]):
                        if path_ == "sparse" and kern not in ("native", "torch"):
                            raise ConfigError(f"scale spec {p}: kernel {kern!r} must be 'native' or 'torch'")
                        row = Row(shape=name, n_users=nu, n_items=ni, n_ratings=nr, based=b, path=path_,
                                  kernel=kern, model=gmodel, epochs=int(over.get("epochs", 3)),
                                  seed=int(over.get("seed", 0)),
                                  split=str(over.get("split", "random:test_ratio=0.1")),
                                  valid_ratio=float(over.get("valid_ratio", 0.05)),
                                  threads=over.get("threads"),
                                  dense_epoch_budget_s=float(over.get("dense_epoch_budget_s", 120.0)),
                                  checkpoint=nr >= int(over.get("checkpoint_min_ratings", 10**12)),
                                  evaluate=bool(over.get("evaluate", True)),
                                  profile_steps=int(over.get("profile_steps", 0)),
                                  probe_n=int(over.get("probe_n", 2048)), tag=str(over.get("tag", "")))
                        if row.epochs < 3:
                            raise ConfigError(f"scale spec {p}: epochs={row.epochs}: the median needs >= 3 timed epochs")
                        if row.row_id in seen:
                            raise ConfigError(f"scale spec {p}: row {row.row_id} appears twice")
                        seen.add(row.row_id)
                        rows.append(row)
    # validate every model config before anything runs
    from autorec.config import AutoRecConfig
    for row in rows:
        cfg = dict(row.config())
        AutoRecConfig.from_dict(cfg)
    return settings, rows


# ====================================================================== raw records
def _atomic_write_json(path: Path, obj: dict) -> None:
    text = json.dumps(obj, indent=1, sort_keys=True, allow_nan=True) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))


def load_records(raw_dir: "str | os.PathLike") -> list[dict]:
    """Every scale raw record under ``raw_dir`` (``*.json``, sorted by name)."""
    d = Path(raw_dir)
    out = []
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.json")):
        if p.name.startswith("."):
            continue
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"scale raw file {p} is not readable JSON ({exc}); delete it and rerun the row") \
                from None
        if rec.get("schema") != SCHEMA:
            raise ConfigError(f"scale raw file {p} has schema {rec.get('schema')!r}, expected {SCHEMA!r}")
        out.append(rec)
    return out


def _base_record(row: Row, status: str) -> dict:
    w = sc.Workload.from_shape(row.n_users, row.n_items, 1, based=row.based, hidden=row.hidden,
                               batch_size=row.batch_size)
    return {"schema": SCHEMA, "kind": "scale", "row_id": row.row_id, "status": status, "row": row.to_dict(),
            "shape": row.shape, "n_users": row.n_users, "n_items": row.n_items, "n_ratings": row.n_ratings,
            "based": row.based, "path": row.path, "kernel": row.kernel if row.path == "sparse" else None,
            "hidden": list(row.hidden), "batch_size": row.batch_size, "n_rows": w.n_rows, "n_in": w.n_in}


def refused_record(row: Row, est: sc.MemoryEstimate, limit: int, why: str) -> dict:
    rec = _base_record(row, "refused")
    rec.update({"estimate": est.to_dict(), "limit_bytes": int(limit), "reason": why,
                "needs_bytes": est.total, "n_train": est.workload.nnz})
    return rec


def estimate_record(row: Row, est: sc.MemoryEstimate, limit: int) -> dict:
    rec = _base_record(row, "estimate")
    rec.update({"estimate": est.to_dict(), "limit_bytes": int(limit), "needs_bytes": est.total,
                "n_train": est.workload.nnz,
                "reason": ("the seed (D2L) formulation densifies the whole train and test matrices; it fits "
                           "this budget, and its per-epoch compute equals the dense row's (same FLOPs), so it "
                           "is not run separately")})
    return rec


# ====================================================================== the worker
def _rss_now() -> int:
    return process_memory_bytes("VmRSS") or 0


def _maxrss() -> int:
    """This worker's peak RSS since exec (VmHWM; ``ru_maxrss`` only where /proc is missing, which
    also counts the parent's RSS at fork)."""
    hwm = process_memory_bytes("VmHWM")
    return hwm if hwm is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def _subset(train, test, row: Row, n_sub: int):
    """The train/test parts restricted to the first ``n_sub`` AutoRec rows (items for I-AutoRec,
    users for U-AutoRec), in a smaller index space on that side only."""
    import numpy as np

    from autorec.interactions import Interactions

    def cut(part):
        keep = (part.items if row.based == "item" else part.users) < n_sub
        nu = part.n_users if row.based == "item" else n_sub
        ni = n_sub if row.based == "item" else part.n_items
        return Interactions(users=np.ascontiguousarray(part.users[keep]), items=np.ascontiguousarray(part.items[keep]),
                            ratings=np.ascontiguousarray(part.ratings[keep]), n_users=nu, n_items=ni,
                            rating_scale=part.rating_scale)

    return cut(train), cut(test)


def _profile(model_cls, cfg: dict, train, row: Row, steps: int) -> dict:
    """torch.profiler's top operators (self CPU time) over one training epoch of ``steps`` batches:
    the second epoch of a two-epoch fit on a row subset, so setup (weight init, the optimizer's
    first-step state) is not in it."""
    from torch.profiler import ProfilerActivity, profile, schedule

    n_rows = row.batch_size * steps
    sub, _ = _subset(train, train, row, n_rows)
    if len(sub) == 0:
        return {}
    import warnings

    m = model_cls(dict(cfg, epochs=2))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Profiler won't be using warmup")
        with profile(activities=[ProfilerActivity.CPU],
                     schedule=schedule(wait=1, warmup=0, active=1, repeat=1)) as prof:
            m.fit(sub, progress=lambda epoch, n, info: prof.step())
    out = []
    for ev in prof.key_averages():
        out.append({"name": ev.key, "self_cpu_ms": ev.self_cpu_time_total / 1000.0, "calls": int(ev.count)})
    out.sort(key=lambda r: -r["self_cpu_ms"])
    total = sum(r["self_cpu_ms"] for r in out) or 1.0
    for r in out:
        r["share"] = r["self_cpu_ms"] / total
    return {"scope": f"epoch 2 of a 2-epoch fit on {sub.n_items if row.based == 'item' else sub.n_users} rows "
                     f"({math.ceil(n_rows / row.batch_size)} steps)", "ops": out[:15]}


def worker(row: Row, out_file: Path, limit: int, resume: bool = False, checkpoint_dir: Path | None = None) -> dict:
    """Measure one row in this process (see the module doc) and write its raw record."""
    t_start = time.time()
    stages: dict[str, dict] = {}

    def stage(name: str, t0: float) -> float:
        stages[name] = {"seconds": round(time.perf_counter() - t0, 3), "rss_bytes": _rss_now(),
                        "maxrss_bytes": _maxrss()}
        return time.perf_counter()

    load_before = _loadavg()
    import numpy as np
    import torch

    from autorec import env
    from autorec.data.synthetic import generate_like
    from autorec.metrics import evaluate
    from autorec.models.torch import AutoRecTorch
    from autorec.splits import make_split

    threads = env.set_threads(row.threads)
    t0 = time.perf_counter()
    probe = sc.dense_matmul_gflops(row.probe_n)
    t0 = stage("probe", t0)
    ratings = generate_like((row.n_users, row.n_items, row.n_ratings), seed=row.seed,
                            name=f"synthetic-{row.shape}",
                            **({"scale": (0.5, 5.0), "step": 0.5} if row.shape in ("ml-10m", "ml-20m", "ml-25m") else {}))
    t0 = stage("generate", t0)
    split = make_split(ratings, row.split, seed=row.seed, valid_ratio=row.valid_ratio)
    t0 = stage("split", t0)
    data = split.data(ratings)
    train, test = data.train, data.test
    n_valid = len(data.valid)
    del data, split, ratings
    t0 = stage("parts", t0)

    rec = _base_record(row, "ok")
    rec.update({"n_train": len(train), "n_valid": n_valid, "n_test": len(test)})
    w_full = sc.Workload.from_shape(row.n_users, row.n_items, len(train), based=row.based, hidden=row.hidden,
                                    batch_size=row.batch_size)
    row_counts = np.bincount(train.items if row.based == "item" else train.users, minlength=w_full.n_rows)
    bnnz = sc.max_batch_nnz(row_counts, row.batch_size)
    est = row.estimate(batch_nnz=bnnz)
    rec["estimate"] = est.to_dict()
    rec["limit_bytes"] = int(limit)
    if est.total > limit:
        rec.update({"status": "refused", "needs_bytes": est.total,
                    "reason": f"after generating the data: the worst batch holds {bnnz} ratings"})
        _atomic_write_json(out_file, rec)
        return rec

    # dense rows too slow for full epochs: time a random subset of rows (row ids are random in
    # popularity), scale by the number of steps
    extrapolate = None
    fit_train, eval_test = train, test
    if row.path == "dense":
        est_s = sc.epoch_flops(w_full, "dense") / (0.7 * probe["gflops"] * 1e9)
        if est_s > row.dense_epoch_budget_s:
            frac = row.dense_epoch_budget_s / est_s
            n_sub = max(row.batch_size * 2, int(w_full.n_rows * frac) // row.batch_size * row.batch_size)
            n_sub = min(n_sub, w_full.n_rows)
            if n_sub < w_full.n_rows:
                fit_train, eval_test = _subset(train, test, row, n_sub)
                extrapolate = {"rows_timed": n_sub, "rows": w_full.n_rows,
                               "steps_timed": math.ceil(n_sub / row.batch_size),
                               "steps": w_full.steps_per_epoch, "estimated_full_epoch_s": est_s}
    w_run = sc.Workload.from_shape(fit_train.n_users, fit_train.n_items, len(fit_train), based=row.based,
                                   hidden=row.hidden, batch_size=row.batch_size)
    cfg = row.config()
    model = AutoRecTorch(cfg)
    ck = None
    if row.checkpoint and checkpoint_dir is not None:
        ck = checkpoint_dir / f"{row.row_id}.ckpt.npz"
    marks: list[float] = []

    def progress(epoch, n, info):
        marks.append(time.perf_counter())
        print(f"[{row.row_id}] epoch {epoch}/{n}: {info['seconds']:.2f}s train_loss={info['train_loss']:.5g} "
              f"rss={_rss_now() / 1e9:.2f}GB", file=sys.stderr, flush=True)

    fit_kw: dict[str, Any] = {"progress": progress}
    if ck is not None:
        fit_kw.update(checkpoint=ck, checkpoint_every=1)
        if resume and ck.exists():
            fit_kw["resume"] = ck
    t_fit = time.perf_counter()
    info = model.fit(fit_train, **fit_kw)
    fit_wall = time.perf_counter() - t_fit
    t0 = stage("train", t_fit)
    secs = [float(h["seconds"]) for h in info.history]
    median = statistics.median(secs)
    flops = sc.epoch_flops(w_run, row.path)
    rec["epoch_seconds"] = secs
    rec["train_loss"] = [float(h["train_loss"]) for h in info.history]
    rec["seconds_per_epoch_measured"] = median
    if extrapolate is not None:
        scale_f = extrapolate["steps"] / extrapolate["steps_timed"]
        rec["seconds_per_epoch"] = median * scale_f
        rec["timing_mode"] = (f"extrapolated: {extrapolate['rows_timed']} of {extrapolate['rows']} rows timed "
                              f"({extrapolate['steps_timed']} of {extrapolate['steps']} steps), x{scale_f:.2f}")
        rec["extrapolation"] = extrapolate
    else:
        rec["seconds_per_epoch"] = median
        rec["timing_mode"] = "full epochs"
    rec["fit_wall_seconds"] = fit_wall
    rec["resumed_from_epoch"] = info.extra.get("resumed_from_epoch")
    rec["checkpoint"] = str(ck) if ck is not None else None
    rec["n_train_timed"] = len(fit_train)
    rec["ratings_per_second"] = len(fit_train) / median
    rec["flops_per_epoch"] = flops
    rec["flop_formula"] = sc.flop_formula(w_run, row.path)
    rec["achieved_gflops"] = flops / median / 1e9
    rec["optimizer_updates_per_epoch"] = w_run.steps_per_epoch * w_run.n_params
    rec["flop_bound_seconds"] = flops / (probe["gflops"] * 1e9)
    rec["n_params"] = w_run.n_params
    rec["steps_per_epoch"] = w_run.steps_per_epoch
    if row.evaluate and len(eval_test):
        t_e = time.perf_counter()
        ev = evaluate(model, fit_train, eval_test, cfg.get("cold_start", "global-mean"))
        rec["evaluation"] = {"test_rmse": ev["rmse"], "test_mae": ev["mae"], "n": ev["n"],
                             "n_cold_start": ev["n_cold_start"], "seconds": time.perf_counter() - t_e,
                             "on": "timed rows' test ratings" if extrapolate else "all test ratings"}
        t0 = stage("evaluate", t_e)
    # the pipeline's peak (generation, split, training, evaluation), before the probes below
    rec["peak_rss_bytes"] = _maxrss()
    rec["peak_rss_source"] = "VmHWM of the row's worker after evaluation (before the after-run probes)"
    probe_after = sc.dense_matmul_gflops(row.probe_n, repeats=5)
    bandwidth = sc.stream_bandwidth_gbs(min(256 * 10**6, max(16 * 10**6, 64 * row.probe_n ** 2)))
    traffic = sc.epoch_traffic_bytes(w_run, row.path, str(cfg.get("optimizer", "adam")))
    rec["traffic_bytes_per_epoch"] = traffic
    rec["bandwidth"] = bandwidth
    rec["bandwidth_bound_seconds"] = traffic["total"] / (bandwidth["gbs"] * 1e9)
    if row.profile_steps > 0:
        t_p = time.perf_counter()
        rec["profile"] = _profile(AutoRecTorch, cfg, fit_train, row, row.profile_steps)
        stage("profile", t_p)
    rec["matmul"] = probe
    rec["matmul_after"] = probe_after
    rec["matmul_gflops"] = probe["gflops"]
    rec["matmul_fraction"] = rec["achieved_gflops"] / probe["gflops"]
    rec["stages"] = stages
    rec["peak_rss_bytes_self"] = _maxrss()
    rec["load_avg_before"] = load_before
    rec["load_avg_after"] = _loadavg()
    rec["threads"] = threads
    rec["torch_threads"] = torch.get_num_threads()
    rec["env_flags"] = {k: os.environ.get(k) for k in ("THP_MEM_ALLOC_ENABLE", "OMP_NUM_THREADS")}
    rec["environment"] = env.environment()
    rec["git_commit"] = env.git_commit(str(REPO))
    rec["config"] = model.params()
    rec["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start))
    rec["wall_seconds"] = time.time() - t_start
    _atomic_write_json(out_file, rec)
    return rec


# ====================================================================== the parent
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_checkpoint_dir() -> Path:
    """Where large rows' checkpoints go (outside the repository: they are GBs):
    ``$AUTOREC_CACHE_DIR/scale-checkpoints``, else ``~/.cache/autorec-bench/scale-checkpoints``."""
    base = os.environ.get("AUTOREC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "autorec-bench")
    return Path(base) / "scale-checkpoints"


def run_row(row: Row, out_dir: Path, limit: int, *, resume: bool = False, timeout: float | None = None,
            checkpoint_dir: Path | None = None) -> dict:
    """Estimate, refuse or run one row in a fresh worker process; returns (and has written) its record."""
    out_file = out_dir / f"{row.row_id}.json"
    est = row.estimate()
    if row.path == "dense-full":
        rec = (refused_record(row, est, limit, "the seed (D2L) formulation densifies the whole matrix")
               if est.total > limit else estimate_record(row, est, limit))
        _atomic_write_json(out_file, rec)
        return rec
    if est.total > limit:
        rec = refused_record(row, est, limit, "estimated before generating the data")
        _atomic_write_json(out_file, rec)
        return rec
    envv = dict(os.environ)
    envv.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    envv["PYTHONPATH"] = str(REPO) + (os.pathsep + envv["PYTHONPATH"] if envv.get("PYTHONPATH") else "")
    ck_dir = checkpoint_dir or default_checkpoint_dir()
    cmd = [sys.executable, "-m", "benchmarks.scale", "--worker", json.dumps(row.to_dict()),
           "--worker-out", str(out_file), "--worker-limit", str(int(limit)), "--checkpoint-dir", str(ck_dir)]
    if resume:
        cmd.append("--resume")
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=str(REPO), env=envv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stderr.write(line)
        tail = (tail + [line.rstrip()])[-30:]
        if timeout is not None and time.time() - t0 > timeout:
            proc.kill()
            break
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = int(ru.ru_maxrss) * 1024
    if proc.returncode == 0 and out_file.exists():
        rec = json.loads(out_file.read_text())
        if rec.get("status") == "ok":
            rec["peak_rss_bytes_process"] = peak   # os.wait4: includes the after-run probes / profiler
            _atomic_write_json(out_file, rec)
            ck = ck_dir / f"{row.row_id}.ckpt.npz"
            if ck.exists():          # finished: the checkpoint is no longer needed (GBs)
                ck.unlink()
        return rec
    rec = _base_record(row, "failed")
    rec.update({"returncode": proc.returncode, "peak_rss_bytes": peak, "estimate": est.to_dict(),
                "error": "\n".join(tail[-15:]), "wall_seconds": time.time() - t0})
    _atomic_write_json(out_file, rec)
    return rec


def wait_quiet(max_load: float, timeout: float) -> dict:
    """Wait until the 1-minute load average is below ``max_load`` (at most ``timeout`` seconds);
    returns what was waited and seen (recorded in the row's raw file)."""
    t0 = time.time()
    seen = _loadavg()
    while seen is not None and seen[0] >= max_load and time.time() - t0 < timeout:
        time.sleep(10)
        seen = _loadavg()
    return {"max_load": max_load, "waited_seconds": round(time.time() - t0, 1), "load_avg": seen,
            "quiet": seen is not None and seen[0] < max_load}


def run_spec(rows: list[Row], out_dir: Path, limit: int, *, force: bool = False, resume: bool = False,
             dry_run: bool = False, quiet_load: float | None = None, quiet_timeout: float = 600.0,
             checkpoint_dir: Path | None = None, rerun_contended: bool = False) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for i, row in enumerate(rows, 1):
        out_file = out_dir / f"{row.row_id}.json"
        est = row.estimate()
        head = f"[{i}/{len(rows)}] {row.row_id}: estimate {sc.format_bytes(est.total)} (limit {sc.format_bytes(limit)})"
        if out_file.exists() and not force:
            try:
                rec = json.loads(out_file.read_text())
                if rerun_contended and rec.get("status") == "ok" and contended(rec):
                    _log(head + " -- measured on a busy machine: rerunning")
                elif rec.get("status") in ("ok", "refused", "estimate"):
                    _log(head + f" -- done ({rec['status']}), skipped")
                    done.append(rec)
                    continue
            except (OSError, json.JSONDecodeError):
                pass
        if dry_run:
            _log(head + (" -- would be refused" if est.total > limit else " -- would run"))
            continue
        quiet = None
        if quiet_load is not None and row.path != "dense-full":
            quiet = wait_quiet(quiet_load, quiet_timeout)
        _log(head + f" -- running (load {_loadavg()})")
        rec = run_row(row, out_dir, limit, resume=resume, checkpoint_dir=checkpoint_dir)
        if quiet is not None and rec.get("status") == "ok":
            rec["quiet_wait"] = quiet
            _atomic_write_json(out_file, rec)
        if rec["status"] == "ok":
            _log(f"    {rec['seconds_per_epoch']:.2f} s/epoch ({rec['timing_mode']}), "
                 f"{rec['achieved_gflops']:.1f} GFLOP/s = {100 * rec['matmul_fraction']:.0f}% of matmul "
                 f"{rec['matmul_gflops']:.0f}, peak RSS {sc.format_bytes(rec['peak_rss_bytes'])}")
        else:
            _log(f"    {rec['status']}: {rec.get('reason') or rec.get('error', '')[-300:]}")
        done.append(rec)
    return done


# ====================================================================== the report
def _key(rec: dict) -> tuple:
    shape = rec.get("shape")
    so = SHAPE_ORDER.index(shape) if shape in SHAPE_ORDER else len(SHAPE_ORDER)
    po = PATH_ORDER.index(rec.get("path")) if rec.get("path") in PATH_ORDER else 9
    return (so, rec.get("n_ratings", 0), shape, 0 if rec.get("based") == "item" else 1, po,
            0 if rec.get("kernel") in ("native", None) else 1, rec.get("row_id"))


def _model(rec: dict) -> str:
    return "I-AutoRec" if rec.get("based") == "item" else "U-AutoRec"


def _path_label(rec: dict) -> str:
    if rec.get("path") == "sparse":
        return f"sparse ({rec.get('kernel')} kernels)"
    if rec.get("path") == "dense-full":
        return "dense-full (seed: whole matrix densified)"
    return "dense (masked, per-batch densified)"


def _g(x: float | None, nd: int = 1) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def _gb(x) -> str:
    return "—" if x is None else f"{x / 1e9:.2f}"


def _pick(recs: list[dict], shape: str, based: str, path: str, kernel: str | None = "native") -> dict | None:
    """The main (untagged: the spec's batch size) ok row of that shape, model, path and kernel."""
    for r in recs:
        if (r.get("shape"), r.get("based"), r.get("path"), r.get("status")) == (shape, based, path, "ok") and \
                (path != "sparse" or r.get("kernel") == kernel) and not (r.get("row") or {}).get("tag"):
            return r
    return None


def contended(rec: dict) -> bool:
    """True when the machine was visibly busy during the row: the 1-minute load average above 1.5
    at its start, or at its end beyond the row's own threads plus 1.5, or the matmul rate after the
    run and the one before it more than 25% apart (either way: a busy start or a busy end).  (A
    long row raises the load average by its own threads.)"""
    before = (rec.get("load_avg_before") or [0.0])[0]
    after_load = (rec.get("load_avg_after") or [0.0])[0]
    own = float(rec.get("torch_threads") or rec.get("threads") or 1)
    after = (rec.get("matmul_after") or {}).get("gflops")
    first = rec.get("matmul_gflops")
    apart = bool(after and first) and min(after, first) < 0.75 * max(after, first)
    return before > 1.5 or after_load > own + 1.5 or apart


def target_results(records: list[dict]) -> list[dict]:
    """Each target of :data:`TARGETS` with its measured value and whether it is met (``None``:
    not measured)."""
    ok = [r for r in records if r.get("status") == "ok"]
    out = []
    for shape, kind, goal, text in TARGETS:
        res: dict[str, Any] = {"target": text, "shape": shape, "met": None, "measured": "not measured"}
        if kind == "speedup":
            parts = []
            mets = []
            for based in ("item", "user"):
                s, d = _pick(ok, shape, based, "sparse"), _pick(ok, shape, based, "dense")
                if s and d:
                    sp = d["seconds_per_epoch"] / s["seconds_per_epoch"]
                    loss_gap = abs(s["train_loss"][-1] - d["train_loss"][-1]) / max(abs(d["train_loss"][-1]), 1e-12) \
                        if not d.get("extrapolation") else None
                    parts.append(f"{_model(s)} {sp:.1f}x" + (f" (final train loss differs by {100 * loss_gap:.2g}%)"
                                                             if loss_gap is not None else ""))
                    mets.append(sp >= goal)
            if parts:
                res["measured"] = "; ".join(parts)
                res["met"] = all(mets)
        elif kind == "epoch":
            s = _pick(ok, shape, "item", "sparse")
            if s:
                sec, mem = goal
                res["measured"] = (f"{s['seconds_per_epoch']:.1f} s/epoch, peak RSS "
                                   f"{s['peak_rss_bytes'] / 1e9:.2f} GB")
                res["met"] = s["seconds_per_epoch"] <= sec and s["peak_rss_bytes"] <= mem
        elif kind == "gflops":
            parts, mets = [], []
            for based in ("item", "user"):
                s = _pick(ok, shape, based, "sparse")
                if s:
                    parts.append(f"{_model(s)} {s['achieved_gflops']:.1f} GFLOP/s = "
                                 f"{100 * s['matmul_fraction']:.0f}% of {s['matmul_gflops']:.0f}")
                    mets.append(s["matmul_fraction"] >= goal)
            if parts:
                res["measured"] = "; ".join(parts)
                res["met"] = mets[0] if len(mets) else None
                res["note"] = "met is judged on I-AutoRec (the first entry)"
        out.append(res)
    return out


CSV_HEADER = ["row_id", "status", "shape", "model", "path", "kernel", "n_users", "n_items", "n_ratings", "n_train",
              "n_train_timed", "rows", "n_in", "hidden", "batch_size", "density", "seconds_per_epoch",
              "seconds_per_epoch_measured", "timing_mode", "epoch_seconds", "ratings_per_second",
              "flops_per_epoch", "achieved_gflops", "matmul_gflops", "matmul_fraction", "peak_rss_bytes",
              "estimate_bytes", "limit_bytes", "final_train_loss", "test_rmse", "load_avg_before",
              "load_avg_after"]


def _csv_row(r: dict) -> list:
    ev = r.get("evaluation") or {}
    est = (r.get("estimate") or {}).get("total_bytes")
    dens = r["n_ratings"] / (r["n_users"] * r["n_items"])
    return [r["row_id"], r["status"], r["shape"], _model(r), r["path"], r.get("kernel") or "", r["n_users"],
            r["n_items"], r["n_ratings"], r.get("n_train", ""), r.get("n_train_timed", ""), r["n_rows"], r["n_in"],
            "-".join(str(h) for h in r["hidden"]), r["batch_size"], f"{dens:.6g}",
            _num(r.get("seconds_per_epoch")), _num(r.get("seconds_per_epoch_measured")), r.get("timing_mode", ""),
            " ".join(_num(x) for x in r.get("epoch_seconds", [])), _num(r.get("ratings_per_second")),
            r.get("flops_per_epoch", ""), _num(r.get("achieved_gflops")), _num(r.get("matmul_gflops")),
            _num(r.get("matmul_fraction")), r.get("peak_rss_bytes", ""), est if est is not None else "",
            r.get("limit_bytes", ""), _num((r.get("train_loss") or [None])[-1]), _num(ev.get("test_rmse")),
            " ".join(str(x) for x in (r.get("load_avg_before") or [])),
            " ".join(str(x) for x in (r.get("load_avg_after") or []))]


def _num(x) -> str:
    if x is None or x == "":
        return ""
    return f"{float(x):.6g}"


def plot_scale(records: list[dict], path: Path) -> bool:
    """Log-log seconds per epoch vs training ratings, one line per (model, path, kernel)."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("seconds_per_epoch")]
    if not ok:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9})
    series: dict[str, list[tuple[int, float, bool]]] = {}
    for r in sorted(ok, key=_key):
        label = f"{_model(r)}, {_path_label(r)}"
        series.setdefault(label, []).append((int(r["n_train"]), float(r["seconds_per_epoch"]),
                                              bool(r.get("extrapolation"))))
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    styles = {"sparse (native": "-", "sparse (torch": ":", "dense": "--"}
    for label in sorted(series):
        pts = sorted(series[label])
        ls = next((v for k, v in styles.items() if k in label), "-")
        marker = "o" if label.startswith("I-") else "s"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker=marker, label=label)
        for x, y, ext in pts:
            if ext:
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


def render_scale(raw_records: Iterable[dict], out_dir: "str | os.PathLike", plots: bool = True) -> list[Path]:
    """Write ``scale.md``, ``scale.csv`` and ``scale_epoch_time.png`` under ``out_dir`` from the
    scale raw records (a pure function of them: sorted, no timestamps of its own).  Returns the
    paths written.  Records of other kinds are ignored."""
    recs = sorted((dict(r) for r in raw_records if r.get("kind") == "scale"), key=_key)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ok = [r for r in recs if r["status"] == "ok"]

    # ---- csv
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(CSV_HEADER)
    for r in recs:
        wr.writerow(_csv_row(r))
    (out / "scale.csv").write_text(buf.getvalue())
    written.append(out / "scale.csv")

    # ---- markdown
    md = ["# AutoRec at scale: sparse vs dense, synthetic data of the real shapes", "",
          "Generated by `python -m benchmarks.scale` (raw files: `results/raw/scale/*.json`) and rendered by "
          "`benchmarks.scale.render_scale`; do not edit by hand.", ""]
    envs = sorted({(r["environment"].get("cpu_model"), r["environment"].get("cpu_count"), r["environment"].get("torch"),
                    r.get("torch_threads"), (r.get("env_flags") or {}).get("THP_MEM_ALLOC_ENABLE"))
                   for r in ok if r.get("environment")}, key=str)
    if envs:
        md.append("Machine: " + "; ".join(f"{c} ({n} cores), torch {t}, {th} threads, THP_MEM_ALLOC_ENABLE={thp}"
                                          for c, n, t, th, thp in envs) + ".")
        loads = [x for r in ok for x in ((r.get("load_avg_before") or [None])[0],
                                        (r.get("load_avg_after") or [None])[0]) if x is not None]
        mm = [r["matmul_gflops"] for r in ok]
        md.append(f"Load average (1 min) at row start/end: {min(loads):.2f} to {max(loads):.2f}. "
                  f"Dense float32 matmul (torch.mm, measured in each row's worker): {min(mm):.0f} to "
                  f"{max(mm):.0f} GFLOP/s.")
        md.append("")
    md += ["FLOPs of one training epoch (matrix products only, forward + backward, 2 per multiply-add; "
           "elementwise work and the optimizer update not counted), with `h` the hidden size:", "",
           "- dense (masked) path: `10 * rows * n_in * h` (first layer: forward + weight gradient; "
           "decoder: forward + weight gradient + input gradient);",
           "- sparse path: `10 * nnz * h` (encoder: sparse x dense forward + weight gradient; decoder "
           "evaluated at the observed entries only: forward + both gradients).", "",
           "Rows are the AutoRec matrix's rows (items for I-AutoRec, users for U-AutoRec), `n_in` its "
           "width; `nnz` the training ratings. s/epoch is the median of the timed epochs; "
           "GFLOP/s = FLOPs / s/epoch; % matmul compares with the dense matmul rate measured in the same "
           "worker. Peak RSS is the worker process's peak resident set (data generation, split, training "
           "and evaluation included): its VmHWM, or for rows recorded before that (raw field "
           "`peak_rss_source`) its `ru_maxrss`, which also counts the ~50 MB parent at fork.", ""]

    md += ["## Targets", ""]
    tr = target_results(recs)
    md += ["| target | measured | met |", "|---|---|---|"]
    for t in tr:
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else "**no**")
        md.append(f"| {t['target']} | {t['measured']} | {met} |")
    md.append("")

    md += ["## Measurements", "",
           "| shape | model | path | batch | ratings (train) | rows x n_in | s/epoch | epochs timed | ratings/s | "
           "GFLOP/epoch | GFLOP/s | % matmul | peak RSS GB | est. GB | notes |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        size = f"{r['n_rows']} x {r['n_in']}"
        if r["status"] == "ok":
            note = r.get("timing_mode", "")
            if note == "full epochs":
                note = ""
            if contended(r):
                note = (note + "; " if note else "") + (
                    f"**contended** (load {(r.get('load_avg_before') or ['?'])[0]} -> "
                    f"{(r.get('load_avg_after') or ['?'])[0]}, matmul {r['matmul_gflops']:.0f} -> "
                    f"{(r.get('matmul_after') or {}).get('gflops', float('nan')):.0f} GFLOP/s)")
            ev = r.get("evaluation")
            if ev:
                note = (note + "; " if note else "") + f"test RMSE {ev['test_rmse']:.4f}"
            if r.get("resumed_from_epoch"):
                note += f"; resumed after epoch {r['resumed_from_epoch']}"
            md.append(f"| {r['shape']} | {_model(r)} | {_path_label(r)} | {r.get('batch_size', '—')} | "
                      f"{r.get('n_train_timed', r['n_train'])} | "
                      f"{size} | {r['seconds_per_epoch']:.2f} | "
                      f"{' '.join(f'{x:.2f}' for x in r['epoch_seconds'])} | {r['ratings_per_second']:.3g} | "
                      f"{r['flops_per_epoch'] / 1e9:.0f} | {r['achieved_gflops']:.1f} | "
                      f"{100 * r['matmul_fraction']:.0f}% | {_gb(r.get('peak_rss_bytes'))} | "
                      f"{_gb((r.get('estimate') or {}).get('total_bytes'))} | {note} |")
        elif r["status"] in ("refused", "estimate"):
            what = (f"**does not fit: needs {r['needs_bytes'] / 1e9:.1f} GB** (limit {r['limit_bytes'] / 1e9:.1f} GB)"
                    if r["status"] == "refused" else
                    f"fits: needs {r['needs_bytes'] / 1e9:.1f} GB (limit {r['limit_bytes'] / 1e9:.1f} GB); not run")
            md.append(f"| {r['shape']} | {_model(r)} | {_path_label(r)} | {r.get('batch_size', '—')} | "
                      f"{r.get('n_train', '—')} | {size} | — | — | "
                      f"— | — | — | — | — | {r['needs_bytes'] / 1e9:.2f} | {what}: {r.get('reason', '')} |")
        else:
            err = (r.get("error") or "").strip().splitlines()
            md.append(f"| {r['shape']} | {_model(r)} | {_path_label(r)} | {r.get('batch_size', '—')} | — | {size} | "
                      f"— | — | — | — | — | — | "
                      f"{_gb(r.get('peak_rss_bytes'))} | {_gb((r.get('estimate') or {}).get('total_bytes'))} | "
                      f"**failed** (exit {r.get('returncode')}): {err[-1][:120] if err else ''} |")
    md.append("")

    # speedups
    pairs = []
    for shape in sorted({r["shape"] for r in ok}, key=lambda s: _key({"shape": s})):
        for based in ("item", "user"):
            s, d = _pick(ok, shape, based, "sparse"), _pick(ok, shape, based, "dense")
            st = _pick(ok, shape, based, "sparse", "torch")
            if s and d:
                w = sc.Workload(int(s["n_rows"]), int(s["n_in"]), int(s["n_train"]), tuple(s["hidden"]),
                                int(s["batch_size"]))
                ratio = sc.epoch_flops(w, "dense") / sc.epoch_flops(w, "sparse")
                pairs.append(f"| {shape} | {_model(s)} | {d['seconds_per_epoch'] / s['seconds_per_epoch']:.1f}x | "
                             f"{ratio:.0f}x | "
                             + (f"{st['seconds_per_epoch'] / s['seconds_per_epoch']:.1f}x" if st else "—") + " |")
    if pairs:
        md += ["## Sparse vs dense", "",
               "| shape | model | dense s/epoch ÷ sparse s/epoch | FLOP ratio (dense ÷ sparse) | "
               "native kernels vs torch sparse ops |", "|---|---|---|---|---|", *pairs, ""]

    # memory estimator vs measured
    cal = [r for r in ok if r.get("peak_rss_bytes") and r.get("estimate")]
    if cal:
        md += ["## Memory estimator vs measured peak RSS", "",
               "| row | estimate GB | peak stage | measured peak RSS GB | measured / estimate |", "|---|---|---|---|---|"]
        for r in cal:
            e = r["estimate"]
            md.append(f"| {r['row_id']} | {e['total_bytes'] / 1e9:.2f} | {e['peak_stage']} | "
                      f"{r['peak_rss_bytes'] / 1e9:.2f} | {r['peak_rss_bytes'] / e['total_bytes']:.2f} |")
        md.append("")

    bounds = [r for r in ok if r.get("traffic_bytes_per_epoch") and r.get("bandwidth")]
    if bounds:
        md += ["## What bounds the epoch", "",
               "Two lower bounds per row, for the epoch actually timed: compute (FLOPs ÷ the measured matmul "
               "rate) and memory traffic (the traffic model of `autorec.scale.epoch_traffic_bytes` ÷ the "
               "bandwidth measured in the same worker, `c = a + b` on 256 MB float32 arrays). The traffic "
               "model counts, per optimizer step, Adam's 7 float32 reads/writes per parameter, the gradient "
               "writes and the weight reads of the first and last layers; per epoch, the observed entries "
               "(sparse) or the dense batch tensors (dense). Steps x parameters = 2 rows x n_in x h / batch, "
               "so with a dense-parameter optimizer this part grows with rows x n_in, not with the ratings.", "",
               "| row | measured s | compute bound s | traffic GB | of which optimizer GB | bandwidth GB/s | "
               "traffic bound s | measured ÷ max(bounds) |", "|---|---|---|---|---|---|---|---|"]
        for r in bounds:
            t = r["traffic_bytes_per_epoch"]
            meas = r["seconds_per_epoch_measured"]
            fb, tb = r["flop_bound_seconds"], r["bandwidth_bound_seconds"]
            md.append(f"| {r['row_id']} | {meas:.2f} | {fb:.2f} | {t['total'] / 1e9:.1f} | {t['optimizer'] / 1e9:.1f} | "
                      f"{r['bandwidth']['gbs']:.1f} | {tb:.2f} | {meas / max(fb, tb):.1f} |")
        md.append("")

    prof = [r for r in ok if r.get("profile")]
    if prof:
        md += ["## Where the time goes (torch.profiler, self CPU time)", "",
               "`_Encode`/`_EncodeBackward`/`_Decode`/`_DecodeBackward` are the native sparse kernels, "
               "`_fused_adam_` the optimizer step, `uniform_` the dropout masks.", ""]
        for r in prof:
            p = r["profile"]
            ops, scope = (p["ops"], p["scope"]) if isinstance(p, dict) else (p, "one fit on a row subset, setup included")
            top = ", ".join(f"{o['name']} {100 * o['share']:.0f}%" for o in ops[:7])
            md.append(f"- {r['row_id']} ({scope}): {top}")
        md.append("")

    if plots and plot_scale(recs, out / "scale_epoch_time.png"):
        written.append(out / "scale_epoch_time.png")
        md += ["## Time per epoch vs ratings", "", "![time per epoch vs ratings](scale_epoch_time.png)", ""]
    (out / "scale.md").write_text("\n".join(md).rstrip() + "\n")
    written.insert(0, out / "scale.md")
    return written


# ====================================================================== CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default=str(DEFAULT_SPEC), help="scale spec TOML (default: benchmarks/specs/scale.toml)")
    p.add_argument("--only", nargs="*", default=None, metavar="PATTERN",
                   help="run only rows whose id matches one of these glob patterns (e.g. 'ml-1m-*')")
    p.add_argument("--max-memory", default=None,
                   help="memory budget: 19GB, 80%% (of RAM), ... (default: the spec's max_memory, else 80%%)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="raw result folder (default results/raw/scale)")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="after running, render scale.md/.csv/.png into DIR (e.g. results)")
    p.add_argument("--render-only", action="store_true", help="only render --report from the raw folder")
    p.add_argument("--force", action="store_true", help="rerun rows that already have a raw file")
    p.add_argument("--resume", action="store_true", help="resume checkpointed rows from their last checkpoint")
    p.add_argument("--rerun-contended", action="store_true",
                   help="rerun finished rows whose record shows a busy machine (load > 1.5 or matmul rate fell)")
    p.add_argument("--dry-run", action="store_true", help="print the rows and their estimates only")
    p.add_argument("--quiet-load", type=float, default=None, metavar="LOAD",
                   help="before each row, wait until the 1-minute load average is below LOAD")
    p.add_argument("--quiet-timeout", type=float, default=600.0, metavar="S",
                   help="wait at most S seconds for --quiet-load (then run anyway; recorded)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-limit", default=None, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint-dir", default=None,
                   help="checkpoints of large rows (default ~/.cache/autorec-bench/scale-checkpoints)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.worker:
            row = Row.from_dict(json.loads(args.worker))
            worker(row, Path(args.worker_out), int(args.worker_limit), resume=args.resume,
                   checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else default_checkpoint_dir())
            return 0
        out = Path(args.out)
        if args.render_only:
            if not args.report:
                raise ConfigError("--render-only needs --report DIR")
            for p in render_scale(load_records(out), args.report):
                print(p)
            return 0
        settings, rows = load_spec(args.spec)
        if args.only:
            rows = [r for r in rows if any(fnmatch.fnmatch(r.row_id, pat) for pat in args.only)]
            if not rows:
                raise ConfigError(f"--only {args.only}: no row of {args.spec} matches")
        limit = sc.parse_bytes(args.max_memory or settings.get("max_memory", "80%"))
        recs = run_spec(rows, out, limit, force=args.force, resume=args.resume, dry_run=args.dry_run,
                        quiet_load=args.quiet_load, quiet_timeout=args.quiet_timeout,
                        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
                        rerun_contended=args.rerun_contended)
        if args.report and not args.dry_run:
            for p in render_scale(load_records(out), args.report):
                print(p)
        failed = [r for r in recs if r.get("status") == "failed"]
        return 1 if failed else 0
    except MemoryBudgetError as exc:
        print(f"scale: does not fit: {exc}", file=sys.stderr)
        return 3
    except AutoRecBenchError as exc:
        print(f"scale: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
