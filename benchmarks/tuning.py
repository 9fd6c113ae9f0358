"""Equal-budget hyper-parameter search on the VALIDATION part only.

Every model gets the same number of trials from a declared space (``random`` search with
:class:`sklearn.model_selection.ParameterSampler`, or ``grid`` with
:class:`~sklearn.model_selection.ParameterGrid`, both seeded).  A trial builds a model from its
parameters through a factory ``build(params) -> Recommender`` (so AutoRec, the baselines or anything
the harness registers are tuned by the same code), fits it on ``data.train`` with ``data.valid`` for
early stopping, and scores it by validation RMSE (cold start and clipping through
:func:`autorec.metrics.evaluate`).  Every trial is recorded (params, validation RMSE/MAE, seconds,
epochs, status) as one line of a JSON-lines log.  The best trial (lowest validation RMSE; ties ->
the earlier trial) is chosen; only then, and only for that fitted model, is ``data.test`` read, once.

A space is a mapping ``param -> spec`` where spec is a scalar (fixed), a list (choices) or a table
``{dist = "loguniform"|"uniform"|"randint", low = .., high = ..}`` (``randint``: ``high``
inclusive).  ``grid`` search accepts scalars and lists only.  Spaces are written in TOML::

    [space]
    factors = [16, 32, 64]
    reg = {dist = "loguniform", low = 0.01, high = 1.0}
    epochs = 30
"""

from __future__ import annotations

import json
import math
import os
import time
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from autorec.errors import AutoRecBenchError, ConfigError
from autorec.metrics import ColdStartPolicy, evaluate

METHODS = ("random", "grid")
DISTRIBUTIONS = ("loguniform", "uniform", "randint")

#: Default search spaces per model name, or ``name:backend`` where the backends differ.
DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "global-mean": {},
    "bias-only": {
        "reg_user": {"dist": "loguniform", "low": 0.1, "high": 100.0},
        "reg_item": {"dist": "loguniform", "low": 0.1, "high": 100.0},
    },
    "als": {
        "factors": [16, 32, 64, 100],
        "reg": {"dist": "loguniform", "low": 0.03, "high": 0.5},
        "reg_bias": {"dist": "loguniform", "low": 0.001, "high": 1.0},
        "epochs": 40,
        "patience": 3,
    },
    "biased-mf:numpy": {
        "factors": [16, 32, 64, 100, 150],
        "lr": {"dist": "loguniform", "low": 0.003, "high": 0.03},
        "reg": {"dist": "loguniform", "low": 0.02, "high": 0.3},
        "batch_size": [32, 64, 128],
        "epochs": 80,
        "patience": 3,
    },
    "biased-mf:torch": {
        "factors": [16, 32, 64, 100, 150],
        "lr": {"dist": "loguniform", "low": 0.0003, "high": 0.01},
        "reg": {"dist": "loguniform", "low": 0.001, "high": 0.3},
        "batch_size": [256, 512, 1024],
        "epochs": 80,
        "patience": 3,
    },
    "d2l-mf": {
        "factors": [10, 30, 50, 100],
        "lr": {"dist": "loguniform", "low": 0.0005, "high": 0.01},
        "wd": {"dist": "loguniform", "low": 1e-6, "high": 1e-3},
        "epochs": 40,
        "patience": 3,
    },
    "surprise-svd": {
        "n_factors": [20, 50, 100, 150],
        "n_epochs": [20, 30, 50],
        "lr_all": {"dist": "loguniform", "low": 0.002, "high": 0.02},
        "reg_all": {"dist": "loguniform", "low": 0.005, "high": 0.2},
    },
    "surprise-svdpp": {
        "n_factors": [10, 20, 50],
        "n_epochs": [20, 30],
        "lr_all": {"dist": "loguniform", "low": 0.002, "high": 0.02},
        "reg_all": {"dist": "loguniform", "low": 0.005, "high": 0.2},
    },
    "autorec": {
        "hidden": [[100], [300], [500]],
        "reg": {"dist": "loguniform", "low": 1e-6, "high": 1e-2},
        "lr": {"dist": "loguniform", "low": 3e-4, "high": 5e-3},
        "dropout": [0.0, 0.05, 0.2],
        "epochs": 60,
        "patience": 5,
    },
}


