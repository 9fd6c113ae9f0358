"""What AutoRec computes, independent of the framework (numpy only): the one definition both
backends follow, so that one config and seed train the same model in PyTorch and in MXNet.

- **the network**: :func:`layer_sizes`, :func:`layer_activations`, :func:`check_weights` (the
  weight-layout contract of :mod:`autorec.models.autorec.config`), :func:`initial_weights` (drawn
  with numpy, identical in every backend);
- **the objective**: :func:`loss_multiplier` (how the sum of squared errors at the observed entries
  of a batch is scaled per ``config.loss``), :func:`paper_reg_fraction`, :func:`check_output_range`;
- **the schedule**: :func:`lr_at`, :func:`epoch_seed` (dropout masks), :func:`epoch_batches`
  (the row batches of an epoch, from :mod:`autorec.models.batching`), :class:`EpochStats`.

Model semantics (both backends): layer k maps ``sizes[k] -> sizes[k+1]`` with ``sizes = [n_in,
*hidden, n_in]``; hidden layers use ``hidden_activation``, the output layer ``output_activation``;
dropout (``config.dropout``) is applied to the output of every hidden layer in training (for the
one-hidden-layer model that is D2L's dropout on the encoder output).  Training sees observed entries
only: with SSE the sum of squared errors at the observed entries of a batch of ``b`` rows (``nnz``
of them) and ``n_in`` columns, the batch objective is ``loss_multiplier(...) * SSE`` plus, for
``reg_form="paper"``, ``reg/2 * sum ||W_k||^2 * b / n_rows`` (weight matrices only).  With
``reg_form="wd"`` the optimizer applies coupled weight decay ``reg`` to every parameter.  Epoch
numbers are 1-based everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from autorec.errors import ConfigError, DataError
from autorec.models.autorec.config import AutoRecConfig
from autorec.models.batching import batches, epoch_order


# ====================================================================== the network
def layer_sizes(config: AutoRecConfig, n_in: int) -> list[int]:
    """``[n_in, *hidden, n_in]``: layer k maps ``sizes[k]`` inputs to ``sizes[k+1]`` outputs."""
    if int(n_in) <= 0:
        raise DataError(
            f"AutoRec input width is {n_in}: the train part has no {'users' if config.based == 'item' else 'items'}"
        )
    return [int(n_in), *[int(h) for h in config.hidden], int(n_in)]


def layer_activations(config: AutoRecConfig) -> list[str]:
    """Activation of each layer: ``hidden_activation`` for hidden layers, then ``output_activation``."""
    return [config.hidden_activation] * len(config.hidden) + [config.output_activation]


def expected_shapes(sizes: list[int]) -> dict[str, tuple[int, ...]]:
    """``W{k}: (sizes[k+1], sizes[k])``, ``b{k}: (sizes[k+1],)`` in the order ``W0, b0, W1, b1, ...``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(len(sizes) - 1):
        shapes[f"W{k}"] = (sizes[k + 1], sizes[k])
        shapes[f"b{k}"] = (sizes[k + 1],)
    return shapes


def check_weights(weights: Any, sizes: list[int], where: str = "set_weights") -> dict[str, np.ndarray]:
    """Float32 C-contiguous copies of ``weights`` checked against the layout for ``sizes``;
    :class:`ConfigError` naming missing, unexpected, mis-shaped or non-finite arrays."""
    shapes = expected_shapes(sizes)
    if not isinstance(weights, dict):
        raise ConfigError(f"{where}: weights must be a dict name -> array, got {type(weights).__name__}")
    missing = [k for k in shapes if k not in weights]
    extra = sorted(set(weights) - set(shapes))
    if missing or extra:
        raise ConfigError(
            f"{where}: weight names do not match layer sizes {sizes}: missing {missing}, unexpected {extra} "
            f"(layout W0,b0,W1,b1,... with W{{k}} of shape (out, in))"
        )
    out = {}
    for name, shape in shapes.items():
        arr = np.ascontiguousarray(np.asarray(weights[name], dtype=np.float32))
        if arr.shape != shape:
            raise ConfigError(f"{where}: {name} has shape {arr.shape}, expected {shape} for layer sizes {sizes}")
        if not np.all(np.isfinite(arr)):
            raise ConfigError(f"{where}: {name} holds NaN or infinite values")
        out[name] = arr.copy()
    return out


def initial_weights(config: AutoRecConfig, sizes: list[int]) -> dict[str, np.ndarray] | None:
    """Initial weights drawn with numpy from ``config.seed`` (identical in every backend).

    - ``normal``: N(0, init_scale) weights, zero biases: exactly what D2L's
      ``net.initialize(mx.init.Normal(0.01))`` does in Gluon, where a ``Dense`` layer's own
      ``bias_initializer='zeros'`` wins over the global initializer (checked on mxnet 1.9.1);
    - ``uniform``: U(-init_scale, init_scale) for weights and biases;
    - ``xavier``: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot uniform, as torch's
      ``xavier_uniform_`` and Gluon's default ``Xavier()``) for weights, zero biases;
    - ``default``: ``None``: the backend uses its framework's own default initialisation.
    """
    if config.init == "default":
        return None
    rng = np.random.default_rng([int(config.seed), 0xA070EC])
    out: dict[str, np.ndarray] = {}
    for k in range(len(sizes) - 1):
        fan_in, fan_out = sizes[k], sizes[k + 1]
        if config.init == "normal":
            w = rng.normal(0.0, config.init_scale, size=(fan_out, fan_in))
            b = np.zeros(fan_out)
        elif config.init == "uniform":
            w = rng.uniform(-config.init_scale, config.init_scale, size=(fan_out, fan_in))
            b = rng.uniform(-config.init_scale, config.init_scale, size=(fan_out,))
        else:  # xavier
            a = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-a, a, size=(fan_out, fan_in))
            b = np.zeros(fan_out)
        out[f"W{k}"] = w.astype(np.float32)
        out[f"b{k}"] = b.astype(np.float32)
    return out


