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
    refit = false                        # also retrain the selection on train + validation
    rating_scale = [1, 5]                # the scale of a custom (files:) dataset
    missing_data = "error"               # or "skip": datasets with no local copy are skipped, said so
    timeout_s = 600                      # optional: kill (and record as failed) a run after this

    [[model]]
    name = "i-autorec"                   # a registry name (autorec.models.registry) or module:Class
    backends = ["torch", "mxnet"]        # default: the model's first backend
    label = "I-AutoRec (tuned)"          # optional: shown in tables
    config = "../../results/x.toml"      # optional: parameters from a file (relative to this spec)
    params = {hidden = [500]}            # fixed parameters (override the config file)
    grid = {lr = [0.001, 0.003]}         # the cartesian product of these lists
    devices = [["cpu"], ["cpu", "cpu"]]  # device lists (default [["cpu"]])
    datasets / splits / seeds / valid_ratio / cold_start / refit   # optional per-model overrides

Every run of every spec is planned (:func:`benchmarks.harness.plan_run`) before the first one
starts, and every problem of every run is reported at once.  A run whose successful record exists
is skipped; a failed run is tried again; a run another live sweep claims is left to it.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from autorec.devices import split_devices
from autorec.errors import AutoRecBenchError, ConfigError
from autorec.jsonio import canonical_json
from autorec.models import registry
from autorec.models.config import ModelConfig
from benchmarks.harness import DataSource, DataUnavailable, PlanError, RunPlan, availability, parse_dataset, plan_run

REPO = Path(__file__).resolve().parents[1]
TOP_KEYS = set(
    "name description seeds datasets splits valid_ratio cold_start refit rating_scale missing_data timeout_s "
    "model notes".split()
)
MODEL_KEYS = set(
    "name backends backend label config params grid devices datasets splits seeds valid_ratio cold_start refit "
    "notes".split()
)
# per-model keys that fall back to the spec's
INHERITED = {"valid_ratio": 0.05, "cold_start": "global-mean", "refit": False, "rating_scale": None}


# ====================================================================== inputs
def parse_seeds(text: str | int | Iterable[int]) -> list[int]:
    """``"0,1,2"``, ``"0-4"`` (inclusive), ``3`` or a list; duplicates removed, order kept."""
    if isinstance(text, bool):
        raise ConfigError(f"seeds {text!r} are not integers")
    items: list[Any] = []
    if isinstance(text, int):
        items = [text]
    elif isinstance(text, str):
        for part in (p.strip() for p in text.split(",")):
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise ConfigError(f"seed range {part!r} is empty (write low-high)")
                items.extend(range(a, b + 1))
            elif re.fullmatch(r"\d+", part):
                items.append(int(part))
            elif part:
                raise ConfigError(f"seeds {text!r}: {part!r} is not a non-negative integer or a range a-b")
    elif isinstance(text, (list, tuple, range)):
        items = list(text)
    else:
        items = [text]  # one seed; anything but a non-negative integer is refused below
    out: list[int] = []
    for s in items:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"seed {s!r} must be a non-negative integer")
        if s not in out:
            out.append(s)
    if not out:
        raise ConfigError("no seeds given")
    return out


def read_params_file(path: str | os.PathLike, model: str | None = None, base: str | os.PathLike | None = None) -> dict:
    """Parameters from a TOML file: a tuned config (``model = ...``, ``[params]``, optional
    ``params_none = [...]``, as ``autorec-bench tune`` writes) or a bare table of parameters.  A
    relative path is looked up beside ``base`` (a spec file), then from the working folder, then
    from the repository root.  A config written for another model class is refused; the fields
    the run sets (seed, cold start, devices) are dropped."""
    p = Path(path)
    if not p.is_absolute():
        candidates = ([Path(base).parent / p] if base is not None else []) + [Path.cwd() / p, REPO / p]
        p = next((c for c in candidates if c.is_file()), candidates[0])
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (looked for {p})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"config file {p}: cannot be read ({exc.strerror or exc})") from None
    if "params" not in doc:
        params = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    else:
        if not isinstance(doc["params"], dict):
            raise ConfigError(f"config file {p}: [params] must be a table")
        written_for = doc.get("model")
        if model is not None and written_for not in (None, model):
            if registry.get(written_for).target != registry.get(model).target:
                raise ConfigError(f"config file {p} is for model {written_for!r}, not {model!r}")
        params = dict(doc["params"])
        params.update({k: None for k in doc.get("params_none", [])})
    return {k: v for k, v in params.items() if k not in ModelConfig.HARNESS}


