"""Runs and raw results: one run = one (dataset, split, seed, model, backend, devices, params).

Every run trains and evaluates in a *fresh worker subprocess* (``python -m benchmarks.harness
_worker JOB``) and ends as ONE JSON file under the raw folder (default ``results/raw``), written
atomically (a hidden temp file in the same folder, then ``os.replace``), so a killed run never
leaves a half-written result.

**Identity.**  A run's identity is ``dataset``, ``split`` (the canonical spec string), ``seed``,
``model``, ``backend``, ``devices``, the fully resolved ``params`` (``model.params()`` after
validation; execution settings such as ``threads`` excluded), ``valid_ratio`` and the test
``cold_start`` policy.  Its SHA-256 over canonical JSON is the ``run_id``; the file name is a
readable prefix plus the first 16 hex digits of it.  A run whose file exists and parses is finished
(:func:`is_finished`) and is skipped by ``run`` and ``sweep``.

**Raw schema** (``schema_version`` 1, status ``ok``): ``dataset``, ``split`` (``spec``, ``kind``,
``args``), ``split_sha256``, ``model``, ``backend``, ``devices``, ``launcher``, ``seed``, ``params``,
``valid_ratio``, ``cold_start_policy``, ``metrics`` (``test_rmse``, ``test_mae``, ``valid_rmse``,
``valid_mae``), ``best_epoch``, ``epochs_run``, ``history`` (per epoch ``epoch``, ``train_loss``,
``valid_rmse``, ``seconds``), ``timing`` (``fit_seconds``: wall time of ``fit`` (for DDP: of the
whole torchrun launch); ``seconds_per_epoch``: the median of the per-epoch wall times the model
reports (its validation pass included; one-off start-up such as a lazy framework import excluded),
or ``fit_seconds / epochs_run`` when the model reports no per-epoch times (``fit_seconds_per_epoch``
is always that ratio); ``median_epoch_seconds`` from the history; ``predict_seconds``: the
test-set prediction incl. cold start and clipping; ``load_seconds``; ``worker_seconds``),
``memory`` (see below), ``n_train``, ``n_valid``, ``n_test``, ``n_cold_start`` (test pairs whose
user or item has no train rating; filled by the policy), ``cold_start_policy``, ``environment``
(:func:`autorec.env.environment` in the worker after training: versions, thread counts, CPU, GPU),
``threads``, ``git_commit``, ``created_at``, ``fit_extra``, and ``label`` / ``sweep`` when given.
A failed run (``status`` ``failed``) holds the identity fields, ``error`` (``type``, ``message``,
``traceback``) and whatever was known when it failed; it is never averaged.

**Memory.**  ``memory.peak_rss_mb`` is the peak resident set size of the run's own worker process
(its ``VmHWM`` since exec: the interpreter, the imported frameworks, the data, the split and the
model; not ``ru_maxrss``, which Linux seeds with the parent's RSS at fork time), or the largest
peak among the worker's children if larger (for DDP, the torchrun ranks: the largest single rank,
not their sum);
``memory.children_peak_rss_mb`` reports the children's largest peak separately and
``memory.rss_after_imports_mb`` the RSS once the model's framework is imported and before any data
is loaded, so the data + model share is ``peak - after imports``.

**Datasets.**  Real datasets by name (``ml-100k``, ...), resolved by :func:`autorec.splits.load_split`.
Synthetic data without any download: ``synthetic:NU,NI,NR[,SEED]`` (``autorec.data.synthetic.generate``)
or ``synthetic:SHAPE@FRACTION[,SEED]`` (``generate_like``, e.g. ``synthetic:ml-1m@0.01``), resolved
here (``load_split`` does not know them) and split with :func:`autorec.splits.cached_split`.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import hashlib
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from autorec.atomic import atomic_write
from autorec.errors import AutoRecBenchError, ConfigError, DataError
from benchmarks import algorithms

SCHEMA_VERSION = 1
DEFAULT_RAW = Path("results") / "raw"
REPO = Path(__file__).resolve().parents[1]
_SYN_COUNTS = re.compile(r"^synthetic:(\d+),(\d+),(\d+)(?:,(\d+))?$")
_SYN_LIKE = re.compile(r"^synthetic:([A-Za-z0-9_.-]+)@([0-9.eE+-]+)(?:,(\d+))?$")


# =============================================================================== datasets
@dataclass(frozen=True)
class DatasetRef:
    """A dataset name as a run names it: a registry name or a synthetic description."""

    name: str                         # canonical text (the ``dataset`` of raw files)
    synthetic: tuple | None = None    # ("counts", nu, ni, nr, seed) | ("like", shape, fraction, seed)

    @property
    def is_synthetic(self) -> bool:
        return self.synthetic is not None


def parse_dataset(text: str) -> DatasetRef:
    """``ml-100k`` (any registry name), ``synthetic:NU,NI,NR[,SEED]`` or ``synthetic:SHAPE@F[,SEED]``."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"dataset must be a non-empty name, got {text!r}")
    text = text.strip()
    if not text.startswith("synthetic"):
        return DatasetRef(text)
    m = _SYN_COUNTS.match(text)
    if m:
        nu, ni, nr = (int(m.group(k)) for k in (1, 2, 3))
        seed = int(m.group(4) or 0)
        if min(nu, ni, nr) <= 0:
            raise ConfigError(f"dataset {text!r}: users, items and ratings must be > 0")
        return DatasetRef(f"synthetic:{nu},{ni},{nr},{seed}", ("counts", nu, ni, nr, seed))
    m = _SYN_LIKE.match(text)
    if m:
        shape = m.group(1)
        try:
            fraction = float(m.group(2))
        except ValueError:
            raise ConfigError(f"dataset {text!r}: fraction {m.group(2)!r} is not a number") from None
        if not 0 < fraction <= 1:
            raise ConfigError(f"dataset {text!r}: fraction must be in (0, 1]")
        seed = int(m.group(3) or 0)
        return DatasetRef(f"synthetic:{shape}@{fraction:g},{seed}", ("like", shape, fraction, seed))
    raise ConfigError(f"dataset {text!r}: write synthetic data as 'synthetic:NU,NI,NR[,SEED]' "
                      "(e.g. synthetic:200,100,4000) or 'synthetic:SHAPE@FRACTION[,SEED]' (e.g. synthetic:ml-1m@0.01)")


