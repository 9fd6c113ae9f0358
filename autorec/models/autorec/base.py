"""The framework-free half of AutoRec: what every backend shares on the model contract.

:class:`AutoRecBase` holds the configuration, the train matrix (rows of the rating matrix: items
for I-AutoRec, users for U-AutoRec), the weight-layout contract (``get_weights`` /
``set_weights``), prediction (pairs grouped by input row, each needed row reconstructed once, in
bounded-memory groups), ``reconstruct`` and the saved-model file.  A backend
(:mod:`autorec.models.autorec.torch`, :mod:`autorec.models.autorec.mxnet`) supplies the tensor
work: ``_build`` (a network with the configured initialisation), ``_assign`` (checked weights into
it), ``get_weights``, ``_trainer`` (its epoch trainer), ``_estimate_group`` and
``_reconstruct_batch``.  Training goes through the one loop (:mod:`autorec.models.training`).
"""

from __future__ import annotations

import math
import os
import warnings
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np
import scipy.sparse as sp

from autorec.env import set_threads
from autorec.errors import ConfigError, DataError
from autorec.interactions import Interactions
from autorec.models.autorec.config import AutoRecConfig
from autorec.models.autorec.rows import PairGroup, group_pairs, pairs_to_rows
from autorec.models.autorec.semantics import check_output_range, check_weights, initial_weights, layer_sizes
from autorec.models.base import FitInfo, IterativeRecommender, NotFittedError, ProgressFn, TrainFacts
from autorec.models.training import atomic_savez, diverged, json_array, json_from_array, read_npz

MODEL_FORMAT = "autorec-model/1"

M = TypeVar("M", bound="AutoRecBase")


