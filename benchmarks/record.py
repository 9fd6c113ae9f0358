"""The run record: what one run (or one scale row) leaves behind, as one typed, versioned object.

A :class:`RunRecord` is written as one JSON file by :func:`write` (atomically) and read back into
the same type by :func:`read`; nothing else writes or parses raw result files.  Its JSON schema,
generated from these dataclasses (:func:`json_schema`), is committed as
``benchmarks/schema/run-record.schema.json`` and a test keeps the two equal.

A run is identified by :class:`RunIdentity`: the dataset and the content hash of its ratings, the
split (spec, seed, validation share) and the content hash of the materialised split, the model, its
backend, the code version of its numerics, the devices, the fully resolved parameters (execution
settings such as the thread count excluded), the test cold-start policy and whether the chosen
configuration was refitted on train + validation.  ``run_id`` is the SHA-256 of the identity's
canonical JSON: a changed input (an edited split file, another data copy, a model whose numerics
changed) is a different run, never "already done".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from autorec.atomic import atomic_write
from autorec.errors import DataError
from autorec.jsonio import canonical_json, dumps, to_plain

SCHEMA_VERSION = 2
SCHEMA_FILE = Path(__file__).resolve().parent / "schema" / "run-record.schema.json"


# ====================================================================== the record
@dataclass(frozen=True)
class DataRef:
    """The dataset a run read: its name and the SHA-256 of its loaded ratings (``None`` only for
    a synthetic dataset, which its name determines)."""

    name: str
    sha256: str | None = None


@dataclass(frozen=True)
class SplitRef:
    """The split: spec (canonical text), kind and arguments, seed, validation share, and the
    SHA-256 of its content (train / validation / test ratings)."""

    spec: str
    kind: str
    args: dict[str, Any]
    seed: int
    valid_ratio: float
    sha256: str | None = None


@dataclass(frozen=True)
class RunIdentity:
    """What makes a run this run; its canonical JSON hashes to the ``run_id``."""

    data: DataRef
    split: SplitRef
    model: str
    backend: str
    model_version: int
    devices: tuple[str, ...]
    params: dict[str, Any]
    cold_start_policy: str
    refit: bool = False

    @property
    def run_id(self) -> str:
        return hashlib.sha256(canonical_json(self).encode("utf-8")).hexdigest()

    @property
    def versionless_id(self) -> str:
        """The run_id this run would have with any version of its model: records that share it
        but not the run_id are one run measured by two versions of the model's code."""
        return dataclasses.replace(self, model_version=0).run_id


@dataclass(frozen=True)
class Metrics:
    """Test and validation accuracy of the model selected on validation (trained on the train part,
    early-stopped on validation)."""

    test_rmse: float
    test_mae: float
    valid_rmse: float | None = None
    valid_mae: float | None = None


@dataclass(frozen=True)
class Refit:
    """The same configuration retrained on train + validation for ``epochs`` epochs (the selected
    epoch count), then scored on test once."""

    epochs: int | None
    test_rmse: float
    test_mae: float
    fit_seconds: float


@dataclass(frozen=True)
class FitSummary:
    """The fit: best validation epoch, the epoch whose weights were kept, epochs run, per-epoch
    history and model-specific facts."""

    best_epoch: int | None
    weights_epoch: int | None
    epochs_run: int
    history: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sizes:
    """Index space, part sizes, cold pairs of test and validation, and the rating scale."""

    n_users: int
    n_items: int
    n_train: int
    n_valid: int
    n_test: int
    n_cold_start: int = 0
    n_cold_start_valid: int = 0
    rating_scale: tuple[float, ...] = ()


@dataclass(frozen=True)
class Timing:
    """Seconds.  ``fit``: wall time of ``fit``; ``per_epoch``: the median epoch (validation pass
    included, one-off start-up excluded), or ``fit / epochs_run`` when the model reports none."""

    load: float | None = None
    fit: float | None = None
    per_epoch: float | None = None
    fit_per_epoch: float | None = None
    predict: float | None = None
    worker: float | None = None
    wall: float | None = None


