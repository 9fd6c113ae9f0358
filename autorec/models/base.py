"""The one model contract: every model (AutoRec in any backend, every baseline) is a
:class:`Recommender`.

A model is one class with class-level metadata (``name``, ``family``, ``backend``, its ``Config``
dataclass, its default search ``SPACE``, a ``version`` of its numerics) and three methods of its
own:

- ``_fit(train, valid, ...)`` learns (iterative models derive from :class:`IterativeRecommender`
  instead and only write ``make_trainer``; the one epoch loop is
  :func:`autorec.models.training.train_loop`);
- ``estimate(users, items)`` scores (user, item) pairs both known to the train part;
- nothing else: :meth:`Recommender.predict` applies the cold-start policy to pairs whose user or
  item has no training rating and clips every prediction to the rating scale (the
  scikit-surprise ``AlgoBase.predict`` / ``estimate`` split).

Adding a model is one file plus one line in :mod:`autorec.models.registry` (see CONTRIBUTING.md).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

import numpy as np

from autorec.errors import AutoRecBenchError, ConfigError, DataError, MissingDependencyError
from autorec.interactions import Interactions
from autorec.metrics import ColdStartPolicy, finalize, mae, rmse
from autorec.models.config import IterativeConfig, ModelConfig

# progress(epoch, n_epochs, record) is called after every epoch; record holds train_loss, valid_rmse, ...
ProgressFn = Callable[[int, int, dict], None]

C = TypeVar("C", bound=ModelConfig)


class NotFittedError(AutoRecBenchError):
    """``predict`` was called before ``fit``."""


@dataclass
class FitInfo:
    """What ``fit`` reports.

    ``history``: one dict per epoch (``epoch``, ``train_loss``, ``valid_rmse``, ``seconds`` and the
    model's own statistics); ``best_epoch``: the (1-based) epoch with the lowest validation RMSE
    (``None`` without validation); ``weights_epoch``: the epoch whose weights the model holds after
    ``fit`` (``best_epoch`` when the best weights were restored, else the last epoch);
    ``epochs_run``; ``extra``: model-specific facts (device, path, ...).
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    epochs_run: int = 0
    weights_epoch: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainFacts:
    """What ``predict`` needs to know about the train part: who is known (warm), the mean and the
    rating scale."""

    n_users: int
    n_items: int
    known_users: np.ndarray
    known_items: np.ndarray
    global_mean: float
    rating_scale: tuple[float, float]

    @classmethod
    def of(cls, train: Interactions) -> TrainFacts:
        return cls(
            int(train.n_users),
            int(train.n_items),
            train.known_users(),
            train.known_items(),
            train.global_mean,
            (float(train.rating_scale[0]), float(train.rating_scale[1])),
        )


class Recommender(ABC, Generic[C]):
    """Learns from a train part, then predicts ratings for (user, item) index pairs."""

    #: registry name (``als``, ``i-autorec``'s class says ``autorec``)
    name: ClassVar[str] = "recommender"
    #: ``autorec``, ``mf`` (matrix factorisation, Bayesian included) or ``baseline``
    family: ClassVar[str] = "other"
    #: ``numpy``, ``torch``, ``mxnet``, ``surprise``, ``myfm``: what the class computes with
    backend: ClassVar[str] = "numpy"
    #: the typed configuration
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    #: the default search space of the tuner (see :mod:`benchmarks.tuning`), beside the model
    SPACE: ClassVar[dict[str, Any]] = {}
    #: bumped whenever a change of the code changes the numbers a configuration produces: part of a
    #: run's identity, so older results are never taken for the new code's
    version: ClassVar[int] = 1
    #: importable modules the class needs and the pip extra that installs them
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: True where ``_fit`` scores the train part in a prediction pass of its own once the model is
    #: fitted (the one-shot models); ``fit(score_train=False)`` skips that pass. Iterative models
    #: get their train loss from the epochs themselves and always record it.
    train_pass: ClassVar[bool] = False

    config: C

    def __init__(self, config: C | Mapping[str, Any] | None = None, **params: Any) -> None:
        self.require()
        given: dict[str, Any] = {}
        if isinstance(config, ModelConfig):
            given = config.to_dict()
        elif isinstance(config, Mapping):
            given = dict(config)
        elif config is not None:
            raise ConfigError(
                f"{self.label()}: config must be a {self.Config.__name__} or a mapping, got {type(config).__name__}"
            )
        given.update(params)
        self.config = self.Config.from_dict(given, model=self.label())  # type: ignore[assignment]
        self.facts: TrainFacts | None = None
        self.fit_info: FitInfo | None = None

    # ------------------------------------------------------------------ metadata
    @classmethod
    def label(cls) -> str:
        return f"{cls.name} ({cls.backend})"

    @classmethod
    def require(cls) -> None:
        """:class:`MissingDependencyError` naming the ``pip install`` when a needed module is absent."""
        for module, extra in cls.requires:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise MissingDependencyError(
                    f"{cls.label()} needs the optional package {module!r}, which is not importable "
                    f"({exc}); install it with `pip install .[{extra}]`"
                ) from None

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None) -> Recommender:
        return cls(dict(params or {}))

    @classmethod
    def display_name(cls, params: Mapping[str, Any]) -> str:
        """A readable name for tables (AutoRec says I-AutoRec / U-AutoRec)."""
        return cls.name

    @classmethod
    def launcher(cls, devices: tuple[str, ...] | list[str]) -> str:
        """How a run on ``devices`` trains: ``single`` (one process, one device), ``contexts`` (one
        process, several devices) or ``ddp`` (one process per device, see :meth:`fit_parallel`)."""
        if len(devices) > 1:
            raise ConfigError(f"{cls.label()} trains on one device; got devices={list(devices)}")
        return "single"

    def params(self) -> dict[str, Any]:
        """The full resolved configuration (recorded in every raw result)."""
        return self.config.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.summary()})"

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train: Interactions,
        valid: Interactions | None = None,
        *,
        progress: ProgressFn | None = None,
        score_train: bool = True,
        **options: Any,
    ) -> FitInfo:
        """Learn from ``train``; ``valid`` (optional) drives early stopping and is scored per epoch.
        ``score_train=False`` skips the separate prediction pass over ``train`` that a one-shot model
        (:attr:`train_pass`) makes for its history's ``train_loss``, which is then None (a refit whose
        history nobody reads); it changes nothing else. ``options`` are the model's own (checkpoint /
        resume for iterative models)."""
        check_parts(self.label(), train, valid, cold_start=self.config.cold_start)
        if self.train_pass:
            options["score_train"] = bool(score_train)
        self.facts = TrainFacts.of(train)
        self.fit_info = None
        try:
            info = self._fit(train, valid if valid is not None and len(valid) else None, progress=progress, **options)
        except BaseException:
            # half-trained (or diverged) weights are no model: predict and save refuse until a fit succeeds
            self.facts = None
            raise
        self.fit_info = info
        return info

    @abstractmethod
    def _fit(
        self, train: Interactions, valid: Interactions | None, *, progress: ProgressFn | None, **options: Any
    ) -> FitInfo: ...

    # ------------------------------------------------------------------ predict
    @abstractmethod
    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Raw scores for (user, item) pairs whose user and item both have training ratings."""

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Final predictions: the cold-start policy for pairs whose user or item has no training
        rating, :meth:`estimate` for the others, every prediction clipped to the rating scale."""
        users, items = self._checked_pairs(users, items)
        cold = self.cold_mask(users, items)
        raw = np.zeros(len(users), dtype=np.float64)
        warm = ~cold
        if warm.any():
            scores = np.asarray(self.estimate(users[warm], items[warm]), dtype=np.float64)
            if scores.shape != (int(warm.sum()),):
                raise ValueError(
                    f"{self.label()}.estimate returned shape {scores.shape} for "
                    f"{int(warm.sum())} pairs; it must return one score per pair"
                )
            raw[warm] = scores
        facts = self._facts()
        fill = ColdStartPolicy.parse(self.config.cold_start).fill_value(facts.global_mean)
        try:
            return finalize(raw, cold, fill, facts.rating_scale)
        except FloatingPointError as exc:
            raise FloatingPointError(
                f"{self.label()}: {exc} (did training diverge? config: {self.config.summary()})"
            ) from None

    def cold_mask(self, users: Any, items: Any) -> np.ndarray:
        """True where the user or the item of a pair has no training rating."""
        users, items = self._checked_pairs(users, items)
        f = self._facts()
        return ~(f.known_users[users] & f.known_items[items])

    def evaluate(self, part: Interactions) -> dict[str, Any]:
        """RMSE / MAE of :meth:`predict` on ``part``, the number of cold pairs and the policy."""
        pred = self.predict(part.users, part.items)
        return {
            "rmse": rmse(pred, part.ratings),
            "mae": mae(pred, part.ratings),
            "n_cold_start": int(self.cold_mask(part.users, part.items).sum()),
            "n": len(part),
            "cold_start_policy": str(ColdStartPolicy.parse(self.config.cold_start)),
        }

    def _facts(self) -> TrainFacts:
        if self.facts is None:
            saved = " (or load a saved model)" if callable(getattr(type(self), "load", None)) else ""
            raise NotFittedError(f"{self.label()}: call fit(train){saved} before predict")
        return self.facts

    def _indices(self, values: Any, what: str) -> np.ndarray:
        """0-based indices as a 1-d int64 array; floats, strings and tables are refused, not cast
        (``1.9`` would silently become user 1)."""
        arr = np.asarray(values)
        if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
            raise DataError(f"{self.label()}: {what} indices must be integers, got {arr.dtype} values")
        if arr.ndim > 1:
            raise DataError(f"{self.label()}: {what} indices must be a 1-d array, got shape {arr.shape}")
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise DataError(f"{self.label()}: {what} index {int(arr.max())} is out of range")  # not wrapped negative
        return arr.astype(np.int64, copy=False).reshape(-1)

    def _checked_pairs(self, users: Any, items: Any) -> tuple[np.ndarray, np.ndarray]:
        f = self._facts()
        users, items = self._indices(users, "user"), self._indices(items, "item")
        if users.shape != items.shape:
            raise DataError(f"{self.label()}: predict got {users.size} users but {items.size} items")
        check_index_range(f"{self.label()}: predict's", "user", users, f.n_users)
        check_index_range(f"{self.label()}: predict's", "item", items, f.n_items)
        return users, items


