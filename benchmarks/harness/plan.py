"""Planning a run: everything a run needs is checked, and its identity resolved, before any training.

:func:`plan_run` checks the dataset name, the split spec (parsed once into a
:class:`~autorec.splits.SplitSpec`), the seed and validation share, the cold-start policy, the
model, its backend and optional framework, every parameter against the model's typed config, the
devices and how the model launches on them; problems of independent parts are reported together
(:class:`PlanError`), so a model error never hides a split error or a dataset error.  Then it
materialises the split once in this process (stored under the cache) and records both content
hashes (the ratings and the split) in the run's :class:`~benchmarks.record.RunIdentity`: an edited
``files:`` split, or another copy of the data, is another run.

The resulting :class:`RunPlan` is everything the worker needs: it travels to the worker process as
plain JSON, the split as ``SplitSpec.to_dict()`` plus its hash, which the worker verifies.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from autorec import data
from autorec.cache import cache_root
from autorec.devices import split_devices
from autorec.errors import AutoRecBenchError, ConfigError
from autorec.metrics import ColdStartPolicy
from autorec.models import registry
from autorec.splits import SplitSpec
from autorec.splits.spec import check_seed, check_valid_ratio
from benchmarks.harness.data import (
    DatasetRef,
    DataSource,
    DataUnavailable,
    availability,
    check_dataset,
    check_rating_scale,
    load_data,
    parse_dataset,
)
from benchmarks.record import DataRef, RunIdentity, RunRecord, SplitRef

#: the option that sets each harness-controlled config field
HARNESS_FLAGS = {"seed": "--seeds", "cold_start": "--cold-start", "devices": "--devices", "threads": "--threads"}


class PlanError(ConfigError):
    """Several independent problems of one run (or one sweep), all listed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n  ".join([f"{len(self.problems)} problem(s); nothing was trained:", *self.problems]))


@dataclass(frozen=True)
class RunPlan:
    """One validated run: its identity (with content hashes once materialised), the metadata its
    record carries, and how to get its data (``split_spec`` is ``SplitSpec.to_dict()``)."""

    identity: RunIdentity
    family: str
    display_name: str
    launcher: str
    split_spec: dict[str, Any]
    source: DataSource = field(default_factory=DataSource)
    label: str | None = None
    sweep: str | None = None
    variant: str | None = None
    timeout_s: float | None = None

    @property
    def run_id(self) -> str:
        return self.identity.run_id

    @property
    def materialised(self) -> bool:
        """True when the split was materialised and hashed (only such a plan can be executed)."""
        return self.identity.split.sha256 is not None

    def dataset_ref(self) -> DatasetRef:
        return parse_dataset(self.identity.data.name)

    def describe(self) -> str:
        i = self.identity
        dev = "" if i.devices == ("cpu",) else f" [{','.join(i.devices)}]"
        var = f" {self.variant}" if self.variant else ""
        refit = " +refit" if i.refit else ""
        return (
            f"{i.data.name} {i.split.spec} seed {i.split.seed}: {self.label or i.model} ({i.backend}){dev}{var}{refit}"
        )

    def record(self, status: str, **sections: Any) -> RunRecord:
        """A :class:`RunRecord` of this run with ``sections`` (metrics, fit, timing, ...) filled in."""
        sections.setdefault("created_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        return RunRecord(
            run_id=self.run_id,
            status=status,
            identity=self.identity,
            family=self.family,
            display_name=self.display_name,
            launcher=self.launcher,
            label=self.label,
            sweep=self.sweep,
            variant=self.variant,
            **sections,
        )


# ====================================================================== checks
class _Problems:
    """Collects the errors of independent checks, so that every one is reported at once."""

    def __init__(self) -> None:
        self.errors: list[AutoRecBenchError] = []

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except AutoRecBenchError as exc:
            self.errors.append(exc)

    def raise_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise PlanError([str(e) for e in self.errors])