class AutoRecBase(IterativeRecommender[AutoRecConfig]):
    """AutoRec (Sedhain et al., WWW 2015): ``h(r) = f(W_L ... g(W_0 r + b_0) ... + b_L)``
    reconstructing each row of the rating matrix from its observed entries.

    ``AutoRecTorch(config)``, ``AutoRecTorch({"hidden": [500]})`` or ``AutoRecTorch(hidden=(500,))``
    (likewise ``AutoRecMXNet``).  ``fit(train, valid, initial_weights=...)`` starts from given
    weights (contract layout) instead of the configured initialisation.
    """

    name = "autorec"
    family = "autorec"
    Config = AutoRecConfig
    version = 1
    #: the backend's knobs accepted in ``config.extra``
    KNOWN_EXTRA: ClassVar[tuple[str, ...]] = ()

    # The tuner's default space.  Common part: the paper's hidden size 500 with 300 and 1000 beside
    # it (the paper's Figure 2 shows ML-1M I-AutoRec still improving from 300 to 500 and flat above);
    # D2L's dropout 0.05 between none and a strong 0.2; the best epoch kept.  Variants, because each
    # optimizer needs its own objective, ranges and epoch budget (a budget, not a tuned value: early
    # stopping on validation picks the epoch):
    # - rprop: the paper's objective (sum of squared errors at observed entries plus
    #   lambda/2 (||W||^2 + ||V||^2)) and optimizer; the paper tunes lambda over
    #   {0.001, 0.01, 0.1, 1, 100, 1000}, so log-uniform over that span.  Rprop takes one full-batch
    #   step per epoch and reaches its best ML-1M epoch at 60-500 depending on lambda (measured):
    #   500 epochs, patience 20.  Its lr is the initial step size (torch's default 0.01; steps adapt);
    # - lbfgs: the same objective; one L-BFGS iteration (one full-batch gradient) per epoch, its
    #   curvature history kept across epochs, so the same 500-epoch budget as Rprop (torch's default
    #   of 20 iterations per step made a hidden-1000 epoch cost 150 s here); its lr scales each step
    #   (1 is the textbook step; smaller guards against an overshoot without line search);
    # - adam: D2L's training (Gluon L2Loss) or the mean over observed entries, coupled weight decay
    #   from negligible to strong (D2L uses 1e-5), lr around D2L's 0.002; 300 epochs, patience 10
    #   (the tuned ML-100K U-AutoRec still improved past epoch 120).
    SPACE: ClassVar[dict[str, Any]] = {
        "hidden": [[300], [500], [1000]],
        "dropout": [0.0, 0.05, 0.2],
        "restore_best": True,
        "one_of": {
            "rprop": {
                "optimizer": "rprop",
                "loss": "observed-sum",
                "reg_form": "paper",
                "reg": {"dist": "loguniform", "low": 1e-3, "high": 1e3},
                "lr": {"dist": "loguniform", "low": 1e-3, "high": 0.1},
                "epochs": 500,
                "patience": 20,
            },
            "lbfgs": {
                "optimizer": "lbfgs",
                "loss": "observed-sum",
                "reg_form": "paper",
                "reg": {"dist": "loguniform", "low": 1e-3, "high": 1e3},
                "lr": {"dist": "loguniform", "low": 0.01, "high": 1.0},
                "extra": {"lbfgs_max_iter": 1},
                "epochs": 500,
                "patience": 20,
            },
            "adam": {
                "optimizer": "adam",
                "loss": ["d2l", "observed-mean"],
                "reg_form": "wd",
                "reg": {"dist": "loguniform", "low": 1e-6, "high": 1e-2},
                "lr": {"dist": "loguniform", "low": 3e-4, "high": 1e-2},
                "epochs": 300,
                "patience": 10,
            },
        },
    }

    def __init__(self, config: AutoRecConfig | Mapping[str, Any] | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        unknown = sorted(set(self.config.extra) - set(self.KNOWN_EXTRA))
        if unknown:
            raise ConfigError(
                f"{self.label()}: unknown {self.backend} backend knob(s) in extra: {unknown}; "
                f"known: {list(self.KNOWN_EXTRA)}"
            )
        self._check_extra_values()
        self.net: Any = None
        self._train: Interactions | None = None
        self._csr: sp.csr_matrix | None = None
        self._initial_weights: dict[str, np.ndarray] | None = None  # a fit option, held during one fit

    def _check_extra_values(self) -> None:
        """The values of the knobs in ``extra``, refused before any work (whichever backend knows
        them: unknown ones were refused already): a switch is true or false (the string "no" would
        count as on), a count a positive integer, a momentum in [0, 1)."""
        extra, label = self.config.extra, self.label()
        for key in ("record_batch_losses", "fused_optimizer", "fused_step"):
            if key in extra and not isinstance(extra[key], bool):
                raise ConfigError(f"{label}: extra[{key!r}]={extra[key]!r} must be true or false")
        for key in ("predict_batch_rows", "lbfgs_max_iter", "lbfgs_history"):
            n = extra.get(key)
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
                raise ConfigError(f"{label}: extra[{key!r}]={n!r} must be a positive integer")
        mom = extra.get("sgd_momentum", 0.0)
        if not isinstance(mom, (int, float)) or isinstance(mom, bool) or not 0.0 <= float(mom) < 1.0:
            raise ConfigError(f"{label}: extra['sgd_momentum']={mom!r} must be a number in [0, 1)")

    @classmethod
    def display_name(cls, params: Mapping[str, Any]) -> str:
        """``I-AutoRec`` / ``U-AutoRec``, with ``(deep)`` for several hidden layers."""
        label = "I-AutoRec" if params.get("based", "item") == "item" else "U-AutoRec"
        hidden = params.get("hidden") or []
        if isinstance(hidden, (list, tuple)) and len(hidden) > 1:
            label += " (deep)"
        return label

    # ------------------------------------------------------------------ backend hooks
    @abstractmethod
    def _build(self, n_in: int) -> None:
        """A fresh network of input width ``n_in`` in ``self.net``, initialised as configured."""

    @abstractmethod
    def _assign(self, weights: dict[str, np.ndarray]) -> None:
        """Checked contract-layout weights into ``self.net``."""

    @abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]:
        """``W0, b0, W1, b1, ...`` as float32 numpy copies (the layout of
        :mod:`autorec.models.autorec.config`)."""

    @abstractmethod
    def _trainer(self) -> Any:
        """The backend's epoch trainer over ``self.train_matrix`` and ``self.net``."""

    @abstractmethod
    def _estimate_group(self, group: PairGroup) -> np.ndarray:
        """The outputs at ``group``'s (row, column) pairs, in its order."""

    @abstractmethod
    def _reconstruct_batch(self, rows: np.ndarray) -> np.ndarray:
        """The dense ``(len(rows), n_in)`` reconstruction of ``rows`` of the train matrix."""

    def _predict_width(self) -> int:
        """The widest array a prediction group builds per row (a dense output row by default)."""
        return self.n_in

    def _predict_rows(self) -> int:
        """Rows per prediction group: ``extra["predict_batch_rows"]``, else ~16 MB of the widest
        per-row array (:meth:`_predict_width`)."""
        n = self.config.extra.get("predict_batch_rows")
        if n:
            return max(int(n), 1)
        return max(1, min(4096, (1 << 22) // max(self._predict_width(), 1)))

    def _fit_extra(self) -> dict[str, Any]:
        """Facts of a finished fit recorded in ``FitInfo.extra``."""
        return {"backend": self.backend, "path": self.config.path, "n_rows": self.n_rows, "n_in": self.n_in}

    # ------------------------------------------------------------------ training
    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        *,
        progress: ProgressFn | None = None,
        initial_weights: dict[str, np.ndarray] | None = None,
        **options: Any,
    ) -> FitInfo:
        """The one loop (checkpoint / resume options pass through); ``initial_weights`` replaces the
        configured initialisation (e.g. to start both backends from identical weights)."""
        self._initial_weights = initial_weights
        try:
            info = super()._fit(train, valid, progress=progress, **options)
        finally:
            self._initial_weights = None
        info.extra.update(self._fit_extra())
        return info

    def make_trainer(self, train: Interactions, valid: Interactions | None) -> Any:
        """The train matrix and a fresh network (seeded initialisation, or the fit's
        ``initial_weights``), then the backend's epoch trainer."""
        check_output_range(self.config, train.rating_scale)
        set_threads(self.config.threads, mxnet=self.backend == "mxnet")
        self._attach(train)
        self._build(self.n_in)
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
        return self._trainer()

    def check_batch_loss(self, value: float, *, epoch: int, batch: int) -> None:
        """:class:`~autorec.errors.TrainingDivergedError` naming epoch and batch for a non-finite
        batch objective (called by the trainers after every forward pass)."""
        if not math.isfinite(value):
            raise diverged(self.label(), self.config, epoch=epoch, batch=batch, what="the training loss", value=value)

    def _need_net(self, what: str) -> None:
        if self.net is None:
            raise NotFittedError(f"{self.label()}: {what} needs weights; call fit(), set_weights() or load() first")

    def _attach(self, train: Interactions) -> None:
        self._train = train
        self._csr = train.csr(self.config.based)

    def _initial(self, n_in: int) -> tuple[list[int], dict[str, np.ndarray] | None]:
        """The layer sizes for input width ``n_in`` and the configured initial weights (``None``:
        the framework's own initialisation)."""
        sizes = layer_sizes(self.config, n_in)
        return sizes, initial_weights(self.config, sizes)

    # ------------------------------------------------------------------ weights and the train matrix
    @property
    def train_matrix(self) -> sp.csr_matrix:
        """The CSR matrix AutoRec reconstructs: items x users (I-AutoRec) or users x items."""
        if self._csr is None:
            raise NotFittedError(f"{self.label()}: no train matrix yet; call fit(train) or load a saved model")
        return self._csr

    @property
    def n_rows(self) -> int:
        return int(self.train_matrix.get_shape()[0])

    @property
    def n_in(self) -> int:
        return int(self.train_matrix.get_shape()[1])

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load weights in the contract layout (``W0, b0, W1, b1, ...``); builds the network from
        their shapes if there is none yet."""
        if self.net is None:
            if not isinstance(weights, dict) or "W0" not in weights:
                raise ConfigError(
                    f"{self.label()}: set_weights needs a dict holding at least W0 (shape (hidden, n_in))"
                )
            self._build(int(np.shape(weights["W0"])[1]))
        net: Any = self.net
        self._assign(check_weights(weights, net.sizes, where=f"{self.label()}: set_weights"))

    # ------------------------------------------------------------------ prediction
    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Raw reconstructions at (user, item) pairs: pairs grouped by input row, each needed row
        reconstructed once, in bounded-memory groups (on the sparse path only the needed outputs
        are evaluated)."""
        rows, cols = pairs_to_rows(users, items, self.config.based)
        out = np.empty(len(rows), dtype=np.float32)
        max_pairs = 1 << 14 if self.config.path == "sparse" else 1 << 20
        for g in group_pairs(rows, cols, max_rows=self._predict_rows(), max_pairs=max_pairs):
            out[g.index] = self._estimate_group(g)
        return out

    def reconstruct(
        self, rows: np.ndarray | None = None, batch_size: int = 256
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_indices, outputs)`` with ``outputs`` the dense ``(len(row_indices), n_in)``
        reconstruction of those rows of the train matrix (all rows by default), ``batch_size`` rows
        at a time (bounded memory)."""
        self._need_net("reconstruct")
        if isinstance(batch_size, bool) or int(batch_size) <= 0:
            raise ConfigError(f"{self.label()}: reconstruct batch_size={batch_size!r} must be > 0")
        n_rows = self.n_rows
        rows = np.arange(n_rows, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).ravel()
        if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
            raise DataError(f"{self.label()}: reconstruct row index outside [0, {n_rows})")
        for s in range(0, len(rows), int(batch_size)):
            part = rows[s : s + int(batch_size)]
            yield part, self._reconstruct_batch(part)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Config, weights and the train part (the inputs of prediction) in one ``.npz``, written
        atomically; one format for every backend (either backend loads it)."""
        if self.net is None or self._train is None or self.facts is None:
            raise NotFittedError(f"{self.label()}: save needs a fitted model; call fit(train) first")
        train = self._train
        fit = self.fit_info
        meta = {
            "format": MODEL_FORMAT,
            "config": self.config.to_dict(),
            "backend": self.backend,
            "n_users": int(train.n_users),
            "n_items": int(train.n_items),
            "rating_scale": [float(train.rating_scale[0]), float(train.rating_scale[1])],
            "meta": {"fit_info": None if fit is None else {"best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run}},
        }
        arrays = {
            "meta": json_array(meta),
            "train_users": np.asarray(train.users, dtype=np.int32),
            "train_items": np.asarray(train.items, dtype=np.int32),
            "train_ratings": np.asarray(train.ratings, dtype=np.float32),
        }
        arrays.update({f"w/{k}": np.asarray(v, dtype=np.float32) for k, v in self.get_weights().items()})
        atomic_savez(path, arrays)

    @classmethod
    def load(cls: type[M], path: str | os.PathLike, /, **changes: Any) -> M:
        """A model saved by :meth:`save` (by either backend), ready to predict; ``changes`` are
        config changes applied first (other ``devices``, the other ``path``, ``threads``)."""
        z = read_npz(path, "model")
        meta = json_from_array(z["meta"]) if "meta" in z else {}
        if meta.get("format") != MODEL_FORMAT:
            raise DataError(
                f"model file {os.fspath(path)!r} has format {meta.get('format')!r}, expected {MODEL_FORMAT!r}"
            )
        lo, hi = meta["rating_scale"]
        train = Interactions(
            users=z["train_users"].astype(np.int32),
            items=z["train_items"].astype(np.int32),
            ratings=z["train_ratings"].astype(np.float32),
            n_users=int(meta["n_users"]),
            n_items=int(meta["n_items"]),
            rating_scale=(float(lo), float(hi)),
        )
        config = dict(meta["config"])
        if meta.get("backend") != cls.backend and "extra" not in changes:
            # the other backend's knobs set how it trained (kernels, kvstore, ...): not this backend's
            extra = dict(config.get("extra") or {})
            other = sorted(set(extra) - set(cls.KNOWN_EXTRA))
            if other:
                warnings.warn(
                    f"{os.fspath(path)}: saved by the {meta.get('backend')} backend; its knob(s) {other} "
                    f"have no meaning in the {cls.backend} backend and are left out",
                    UserWarning,
                    stacklevel=2,
                )
                config["extra"] = {k: v for k, v in extra.items() if k in cls.KNOWN_EXTRA}
        model = cls({**config, **changes})
        model.facts = TrainFacts.of(train)
        model._attach(train)
        model._build(model.n_in)
        model.set_weights({k[2:]: v for k, v in z.items() if k.startswith("w/")})
        return model