@dataclass(frozen=True)
class Memory:
    """Megabytes.  ``peak_rss``: peak RSS of the run's own worker process (VmHWM since exec, or
    since fork for a run forked from a zygote: ``measured`` says which), or of its largest child (a
    DDP rank) if larger."""

    peak_rss: float | None = None
    self_peak_rss: float | None = None
    children_peak_rss: float | None = None
    rss_after_imports: float | None = None
    rss_after_data: float | None = None
    measured: str = ""


@dataclass(frozen=True)
class Conditions:
    """Under what the timings were measured: the thread count and policy, the load average before
    and after the run, the CPUs, the cores other work kept busy at the start, whether the
    machine was busier than the run itself (then its timings are flagged, never mixed silently with
    quiet ones), and how the worker started: ``"fresh"`` (its own interpreter: the imports of its
    framework are in its wall and worker times, a torch run's first fit includes the
    ``torch._dynamo`` import) or ``"forked"`` (from a zygote that had imported them, see
    :mod:`benchmarks.harness.zygote`); ``None`` in records made before the field existed."""

    threads: int
    thread_policy: str = ""
    cpu_count: int | None = None
    load_before: tuple[float, ...] = ()
    load_after: tuple[float, ...] = ()
    contended: bool = False
    busy_before: float | None = None  # cores other work kept busy just before the run (None: not sampled)
    worker_start: str | None = None  # "fresh" | "forked"


@dataclass(frozen=True)
class ErrorInfo:
    """Why a run failed (and, for a divergence, at which epoch)."""

    type: str
    message: str
    traceback: str = ""
    epoch: int | None = None


@dataclass(frozen=True)
class RunRecord:
    """One run's (or one scale row's) raw result: identity, outcome, metrics, fit, sizes, timing,
    memory, the conditions of the timings, the environment and the error of a failed run."""

    run_id: str
    status: str  # "ok" | "failed"
    identity: RunIdentity
    family: str
    display_name: str
    launcher: str = "single"
    label: str | None = None
    sweep: str | None = None
    variant: str | None = None
    metrics: Metrics | None = None
    refit: Refit | None = None
    fit: FitSummary | None = None
    sizes: Sizes | None = None
    timing: Timing = field(default_factory=Timing)
    memory: Memory = field(default_factory=Memory)
    conditions: Conditions | None = None
    error: ErrorInfo | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    created_at: str = ""
    scale: dict[str, Any] | None = None  # the scale runner's section (benchmarks.scale)
    schema_version: int = SCHEMA_VERSION

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    # shortcuts used by every reader
    @property
    def dataset(self) -> str:
        return self.identity.data.name

    @property
    def model(self) -> str:
        return self.identity.model

    @property
    def backend(self) -> str:
        return self.identity.backend

    @property
    def params(self) -> dict[str, Any]:
        return self.identity.params

    @property
    def split(self) -> SplitRef:
        return self.identity.split


# ====================================================================== files
def write(path: str | os.PathLike, record: RunRecord) -> Path:
    """``record`` as JSON at ``path``, atomically (readers see the old file or the whole new one).
    A record that would not read back (a required number that is NaN or infinite, JSON having no
    such value) is refused here, naming the field, rather than written and lost later."""
    if record.run_id != record.identity.run_id:
        raise ValueError(f"record run_id {record.run_id} does not match its identity ({record.identity.run_id})")
    path = Path(path)
    try:
        from_plain(RunRecord, to_plain(record))
    except TypeError as exc:
        raise ValueError(f"record {path.name} would not read back: {exc}") from None
    text = dumps(record)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
    return path