def default_space(model: str, backend: str | None = None) -> dict[str, Any]:
    """The built-in space of ``model`` (``name:backend`` entry first, then ``name``)."""
    if model.endswith("autorec"):  # autorec, i-autorec, u-autorec (the name fixes `based`)
        model = "autorec"
    for key in ([f"{model}:{backend}"] if backend else []) + [model]:
        if key in DEFAULT_SPACES:
            return dict(DEFAULT_SPACES[key])
    if backend is None:
        for key, space in DEFAULT_SPACES.items():
            if key.startswith(model + ":"):
                return dict(space)
    raise ConfigError(f"no default search space for model {model!r} (backend {backend!r}); "
                      f"pass --space FILE.toml (known: {sorted(DEFAULT_SPACES)})")


# --------------------------------------------------------------------------------------- spaces
def load_space(path: str | os.PathLike) -> dict[str, Any]:
    """A space from a TOML file: its ``[space]`` table (or the whole file when there is none)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"search space file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"search space file {path}: not valid TOML ({exc})") from None
    space = doc.get("space", doc)
    if not isinstance(space, dict):
        raise ConfigError(f"search space file {path}: [space] must be a table of param = spec")
    validate_space(space, where=str(path))
    return space


def validate_space(space: Mapping[str, Any], method: str = "random", where: str = "space") -> None:
    if not isinstance(space, Mapping):
        raise ConfigError(f"{where}: a search space is a mapping param -> spec, got {type(space).__name__}")
    if method not in METHODS:
        raise ConfigError(f"search method {method!r} is not one of {list(METHODS)}")
    for name, spec in space.items():
        w = f"{where}: {name}"
        if isinstance(spec, Mapping):
            dist = spec.get("dist")
            if dist not in DISTRIBUTIONS:
                raise ConfigError(f"{w}: dist={dist!r} is not one of {list(DISTRIBUTIONS)}")
            extra = sorted(set(spec) - {"dist", "low", "high"})
            if extra or "low" not in spec or "high" not in spec:
                raise ConfigError(f"{w}: a distribution is {{dist, low, high}}; got keys {sorted(spec)}")
            low, high = spec["low"], spec["high"]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
                raise ConfigError(f"{w}: low and high must be numbers")
            ordered = low <= high if dist == "randint" else low < high
            if not ordered:
                raise ConfigError(f"{w}: needs low < high (got {low}, {high})")
            if dist == "loguniform" and low <= 0:
                raise ConfigError(f"{w}: loguniform needs low > 0 (got {low})")
            if dist == "randint" and not (float(low).is_integer() and float(high).is_integer()):
                raise ConfigError(f"{w}: randint needs integer bounds")
            if method == "grid":
                raise ConfigError(f"{w}: grid search takes lists or scalars, not distributions")
        elif isinstance(spec, list):
            if not spec:
                raise ConfigError(f"{w}: an empty list of choices")


def _sampler_entry(spec: Any):
    from scipy import stats
    if isinstance(spec, Mapping):
        low, high = spec["low"], spec["high"]
        if spec["dist"] == "loguniform":
            return stats.loguniform(low, high)
        if spec["dist"] == "uniform":
            return stats.uniform(loc=low, scale=high - low)
        return stats.randint(int(low), int(high) + 1)
    if isinstance(spec, list):
        return spec
    return [spec]


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (JSON / TOML friendly), recursively for lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def candidates(space: Mapping[str, Any], trials: int, method: str = "random", seed: int = 0) -> list[dict]:
    """The parameter sets to try: ``trials`` of them (fewer only when a finite space is smaller;
    a grid larger than ``trials`` is subsampled, seeded)."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler
    validate_space(space, method)
    if not isinstance(trials, int) or trials <= 0:
        raise ConfigError(f"trials={trials!r} must be a positive integer")
    if not space:
        return [{}]
    if method == "grid":
        grid = list(ParameterGrid({k: _sampler_entry(v) for k, v in sorted(space.items())}))
        if len(grid) > trials:
            pick = np.sort(np.random.default_rng(seed).choice(len(grid), size=trials, replace=False))
            grid = [grid[j] for j in pick]
        out = grid
    else:
        entries = {k: _sampler_entry(v) for k, v in sorted(space.items())}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # finite space smaller than trials
            out = list(ParameterSampler(entries, n_iter=trials, random_state=seed))
    return [{k: _plain(v) for k, v in sorted(c.items())} for c in out]