# ====================================================================== specs
@dataclass
class Sweep:
    """Every run of one or more specs, planned, in order, without duplicates; ``notes`` say what is
    skipped (no data) or what a real run would download."""

    names: list[str]
    plans: list[RunPlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duplicates: int = 0


class _Collector:
    """Spec problems, each reported once (the same bad parameter fails every seed alike)."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def add(self, where: str, exc: AutoRecBenchError) -> None:
        for problem in exc.problems if isinstance(exc, PlanError) else [str(exc)]:
            self.errors.setdefault(problem, f"{where}: {problem}")


def _splits(entries: Any, seeds: list[int], where: str) -> list[tuple[str, list[int]]]:
    if entries is None:
        raise ConfigError(f'{where}: no splits (splits = ["random", ...])')
    out = []
    for k, e in enumerate([entries] if isinstance(entries, str) else entries):
        if isinstance(e, str):
            out.append((e, seeds))
        elif isinstance(e, dict) and "spec" in e and set(e) <= {"spec", "seeds"}:
            out.append((e["spec"], parse_seeds(e.get("seeds", seeds))))
        else:
            raise ConfigError(f"{where}: splits[{k}] = {e!r} must be a spec string or {{spec = ..., seeds = [...]}}")
    return out


def _devices(value: Any, where: str) -> list[list[str]]:
    if value is None:
        return [["cpu"]]
    if isinstance(value, str):
        return [split_devices(value)]
    if not isinstance(value, list) or not value:
        raise ConfigError(f'{where}: devices must be a list of device lists, e.g. [["cpu"], ["cpu(0)", "cpu(1)"]]')
    return [split_devices(v) for v in value]


def _grid(grid: Any, where: str) -> list[dict[str, Any]]:
    if grid is None:
        return [{}]
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{where}: grid must be a table of non-empty lists, e.g. grid = {{hidden = [[10], [20]]}}")
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def load_spec(path: str | os.PathLike, *, source: DataSource | None = None, dry_run: bool = False) -> Sweep:
    """Parse, expand and plan one spec file (every problem reported at once, as one ConfigError)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sweep spec {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sweep spec {path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"sweep spec {path}: cannot be read ({exc.strerror or exc})") from None
    return build_sweep(doc, path, source=source or DataSource(), dry_run=dry_run)


def build_sweep(doc: dict, path: Path, *, source: DataSource, dry_run: bool = False) -> Sweep:
    """The planned runs of a parsed spec.  Datasets with no local copy are skipped (``missing_data
    = "skip"``), listed as to be downloaded (``dry_run``), or downloaded while planning."""
    where = str(path)
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(TOP_KEYS)}")
    name = str(doc.get("name", path.stem))
    missing = doc.get("missing_data", "error")
    if missing not in ("error", "skip"):
        raise ConfigError(f"{where}: missing_data = {missing!r} must be 'error' or 'skip'")
    models = doc.get("model")
    if not models or not isinstance(models, list):
        raise ConfigError(f'{where}: no models (add [[model]] tables with name = "...")')
    sweep = Sweep([name])
    problems = _Collector()
    skipped: dict[str, int] = {}
    to_download: set[str] = set()
    seen: dict[str, tuple[str, str | None]] = {}  # run_id -> where it was first planned, and its label
    for mi, m in enumerate(models):
        mwhere = f"{where}: [[model]] #{mi + 1}" + (f" ({m['name']})" if isinstance(m, dict) and "name" in m else "")
        try:
            runs = list(_expand(doc, m, mwhere, path))
        except AutoRecBenchError as exc:
            problems.add(mwhere, exc)
            continue
        for ds, kwargs in runs:
            try:
                plan = plan_run(
                    dataset=ds,
                    sweep=name,
                    download=not (dry_run or missing == "skip"),
                    **kwargs,
                    **_source_kwargs(source),
                )
            except DataUnavailable as exc:
                if missing == "skip":
                    skipped[ds] = skipped.get(ds, 0) + 1
                else:
                    problems.add(where, exc)
                continue
            except AutoRecBenchError as exc:
                problems.add(mwhere, exc)
                continue
            if not plan.materialised and missing == "skip":
                skipped[ds] = skipped.get(ds, 0) + 1
            elif plan.run_id in seen:
                first, label = seen[plan.run_id]
                if label != plan.label:  # one of the two labels would silently go
                    problems.add(
                        mwhere,
                        ConfigError(
                            f"repeats a run of {first} (the same model, parameters and split) under another "
                            f"label ({plan.label!r} vs {label!r}); remove one table or make their parameters differ"
                        ),
                    )
                sweep.duplicates += 1
            else:
                if not plan.materialised:
                    to_download.add(ds)
                seen[plan.run_id] = (mwhere.removeprefix(f"{where}: "), plan.label)
                sweep.plans.append(plan)
    if problems.errors:
        raise PlanError(list(problems.errors.values()))
    for ds, n in sorted(skipped.items()):
        sweep.notes.append(
            f"{name}: no local copy of {ds}: its {n} run(s) are skipped (get it with "
            f"`autorec-bench datasets --download {ds}`, or pass --data-dir / set AUTOREC_DATA_DIR)"
        )
    for ds in sorted(to_download):
        sweep.notes.append(f"{name}: {ds} is {availability(parse_dataset(ds), source).where}")
    return sweep


def _source_kwargs(source: DataSource) -> dict[str, Any]:
    return {"data_dir": source.data_dir, "offline": source.offline, "cache_dir": source.cache_dir}


def _expand(doc: dict, m: Any, where: str, path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    """(dataset, plan_run keyword arguments) of every run of one [[model]] table."""
    if not isinstance(m, dict) or "name" not in m:
        raise ConfigError('needs name = "..."')
    bad = sorted(set(m) - MODEL_KEYS)
    if bad:
        raise ConfigError(f"unknown key(s) {bad}; known: {sorted(MODEL_KEYS)}")
    if "backend" in m and "backends" in m:
        raise ConfigError("give backend or backends, not both")
    backends = m.get("backends", [m["backend"]] if "backend" in m else [None])
    backends = [backends] if isinstance(backends, str) else backends
    base: dict[str, Any] = read_params_file(m["config"], m["name"], base=path) if m.get("config") else {}
    fixed = m.get("params") or {}
    if not isinstance(fixed, dict):
        raise ConfigError("params must be a table")
    base.update(fixed)
    grid = _grid(m.get("grid"), where)
    devs = _devices(m.get("devices"), where)
    seeds = parse_seeds(m.get("seeds", doc.get("seeds", [0])))
    splits = _splits(m.get("splits", doc.get("splits")), seeds, where)
    if "seeds" in m:  # per-model seeds override the split tables' seeds too
        splits = [(s, seeds) for s, _ in splits]
    datasets = m.get("datasets", doc.get("datasets"))
    if isinstance(datasets, str):
        datasets = [datasets]  # one dataset, as splits = "..." is one split
    if not datasets:
        raise ConfigError('no datasets (datasets = ["ml-100k"])')
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        raise ConfigError(f'datasets = {datasets!r} must be a list of dataset names (datasets = ["ml-100k"])')
    settings = {k: m.get(k, doc.get(k, default)) for k, default in INHERITED.items()}
    for ds in datasets:
        for backend, dev, combo in itertools.product(backends, devs, grid):
            variant = " ".join(f"{k}={canonical_json(v)}" for k, v in sorted(combo.items())) or None
            for spec, split_seeds in splits:
                for seed in split_seeds:
                    yield (
                        ds,
                        dict(
                            split=spec,
                            seed=seed,
                            model=m["name"],
                            backend=backend,
                            devices=dev,
                            params={**base, **combo},
                            label=m.get("label"),
                            timeout_s=doc.get("timeout_s"),
                            variant=variant,
                            **settings,
                        ),
                    )


def load_sweeps(
    paths: Iterable[str | os.PathLike], *, source: DataSource | None = None, dry_run: bool = False
) -> Sweep:
    """Several spec files as one sweep (a run in several specs runs once); every problem of every
    spec is reported at once."""
    total = Sweep([])
    seen: set[str] = set()
    problems: list[str] = []
    for p in paths:
        try:
            s = load_spec(p, source=source, dry_run=dry_run)
        except PlanError as exc:
            problems += exc.problems
            continue
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        total.names += s.names
        total.notes += s.notes
        total.duplicates += s.duplicates
        for plan in s.plans:
            if plan.run_id in seen:
                total.duplicates += 1
            else:
                seen.add(plan.run_id)
                total.plans.append(plan)
    if problems:
        raise PlanError(problems)
    return total


def estimate(sweep: Sweep) -> dict[str, int]:
    """Run counts per (label or model, backend, devices), for ``--dry-run``."""
    per: dict[str, int] = {}
    for p in sweep.plans:
        i = p.identity
        key = f"{p.label or i.model} ({i.backend}{'' if i.devices == ('cpu',) else ', ' + ','.join(i.devices)})"
        per[key] = per.get(key, 0) + 1
    return dict(sorted(per.items()))