def synthetic_ratings(ref: DatasetRef):
    """The :class:`~autorec.data.Ratings` of a synthetic dataset (named ``ref.name``)."""
    from autorec.data import synthetic
    kind = ref.synthetic[0]
    if kind == "counts":
        _, nu, ni, nr, seed = ref.synthetic
        return synthetic.generate(nu, ni, nr, seed=seed, name=ref.name)
    _, shape, fraction, seed = ref.synthetic
    return synthetic.generate_like(shape, seed=seed, fraction=fraction, name=ref.name)


def load_data(dataset: str, split: str, *, seed: int = 0, valid_ratio: float = 0.05,
              data_dir: str | os.PathLike | None = None, offline: bool = False,
              cache_dir: str | os.PathLike | None = None):
    """The :class:`~autorec.splits.SplitData` of a run (synthetic names resolved here)."""
    from autorec import splits
    ref = parse_dataset(dataset)
    if ref.is_synthetic:
        spec = splits.SplitSpec.parse(split)
        if spec.kind == "canonical":
            raise ConfigError(f"split {split!r} needs ML-100K's published files; {ref.name} is synthetic")
        return splits.cached_split(synthetic_ratings(ref), spec, seed=seed, valid_ratio=valid_ratio,
                                   cache_dir=cache_dir)
    return splits.load_split(ref.name, split, seed=seed, valid_ratio=valid_ratio, data_dir=data_dir,
                             offline=offline, cache_dir=cache_dir)


def prepare_data(runs: "Iterable[RunSpec]", *, data_dir=None, offline: bool = False, cache_dir=None,
                 log: Callable[[str], None] | None = None) -> dict[tuple, str]:
    """Materialise (load, split, store) every distinct split the runs need, once, before any
    training: a missing dataset, a download failure or an invalid split stops everything up front
    (one :class:`DataError` listing every problem) instead of failing run after run.  Workers then
    reuse the stored splits.  Returns ``{(dataset, split, seed, valid_ratio): split_sha256}``."""
    seen: dict[tuple, str] = {}
    problems: list[str] = []
    bad_datasets: dict[str, str] = {}
    for r in runs:
        key = (r.dataset, r.split, r.seed, r.valid_ratio)
        if key in seen or r.dataset in bad_datasets:
            continue
        try:
            seen[key] = load_data(r.dataset, r.split, seed=r.seed, valid_ratio=r.valid_ratio, data_dir=data_dir,
                                  offline=offline, cache_dir=cache_dir).split.sha256
        except AutoRecBenchError as exc:
            if isinstance(exc, DataError) and not isinstance(exc, ConfigError):
                bad_datasets[r.dataset] = str(exc)
            problems.append(f"{r.dataset} {r.split} seed {r.seed}: {exc}")
    if problems:
        raise DataError("the data of these runs is not usable (nothing was trained):\n  " + "\n  ".join(problems))
    if log is not None and seen:
        log(f"data: {len(seen)} split(s) ready")
    return seen