def check_fixed(space: Mapping[str, Any], fixed: Mapping[str, Any]) -> None:
    """A parameter is either fixed or searched, never both."""
    clash = sorted(set(fixed) & set(space))
    if clash:
        raise ConfigError(f"parameter(s) {clash} are both fixed and searched; drop one")


# --------------------------------------------------------------------------------------- the search
@dataclass
class TuneResult:
    """What :func:`tune` returns.  Trials are numbered from 1 (``best_trial`` too); ``test`` is
    ``None`` when ``evaluate_test=False``; ``model`` is the chosen trial's fitted model."""

    best_params: dict
    best_trial: int
    best_valid_rmse: float
    trials: list[dict]
    method: str
    seed: int
    n_trials: int
    space: dict
    test: dict | None = None
    model: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def n_ok(self) -> int:
        return sum(1 for t in self.trials if t["status"] == "ok")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def tune(build: Callable[[dict], Any], data: Any, space: Mapping[str, Any], *, trials: int,
         method: str = "random", seed: int = 0, fixed: Mapping[str, Any] | None = None,
         log: str | os.PathLike | None = None, cold_start: "str | ColdStartPolicy" = "global-mean",
         evaluate_test: bool = True, progress: Callable[[dict], None] | None = None) -> TuneResult:
    """Search ``space`` with ``trials`` trials on ``data.train`` / ``data.valid``; then evaluate the
    chosen, already fitted model once on ``data.test`` (unless ``evaluate_test=False``).

    ``data`` is anything with ``train``, ``valid`` (and, for the final evaluation, ``test``)
    :class:`~autorec.interactions.Interactions` — e.g. :class:`autorec.splits.SplitData`.  ``fixed``
    params are given to every trial (a sampled param overrides nothing: a name in both is an error).
    A trial whose ``build`` or ``fit`` raises an :class:`~autorec.errors.AutoRecBenchError` (invalid
    combination, divergence) or yields non-finite predictions is recorded as ``failed`` and counts
    against the budget; other exceptions propagate.
    """
    policy = ColdStartPolicy.parse(cold_start)
    fixed = dict(fixed or {})
    check_fixed(space, fixed)
    cands = candidates(space, trials, method, seed)
    train, valid = data.train, data.valid
    if valid is None or len(valid) == 0:
        raise ConfigError("tuning needs a non-empty validation part (valid_ratio > 0)")
    fh = None
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "w", buffering=1)
    records: list[dict] = []
    best_idx, best_rmse, best_model = -1, math.inf, None
    try:
        for idx, sampled in enumerate(cands):
            params = {**fixed, **sampled}
            rec: dict[str, Any] = {"kind": "trial", "trial": idx + 1, "params": _jsonable(sampled),
                                   "fixed": _jsonable(fixed)}
            t0 = time.perf_counter()
            try:
                model = build(params)
                info = model.fit(train, valid)
                scores = evaluate(model, train, valid, policy)
                rec.update(status="ok", valid_rmse=scores["rmse"], valid_mae=scores["mae"],
                           n_valid_cold=scores["n_cold_start"],
                           best_epoch=getattr(info, "best_epoch", None),
                           epochs_run=getattr(info, "epochs_run", None))
                if hasattr(model, "params"):
                    rec["resolved"] = _jsonable(model.params())
                if not math.isfinite(scores["rmse"]):
                    raise FloatingPointError(f"validation RMSE is {scores['rmse']}")
            except (AutoRecBenchError, FloatingPointError) as exc:
                model = None
                rec.update(status="failed", valid_rmse=None, error=f"{type(exc).__name__}: {exc}")
            rec["seconds"] = time.perf_counter() - t0
            if rec["status"] == "ok" and rec["valid_rmse"] < best_rmse:
                best_idx, best_rmse, best_model = idx, rec["valid_rmse"], model
            del model
            records.append(rec)
            if fh:
                fh.write(json.dumps(_jsonable(rec), sort_keys=True) + "\n")
            if progress is not None:
                progress({**rec, "n_trials": len(cands)})
        if best_idx < 0:
            raise AutoRecBenchError(f"all {len(cands)} trials failed; first error: "
                                    f"{records[0].get('error')}")
        best_params = {**fixed, **cands[best_idx]}
        result = TuneResult(best_params=best_params, best_trial=best_idx + 1, best_valid_rmse=best_rmse,
                            trials=records, method=method, seed=seed, n_trials=len(cands),
                            space=_jsonable(dict(space)), model=best_model)
        # -- the search is over: the test part is read now, once, by the chosen fitted model
        if evaluate_test:
            scores = evaluate(best_model, train, data.test, policy)
            result.test = {"rmse": scores["rmse"], "mae": scores["mae"],
                           "n_cold_start": scores["n_cold_start"], "n": scores["n"],
                           "cold_start_policy": scores["cold_start_policy"]}
        if fh:
            fh.write(json.dumps(_jsonable({
                "kind": "result", "best_trial": best_idx + 1, "best_params": best_params,
                "best_valid_rmse": best_rmse, "n_trials": len(cands), "n_ok": result.n_ok,
                "method": method, "seed": seed, "test": result.test}), sort_keys=True) + "\n")
        return result
    finally:
        if fh:
            fh.close()


