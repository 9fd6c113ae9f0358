"""The chosen configuration as a config file a spec can reference (``config = "../../results/tuning/ml-100k/x.toml"``):
header comments (the exact command first), ``model``, ``backend``, ``[params]``, and a ``[tuning]``
record of the study it came from (validation RMSE, trials, split hash, space)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomllib

from autorec.atomic import atomic_write
from autorec.errors import ConfigError
from autorec.jsonio import to_plain
from benchmarks.tuning.tuner import TuneResult


def _value(value: Any) -> str:
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
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {type(value).__name__} {value!r} to TOML")


def _key(key: str) -> str:
    key = str(key)
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _table(name: str, table: Mapping[str, Any]) -> list[str]:
    return [f"[{name}]"] + [f"{_key(k)} = {_value(v)}" for k, v in to_plain(dict(table)).items() if v is not None]


def render(result: TuneResult, *, command: str, comments: Sequence[str] = ()) -> str:
    """The file's text: the header (``Tuned by: command``, the study, the best trial, ``comments``),
    then ``model`` / ``backend`` / ``params_none``, ``[params]``, ``[tuning]``, ``[tuning.space]``."""
    spec, c = result.spec, result.counts
    header = [
        f"Tuned by: {command}",
        f"Optuna study {spec.name!r} ({spec.storage}): TPE, search seed {spec.search_seed}, {spec.pruning_text()}; "
        f"{result.trials} trials ({', '.join(f'{c.get(k, 0)} {k}' for k in ('complete', 'pruned', 'failed'))}), "
        f"scored on the validation part only ({spec.data['valid_ratio']:g} of train); the test part was not read.",
        f"Best trial #{result.best_number}: validation RMSE {result.best_value:.5f} "
        f"(weights of epoch {result.weights_epoch}, {result.epochs_run} epochs run).",
        *comments,
    ]
    params = to_plain(result.best_params)
    lines = [f"# {line}" for line in header]
    lines += [f"model = {_value(spec.model)}", f"backend = {_value(spec.backend)}"]
    none = sorted(k for k, v in params.items() if v is None)
    if none:
        lines.append(f"params_none = {_value(none)}")
    tuning = {
        **spec.data,
        "study": spec.name,
        "storage": spec.storage,
        "search_seed": spec.search_seed,
        "pruning": spec.prune,
        "pruning_per_variant": True if spec.pruner_mode() == "per-variant" else None,
        "trials": result.trials,
        **{k: c.get(k, 0) for k in ("complete", "pruned", "failed")},
        "best_trial": result.best_number,
        "valid_rmse": result.best_value,
        "weights_epoch": result.weights_epoch,
        "epochs_run": result.epochs_run,
        "command": command,
    }
    lines += [""] + _table("params", params) + [""] + _table("tuning", tuning)
    lines += [""] + _table("tuning.space", spec.space)
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # never write a file that does not read back
    return text


def write_config(path: str | os.PathLike, result: TuneResult, *, command: str, comments: Sequence[str] = ()) -> Path:
    """:func:`render` written atomically to ``path``."""
    text = render(result, command=command, comments=comments)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
    return Path(path)