def read(path: str | os.PathLike) -> RunRecord:
    """The :class:`RunRecord` in ``path``; :class:`DataError` naming the file and the problem when it
    is not one (not JSON, another schema version, a missing or mistyped field, a run_id that does
    not match the identity)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"raw result {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"raw result {path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise DataError(f"raw result {path} is not an autorec-bench run record (no schema_version)")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise DataError(
            f"raw result {path} has schema_version {doc['schema_version']!r}; this version reads "
            f"{SCHEMA_VERSION} (rerun it, or regenerate the folder)"
        )
    try:
        rec = from_plain(RunRecord, doc)
    except (TypeError, ValueError, KeyError) as exc:
        raise DataError(f"raw result {path} does not match the run-record schema: {exc}") from None
    if rec.status not in ("ok", "failed"):
        raise DataError(f"raw result {path}: status {rec.status!r} is not 'ok' or 'failed'")
    if rec.run_id != rec.identity.run_id:
        raise DataError(f"raw result {path}: its run_id does not match its identity (edited by hand?)")
    bad = _impossible_errors(rec)
    if bad:
        raise DataError(f"raw result {path}: {bad} is not a finite non-negative number (damaged or edited by hand?)")
    return rec


def _impossible_errors(rec: RunRecord) -> str | None:
    """The first error metric that no run can produce (NaN, infinite or negative: a fit that
    diverges fails, it records no metrics), or None."""
    named = []
    if rec.metrics is not None:
        m = rec.metrics
        named += [("metrics.test_rmse", m.test_rmse), ("metrics.test_mae", m.test_mae)]
        named += [("metrics.valid_rmse", m.valid_rmse), ("metrics.valid_mae", m.valid_mae)]
    if rec.refit is not None:
        named += [("refit.test_rmse", rec.refit.test_rmse), ("refit.test_mae", rec.refit.test_mae)]
    for name, value in named:
        if value is not None and not (math.isfinite(value) and value >= 0):
            return f"{name} = {value!r}"
    return None


# ====================================================================== plain JSON <-> dataclasses
@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def from_plain(tp: Any, value: Any, where: str = "") -> Any:
    """``value`` (plain JSON) as type ``tp``; ``TypeError`` naming the field when it does not fit."""
    tp, nullable = _optional(tp)
    if value is None:
        if nullable or tp is Any:
            return None
        raise TypeError(f"{where or 'value'} is null")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"{where or tp.__name__} must be an object")
        hints = _hints(tp)
        names = {f.name for f in fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise TypeError(f"{where or tp.__name__} has unknown field(s) {unknown}")
        kwargs = {}
        for f in fields(tp):
            if f.name in value:
                kwargs[f.name] = from_plain(hints[f.name], value[f.name], f"{where}.{f.name}".lstrip("."))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TypeError(f"{where or tp.__name__} lacks field {f.name!r}")
        return tp(**kwargs)
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, list):
            raise TypeError(f"{where} must be a list")
        inner = typing.get_args(tp)[0]
        return tuple(from_plain(inner, v, f"{where}[]") for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where} must be an object")
        return dict(value)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where} must be a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where} must be an integer")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise TypeError(f"{where} must be a {tp.__name__}")
        return value
    raise TypeError(f"{where}: unsupported type {tp!r}")  # pragma: no cover


# ====================================================================== schema
def _schema_of(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    tp, nullable = _optional(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            hints = _hints(tp)
            props = {f.name: _schema_of(hints[f.name], defs) for f in fields(tp)}
            required = [
                f.name
                for f in fields(tp)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ]
            doc = (tp.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            defs[name] = {
                "type": "object",
                "description": " ".join(doc.split()),
                "properties": props,
                "required": required,
                "additionalProperties": False,
            }
        out: dict[str, Any] = {"$ref": f"#/$defs/{name}"}
    else:
        origin = typing.get_origin(tp)
        if origin is tuple:
            out = {"type": "array", "items": _schema_of(typing.get_args(tp)[0], defs)}
        elif origin is dict or tp is dict:
            out = {"type": "object"}
        elif tp is Any:
            out = {}
        else:
            out = {"type": {float: "number", int: "integer", str: "string", bool: "boolean"}[tp]}
    if nullable:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a raw result file, generated from :class:`RunRecord`."""
    defs: dict[str, Any] = {}
    root = _schema_of(RunRecord, defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://autorec-bench/run-record-v{SCHEMA_VERSION}.schema.json",
        "title": f"autorec-bench run record, schema version {SCHEMA_VERSION}",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def main() -> int:
    """``python -m benchmarks.record``: (re)write the committed schema file."""
    SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_FILE.write_text(json.dumps(json_schema(), indent=1) + "\n")
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