def dataset_available(dataset: str, data_dir=None) -> tuple[bool, str]:
    """Whether ``dataset`` is at hand without a download, and where (or why not)."""
    ref = parse_dataset(dataset)
    if ref.is_synthetic:
        return True, "synthetic (generated)"
    try:
        from autorec import data
        path = data.locate(ref.name, data_dir, offline=True, download=False, progress=False)
    except TypeError:  # an older locate without the download/progress keywords
        from autorec import data
        try:
            path = data.locate(ref.name, data_dir, offline=True)
        except AutoRecBenchError as exc:
            return False, str(exc)
    except AutoRecBenchError as exc:
        return False, str(exc)
    except ImportError as exc:
        return False, f"the data layer is not importable ({exc})"
    return True, str(path)


# =============================================================================== parsing helpers
def parse_seeds(text: "str | int | Iterable[int]") -> list[int]:
    """``"0,1,2"``, ``"0-4"`` (inclusive), ``3`` or a list; duplicates removed, order kept."""
    if isinstance(text, bool):
        raise ConfigError(f"seeds {text!r} are not integers")
    if isinstance(text, int):
        items: list = [text]
    elif isinstance(text, str):
        items = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise ConfigError(f"seed range {part!r} is empty (write low-high)")
                items.extend(range(a, b + 1))
            elif re.fullmatch(r"\d+", part):
                items.append(int(part))
            else:
                raise ConfigError(f"seeds {text!r}: {part!r} is not a non-negative integer or a range a-b")
    else:
        items = list(text)
    out = []
    for s in items:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"seed {s!r} must be a non-negative integer")
        if s not in out:
            out.append(int(s))
    if not out:
        raise ConfigError("no seeds given")
    return out


def parse_devices(value: "str | Iterable[str] | None") -> list[str]:
    """``"cpu"``, ``"cpu(0),cpu(1)"``, ``"cuda:0,cuda:1"`` or a list; commas inside () do not split."""
    if value is None:
        return ["cpu"]
    if isinstance(value, str):
        parts = [p.strip() for p in re.split(r",(?![^()]*\))", value) if p.strip()]
    else:
        parts = [str(p).strip() for p in value]
    if not parts:
        raise ConfigError(f"devices {value!r}: name at least one device (cpu, cuda:0, cpu(0), gpu(1), ...)")
    for p in parts:
        if not re.fullmatch(r"(cpu|cuda|gpu)(:\d+)?|(cpu|gpu)\(\d+\)", p):
            raise ConfigError(f"device {p!r} is not a device string (cpu, cuda:0, cpu(0), gpu(1), ...)")
    return parts


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax (``0.01``, ``[500, 250]``, ``true``, ``"x"``), ``none``/``null``
    for None, anything else a plain string."""
    t = text.strip()
    if t.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {t}")["v"]
    except tomllib.TOMLDecodeError:
        return t


def parse_sets(items: Iterable[str] | None) -> dict[str, Any]:
    """``["lr=0.01", "hidden=[500]"]`` -> ``{"lr": 0.01, "hidden": [500]}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"--set {item!r}: write key=value (e.g. --set lr=0.001 or --set hidden=[500])")
        out[key] = parse_value(value)
    return out


