"""What every baseline shares: declared, validated parameters, input checks, the per-epoch loop
bookkeeping (history, early stopping on validation RMSE, divergence detection) and optional-import
helpers that turn a missing framework into :class:`~autorec.errors.MissingDependencyError`.

Framework-free: numpy and the ``autorec`` core only.
"""

from __future__ import annotations

import importlib
import math
import numbers
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from autorec.errors import (AutoRecBenchError, ConfigError, DataError, MissingDependencyError,
                            TrainingDivergedError)
from autorec.interactions import Interactions
from autorec.metrics import ColdStartPolicy, evaluate
from autorec.models.base import FitInfo, ProgressFn, Recommender


class NotFittedError(AutoRecBenchError):
    """``predict`` was called before ``fit``."""


# ---------------------------------------------------------------------------------------- params
@dataclass(frozen=True)
class Param:
    """One declared parameter: its default, its type and the rule a value must satisfy.

    ``kind`` is ``int``, ``float``, ``bool``, ``str`` or ``"devices"`` (a tuple of device strings);
    ``rule`` is a short text (``"> 0"``) and ``check`` the predicate implementing it;
    ``choices`` restricts strings; ``nullable`` allows ``None``.
    """

    default: Any
    kind: Any
    rule: str = ""
    check: Callable[[Any], bool] | None = None
    choices: tuple | None = None
    nullable: bool = False
    doc: str = ""


def positive(kind=float, default=None, doc="", nullable=False) -> Param:
    return Param(default, kind, "> 0", lambda v: v > 0, nullable=nullable, doc=doc)


def nonnegative(kind=float, default=None, doc="", nullable=False) -> Param:
    return Param(default, kind, ">= 0", lambda v: v >= 0, nullable=nullable, doc=doc)


def choice(default, choices, doc="") -> Param:
    return Param(default, str, "", None, tuple(choices), doc=doc)


def _coerce(model: str, name: str, spec: Param, value: Any) -> Any:
    where = f"{model}: parameter {name}={value!r}"
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"{where} may not be None")
    kind = spec.kind
    if kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise ConfigError(f"{where} must be true or false")
    if kind is int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{where} must be an integer")
        value = int(value)
    elif kind is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{where} must be a number")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite")
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(f"{where} is not one of {list(spec.choices)}")
    elif kind == "devices":
        if isinstance(value, str):  # "cpu", "cuda:0" or "cpu(0),cpu(1)" (commas outside parentheses)
            value = [v.strip() for v in re.split(r",(?![^()]*\))", value) if v.strip()]
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a non-empty list of device strings (cpu, cuda:0, gpu(0), ...)")
        value = tuple(value)
    else:  # pragma: no cover - programming error in a PARAMS table
        raise TypeError(f"unknown parameter kind {kind!r}")
    if spec.check is not None and not spec.check(value):
        raise ConfigError(f"{where} must be {spec.rule}")
    return value


