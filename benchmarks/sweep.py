"""Sweeps: a declared grid of runs (datasets x splits x models x backends x params x seeds), resumable.

A spec is a TOML file (see ``benchmarks/specs/``)::

    name = "ml100k"                      # default: the file name
    description = "..."
    seeds = [0, 1, 2]                    # default seeds of every split (default [0])
    datasets = ["ml-100k"]
    splits = ["random:test_ratio=0.1",   # a spec string uses the default seeds ...
              {spec = "canonical:u1", seeds = [0]}]   # ... a table names its own
    valid_ratio = 0.05                   # default 0.05
    cold_start = "global-mean"           # test cold-start policy (default global-mean)
    missing_data = "error"               # or "skip": datasets with no local copy are skipped, said so
    timeout_s = 600                      # optional: kill (and record as failed) a run after this

    [[model]]
    name = "i-autorec"                   # any name of benchmarks.algorithms (or module:Class)
    backends = ["torch", "mxnet"]        # default: the model's first backend
    label = "I-AutoRec (tuned)"          # optional: shown in tables
    config = "../configs/x.toml"         # optional: parameters from a file (relative to this spec)
    params = {hidden = [500]}            # fixed parameters (override the config file)
    grid = {lr = [0.001, 0.003]}         # the cartesian product of these lists
    devices = [["cpu"], ["cpu", "cpu"]]  # device lists (default [["cpu"]])
    datasets = [...] / splits = [...] / seeds = [...]   # optional per-model overrides

Every run of every spec is planned and validated (model names, backends, optional frameworks,
parameters, devices, split specs) before the first one starts; all problems are reported at once.
The sweep is resumable: a run whose raw file exists and parses is skipped, results are written
atomically, so a sweep killed at any point (SIGINT, SIGKILL) and started again loses no finished
result, leaves no partial file and ends with the same set of raw files.  A run that fails is
recorded as a failure file (``status: failed``) and the sweep goes on.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import os
import signal
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autorec.errors import ConfigError
from benchmarks import algorithms, harness

TOP_KEYS = {"name", "description", "seeds", "datasets", "splits", "valid_ratio", "cold_start",
            "missing_data", "timeout_s", "model", "notes"}
MODEL_KEYS = {"name", "backends", "backend", "label", "config", "params", "grid", "devices", "datasets",
              "splits", "seeds", "valid_ratio", "cold_start", "notes"}


@dataclass
class Sweep:
    """Every run of one or more specs, validated, in order, without duplicates."""

    names: list[str]
    runs: list[harness.RunSpec] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # messages about what is not run and why
    duplicates: int = 0


def _splits(entries: Any, seeds: list[int], where: str) -> list[tuple[str, list[int]]]:
    if entries is None:
        raise ConfigError(f"{where}: no splits (splits = [\"random\", ...])")
    if isinstance(entries, str):
        entries = [entries]
    out = []
    for k, e in enumerate(entries):
        if isinstance(e, str):
            out.append((e, seeds))
        elif isinstance(e, dict):
            unknown = sorted(set(e) - {"spec", "seeds"})
            if unknown or "spec" not in e:
                raise ConfigError(f"{where}: splits[{k}] must be a spec string or {{spec = ..., seeds = [...]}}"
                                  + (f"; unknown keys {unknown}" if unknown else ""))
            out.append((e["spec"], harness.parse_seeds(e.get("seeds", seeds))))
        else:
            raise ConfigError(f"{where}: splits[{k}] = {e!r} is neither a spec string nor a table")
    return out


def _devices(value: Any, where: str) -> list[list[str]]:
    if value is None:
        return [["cpu"]]
    if isinstance(value, str):
        return [harness.parse_devices(value)]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: devices must be a list of device lists, e.g. [[\"cpu\"], [\"cpu(0)\", \"cpu(1)\"]]")
    if all(isinstance(v, str) for v in value):
        return [harness.parse_devices(v) for v in value]
    return [harness.parse_devices(v) for v in value]


def _grid(grid: Any, where: str) -> list[dict[str, Any]]:
    if grid is None:
        return [{}]
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: grid must be a table of lists, e.g. grid = {{hidden = [[10], [20]]}}")
    keys = sorted(grid)
    for k in keys:
        if not isinstance(grid[k], list) or not grid[k]:
            raise ConfigError(f"{where}: grid.{k} must be a non-empty list of values")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def load_spec(path: str | os.PathLike, *, data_dir=None) -> Sweep:
    """Parse, expand and validate one spec file."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"sweep spec {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sweep spec {path}: not valid TOML ({exc})") from None
    return build_sweep(doc, path, data_dir=data_dir)


def build_sweep(doc: dict, path: Path, *, data_dir=None) -> Sweep:
    where = str(path)
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(TOP_KEYS)}")
    name = str(doc.get("name", path.stem))
    seeds = harness.parse_seeds(doc.get("seeds", [0]))
    datasets = doc.get("datasets")
    missing = doc.get("missing_data", "error")
    if missing not in ("error", "skip"):
        raise ConfigError(f"{where}: missing_data = {missing!r} must be 'error' or 'skip'")
    models = doc.get("model")
    if not models or not isinstance(models, list):
        raise ConfigError(f"{where}: no models (add [[model]] tables with name = \"...\")")
    sweep = Sweep([name])
    errors: list[str] = []
    available: dict[str, tuple[bool, str]] = {}
    seen: set[str] = set()
    skipped_runs: dict[str, int] = {}
    for mi, m in enumerate(models):
        mwhere = f"{where}: [[model]] #{mi + 1}"
        try:
            if not isinstance(m, dict) or "name" not in m:
                raise ConfigError(f"{mwhere}: needs name = \"...\"")
            mwhere += f" ({m['name']})"
            bad = sorted(set(m) - MODEL_KEYS)
            if bad:
                raise ConfigError(f"{mwhere}: unknown key(s) {bad}; known: {sorted(MODEL_KEYS)}")
            if "backend" in m and "backends" in m:
                raise ConfigError(f"{mwhere}: give backend or backends, not both")
            backends = m.get("backends", [m["backend"]] if "backend" in m else [None])
            if isinstance(backends, str):
                backends = [backends]
            base: dict[str, Any] = {}
            if m.get("config"):
                base.update(harness.read_params_file(m["config"], m["name"], base=path))
            fixed = m.get("params") or {}
            if not isinstance(fixed, dict):
                raise ConfigError(f"{mwhere}: params must be a table")
            base.update(fixed)
            grid = _grid(m.get("grid"), mwhere)
            devs = _devices(m.get("devices"), mwhere)
            m_seeds = harness.parse_seeds(m["seeds"]) if "seeds" in m else seeds
            m_splits = _splits(m.get("splits", doc.get("splits")), m_seeds, mwhere)
            if "seeds" in m:  # per-model seeds override the split tables' seeds too
                m_splits = [(s, m_seeds) for s, _ in m_splits]
            m_datasets = m.get("datasets", datasets)
            if not m_datasets:
                raise ConfigError(f"{mwhere}: no datasets (datasets = [\"ml-100k\"])")
            valid_ratio = m.get("valid_ratio", doc.get("valid_ratio", 0.05))
            cold_start = m.get("cold_start", doc.get("cold_start", "global-mean"))
            for ds in m_datasets:
                ref = harness.parse_dataset(ds)
                if ref.name not in available:
                    available[ref.name] = harness.dataset_available(ref.name, data_dir)
                ok, where_found = available[ref.name]
                for backend, dev, combo in itertools.product(backends, devs, grid):
                    params = {**base, **combo}
                    for spec, s_list in m_splits:
                        for seed in s_list:
                            run = _plan(ds, spec, seed, m, backend, dev, params, valid_ratio, cold_start,
                                        name, doc.get("timeout_s"), combo)
                            if run.run_id in seen:
                                sweep.duplicates += 1
                                continue
                            seen.add(run.run_id)
                            if not ok and missing == "skip":
                                continue
                            sweep.runs.append(run)
                if not ok and missing == "skip":
                    n = sum(1 for _ in itertools.product(backends, devs, grid)) * sum(len(s) for _, s in m_splits)
                    skipped_runs[ref.name] = skipped_runs.get(ref.name, 0) + n
        except ConfigError as exc:
            errors.append(str(exc) if str(exc).startswith(where) else f"{mwhere}: {exc}")
        except Exception as exc:  # an AutoRecBenchError (missing dependency, bad split spec, ...)
            errors.append(f"{mwhere}: {type(exc).__name__}: {exc}")
    if errors:
        raise ConfigError("invalid sweep spec:\n  " + "\n  ".join(errors))
    for ds, n in sorted(skipped_runs.items()):
        sweep.skipped.append(f"{name}: no local copy of {ds}: its {n} run(s) are skipped (get it with "
                             f"`autorec-bench datasets --download {ds}`, or pass --data-dir / set AUTOREC_DATA_DIR)")
    return sweep


