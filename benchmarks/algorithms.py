"""The model registry of the harness: every model a run or a sweep may name, as lazy import strings.

Importing this module imports no framework.  A model is named by a registry name and a backend:

=================  ====================  ==================================================
name               backends              class
=================  ====================  ==================================================
autorec            torch, mxnet          AutoRec; ``based`` (item / user) from its params
i-autorec          torch, mxnet          AutoRec with ``based = "item"`` fixed (I-AutoRec)
u-autorec          torch, mxnet          AutoRec with ``based = "user"`` fixed (U-AutoRec)
(every name of ``baselines.MODELS``)     global-mean, bias-only, als, biased-mf, d2l-mf, ...
``package.module:Class``                 any importable :class:`~autorec.models.base.Recommender`
                                         with ``from_params(dict)`` (its ``backend`` attribute)
=================  ====================  ==================================================

Each model has a *family*: ``autorec``, ``mf`` (the matrix-factorisation models: als, biased-mf,
d2l-mf, surprise-svd, surprise-svdpp) or ``baseline`` (global-mean, bias-only).  ``verify``
compares the best ``autorec`` against the best ``mf``.

Validation happens before any training: :meth:`Algorithm.check_dependencies` raises
:class:`~autorec.errors.MissingDependencyError` (naming the ``pip install``) when a backend's
framework is absent, and :meth:`Algorithm.resolve` builds the model from its parameters, so an
unknown or invalid parameter raises :class:`~autorec.errors.ConfigError` at once.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Mapping

from autorec.errors import ConfigError, MissingDependencyError

AUTOREC_BACKENDS: dict[str, str] = {
    "torch": "autorec.models.torch:AutoRecTorch",
    "mxnet": "autorec.models.mxnet:AutoRecMXNet",
}
# AutoRec names -> the parameters the name fixes
AUTOREC_NAMES: dict[str, dict[str, Any]] = {
    "autorec": {},
    "i-autorec": {"based": "item"},
    "u-autorec": {"based": "user"},
}
# backend -> (module that must be importable, pip extra that installs it)
BACKEND_DEPENDENCIES: dict[str, tuple[str, str] | None] = {
    "numpy": None,
    "torch": ("torch", "torch"),
    "mxnet": ("mxnet", "mxnet"),
    "surprise": ("surprise", "surprise"),
}
FAMILIES: dict[str, str] = {
    "global-mean": "baseline",
    "bias-only": "baseline",
    "als": "mf",
    "biased-mf": "mf",
    "d2l-mf": "mf",
    "surprise-svd": "mf",
    "surprise-svdpp": "mf",
}
# parameters the harness controls for every run (set from the run, never from a config)
HARNESS_PARAMS = ("seed", "devices", "cold_start")
# execution settings: passed to the model but not part of a run's identity
EXECUTION_PARAMS = ("threads",)


def _baselines() -> dict[str, dict[str, str]]:
    import baselines
    return baselines.MODELS


def names() -> list[str]:
    """Every registry name (AutoRec names first, then the baselines, each group sorted)."""
    return sorted(AUTOREC_NAMES) + sorted(_baselines())


def backends(name: str) -> list[str]:
    """The backends of ``name``, its default first."""
    if name in AUTOREC_NAMES:
        return list(AUTOREC_BACKENDS)
    if name in _baselines():
        return list(_baselines()[name])
    if ":" in name:
        return [get(name).backend]
    raise ConfigError(f"unknown model {name!r}; known: {names()} (or an import string 'module:Class')")


def default_backend(name: str) -> str:
    return backends(name)[0]


@dataclass(frozen=True)
class Algorithm:
    """One model in one backend, not yet imported."""

    name: str
    backend: str
    target: str                                  # "module:Class"
    family: str
    fixed: dict[str, Any] = field(default_factory=dict)  # parameters the name fixes

    # ------------------------------------------------------------------ import
    def check_dependencies(self) -> None:
        """:class:`MissingDependencyError` naming the fix when the backend's framework is absent."""
        dep = BACKEND_DEPENDENCIES.get(self.backend)
        if dep is None:
            return
        module, extra = dep
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(
                f"model {self.name!r} with backend {self.backend!r} needs the optional package "
                f"{module!r}, which is not installed; install it with `pip install .[{extra}]`")

    def load(self) -> type:
        """Import and return the class (imports the backend's framework)."""
        self.check_dependencies()
        module, _, attr = self.target.partition(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
                raise ConfigError(f"model {self.name!r} ({self.backend}): module {module!r} does not exist "
                                  f"in this checkout") from None
            raise
        try:
            cls = getattr(mod, attr)
        except AttributeError:
            raise ConfigError(f"model {self.name!r}: {module!r} has no attribute {attr!r}") from None
        if not hasattr(cls, "from_params"):
            raise ConfigError(f"model {self.name!r}: {self.target} has no from_params(dict) classmethod")
        return cls

    # ------------------------------------------------------------------ parameters
    def param_names(self) -> set[str] | None:
        """The parameters the class accepts (``None`` when it does not declare them)."""
        if self.family == "autorec":
            from autorec.config import AutoRecConfig
            return {f.name for f in dataclasses.fields(AutoRecConfig)}
        cls = self.load()
        table = getattr(cls, "PARAMS", None)
        if isinstance(table, Mapping):
            return set(table)
        return None

    def epochs_param(self) -> str | None:
        """The name of the parameter that sets the number of epochs / sweeps, if any."""
        accepted = self.param_names() or set()
        for key in ("epochs", "n_epochs", "n_iter"):
            if key in accepted:
                return key
        return None

    def merge(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with the name's fixed parameters applied (a conflicting value is an error)."""
        out = dict(params)
        for key, value in self.fixed.items():
            if key in out and out[key] != value:
                raise ConfigError(f"model {self.name!r} fixes {key}={value!r}; got {key}={out[key]!r} "
                                  f"(use model 'autorec' to choose {key} freely)")
            out[key] = value
        return out

    def build(self, params: Mapping[str, Any]):
        """The model, from ``from_params`` (validates every parameter)."""
        cls = self.load()
        return cls.from_params(self.merge(params))

    def resolve(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The full resolved parameters (``model.params()``) after validating ``params`` by building
        the model.  Several devices for torch AutoRec mean data-parallel training
        (:func:`autorec.models.torch.fit_distributed`): validated as the config plus each device."""
        merged = self.merge(params)
        devices = list(merged.get("devices") or [])
        if self.family == "autorec" and self.backend == "torch" and len(devices) > 1:
            from autorec.config import AutoRecConfig
            cfg = AutoRecConfig.from_dict(merged)
            for dev in dict.fromkeys(devices):
                self.build({**merged, "devices": [dev]})  # each device exists (ConfigError if not)
            return _plain(cfg.to_dict())
        return _plain(self.build(merged).params())

    def launcher(self, devices: list[str] | tuple[str, ...]) -> str:
        """How a run with ``devices`` trains: ``single``, ``ddp`` (torch AutoRec, one process per
        device) or ``contexts`` (one process, several devices / MXNet contexts)."""
        if len(devices) <= 1:
            return "single"
        if self.family == "autorec" and self.backend == "torch":
            return "ddp"
        return "contexts"


def get(name: str, backend: str | None = None) -> Algorithm:
    """The :class:`Algorithm` ``name`` in ``backend`` (default: the model's first backend)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")
    if name in AUTOREC_NAMES:
        backend = backend or default_backend(name)
        if backend not in AUTOREC_BACKENDS:
            raise ConfigError(f"model {name!r} has no backend {backend!r}; its backends: {list(AUTOREC_BACKENDS)}")
        return Algorithm(name, backend, AUTOREC_BACKENDS[backend], "autorec", dict(AUTOREC_NAMES[name]))
    models = _baselines()
    if name in models:
        entry = models[name]
        backend = backend or next(iter(entry))
        if backend not in entry:
            raise ConfigError(f"model {name!r} has no backend {backend!r}; its backends: {list(entry)}")
        return Algorithm(name, backend, entry[backend], FAMILIES.get(name, "other"))
    if ":" in name:
        module, _, attr = name.partition(":")
        if not module or not attr:
            raise ConfigError(f"model {name!r}: an import string must read 'package.module:Class'")
        probe = Algorithm(name, "custom", name, "other")
        cls = probe.load()
        cls_backend = str(getattr(cls, "backend", "custom"))
        if backend is not None and backend != cls_backend:
            raise ConfigError(f"model {name!r} has backend {cls_backend!r}, not {backend!r}")
        family = str(getattr(cls, "family", "other"))
        return Algorithm(name, cls_backend, name, family)
    raise ConfigError(f"unknown model {name!r}; known: {names()} (or an import string 'module:Class')")


def display_name(model: str, params: Mapping[str, Any]) -> str:
    """A readable name for tables: ``I-AutoRec`` / ``U-AutoRec`` (``deep`` when several hidden
    layers) for AutoRec, the registry name otherwise."""
    if model in AUTOREC_NAMES:
        based = params.get("based", "item")
        label = "I-AutoRec" if based == "item" else "U-AutoRec"
        hidden = params.get("hidden") or []
        if isinstance(hidden, (list, tuple)) and len(hidden) > 1:
            label += " (deep)"
        return label
    return model


def family(model: str) -> str:
    if model in AUTOREC_NAMES:
        return "autorec"
    return FAMILIES.get(model, "other")


def _plain(value: Any) -> Any:
    """JSON-ready copy: tuples -> lists, numpy scalars -> Python numbers, dict keys sorted later."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and type(value).__module__ == "numpy":
        return value.item()
    return value