def resolve_params(model: str, table: Mapping[str, Param], given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``given``; unknown names and invalid values raise :class:`ConfigError`."""
    if not isinstance(given, Mapping):
        raise ConfigError(f"{model}: parameters must be a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - set(table))
    if unknown:
        raise ConfigError(f"{model}: unknown parameter(s) {unknown}; known: {sorted(table)}")
    out = {}
    for name, spec in table.items():
        out[name] = _coerce(model, name, spec, given.get(name, spec.default))
    return out


class Baseline(Recommender):
    """A :class:`Recommender` with a declared parameter table ``PARAMS``.

    ``Model(**params)`` and ``Model.from_params(dict)`` validate every value before any work; the
    resolved values are in ``self.p``.  ``params()`` returns them plus the descriptive keys of
    :meth:`describe` (e.g. ``algorithm``), which ``from_params`` accepts back only when they match.
    """

    PARAMS: ClassVar[dict[str, Param]] = {}
    #: keys ``params()`` adds to describe the model; accepted by ``from_params`` only if they match
    INFO_KEYS: ClassVar[tuple[str, ...]] = ("algorithm",)

    def __init__(self, **params: Any) -> None:
        self._require_dependencies()
        self.p: dict[str, Any] = resolve_params(self.label(), self.PARAMS, params)
        self.validate()
        self._fitted = False

    # hooks --------------------------------------------------------------------------------
    @classmethod
    def label(cls) -> str:
        return f"{cls.name} ({cls.backend})"

    @classmethod
    def _require_dependencies(cls) -> None:
        """Raise :class:`MissingDependencyError` when an optional framework is absent."""

    def validate(self) -> None:
        """Cross-parameter checks (raise :class:`ConfigError`)."""

    def describe(self) -> dict[str, Any]:
        """Descriptive, derived entries of ``params()`` (``algorithm``, ...)."""
        return {}

    # interface ----------------------------------------------------------------------------
    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None) -> "Baseline":
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"{cls.label()}: parameters must be a mapping, got {type(params).__name__}")
        params = dict(params)
        info = {k: params.pop(k) for k in cls.INFO_KEYS if k in params}
        model = cls(**params)
        described = model.describe()
        for key, value in info.items():
            if key not in described or described[key] != value:
                raise ConfigError(f"{cls.label()}: {key}={value!r} is derived, not set; with these "
                                  f"parameters it is {described.get(key)!r} (drop the key)")
        return model

    def params(self) -> dict[str, Any]:
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.p.items()}
        out.update(self.describe())
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.p.items())
        return f"{type(self).__name__}({args})"

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(f"{self.label()}: call fit(train) before predict")


# ---------------------------------------------------------------------------------------- inputs
def check_train(model: str, train: Interactions) -> None:
    if not isinstance(train, Interactions):
        raise DataError(f"{model}: train must be autorec.interactions.Interactions, got {type(train).__name__}")
    if len(train) == 0:
        raise DataError(f"{model}: the train part is empty")
    r = np.asarray(train.ratings)
    if not np.all(np.isfinite(r)):
        raise DataError(f"{model}: {int((~np.isfinite(r)).sum())} train ratings are NaN or infinite")


def check_valid(model: str, train: Interactions, valid: Interactions | None) -> None:
    if valid is None:
        return
    if not isinstance(valid, Interactions):
        raise DataError(f"{model}: valid must be Interactions or None, got {type(valid).__name__}")
    if (valid.n_users, valid.n_items) != (train.n_users, train.n_items):
        raise DataError(f"{model}: valid has index space {valid.n_users}x{valid.n_items}, train "
                        f"{train.n_users}x{train.n_items}; both must come from the same split")


def check_pairs(model: str, users, items, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    users = np.asarray(users, dtype=np.int64).ravel()
    items = np.asarray(items, dtype=np.int64).ravel()
    if users.shape != items.shape:
        raise DataError(f"{model}: predict got {users.size} users but {items.size} items")
    if users.size:
        if users.min() < 0 or users.max() >= n_users:
            raise DataError(f"{model}: user index out of range [0, {n_users}) "
                            f"(min {users.min()}, max {users.max()})")
        if items.min() < 0 or items.max() >= n_items:
            raise DataError(f"{model}: item index out of range [0, {n_items}) "
                            f"(min {items.min()}, max {items.max()})")
    return users, items


def require(module: str, extra: str, model: str):
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``pip install .[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{model} needs the optional package {module!r}, which is not importable ({exc}); "
            f"install it with `pip install .[{extra}]`") from None


# ---------------------------------------------------------------------------------------- training loop
class EpochLoop:
    """Bookkeeping of an epoch loop: history rows, validation RMSE, early stopping, divergence.

    ``model`` must implement ``predict``; ``snapshot()`` / ``restore(state)`` callbacks keep and
    bring back the best weights.  Use::

        loop = EpochLoop(model, train, valid, epochs, patience, progress, snapshot, restore)
        for epoch in loop:          # 1-based
            loss = train_one_epoch()
            if loop.end_epoch(loss):
                break
        info = loop.finish()
    """

    def __init__(self, model: Recommender, train: Interactions, valid: Interactions | None,
                 epochs: int, patience: int | None, progress: ProgressFn | None,
                 snapshot: Callable[[], Any], restore: Callable[[Any], None],
                 cold_start: str = "global-mean", restore_best: bool = True, describe: str = "") -> None:
        self.model, self.train, self.valid = model, train, valid
        self.epochs, self.patience, self.progress = int(epochs), patience, progress
        self.snapshot, self.restore = snapshot, restore
        self.policy = ColdStartPolicy.parse(cold_start)
        self.restore_best = restore_best
        self.describe = describe or getattr(model, "label", lambda: type(model).__name__)()
        self.history: list[dict] = []
        self.best_rmse = math.inf
        self.best_epoch: int | None = None
        self.best_state = None
        self.bad = 0
        self.epoch = 0
        self._t0 = time.perf_counter()

    def __iter__(self):
        for epoch in range(1, self.epochs + 1):
            self.epoch = epoch
            self._t0 = time.perf_counter()
            yield epoch

    def valid_rmse(self) -> float | None:
        if self.valid is None or len(self.valid) == 0:
            return None
        return float(evaluate(self.model, self.train, self.valid, self.policy)["rmse"])

    def end_epoch(self, train_loss: float, **extra: Any) -> bool:
        """Record the epoch; returns True when training should stop (patience exhausted)."""
        train_loss = float(train_loss)
        if not math.isfinite(train_loss):
            raise TrainingDivergedError(f"{self.describe}: training loss is {train_loss} at epoch "
                                        f"{self.epoch}; lower the learning rate or raise regularisation "
                                        f"(params: {getattr(self.model, 'p', {})})")
        try:
            vr = self.valid_rmse()
        except FloatingPointError as exc:
            raise TrainingDivergedError(f"{self.describe}: predictions are not finite at epoch "
                                        f"{self.epoch} ({exc}); params: {getattr(self.model, 'p', {})}") from None
        row = {"epoch": self.epoch, "train_loss": train_loss, "valid_rmse": vr,
               "seconds": time.perf_counter() - self._t0, **extra}
        self.history.append(row)
        stop = False
        if vr is not None:
            if vr < self.best_rmse - 1e-12:
                self.best_rmse, self.best_epoch, self.bad = vr, self.epoch, 0
                if self.restore_best:
                    self.best_state = self.snapshot()
            else:
                self.bad += 1
                if self.patience is not None and self.bad >= self.patience:
                    stop = True
        if self.progress is not None:
            self.progress(self.epoch, self.epochs, dict(row))
        return stop

    def finish(self, **extra: Any) -> FitInfo:
        if self.best_state is not None and self.best_epoch != len(self.history):
            self.restore(self.best_state)
        best = self.best_epoch if self.valid is not None and len(self.valid) else None
        if best is not None and not self.restore_best:
            best = len(self.history)
        return FitInfo(history=self.history, best_epoch=best, epochs_run=len(self.history),
                       extra={"best_valid_rmse": None if best is None else self.best_rmse, **extra})


def scatter_add(target: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """``target[index] += values`` with repeated indices summed (``np.add.at`` semantics), via a
    sort and ``np.add.reduceat``, which is fast on every numpy version."""
    if index.size == 0:
        return
    order = np.argsort(index, kind="stable")
    idx = index[order]
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    target[idx[starts]] += np.add.reduceat(values[order], starts, axis=0)
