"""The one model registry: every model a run, a sweep or the tuner may name.

One line per model name: its classes per backend as lazy import strings (the first backend is the
default), and the parameters the name fixes (``i-autorec`` is AutoRec with ``based = "item"``).
Everything else about a model (family, config, search space, display name, how it launches on
several devices, its numeric version) is class-level metadata of the class itself
(:class:`autorec.models.base.Recommender`).  Importing this module imports no framework.

``--model package.module:Class`` names any importable :class:`~autorec.models.base.Recommender`
outside the registry (its ``backend`` attribute is its backend).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autorec.errors import ConfigError, MissingDependencyError

_AUTOREC = {"torch": "autorec.models.autorec.torch:AutoRecTorch", "mxnet": "autorec.models.autorec.mxnet:AutoRecMXNet"}

#: name -> ({backend: "module:Class"}, parameters the name fixes)
MODELS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "autorec": (_AUTOREC, {}),
    "i-autorec": (_AUTOREC, {"based": "item"}),
    "u-autorec": (_AUTOREC, {"based": "user"}),
    "global-mean": ({"numpy": "baselines.simple:GlobalMean"}, {}),
    "bias-only": ({"numpy": "baselines.simple:BiasOnly"}, {}),
    "als": ({"numpy": "baselines.als:ALS"}, {}),
    "biased-mf": ({"numpy": "baselines.sgd:BiasedMFSGD", "torch": "baselines.mf_torch:BiasedMFTorch"}, {}),
    "d2l-mf": ({"torch": "baselines.mf_torch:D2LMFTorch", "mxnet": "baselines.mf_mxnet:D2LMFMXNet"}, {}),
    "surprise-svd": ({"surprise": "baselines.surprise_models:SurpriseSVD"}, {}),
    "surprise-svdpp": ({"surprise": "baselines.surprise_models:SurpriseSVDpp"}, {}),
    "bayesian-mf": ({"myfm": "baselines.bayes:BayesianMF"}, {}),
    "bayesian-svdpp": ({"myfm": "baselines.bayes:BayesianSVDpp"}, {}),
}

#: backend -> (module that must be importable, pip extra that installs it); None = always there
BACKENDS: dict[str, tuple[str, str] | None] = {
    "numpy": None,
    "torch": ("torch", "torch"),
    "mxnet": ("mxnet", "mxnet"),
    "surprise": ("surprise", "surprise"),
    "myfm": ("myfm", "bayes"),
}


def names() -> list[str]:
    return sorted(MODELS)


@dataclass(frozen=True)
class ModelRef:
    """One model name in one backend, not yet imported."""

    name: str
    backend: str
    target: str  # "module:Class"
    fixed: dict[str, Any] = field(default_factory=dict)  # parameters the name fixes

    def check_dependencies(self) -> None:
        """:class:`MissingDependencyError` naming the ``pip install`` when the backend's framework
        is absent (checked without importing it)."""
        dep = BACKENDS.get(self.backend)
        if dep is None:
            return
        module, extra = dep
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(
                f"model {self.name!r} with backend {self.backend!r} needs the optional package "
                f"{module!r}, which is not installed; install it with `pip install .[{extra}]`"
            )

    def load(self) -> type:
        """The class (this imports its module, and the module may import its framework)."""
        self.check_dependencies()
        return _import(self.target, self.name)

    def merge(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with the name's fixed parameters applied (a conflicting value is an error)."""
        out = dict(params)
        for key, value in self.fixed.items():
            if key in out and out[key] != value:
                raise ConfigError(
                    f"model {self.name!r} fixes {key}={value!r}; got {key}={out[key]!r} "
                    f"(use model 'autorec' to choose {key} freely)"
                )
            out[key] = value
        return out

    def build(self, params: Mapping[str, Any]):
        """An unfitted model from ``params`` (validated: :class:`ConfigError` on any bad value)."""
        return self.load()(self.merge(params))

    def space(self) -> dict[str, Any]:
        """The class's default search space, without the parameters the name fixes."""
        cls = self.load()
        return {k: v for k, v in dict(getattr(cls, "SPACE", {}) or {}).items() if k not in self.fixed}


def get(name: str, backend: str | None = None) -> ModelRef:
    """The :class:`ModelRef` of ``name`` in ``backend`` (default: the name's first backend)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")
    if name in MODELS:
        classes, fixed = MODELS[name]
        backend = backend or next(iter(classes))
        if backend not in classes:
            raise ConfigError(f"model {name!r} has no backend {backend!r}; its backends: {list(classes)}")
        return ModelRef(name, backend, classes[backend], dict(fixed))
    if ":" in name:
        module, _, attr = name.partition(":")
        if not module or not attr:
            raise ConfigError(f"model {name!r}: an import string must read 'package.module:Class'")
        cls = _import(name, name)
        cls_backend = str(getattr(cls, "backend", "numpy"))
        if backend is not None and backend != cls_backend:
            raise ConfigError(f"model {name!r} has backend {cls_backend!r}, not {backend!r}")
        return ModelRef(name, cls_backend, name)
    raise ConfigError(f"unknown model {name!r}; known: {names()} (or an import string 'module:Class')")


def backends(name: str) -> list[str]:
    """The backends of ``name``, its default first."""
    if name in MODELS:
        return list(MODELS[name][0])
    return [get(name).backend]


def _import(target: str, name: str) -> type:
    from autorec.models.base import Recommender

    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise ConfigError(f"model {name!r}: module {module!r} does not exist (is it on PYTHONPATH?)") from None
        raise
    cls = getattr(mod, attr, None)
    if cls is None:
        raise ConfigError(f"model {name!r}: {module!r} has no attribute {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, Recommender)):
        raise ConfigError(f"model {name!r}: {target} is not an autorec.models.base.Recommender subclass")
    return cls