# ====================================================================== the objective
def loss_multiplier(form: str, batch_rows: int, n_in: int, nnz: int) -> float:
    """The factor applied to the batch's sum of squared errors at observed entries.

    - ``d2l``: ``0.5 / (batch_rows * n_in)``: Gluon's ``L2Loss`` (0.5 * mean over the n_in outputs of
      each row, output masked by the input) summed over the batch, then ``trainer.step(batch_size)``;
    - ``observed-sum``: 1 (the paper's objective);
    - ``observed-mean``: ``1 / nnz`` (the mean squared error over the observed entries).

    In data-parallel training pass the *global* batch's rows and nnz (and multiply by the world size
    when gradients are averaged across ranks), so every rank scales its share identically.
    """
    if form == "d2l":
        return 0.5 / (max(int(batch_rows), 1) * max(int(n_in), 1))
    if form == "observed-sum":
        return 1.0
    if form == "observed-mean":
        return 1.0 / max(int(nnz), 1)
    raise ConfigError(f"loss={form!r} is not one of ['d2l', 'observed-sum', 'observed-mean']")


def paper_reg_fraction(batch_rows: int, n_rows: int) -> float:
    """The share of the ``paper`` regulariser ``reg/2 * sum ||W||^2`` a batch adds (one full term
    per epoch)."""
    return float(batch_rows) / float(max(int(n_rows), 1))


#: output activations with a bounded range: (low, high)
BOUNDED_OUTPUTS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def check_output_range(config: AutoRecConfig, rating_scale: tuple[float, float]) -> None:
    """A :class:`ConfigError` when the output activation cannot reach the ratings (a sigmoid
    output lies in (0, 1); on a 1..5 scale every prediction would be clipped to the minimum and the
    run would train to a meaningless RMSE)."""
    rng = BOUNDED_OUTPUTS.get(config.output_activation)
    if rng is None:
        return
    lo, hi = (float(x) for x in rating_scale)
    if lo < rng[0] or hi > rng[1]:
        raise ConfigError(
            f"output_activation={config.output_activation!r} outputs values in {rng} but the ratings are on "
            f"[{lo:g}, {hi:g}]; use 'identity' (or an unbounded activation), or rescale the ratings into {rng} first"
        )


# ====================================================================== the schedule
def lr_at(config: AutoRecConfig, epoch: int) -> float:
    """Learning rate of (1-based) ``epoch``: constant, step (``lr * lr_gamma ** ((epoch-1) //
    lr_step)``) or cosine (``lr * (1 + cos(pi * (epoch-1) / epochs)) / 2``)."""
    e = max(int(epoch) - 1, 0)
    if config.lr_schedule == "step":
        return float(config.lr * config.lr_gamma ** (e // int(config.lr_step)))
    if config.lr_schedule == "cosine":
        return float(config.lr * 0.5 * (1.0 + math.cos(math.pi * e / int(config.epochs))))
    return float(config.lr)


def epoch_seed(seed: int, epoch: int) -> int:
    """The framework RNG seed for (1-based) ``epoch`` (dropout masks): reseeding at each epoch start
    makes a resumed run draw the same masks as an uninterrupted one."""
    return int(np.random.default_rng([int(seed), int(epoch), 0xD120]).integers(0, 2**31 - 1))


def epoch_batches(n_rows: int, config: AutoRecConfig, epoch: int) -> list[np.ndarray]:
    """The row batches of (1-based) ``epoch``; for full-batch optimizers the chunks of one step."""
    return batches(epoch_order(int(n_rows), int(config.seed), int(epoch)), int(config.batch_size))


@dataclass
class EpochStats:
    """Accumulates the observed squared error of an epoch; :meth:`result` gives ``train_loss`` (the
    epoch's objective per ``config.loss`` computed on all its rows, without the regulariser),
    ``train_rmse`` (over the observed entries, in training mode) and ``steps``."""

    form: str
    n_in: int
    sse: float = 0.0
    nnz: int = 0
    rows: int = 0
    steps: int = 0

    def add(self, sse: float, nnz: int, rows: int) -> None:
        self.sse += float(sse)
        self.nnz += int(nnz)
        self.rows += int(rows)

    def result(self) -> dict[str, float]:
        loss = loss_multiplier(self.form, self.rows, self.n_in, self.nnz) * self.sse
        return {
            "train_loss": float(loss),
            "train_rmse": float(math.sqrt(self.sse / self.nnz)) if self.nnz else float("nan"),
            "steps": int(self.steps),
        }