class IterativeRecommender(Recommender[C]):
    """A model trained epoch by epoch: it writes :meth:`make_trainer`; the one loop
    (:func:`autorec.models.training.train_loop`) does early stopping, best-weights restore,
    divergence errors, progress, checkpoints and resume for every such model alike."""

    Config: ClassVar[type[ModelConfig]] = IterativeConfig

    @abstractmethod
    def make_trainer(self, train: Interactions, valid: Interactions | None) -> Any:
        """A fresh :class:`autorec.models.training.EpochTrainer` for this fit (the model's state
        initialised from ``config.seed``)."""

    def validation_rmse(self, valid: Interactions) -> float:
        """The per-epoch validation score (overridden by data-parallel fits that share the work)."""
        return self.evaluate(valid)["rmse"]

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        *,
        progress: ProgressFn | None = None,
        checkpoint: Any = None,
        checkpoint_every: int = 1,
        resume: Any = None,
    ) -> FitInfo:
        from autorec.models.training import data_fingerprint, train_loop

        trainer = self.make_trainer(train, valid)
        # checkpoints say what they were trained on (computed only where one is written or read)
        data_key = data_fingerprint(train, valid) if checkpoint is not None or resume is not None else None
        valid_fn = (lambda: self.validation_rmse(valid)) if valid is not None else None  # noqa: E731
        return train_loop(
            trainer,
            cast(IterativeConfig, self.config),
            model=self.label(),
            valid_fn=valid_fn,
            progress=progress,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            resume=resume,
            data_key=data_key,
        )