def read_params_file(path: str | os.PathLike, model: str | None = None,
                     base: str | os.PathLike | None = None) -> dict[str, Any]:
    """Parameters from a TOML file: a tuned config (``model = ...``, ``[params]``, optional
    ``params_none = [...]``, as ``autorec-bench tune`` writes) or a bare table of parameters.
    A relative path is looked up beside ``base`` (a spec file), then from the working folder, then
    from the repository root.  A config written for another model is refused."""
    p = Path(path)
    if not p.is_absolute():
        candidates = ([Path(base).parent / p] if base is not None else []) + [Path.cwd() / p, REPO / p]
        p = next((c for c in candidates if c.is_file()), candidates[0])
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (looked for {p})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p}: not valid TOML ({exc})") from None
    if "params" in doc:
        if not isinstance(doc["params"], dict):
            raise ConfigError(f"config file {p}: [params] must be a table")
        cfg_model = doc.get("model")
        if model is not None and cfg_model is not None and cfg_model != model and not (
                cfg_model in algorithms.AUTOREC_NAMES and model in algorithms.AUTOREC_NAMES):
            raise ConfigError(f"config file {p} is for model {cfg_model!r}, not {model!r}")
        params = dict(doc["params"])
        for k in doc.get("params_none", []):
            params[k] = None
    else:
        params = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    for key in algorithms.HARNESS_PARAMS:
        params.pop(key, None)  # seed, devices and the cold-start policy come from the run
    return params


# =============================================================================== runs
def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-.") or "x"
    return s[:limit].strip("-.") or "x"


@dataclass(frozen=True)
class RunSpec:
    """One (dataset, split, seed, model, backend, devices, params) run, validated and resolved."""

    dataset: str
    split: str
    seed: int
    model: str
    backend: str
    devices: tuple[str, ...]
    params: dict                  # resolved, execution settings excluded
    valid_ratio: float = 0.05
    cold_start: str = "global-mean"
    launcher: str = "single"
    label: str | None = None
    sweep: str | None = None
    timeout_s: float | None = None
    variant: str | None = None    # e.g. the grid values of a sweep ("hidden=[10]"); not identity

    def identity(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "seed": self.seed, "model": self.model,
                "backend": self.backend, "devices": list(self.devices), "params": self.params,
                "valid_ratio": self.valid_ratio, "cold_start_policy": self.cold_start}

    @property
    def run_id(self) -> str:
        return hashlib.sha256(_canonical_json(self.identity()).encode("utf-8")).hexdigest()

    @property
    def filename(self) -> str:
        dev = "x".join(_slug(d, 12) for d in self.devices) if self.devices != ("cpu",) else "cpu"
        prefix = "_".join([_slug(self.dataset, 32), _slug(self.split, 40),
                           _slug(self.model, 32) + "-" + _slug(self.backend, 12), dev, f"s{self.seed}"])
        return f"{prefix}_{self.run_id[:16]}.json"

    def describe(self) -> str:
        dev = "" if self.devices == ("cpu",) else f" [{','.join(self.devices)}]"
        var = f" {self.variant}" if self.variant else ""
        return (f"{self.dataset} {self.split} seed {self.seed}: {self.label or self.model} "
                f"({self.backend}){dev}{var}")


def _model_cold_start(algo: algorithms.Algorithm, policy: str) -> str:
    from autorec.metrics import ColdStartPolicy
    pol = ColdStartPolicy.parse(policy)
    if algo.family != "autorec":
        return str(pol)
    if pol.kind == "global-mean":
        return "global-mean"
    if pol.value != 3.0:
        raise ConfigError(f"cold-start policy {policy!r}: AutoRec's validation policy supports 'global-mean' "
                          f"or 'constant' (3) only")
    return "constant"