def check_timeout(value: Any) -> float | None:
    """A run's timeout: ``None`` or a positive, finite number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"timeout_s={value!r} must be a positive number of seconds")
    return float(value)


@dataclass(frozen=True)
class ResolvedModel:
    """A model name resolved through the registry: its class metadata and full parameters."""

    name: str
    backend: str
    family: str
    version: int
    params: dict[str, Any]
    display_name: str
    launcher: str


def resolve_model(
    model: str,
    backend: str | None,
    params: Mapping[str, Any] | None,
    *,
    seed: int,
    cold_start: str,
    devices: tuple[str, ...],
) -> ResolvedModel:
    """Check the model, its backend and framework, every parameter and the devices by building the
    model (a data-parallel model once per device); returns its fully resolved parameters (execution
    settings such as ``threads`` excluded: they are no part of a run's identity)."""

    ref = registry.get(model, backend)
    ref.check_dependencies()
    cls = ref.load()
    cfg_cls = cls.Config
    given = dict(params or {})
    for key in cfg_cls.HARNESS:
        if key in given:
            flag = HARNESS_FLAGS.get(key, key)
            raise ConfigError(f"parameter {key!r} of model {model!r} is set by the run ({flag}), not by --set / params")
    for key in cfg_cls.EXECUTION:
        if key in given:
            how = (
                f"the run sets it ({HARNESS_FLAGS[key]})"
                if key in HARNESS_FLAGS
                else "a run leaves it at its default (the model picks the fastest exact path and records which ran)"
            )
            raise ConfigError(
                f"parameter {key!r} of model {model!r} is an execution setting (the same numbers whatever its "
                f"value, so no part of a run's identity): {how}, not --set / params"
            )
    given.update(seed=seed, cold_start=cold_start)
    if "devices" in cfg_cls.field_names():
        given["devices"] = list(devices)
    elif devices != ("cpu",):
        raise ConfigError(f"model {model!r} ({ref.backend}) runs on the CPU only; drop devices={list(devices)}")
    launcher = cls.launcher(devices)
    if launcher == "ddp":  # one process per device: build on each device alone, validate the whole config
        for dev in dict.fromkeys(devices):
            ref.build({**given, "devices": [dev]})
        resolved = cfg_cls.from_dict(ref.merge(given), model=cls.label()).to_dict()
    else:
        resolved = ref.build(given).params()
    resolved = {k: v for k, v in resolved.items() if k not in cfg_cls.EXECUTION}
    return ResolvedModel(
        name=model,
        backend=ref.backend,
        family=cls.family,
        version=int(cls.version),
        params=resolved,
        display_name=cls.display_name(resolved),
        launcher=launcher,
    )


# ====================================================================== materialising
# (dataset, spec, seed, valid_ratio, source, source-file stamps) -> (ratings sha256, split sha256):
# each distinct split is loaded and hashed once per process
_HASHES: dict[tuple, tuple[str | None, str]] = {}
# (dataset, source, data dir, cache) -> Availability: a copy's completeness is counted once
_AVAILABLE: dict[tuple, Any] = {}


def _environment_key() -> tuple:
    """What else decides which copy of the data a run reads: ``$AUTOREC_DATA_DIR`` and the cache."""
    return (os.environ.get("AUTOREC_DATA_DIR"), cache_root())


def _file_stamps(spec) -> tuple:
    """Size and mtime of a ``files:`` split's CSVs: an edited file is loaded and hashed again."""
    if spec.kind != "files":
        return ()
    out = []
    for key in ("train", "test"):
        try:
            st = os.stat(spec.args[key])
            out.append((spec.args[key], st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((spec.args[key], None, None))
    return tuple(out)


def materialise(ref: DatasetRef, spec, *, seed: int, valid_ratio: float, source: DataSource) -> tuple[DataRef, str]:
    """Load the data and materialise the split (stored under the cache); returns the dataset's
    :class:`DataRef` (content hash; ``None`` for synthetic data, which its name determines) and the
    split's content hash."""
    key = (ref.name, str(spec), seed, valid_ratio, source, _file_stamps(spec), *_environment_key())
    if key not in _HASHES:
        d = load_data(ref, spec, seed=seed, valid_ratio=valid_ratio, source=source)
        data_sha = None if ref.synthetic is not None else d.ratings_sha256
        _HASHES[key] = (data_sha, d.split.sha256)
    data_sha, split_sha = _HASHES[key]
    return DataRef(ref.name, data_sha), split_sha


def _should_materialise(ref: DatasetRef, split_kind: str, source: DataSource, download: bool) -> bool:
    """True unless a registered dataset has no local copy and ``download`` is off; an offline
    run without a copy is an error saying what to do."""
    if ref.synthetic is not None or split_kind == "files":
        return True
    key = (ref.name, source, *_environment_key())
    if key not in _AVAILABLE:
        _AVAILABLE[key] = availability(ref, source)
    avail = _AVAILABLE[key]
    if avail.local:
        return True
    if avail.download_url is None:
        raise DataUnavailable(avail.where)
    return download


def _split_args(spec: SplitSpec, scale: tuple[float, ...] | None) -> dict[str, Any]:
    """The split's arguments in the run's identity.  A ``files`` split's declared rating scale is
    one of them: it sets the clip range and so the predictions, but the ratings' and the split's
    hashes do not see it (a run repeated with the scale corrected is another run, not "done")."""
    args = dict(spec.args)
    if spec.kind == "files" and scale is not None:
        args["rating_scale"] = list(scale)
    return args


# ====================================================================== plan_run
def _known_scale(ref: DatasetRef | None, declared: tuple[float, ...] | None) -> tuple[float, float] | None:
    """The rating scale a run's data will have, where it is known before loading it
    (:func:`autorec.data.scale_for`: registered, or declared); ``None`` for synthetic data and an
    undeclared custom dataset (whose scale only its ratings tell)."""
    if ref is None or ref.synthetic is not None:
        return None
    try:
        return data.scale_for(ref.name, declared)[0].bounds
    except AutoRecBenchError:  # no scale known yet, or a contradiction the data checks report
        return None


def plan_run(
    *,
    dataset: str,
    split: str = "random",
    seed: int = 0,
    model: str,
    backend: str | None = None,
    devices: str | Iterable[str] | None = None,
    params: Mapping[str, Any] | None = None,
    valid_ratio: float = 0.05,
    cold_start: str = "global-mean",
    refit: bool = False,
    label: str | None = None,
    sweep: str | None = None,
    timeout_s: float | None = None,
    variant: str | None = None,
    data_dir: str | os.PathLike | None = None,
    offline: bool = False,
    cache_dir: str | os.PathLike | None = None,
    rating_scale: Iterable[float] | str | None = None,
    download: bool = True,
) -> RunPlan:
    """Validate a run without training it and resolve its identity (see the module docstring).

    A registered dataset with no local copy is downloaded (unless ``offline``:
    :class:`~benchmarks.harness.data.DataUnavailable`).  With ``download=False`` it is not: the
    plan comes back unmaterialised (content hashes ``None``; it cannot be executed), which is what
    a dry run lists and what a sweep with ``missing_data = "skip"`` skips.
    """

    p = _Problems()
    ref = spec = model_info = policy = devs = scale = None
    seed_ok = False
    # what the data depends on
    with p.check():
        ref = parse_dataset(dataset)
    with p.check():
        spec = SplitSpec.parse(split)
    with p.check():
        seed = check_seed(seed)
        seed_ok = True
    with p.check():
        valid_ratio = check_valid_ratio(valid_ratio)
    with p.check():
        scale = check_rating_scale(rating_scale)
    if ref is not None:
        with p.check():
            check_dataset(ref, spec.kind if spec is not None else str(split).strip().partition(":")[0])
    data_ok = not p.errors
    # the rest of the run
    with p.check():
        timeout_s = check_timeout(timeout_s)
    with p.check():
        if not isinstance(refit, bool):  # bool("no") is True
            raise ConfigError(f"refit={refit!r} must be true or false")
    with p.check():
        parsed = ColdStartPolicy.parse(cold_start)
        policy = str(parsed)
        known = _known_scale(ref, scale)
        if known is not None:  # else the fit checks it, once the train part's scale is known
            parsed.check_scale(known)
    with p.check():
        devs = tuple(split_devices(devices))
    with p.check():  # checked even when the run's other settings are bad (then with defaults)
        model_info = resolve_model(
            model,
            backend,
            params,
            seed=seed if seed_ok else 0,
            cold_start=policy or "global-mean",
            devices=devs or ("cpu",),
        )
    source = DataSource(
        data_dir=os.fspath(data_dir) if data_dir is not None else None,
        offline=bool(offline),
        cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        rating_scale=scale,
    )
    data_ref, split_sha = (DataRef(ref.name) if ref is not None else None), None
    if data_ok and ref is not None and spec is not None:
        with p.check():  # content errors count too; but never download for a run that is invalid anyway
            if _should_materialise(ref, spec.kind, source, download and not p.errors):
                data_ref, split_sha = materialise(ref, spec, seed=seed, valid_ratio=valid_ratio, source=source)
    p.raise_any()
    assert ref and spec and model_info and devs and policy and data_ref
    identity = RunIdentity(
        data=data_ref,
        split=SplitRef(
            spec=str(spec),
            kind=spec.kind,
            args=_split_args(spec, scale),
            seed=seed,
            valid_ratio=valid_ratio,
            sha256=split_sha,
        ),
        model=model_info.name,
        backend=model_info.backend,
        model_version=model_info.version,
        devices=devs,
        params=model_info.params,
        cold_start_policy=policy,
        refit=bool(refit),
    )
    return RunPlan(
        identity=identity,
        family=model_info.family,
        display_name=model_info.display_name,
        launcher=model_info.launcher,
        split_spec=spec.to_dict(),
        source=source,
        label=label,
        sweep=sweep,
        variant=variant,
        timeout_s=timeout_s,
    )
