"""Search spaces: checking them, reading them from TOML, fixing parameters, and translating them to
Optuna's ``trial.suggest_*``.

The format (docs/design.md) is a mapping ``parameter -> spec``:

- a scalar: fixed (given to every trial, not searched);
- a list: a categorical choice (choices that are not ``None``/bool/int/float/str, e.g. AutoRec's
  ``hidden = [[100], [500]]``, travel through Optuna as their JSON text and reach the model decoded);
- ``{dist = "loguniform" | "uniform", low, high}``: a float in [low, high];
- ``{dist = "int" | "logint", low, high}``: an integer in [low, high];
- a table without ``dist``: a fixed table value (e.g. AutoRec's ``extra = {lbfgs_max_iter = 1}``); one
  with ``low``/``high`` but no ``dist`` is refused (a distribution missing its ``dist``), and so are
  choices that repeat a value (``1`` and ``1.0`` are one Optuna value);
- the reserved key ``one_of = {variant = {sub-space}, ...}``: a trial first picks a variant (Optuna
  parameter ``one_of``), then samples the common part plus that variant's sub-space.  A variant's
  searched parameters are named ``<variant>.<parameter>`` in the study, so that two variants may give
  one parameter different ranges without their distributions clashing; the model gets plain names.

:func:`suggest` is the one translation: it samples a trial's model parameters, and replayed on an
:class:`optuna.trial.FixedTrial` it decodes a stored trial's Optuna parameters (:func:`decode`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import tomllib

from autorec.errors import ConfigError

ONE_OF = "one_of"
FLOAT_DISTS = ("loguniform", "uniform")
INT_DISTS = ("int", "logint")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_dist(spec: Any) -> bool:
    """A distribution (a table with ``dist``); any other table is a fixed value."""
    return isinstance(spec, Mapping) and "dist" in spec


def _is_optuna_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def parts(space: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``(common part, {variant: sub-space})`` of a space (no variants: an empty dict)."""
    common = {k: v for k, v in space.items() if k != ONE_OF}
    return common, {str(k): dict(v) for k, v in dict(space.get(ONE_OF) or {}).items()}


# ---------------------------------------------------------------------------------------- checks
def validate(space: Any, where: str = "space") -> None:
    """:class:`ConfigError` naming the parameter and the rule for anything not in the format."""
    if not isinstance(space, Mapping):
        raise ConfigError(f"{where}: a search space is a table of parameter = spec, got {type(space).__name__}")
    common, variants = parts(space)
    for name, spec in common.items():
        _validate_spec(spec, f"{where}: {name}")
    if ONE_OF not in space:
        return
    if not isinstance(space[ONE_OF], Mapping) or not space[ONE_OF]:
        raise ConfigError(f"{where}: {ONE_OF} must be a non-empty table of variant = {{sub-space}}")
    for variant, sub in dict(space[ONE_OF]).items():
        w = f"{where}: {ONE_OF}.{variant}"
        if not isinstance(variant, str) or not variant or "." in variant:
            raise ConfigError(f"{w}: a variant name is a non-empty string without '.'")
        if not isinstance(sub, Mapping) or ONE_OF in sub:
            raise ConfigError(f"{w}: a variant is a table of parameter = spec (no nested {ONE_OF})")
        clash = sorted(set(sub) & set(common))
        if clash:
            raise ConfigError(f"{w}: {clash} also in the common part; define a parameter in one place")
        for name, spec in sub.items():
            _validate_spec(spec, f"{w}.{name}")