def check_parts(label: str, train: Interactions, valid: Interactions | None, *, cold_start: str | None = None) -> None:
    """``fit``'s argument checks: a non-empty, finite train part, a validation part (if any) in the
    same index space, and a ``cold_start`` constant (if given) on the train part's rating scale."""
    if not isinstance(train, Interactions):
        raise DataError(f"{label}: train must be autorec.interactions.Interactions, got {type(train).__name__}")
    _check_part(label, "train", train)
    if len(train) == 0:
        raise DataError(f"{label}: the train part is empty")
    r = np.asarray(train.ratings)
    if not np.all(np.isfinite(r)):
        raise DataError(f"{label}: {int((~np.isfinite(r)).sum())} train ratings are NaN or infinite")
    if cold_start is not None:
        ColdStartPolicy.parse(cold_start).check_scale(train.rating_scale)
    if valid is None:
        return
    if not isinstance(valid, Interactions):
        raise DataError(f"{label}: valid must be Interactions or None, got {type(valid).__name__}")
    _check_part(label, "valid", valid)
    if (valid.n_users, valid.n_items) != (train.n_users, train.n_items):
        raise DataError(
            f"{label}: valid has index space {valid.n_users}x{valid.n_items}, train "
            f"{train.n_users}x{train.n_items}; both must come from the same split"
        )


def _check_part(label: str, name: str, part: Interactions) -> None:
    """A part's arrays agree with each other and with its index space and scale (an index out of range
    raised deep in a model, and a negative one wrapped to the last user or item)."""
    users, items, ratings = (np.asarray(a) for a in (part.users, part.items, part.ratings))
    if not (users.ndim == items.ndim == ratings.ndim == 1 and len(users) == len(items) == len(ratings)):
        raise DataError(
            f"{label}: the {name} part's users, items and ratings must be 1-d arrays of one length, got shapes "
            f"{users.shape}, {items.shape}, {ratings.shape}"
        )
    for what, idx, n in (("user", users, part.n_users), ("item", items, part.n_items)):
        if idx.size and idx.dtype.kind not in "iu":
            raise DataError(f"{label}: the {name} part's {what} indices must be integers, got {idx.dtype}")
        check_index_range(f"{label}: the {name} part's", what, idx, n)
    lo, hi = (float(x) for x in part.rating_scale)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise DataError(
            f"{label}: the {name} part's rating scale {part.rating_scale} must be (low, high) with low < high"
        )


def check_index_range(whose: str, what: str, idx: np.ndarray, n: int) -> None:
    """:class:`DataError` (``"<whose> <what> indices run from A to B, outside the index space [0, n)"``)
    for an index outside ``[0, n)``: the one range check of fit's parts and predict's pairs."""
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= int(n)):
        raise DataError(
            f"{whose} {what} indices run from {int(idx.min())} to {int(idx.max())}, outside the index space "
            f"[0, {int(n)})"
        )