def _plan(ds, spec, seed, m, backend, dev, params, valid_ratio, cold_start, sweep_name, timeout_s, combo):
    variant = " ".join(f"{k}={harness._canonical_json(v)}" for k, v in sorted(combo.items())) or None
    return harness.plan_run(dataset=ds, split=spec, seed=seed, model=m["name"], backend=backend, devices=dev,
                            params=params, valid_ratio=valid_ratio, cold_start=cold_start,
                            label=m.get("label"), sweep=sweep_name, timeout_s=timeout_s, variant=variant)


def load_sweeps(paths: list[str], *, data_dir=None) -> Sweep:
    """Several spec files as one sweep (duplicate runs across specs run once)."""
    total = Sweep([])
    seen: set[str] = set()
    errors = []
    for p in paths:
        try:
            s = load_spec(p, data_dir=data_dir)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        total.names += s.names
        total.skipped += s.skipped
        total.duplicates += s.duplicates
        for r in s.runs:
            if r.run_id in seen:
                total.duplicates += 1
                continue
            seen.add(r.run_id)
            total.runs.append(r)
    if errors:
        raise ConfigError("\n".join(errors))
    return total


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_sweep(sweep: Sweep, out_dir=harness.DEFAULT_RAW, *, jobs: int = 1, data_dir=None, offline=False,
              cache_dir=None, threads: int | None = None, retry_failed: bool = False,
              progress: bool | None = None, log=print) -> dict:
    """Run every pending run of ``sweep``; returns counts ``{"ok", "failed", "skipped"}``."""
    from tqdm import tqdm

    from autorec.env import default_threads

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    harness.clean_stale_temp(out_dir)
    jobs = max(1, int(jobs))
    threads = threads or max(1, default_threads() // jobs)
    pending, done = [], 0
    for r in sweep.runs:
        p = out_dir / r.filename
        finished = False
        if p.is_file():
            try:
                rec = harness.read_raw(p)
                finished = rec.get("run_id") == r.run_id and (rec["status"] == "ok" or not retry_failed)
            except Exception:
                finished = False
        if finished:
            done += 1
        else:
            pending.append(r)
    counts = {"ok": 0, "failed": 0, "skipped": done}
    for msg in sweep.skipped:
        log(f"skip: {msg}")
    log(f"sweep {', '.join(sweep.names)}: {len(sweep.runs)} runs, {done} already done, {len(pending)} to run "
        f"({jobs} job(s), {threads} thread(s) each) -> {out_dir}")
    if not pending:
        return counts
    harness.prepare_data(pending, data_dir=data_dir, offline=offline, cache_dir=cache_dir, log=log)
    disable = None if progress is None else not progress
    bar = tqdm(total=len(pending), desc="sweep", unit="run", file=sys.stderr, disable=disable,
               dynamic_ncols=True, position=0)
    inner = [None]
    t_start = time.perf_counter()

    def on_event(ev):
        if jobs != 1 or bar.disable:
            return
        if ev.get("event") == "epoch" and ev.get("epochs", 0) > 1:
            if inner[0] is None:
                inner[0] = tqdm(total=ev["epochs"], desc="  epochs", unit="ep", file=sys.stderr, leave=False,
                                position=1, dynamic_ncols=True)
            b = inner[0]
            b.n = ev["epoch"]
            vr = ev.get("valid_rmse")
            if isinstance(vr, (int, float)):
                b.set_postfix_str(f"valid {vr:.4f}", refresh=False)
            b.refresh()

    def finish(outcome: harness.Outcome, k: int):
        if inner[0] is not None:
            inner[0].close()
            inner[0] = None
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        elapsed = time.perf_counter() - t_start
        eta = elapsed / k * (len(pending) - k)
        line = f"[{k}/{len(pending)} eta {_fmt_s(eta)}] {outcome.summary}"
        if bar.disable:
            log(line)
        else:
            bar.write(line, file=sys.stderr)
            bar.update(1)

    def one(r):
        return harness.execute(r, out_dir, data_dir=data_dir, offline=offline, cache_dir=cache_dir,
                               threads=threads, retry_failed=retry_failed, on_event=on_event)

    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if jobs == 1:
            for k, r in enumerate(pending, 1):
                bar.set_description_str(f"sweep: {r.describe()[:60]}", refresh=True)
                finish(one(r), k)
        else:
            with cf.ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = {pool.submit(one, r): r for r in pending}
                k = 0
                try:
                    remaining = set(futures)
                    while remaining:
                        finished, remaining = cf.wait(remaining, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                        for f in sorted(finished, key=lambda f: pending.index(futures[f])):
                            k += 1
                            finish(f.result(), k)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    harness.terminate_active()
                    raise
    except (KeyboardInterrupt, harness.Interrupted):
        harness.terminate_active()
        bar.close()
        log(f"interrupted: {counts['ok'] + counts['failed']} run(s) finished and kept; rerun the same command "
            "to resume")
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if inner[0] is not None:
            inner[0].close()
        bar.close()
    log(f"sweep done in {_fmt_s(time.perf_counter() - t_start)}: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['skipped']} already done")
    return counts


def estimate(sweep: Sweep) -> dict:
    """Counts per (model, backend) for --dry-run."""
    per: dict[str, int] = {}
    for r in sweep.runs:
        key = f"{r.label or r.model} ({r.backend}{'' if r.devices == ('cpu',) else ', ' + ','.join(r.devices)})"
        per[key] = per.get(key, 0) + 1
    return dict(sorted(per.items()))
