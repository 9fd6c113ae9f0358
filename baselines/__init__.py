"""Matrix-factorisation baselines, behind a lazy registry (importing this package imports no framework).

``MODELS`` maps a model name to its import strings per backend (the first backend listed is the
default); ``get(name, backend=None)`` imports and returns the class.  Every class implements
:class:`autorec.models.base.Recommender` and has ``from_params(dict)``.

=================  =========  ==========================================================
name               backends   what
=================  =========  ==========================================================
global-mean        numpy      the mean training rating
bias-only          numpy      mu + b_u + b_i, alternating closed-form ridge updates
als                numpy      biased MF by alternating least squares (closed form)
biased-mf          numpy      Funk / surprise-SVD SGD (vectorised minibatches; 1 = exact)
                   torch      same model, Adam (default) or plain SGD on minibatches
d2l-mf             torch      the D2L chapter's MF, MXNet semantics re-implemented
                   mxnet      the D2L chapter's MF in Gluon, as the chapter trains it
surprise-svd       surprise   scikit-surprise's SVD on our split
surprise-svdpp     surprise   scikit-surprise's SVD++ on our split
=================  =========  ==========================================================
"""

from __future__ import annotations

import importlib

from autorec.errors import ConfigError

MODELS: dict[str, dict[str, str]] = {
    "global-mean": {"numpy": "baselines.simple:GlobalMean"},
    "bias-only": {"numpy": "baselines.simple:BiasOnly"},
    "als": {"numpy": "baselines.als:ALS"},
    "biased-mf": {"numpy": "baselines.sgd:BiasedMFSGD", "torch": "baselines.mf_torch:BiasedMFTorch"},
    "d2l-mf": {"torch": "baselines.mf_torch:D2LMFTorch", "mxnet": "baselines.mf_mxnet:D2LMFMXNet"},
    "surprise-svd": {"surprise": "baselines.surprise_models:SurpriseSVD"},
    "surprise-svdpp": {"surprise": "baselines.surprise_models:SurpriseSVDpp"},
}


def names() -> list[str]:
    return sorted(MODELS)


def backends(name: str) -> list[str]:
    """The backends of ``name``, default first."""
    return list(_entry(name))


def default_backend(name: str) -> str:
    return backends(name)[0]


def import_string(name: str, backend: str | None = None) -> str:
    entry = _entry(name)
    if backend is None:
        return next(iter(entry.values()))
    if backend not in entry:
        raise ConfigError(f"model {name!r} has no backend {backend!r}; its backends: {list(entry)}")
    return entry[backend]


def get(name: str, backend: str | None = None) -> type:
    """The class of model ``name`` in ``backend`` (default: its first backend).

    Unknown names or backends raise :class:`ConfigError` listing what exists.  Importing the class
    never imports an optional framework; constructing it raises
    :class:`~autorec.errors.MissingDependencyError` when the framework is absent.
    """
    target = import_string(name, backend)
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _entry(name: str) -> dict[str, str]:
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(f"unknown baseline model {name!r}; known: {names()}")
    return MODELS[name]