def plan_run(*, dataset: str, split: str, seed: int, model: str, backend: str | None = None,
             devices: "str | Iterable[str] | None" = None, params: Mapping[str, Any] | None = None,
             valid_ratio: float = 0.05, cold_start: str = "global-mean", label: str | None = None,
             sweep: str | None = None, timeout_s: float | None = None, variant: str | None = None) -> RunSpec:
    """Validate everything about a run without training: the dataset name, the split spec, the
    model and backend, the optional framework, every parameter (by building the model), the
    devices.  Returns the :class:`RunSpec` with the fully resolved parameters."""
    from autorec.metrics import ColdStartPolicy
    from autorec.splits import SplitSpec

    ref = parse_dataset(dataset)
    spec = SplitSpec.parse(split)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed {seed!r} must be a non-negative integer")
    try:
        valid_ratio = float(valid_ratio)
    except (TypeError, ValueError):
        raise ConfigError(f"valid_ratio {valid_ratio!r} is not a number") from None
    if not 0 <= valid_ratio < 1:
        raise ConfigError(f"valid_ratio={valid_ratio} must be in [0, 1)")
    policy = str(ColdStartPolicy.parse(cold_start))
    algo = algorithms.get(model, backend)
    devs = parse_devices(devices)
    algo.check_dependencies()
    given = dict(params or {})
    for key in algorithms.HARNESS_PARAMS:
        if key in given:
            flag = {"seed": "--seeds", "devices": "--devices", "cold_start": "--cold-start"}[key]
            raise ConfigError(f"parameter {key!r} is set by the run ({flag}), not by --set / params")
    for key in algorithms.EXECUTION_PARAMS:
        given.pop(key, None)
    accepted = algo.param_names()
    if accepted is not None:
        if "seed" in accepted:
            given["seed"] = seed
        if "cold_start" in accepted:
            given["cold_start"] = _model_cold_start(algo, policy)
        if "devices" in accepted:
            given["devices"] = devs
        elif devs != ["cpu"]:
            raise ConfigError(f"model {model!r} ({algo.backend}) runs on the CPU only; drop devices={devs}")
    resolved = algo.resolve(given)
    resolved = {k: v for k, v in resolved.items() if k not in algorithms.EXECUTION_PARAMS}
    if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ConfigError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
    return RunSpec(dataset=ref.name, split=str(spec), seed=seed, model=model, backend=algo.backend,
                   devices=tuple(devs), params=resolved, valid_ratio=valid_ratio, cold_start=policy,
                   launcher=algo.launcher(devs), label=label, sweep=sweep, timeout_s=timeout_s,
                   variant=variant)


# =============================================================================== raw files
def _jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars and arrays converted, tuples listed, NaN / inf -> None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    mod = type(value).__module__
    if mod == "numpy":
        if hasattr(value, "tolist"):
            return _jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return str(value)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`autorec.atomic.atomic_write`): readers
    see the old file or the whole new one, never a part."""
    path = Path(path)
    text = json.dumps(_jsonable(obj), indent=1, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
    return path


def read_raw(path: str | os.PathLike) -> dict:
    """A raw result file; :class:`DataError` naming the file when it is not one."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"raw result {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"raw result {path} is not valid JSON ({exc})") from None
    if not isinstance(rec, dict) or "schema_version" not in rec or rec.get("status") not in ("ok", "failed"):
        raise DataError(f"raw result {path} is not an autorec-bench raw result (no schema_version / status)")
    if rec["schema_version"] != SCHEMA_VERSION:
        raise DataError(f"raw result {path} has schema_version {rec['schema_version']!r}; this version "
                        f"reads {SCHEMA_VERSION}")
    return rec


def is_finished(path: str | os.PathLike, run_id: str | None = None) -> bool:
    """True when ``path`` holds a complete raw result (of ``run_id`` when given)."""
    try:
        rec = read_raw(path)
    except DataError:
        return False
    return run_id is None or rec.get("run_id") == run_id


def raw_files(raw_dir: str | os.PathLike) -> list[Path]:
    """The raw result files of a folder (``*.json``, hidden temp files excluded), sorted by name."""
    d = Path(raw_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("*.json") if not p.name.startswith("."))


def clean_stale_temp(raw_dir: str | os.PathLike) -> int:
    """Remove temp files a killed writer left behind (never complete results)."""
    n = 0
    d = Path(raw_dir)
    if d.is_dir():
        for p in d.glob(".*.tmp"):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


# =============================================================================== execution (parent side)
@dataclass
class Outcome:
    run: RunSpec
    path: Path
    status: str                    # "ok" | "failed" | "skipped"
    record: dict | None = None
    seconds: float = 0.0

    @property
    def summary(self) -> str:
        if self.status == "skipped":
            return f"{self.run.describe()}: already done ({self.path.name})"
        if self.status == "failed":
            err = (self.record or {}).get("error", {})
            return f"{self.run.describe()}: FAILED {err.get('type')}: {str(err.get('message'))[:200]}"
        m = (self.record or {}).get("metrics", {})
        return (f"{self.run.describe()}: test RMSE {m.get('test_rmse'):.4f}, MAE {m.get('test_mae'):.4f} "
                f"({self.seconds:.1f} s)")


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent (a SIGKILLed sweep)
    except OSError:  # pragma: no cover - not Linux / no glibc
        pass


def _log_tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# (pid of the worker) for the processes currently running, so an interrupt can stop them
_ACTIVE: dict[int, subprocess.Popen] = {}
_ACTIVE_LOCK = threading.Lock()