# --------------------------------------------------------------------------------------- config files
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cannot write non-finite number {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string for these characters
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {type(value).__name__} {value!r} to TOML")


def _toml_key(key: str) -> str:
    key = str(key)
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_table(name: str, table: Mapping[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    for k, v in table.items():
        if v is not None:
            lines.append(f"{_toml_key(k)} = {_toml_value(_plain(v))}")
    return lines


def write_config(path: str | os.PathLike, *, model: str, backend: str | None, params: Mapping[str, Any],
                 comments: Sequence[str] = (), tuning: Mapping[str, Any] | None = None) -> Path:
    """Write a tuned configuration (atomic): header comments, ``model``, ``backend``, ``[params]``
    (``None`` values are listed in ``params_none``) and a ``[tuning]`` record.  :func:`read_config`
    reads it back."""
    path = Path(path)
    lines = [f"# {c}" if c else "#" for c in comments]
    lines += [f"model = {_toml_value(model)}"]
    if backend is not None:
        lines.append(f"backend = {_toml_value(backend)}")
    none = sorted(k for k, v in params.items() if v is None)
    if none:
        lines.append(f"params_none = {_toml_value(none)}")
    lines.append("")
    lines += _toml_table("params", params)
    if tuning:
        lines.append("")
        lines += _toml_table("tuning", {k: v for k, v in tuning.items() if not isinstance(v, Mapping)})
        for k, v in tuning.items():
            if isinstance(v, Mapping):
                lines.append("")
                lines += _toml_table(f"tuning.{k}", v)
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # never write a file we could not read back
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """``{"model", "backend", "params", "tuning"}`` of a file :func:`write_config` wrote."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    if "model" not in doc or not isinstance(doc.get("params", {}), dict):
        raise ConfigError(f"config file {path}: needs `model = \"...\"` and a [params] table")
    params = dict(doc.get("params", {}))
    for k in doc.get("params_none", []):
        params[k] = None
    return {"model": doc["model"], "backend": doc.get("backend"), "params": params,
            "tuning": doc.get("tuning", {})}