def _validate_spec(spec: Any, where: str) -> None:
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: an empty list of choices")
        encoded = _choices(spec)
        for i, c in enumerate(encoded):
            same = [spec[j] for j in range(i) if encoded[j] == c]
            if same:  # 1 and 1.0 (and True) are one Optuna value: the grid would count a configuration twice
                raise ConfigError(
                    f"{where}: the choices {same[0]!r} and {spec[i]!r} are the same value; list each once"
                )
        return
    if not _is_dist(spec):
        if isinstance(spec, Mapping) and {"low", "high"} & set(spec):
            # no model parameter is a table of low/high: a distribution whose dist was left out (taken
            # as a fixed value, the model would refuse a table where it wants a number)
            raise ConfigError(
                f"{where}: a table with {sorted({'low', 'high'} & set(spec))} but no dist; a distribution "
                f"is {{dist, low, high}} with dist one of {list(FLOAT_DISTS + INT_DISTS)}"
            )
        return  # a fixed value
    dist = spec.get("dist")
    if dist not in FLOAT_DISTS + INT_DISTS:
        raise ConfigError(f"{where}: dist={dist!r} is not one of {list(FLOAT_DISTS + INT_DISTS)}")
    if set(spec) != {"dist", "low", "high"}:
        raise ConfigError(f"{where}: a distribution is {{dist, low, high}}; got keys {sorted(spec)}")
    low, high = spec["low"], spec["high"]
    if not (_is_number(low) and _is_number(high) and math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{where}: low and high must be finite numbers (got {low!r}, {high!r})")
    if dist in INT_DISTS and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}: dist={dist!r} needs integer bounds (got {low}, {high})")
    if not (low <= high if dist in INT_DISTS else low < high):
        raise ConfigError(f"{where}: needs low {'<=' if dist in INT_DISTS else '<'} high (got {low}, {high})")
    if dist.startswith("log") and low <= 0:
        raise ConfigError(f"{where}: dist={dist!r} needs low > 0 (got {low})")


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A space from a TOML file: its ``[space]`` table, or the whole file when there is none."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"search space file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"search space file {path}: not valid TOML ({exc})") from None
    space = doc.get("space", doc)
    validate(space, where=str(path))
    return dict(space)


def fix(space: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """``space`` with the ``fixed`` parameters taken out of the search.  A variant whose fixed *text*
    value (what names a variant: ``optimizer``, ``loss``, ...) differs from the given one is dropped
    (``--set optimizer=rprop`` keeps the Rprop variant); a fixed number (a budget such as ``epochs``)
    overrides the variants' own.  A fixed table meeting a fixed table of the space is merged into it,
    the given keys winning (``--set extra={"sparse_kernel": "native"}`` keeps the L-BFGS variant's
    ``extra = {lbfgs_max_iter = 1}`` beside it).  A single variant left is merged into the common part."""

    def without_fixed(sub: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in sub.items():
            if k not in fixed:
                out[k] = v
            elif _is_table(v) and _is_table(fixed[k]):
                out[k] = {**v, **fixed[k]}  # sampled values override the fixed ones: carry both
        return out

    common, variants = parts(space)
    out = without_fixed(common)
    if not variants:
        return out
    kept = {
        name: without_fixed(sub)
        for name, sub in variants.items()
        if not any(k in sub and isinstance(sub[k], str) and sub[k] != v for k, v in fixed.items())
    }
    if not kept:
        raise ConfigError(f"the fixed parameters {dict(fixed)} exclude every variant of {ONE_OF} {list(variants)}")
    if len(kept) == 1:
        out.update(next(iter(kept.values())))
    else:
        out[ONE_OF] = kept
    return out


def _is_table(v: Any) -> bool:
    """A fixed table value (a mapping that is not a distribution)."""
    return isinstance(v, Mapping) and not _is_dist(v)


# ---------------------------------------------------------------------------------------- sampling
def _choices(spec: list) -> list[Any]:
    """Optuna-safe categorical choices: non-scalars as their JSON text."""
    return [c if _is_optuna_scalar(c) else json.dumps(c, sort_keys=True) for c in spec]


def _suggest_one(trial: optuna.trial.BaseTrial, name: str, spec: Any) -> Any:
    if isinstance(spec, list):
        encoded = _choices(spec)
        return spec[encoded.index(trial.suggest_categorical(name, encoded))]
    if _is_dist(spec):
        log = spec["dist"].startswith("log")
        if spec["dist"] in INT_DISTS:
            return trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=log)
        return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=log)
    return spec