def terminate_active() -> None:
    """Stop every worker this process started and that still runs (on an interrupt)."""
    with _ACTIVE_LOCK:
        procs = list(_ACTIVE.values())
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except (subprocess.TimeoutExpired, OSError, ChildProcessError):
            try:
                p.kill()
            except OSError:
                pass


class Interrupted(Exception):
    """A worker was interrupted (SIGINT / SIGTERM): nothing is recorded for that run."""


def execute(run: RunSpec, out_dir: str | os.PathLike = DEFAULT_RAW, *, data_dir=None, offline: bool = False,
            cache_dir=None, threads: int | None = None, force: bool = False,
            retry_failed: bool = False, on_event: Callable[[dict], None] | None = None,
            verbose: bool = False) -> Outcome:
    """Run ``run`` in a fresh worker subprocess and write its raw file (atomically) under ``out_dir``.

    Skips a run whose file already holds a finished result (``force`` reruns it; a failure file
    is rerun only with ``retry_failed``).  ``on_event`` receives the worker's progress events
    (``{"event": "epoch", "epoch", "epochs", "train_loss", "valid_rmse"}``, ``{"event": "stage"}``).
    """
    out_dir = Path(out_dir)
    path = out_dir / run.filename
    if not force and path.is_file():
        try:
            old = read_raw(path)
        except DataError:
            old = None
        if old is not None and old.get("run_id") == run.run_id and (old["status"] == "ok" or not retry_failed):
            return Outcome(run, path, "skipped", old)
    out_dir.mkdir(parents=True, exist_ok=True)
    from autorec.env import default_threads
    threads = int(threads or default_threads())
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autorec-run-") as tmp:
        tmp = Path(tmp)
        rfd, wfd = os.pipe()
        job = {"run": {**run.identity(), "launcher": run.launcher, "label": run.label, "sweep": run.sweep,
                       "variant": run.variant},
               "data_dir": os.fspath(data_dir) if data_dir is not None else None, "offline": bool(offline),
               "cache_dir": os.fspath(cache_dir) if cache_dir is not None else None, "threads": threads,
               "result": str(tmp / "result.json"), "events_fd": wfd}
        (tmp / "job.json").write_text(json.dumps(job))
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)  # set explicitly for every run, recorded in its environment
        env["PYTHONUNBUFFERED"] = "1"
        log_path = tmp / "worker.log"
        cmd = [sys.executable, "-m", "benchmarks.harness", "_worker", str(tmp / "job.json")]
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.Popen(cmd, env=env, cwd=os.getcwd(), stdin=subprocess.DEVNULL,
                                        stdout=None if verbose else log, stderr=None if verbose else log,
                                        pass_fds=(wfd,), preexec_fn=_set_pdeathsig)
            finally:
                os.close(wfd)
            with _ACTIVE_LOCK:
                _ACTIVE[proc.pid] = proc
            events = os.fdopen(rfd, "r")
            reader = threading.Thread(target=_read_events, args=(events, on_event), daemon=True)
            reader.start()
            status, rusage, timed_out = _wait(proc, run.timeout_s)
            reader.join(timeout=5)
            events.close()
            with _ACTIVE_LOCK:
                _ACTIVE.pop(proc.pid, None)
        seconds = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        sig = -code if code < 0 else None
        if not timed_out and (code == 130 or sig in (signal.SIGINT, signal.SIGTERM)):
            raise Interrupted(f"{run.describe()}: interrupted")
        result_file = tmp / "result.json"
        worker = None
        if result_file.is_file():
            try:
                worker = json.loads(result_file.read_text())
            except json.JSONDecodeError:
                worker = None
        if worker is None:
            if timed_out:
                why = f"the run exceeded its timeout of {run.timeout_s:g} s and was killed"
            elif sig is not None:
                why = f"the worker was killed by signal {signal.Signals(sig).name}" + (
                    " (out of memory?)" if sig == signal.SIGKILL else "")
            else:
                why = f"the worker exited with status {code} without writing a result"
            worker = {"status": "failed", "error": {"type": "WorkerCrashed", "message": why,
                                                    "traceback": _log_tail(log_path)}}
        record = _compose(run, worker, rusage, seconds, code)
        atomic_write_json(path, record)
        return Outcome(run, path, record["status"], record, seconds)


def _read_events(fh, on_event) -> None:
    try:
        for line in fh:
            if on_event is None:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            try:
                on_event(ev)
            except Exception:  # a progress display must never break a run
                pass
    except (OSError, ValueError):
        pass


