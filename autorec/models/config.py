"""Typed model configurations: one frozen dataclass per model, validated in one place.

Every model declares its parameters as a frozen dataclass derived from :class:`ModelConfig`; each
field carries its type (the annotation) and its rule (:func:`param`: a range, a set of choices, or a
predicate).  :meth:`ModelConfig.from_dict` is the one way a configuration is built from outside data
(a spec file, ``--set KEY=VALUE``, a tuner's trial, a raw result): unknown names, values of the wrong
type (``epochs=ten``, ``batch_size=1.5``), values outside their range and cross-field conflicts
(:meth:`ModelConfig.check`) raise :class:`~autorec.errors.ConfigError` naming the model, the
parameter, the value and the rule, before any work starts.

Supported field types: ``int``, ``float``, ``bool``, ``str``, ``tuple[int, ...]``,
``tuple[str, ...]``, ``dict[str, Any]`` and any of them ``| None``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, ClassVar, TypeVar

from autorec.devices import is_device, split_devices
from autorec.env import MAX_THREADS
from autorec.errors import ConfigError
from autorec.jsonio import to_plain
from autorec.metrics import ColdStartPolicy

C = TypeVar("C", bound="ModelConfig")

_MISSING = dataclasses.MISSING


def param(
    default: Any = _MISSING,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: tuple | list | None = None,
    check: Callable[[Any], bool] | None = None,
    rule: str = "",
    doc: str = "",
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A config field with its rule: ``low``/``high`` bounds (inclusive; ``low_open`` makes the lower
    bound exclusive), ``choices`` for strings, or ``check`` (a predicate, described by ``rule``)."""
    meta = {
        "low": low,
        "high": high,
        "low_open": low_open,
        "choices": tuple(choices) if choices is not None else None,
        "check": check,
        "rule": rule,
        "doc": doc,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def positive(default: Any, doc: str = "") -> Any:
    """A number > 0."""
    return param(default, low=0, low_open=True, doc=doc)


def nonnegative(default: Any, doc: str = "") -> Any:
    """A number >= 0."""
    return param(default, low=0, doc=doc)


def check_factor_init(std_name: str, std: float, mean_name: str, mean: float) -> None:
    """:class:`ConfigError` where latent factors would start, all of them, at exactly 0: the gradient of
    ``p_u . q_i`` is then 0 in both factors, gradient descent never moves them, and the model is
    silently its biases alone."""
    if std == 0 and mean == 0:
        raise ConfigError(
            f"{std_name}=0 with {mean_name}=0: every factor starts at 0 and gradient descent never moves it "
            f"(the model would be its biases alone); give {std_name} > 0"
        )


def threads_param() -> Any:
    """A model's ``threads`` field: intra-op threads set at fit, 1..:data:`autorec.env.MAX_THREADS`;
    ``None``, the default count (:func:`autorec.env.default_thread_count`: idle cores)."""
    return param(None, low=1, high=MAX_THREADS, doc="intra-op threads set at fit; None = the default (idle cores)")


def choice(default: str, choices: tuple | list, doc: str = "") -> Any:
    return param(default, choices=choices, doc=doc)


def _cold_start_ok(text: str) -> bool:
    try:
        ColdStartPolicy.parse(text)
    except ConfigError:
        return False
    return True


def devices_ok(devs: tuple[str, ...]) -> bool:
    """A non-empty tuple of device strings (:mod:`autorec.devices`); use as ``param(check=...)``."""
    return bool(devs) and all(is_device(d) for d in devs)


@dataclass(frozen=True)
class ModelConfig:
    """What every model's configuration holds.

    ``seed`` makes a fit reproducible; ``cold_start`` is the policy for pairs whose user or item has
    no training rating (applied by :meth:`autorec.models.base.Recommender.predict`, in validation
    during training and in the final evaluation alike).  Both are set by the harness from the run
    (``--seeds``, ``--cold-start``), never from a model's parameters.
    """

    seed: int = param(0, low=0, high=2**32 - 1, doc="random seed of everything the fit draws")
    cold_start: str = param(
        "global-mean",
        check=_cold_start_ok,
        rule="a cold-start policy ('global-mean', 'constant', 'constant:V')",
        doc="prediction for pairs whose user or item has no training rating",
    )

    #: fields set by the harness from the run, never from ``--set`` / a spec's params
    HARNESS: ClassVar[tuple[str, ...]] = ("seed", "cold_start", "devices")
    #: execution settings: used by the fit but not part of a run's identity
    EXECUTION: ClassVar[tuple[str, ...]] = ("threads",)
    #: fields that may differ between a checkpoint and the run resuming from it
    RESUME_MUTABLE: ClassVar[tuple[str, ...]] = ("epochs", "patience", "threads", "devices", "restore_best")
    #: where ``extra`` is resume-mutable: the only keys in it that may change
    RESUME_MUTABLE_EXTRA: ClassVar[tuple[str, ...]] = ()

    def resume_mutable(self) -> tuple[str, ...]:
        """The fields a fit resumed from a checkpoint of this config may change (they do not change
        the steps already taken or the ones to come)."""
        return self.RESUME_MUTABLE

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls: type[C], params: Mapping[str, Any] | None = None, *, model: str | None = None) -> C:
        """A validated config from plain values; every problem is a :class:`ConfigError`."""
        label = model or cls.__name__
        if params is None:
            params = {}
        if isinstance(params, ModelConfig):
            params = params.to_dict()
        if not isinstance(params, Mapping):
            raise ConfigError(f"{label}: parameters must be a mapping, got {type(params).__name__}")
        known = cls.field_names()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"{label}: unknown parameter(s) {unknown}; known: {sorted(known)}")
        kwargs, problems = {}, []
        for k, v in params.items():  # every bad parameter in one error, not the first one only
            try:
                kwargs[k] = coerce(cls, k, v, model=label)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))
        cfg = cls(**kwargs)
        cfg.validate(model=label)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples as lists), every field."""
        return {f.name: to_plain(getattr(self, f.name)) for f in fields(self)}

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with ``changes`` applied."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    # ------------------------------------------------------------------ validation
    def validate(self, *, model: str | None = None) -> None:
        """Every field against its type and rule, then :meth:`check`."""
        label = model or type(self).__name__
        for f in fields(self):
            coerce(type(self), f.name, getattr(self, f.name), model=label)
        try:
            self.check()
        except ConfigError as exc:  # the cross-field rules name the model as the field rules do
            raise ConfigError(f"{label}: {exc}") from None

    def check(self) -> None:
        """Cross-field rules of a model (raise :class:`ConfigError`); none by default."""

    def summary(self) -> str:
        """One line for error messages: every field that differs from its default."""
        default = type(self)()
        parts = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return ", ".join(parts) or "defaults"


@dataclass(frozen=True)
class IterativeConfig(ModelConfig):
    """A model trained epoch by epoch (:func:`autorec.models.training.train_loop`): at most
    ``epochs`` epochs, early stopping once the validation RMSE has not improved for ``patience``
    epochs (``None``: never stop early), best weights restored at the end (``restore_best``)."""

    epochs: int = param(25, low=1, doc="maximum number of epochs (sweeps for ALS)")
    patience: int | None = param(None, low=1, doc="early stopping on validation RMSE; None = off")
    restore_best: bool = param(True, doc="keep the weights of the best validation epoch")


# ---------------------------------------------------------------------- coercion
@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def coerce(cls: type, name: str, value: Any, *, model: str | None = None) -> Any:
    """``value`` converted to field ``name``'s type of ``cls`` and checked against its rule."""
    label = model or cls.__name__
    where = f"{label}: {name}={value!r}"
    tp, nullable = _unwrap_optional(_hints(cls)[name])
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{where}: may not be None")
    out = _convert(tp, value, where)
    meta = next(f for f in fields(cls) if f.name == name).metadata
    _check_rule(out, meta, where)
    return out


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return bool(value)
        raise ConfigError(f"{where}: must be true or false")
    if tp is int:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            raise ConfigError(f"{where}: must be an integer")
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
            return int(float(value))
        raise ConfigError(f"{where}: must be an integer")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{where}: must be a number")
        v = float(value)
        if not math.isfinite(v):
            raise ConfigError(f"{where}: must be a finite number")
        return v
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string")
        return value
    if origin is tuple:
        (inner, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str):
            # "500,250", "500 250" or "500-250"; a minus sign stays a sign ("500,-250" is refused below)
            value = (
                [v for v in re.split(r"[,\s]+|(?<=\d)-(?=\d)", value) if v] if inner is int else split_devices(value)
            )
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: must be a list")
        out = []
        for v in value:
            if inner is int and isinstance(v, str):
                if not re.fullmatch(r"[+-]?\d+", v.strip()):
                    raise ConfigError(f"{where}: {v!r} is not an integer")
                v = int(v)
            out.append(_convert(inner, v, where))
        return tuple(out)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: must be a table of key = value")
        return dict(value)
    raise TypeError(f"{where}: unsupported config field type {tp!r}")  # pragma: no cover


def _bound(b: float) -> str:
    return str(b) if isinstance(b, int) else f"{b:g}"


def _check_rule(value: Any, meta: Mapping[str, Any], where: str) -> None:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("low_open") else value < low):
        raise ConfigError(f"{where}: must be {'>' if meta.get('low_open') else '>='} {_bound(low)}")
    if high is not None and value > high:
        raise ConfigError(f"{where}: must be <= {_bound(high)}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: is not one of {list(choices)}")
    check = meta.get("check")
    if check is not None and not check(value):
        raise ConfigError(f"{where}: must be {meta.get('rule') or 'valid'}")


# ---------------------------------------------------------------------- --set KEY=VALUE
def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON (``3``, ``1e-3``, ``true``, ``[500, 250]``, ``{"a": 1}``, ``null``),
    else the text itself (``sigmoid``)."""
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["lr=0.01", "hidden=[500]"]`` -> ``{"lr": 0.01, "hidden": [500]}``; types are checked when
    the dict meets a config (:meth:`ModelConfig.from_dict`)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = parse_value(value)
    return out