def suggest(trial: optuna.trial.BaseTrial, space: Mapping[str, Any]) -> dict[str, Any]:
    """The model parameters of ``trial``: the variant first (when there are variants), then every
    parameter in sorted order; fixed scalars included."""
    common, variants = parts(space)
    specs = [(k, k, common[k]) for k in sorted(common)]
    if variants:
        variant = trial.suggest_categorical(ONE_OF, list(variants))
        sub = variants[str(variant)]
        specs += [(f"{variant}.{k}", k, sub[k]) for k in sorted(sub)]
    return {name: _suggest_one(trial, optuna_name, spec) for optuna_name, name, spec in specs}


def decode(space: Mapping[str, Any], optuna_params: Mapping[str, Any]) -> dict[str, Any]:
    """The model parameters of a stored trial; :class:`ValueError` when ``optuna_params`` is not a
    whole configuration of ``space`` (a trial stopped while it was being sampled)."""
    return suggest(optuna.trial.FixedTrial(dict(optuna_params)), space)


# ---------------------------------------------------------------------------------------- finite spaces
def _values(spec: Any) -> list[Any] | None:
    """The Optuna values a spec can take, ``None`` when infinitely many (a float distribution)."""
    if isinstance(spec, list):
        return _choices(spec)
    if _is_dist(spec):
        if spec["dist"] in FLOAT_DISTS:
            return None
        return list(range(int(spec["low"]), int(spec["high"]) + 1))
    return []  # fixed: not an Optuna parameter


def _product(named: list[tuple[str, Any]]) -> list[dict[str, Any]] | None:
    axes = []
    for name, spec in named:
        values = _values(spec)
        if values is None:
            return None
        if values:
            axes.append([(name, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)]


def _count(spec: Any) -> int | None:
    """How many values a spec can take (1 for a fixed value), ``None`` when infinitely many; counted,
    not listed (an integer range may hold 10^12 values)."""
    if isinstance(spec, list):
        return len(spec)
    if _is_dist(spec):
        return None if spec["dist"] in FLOAT_DISTS else int(spec["high"]) - int(spec["low"]) + 1
    return 1


def size(space: Mapping[str, Any]) -> int | None:
    """The number of distinct configurations, ``None`` when infinite."""
    common, variants = parts(space)
    total = 1
    for spec in common.values():
        n = _count(spec)
        if n is None:
            return None
        total *= n
    if not variants:
        return total
    per_variant = [size(sub) for sub in variants.values()]
    if any(n is None for n in per_variant):
        return None
    return total * sum(n for n in per_variant if n is not None)


def grid(space: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every configuration of a finite space as Optuna parameters, in a fixed order (variants in
    their declared order, then parameters sorted, choices in their declared order)."""
    common, variants = parts(space)
    base = _product(sorted(common.items()))
    if base is None:
        raise ConfigError("grid() needs a finite space (no float distributions)")
    if not variants:
        return base
    out = []
    for name, sub in variants.items():
        rest = _product([(f"{name}.{k}", v) for k, v in sorted(sub.items())])
        if rest is None:
            raise ConfigError("grid() needs a finite space (no float distributions)")
        out += [{ONE_OF: name, **b, **r} for b in base for r in rest]
    return out


def corners(space: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Configurations that together take every value a trial can give each parameter (every choice,
    both bounds), per variant: the first choices and lower bounds, then each other value in turn.
    Built before any work, they check the space's names and values against the model, so that no
    trial of the budget is spent on a value the model refuses."""
    common, variants = parts(space)

    def values(spec: Any) -> list[Any]:
        if isinstance(spec, list):
            return list(spec)
        if _is_dist(spec):
            cast = int if spec["dist"] in INT_DISTS else float
            return [cast(spec["low"]), cast(spec["high"])]
        return [spec]

    out = []
    for sub in list(variants.values()) or [{}]:
        named = {**common, **sub}
        base = {k: values(v)[0] for k, v in named.items()}
        out.append(base)
        out += [{**base, k: v} for k, spec in named.items() for v in values(spec)[1:]]
    return out