def _wait(proc: subprocess.Popen, timeout_s: float | None):
    """Reap ``proc`` with ``os.wait4`` (its own rusage, hence its own peak RSS), polling so that
    KeyboardInterrupt and the timeout are honoured.  Returns (status, rusage, timed_out)."""
    deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
    timed_out = False
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return status, rusage, timed_out
            if deadline is not None and not timed_out and time.monotonic() > deadline:
                timed_out = True
                proc.kill()
            time.sleep(0.05)
    except KeyboardInterrupt:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, OSError):
            proc.kill()
        raise


def _compose(run: RunSpec, worker: dict, rusage, seconds: float, code: int) -> dict:
    from autorec.splits import SplitSpec
    spec = SplitSpec.parse(run.split)
    rec: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "status": worker.get("status", "failed"), "run_id": run.run_id,
        "identity": run.identity(), "dataset": run.dataset,
        "split": {"spec": run.split, "kind": spec.kind, "args": dict(spec.args)},
        "model": run.model, "backend": run.backend, "devices": list(run.devices), "launcher": run.launcher,
        "seed": run.seed, "params": run.params, "valid_ratio": run.valid_ratio,
        "cold_start_policy": run.cold_start, "label": run.label, "sweep": run.sweep, "variant": run.variant,
        "family": algorithms.family(run.model) if ":" not in run.model else worker.get("family", "other"),
        "display_name": algorithms.display_name(run.model, run.params),
    }
    for key, value in worker.items():
        if key not in rec or key in ("status",):
            rec[key] = value
    mem = dict(worker.get("memory") or {})
    if rusage is not None:
        mem["wait4_maxrss_mb"] = round(rusage.ru_maxrss / 1024.0, 1)  # Linux: kilobytes
        if "peak_rss_mb" not in mem:  # the worker died before reporting: the best bound there is
            mem["peak_rss_mb"] = mem["wait4_maxrss_mb"]
            mem["measured"] = ("ru_maxrss of the worker from os.wait4 (the worker did not report; on "
                               "Linux this can include the parent's RSS at fork time)")
    mem.setdefault("measured", "VmHWM (peak RSS since exec) of this run's fresh worker process, or the "
                               "largest peak among its children (DDP ranks) if larger")
    rec["memory"] = mem
    rec["worker"] = {"exit_code": code, "wall_seconds": round(seconds, 3)}
    rec.setdefault("created_at", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return rec


# =============================================================================== the worker
def _rss_mb(field: str = "VmRSS") -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in MB."""
    from autorec.env import process_memory_bytes
    b = process_memory_bytes(field)
    return None if b is None else round(b / 1048576.0, 1)


def _worker_main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    run = job["run"]
    events = os.fdopen(int(job["events_fd"]), "w", buffering=1)

    def emit(**ev):
        try:
            events.write(json.dumps(_jsonable(ev)) + "\n")
        except (OSError, ValueError):
            pass

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t_start = time.perf_counter()
    out: dict[str, Any] = {"status": "failed"}
    try:
        _run_in_worker(job, run, out, emit)
        out["status"] = "ok"
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # recorded as a failure file; the sweep goes on
        out["error"] = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()[-6000:]}
    finally:
        events.close()
    out.setdefault("timing", {})["worker_seconds"] = round(time.perf_counter() - t_start, 3)
    # VmHWM is the high-water mark of this process's own address space since exec.  ru_maxrss is
    # not: Linux carries the parent's RSS at fork time over the exec into it, so a worker started
    # from a big parent (a pytest session with torch and mxnet loaded) would report the parent's size.
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    mem = out.setdefault("memory", {})
    hwm = _rss_mb("VmHWM")
    mem["self_peak_rss_mb"] = hwm if hwm is not None else round(self_kb / 1024.0, 1)
    mem["children_peak_rss_mb"] = round(child_kb / 1024.0, 1) if child_kb else None
    mem["peak_rss_mb"] = max(mem["self_peak_rss_mb"], mem["children_peak_rss_mb"] or 0.0)
    try:
        from autorec.env import environment, git_commit
        out["environment"] = environment()
        out["git_commit"] = git_commit(str(REPO))
    except Exception as exc:  # pragma: no cover - never lose a result over metadata
        out["environment"] = {"error": str(exc)}
    out["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(job["result"], out)
    return 0


def _run_in_worker(job: dict, run: dict, out: dict, emit) -> None:
    from autorec import env
    from autorec.metrics import evaluate

    algo = algorithms.get(run["model"], run["backend"])
    algo.load()  # imports the framework before threads are set (mxnet resets torch's threads)
    threads = env.set_threads(int(job["threads"]))
    out["threads"] = threads
    out["memory"] = {"rss_after_imports_mb": _rss_mb()}
    emit(event="stage", stage="loading")
    t0 = time.perf_counter()
    data = load_data(run["dataset"], run["split"], seed=int(run["seed"]), valid_ratio=float(run["valid_ratio"]),
                     data_dir=job.get("data_dir"), offline=bool(job.get("offline")), cache_dir=job.get("cache_dir"))
    out["timing"] = {"load_seconds": round(time.perf_counter() - t0, 4)}
    out["split_sha256"] = data.split.sha256
    out["n_train"], out["n_valid"], out["n_test"] = len(data.train), len(data.valid), len(data.test)
    out["n_users"], out["n_items"] = int(data.train.n_users), int(data.train.n_items)
    out["rating_scale"] = list(data.train.rating_scale)
    out["memory"]["rss_after_data_mb"] = _rss_mb()
    params = dict(run["params"])
    accepted = algo.param_names()
    if accepted is not None and "threads" in accepted:
        params["threads"] = threads
    emit(event="stage", stage="fitting")

    def progress(epoch, n_epochs, info):
        emit(event="epoch", epoch=epoch, epochs=n_epochs, train_loss=info.get("train_loss"),
             valid_rmse=info.get("valid_rmse"))

    launcher = run.get("launcher", "single")
    if launcher == "ddp":
        from autorec.models.torch import fit_distributed
        nproc = len(run["devices"])
        t0 = time.perf_counter()
        model = fit_distributed(params, data, nproc=nproc, threads_per_rank=max(1, threads // nproc))
        fit_seconds = time.perf_counter() - t0
        info = model.fit_info
    else:
        model = algo.build(params)
        env.set_threads(threads)  # constructing may import a framework lazily
        t0 = time.perf_counter()
        info = model.fit(data.train, data.valid if len(data.valid) else None, progress=progress)
        fit_seconds = time.perf_counter() - t0
    emit(event="stage", stage="evaluating")
    t0 = time.perf_counter()
    test = evaluate(model, data.train, data.test, run["cold_start_policy"])
    predict_seconds = time.perf_counter() - t0
    valid = evaluate(model, data.train, data.valid, run["cold_start_policy"]) if len(data.valid) else None
    history = [_jsonable({k: v for k, v in row.items() if not isinstance(v, (list, dict))})
               for row in (info.history or [])]
    epochs_run = int(info.epochs_run or len(history) or 1)
    secs = sorted(r["seconds"] for r in history if isinstance(r.get("seconds"), (int, float)))
    out["metrics"] = {"test_rmse": test["rmse"], "test_mae": test["mae"],
                      "valid_rmse": valid["rmse"] if valid else None, "valid_mae": valid["mae"] if valid else None}
    out["n_cold_start"] = int(test["n_cold_start"])
    out["n_cold_start_valid"] = int(valid["n_cold_start"]) if valid else 0
    out["best_epoch"] = info.best_epoch
    out["epochs_run"] = epochs_run
    out["history"] = history
    per_epoch = fit_seconds / epochs_run
    if secs and len(secs) == epochs_run == len(history):
        per_epoch = secs[len(secs) // 2]  # the median epoch: one-off start-up costs excluded
    out["timing"].update({
        "fit_seconds": round(fit_seconds, 4),
        "seconds_per_epoch": round(per_epoch, 5),
        "fit_seconds_per_epoch": round(fit_seconds / epochs_run, 5),
        "median_epoch_seconds": round(secs[len(secs) // 2], 5) if secs else None,
        "predict_seconds": round(predict_seconds, 4),
    })
    out["fit_extra"] = _jsonable({k: v for k, v in (info.extra or {}).items()
                                  if not isinstance(v, (list, dict)) or k in ("devices",)})
    out["family"] = getattr(type(model), "family", None) or algo.family


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "_worker":
        return _worker_main(argv[1])
    print("usage: python -m benchmarks.harness _worker JOB.json  (internal; use `autorec-bench run`)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
