"""Framework-free parts of AutoRec training, shared by the PyTorch and the MXNet backends.

Nothing here imports a framework (numpy and scipy only).  A backend supplies the tensor work (one
epoch of optimizer steps, predictions for a group of rows, its optimizer state as bytes); this
module supplies everything else, so that both backends behave identically:

- **config**: :func:`resolve_config`, :func:`layer_sizes`, :func:`layer_activations`,
  :func:`weight_names`, :func:`check_weights`, :func:`initial_weights` (numpy init shared by both
  backends, so one seed gives the same initial weights everywhere), :func:`parse_device`.
- **semantics** (the one definition of the objective): :func:`loss_multiplier` (how the sum of
  squared errors at observed entries of a batch is scaled per ``config.loss``),
  :func:`paper_reg_fraction`, :func:`lr_at`, :func:`epoch_seed`, :func:`epoch_batches`,
  :func:`is_full_batch`, :class:`EpochStats`.
- **faults**: :func:`check_finite` raises :class:`~autorec.errors.TrainingDivergedError`.
- **the epoch loop**: :func:`run_training` (history, early stopping on validation RMSE with
  ``patience``, restoring the best weights, progress callback, periodic atomic checkpoints and
  resume), :func:`validation_rmse` / :func:`validation_sums`.
- **prediction**: :func:`pairs_to_rows`, :func:`check_pairs`, :func:`group_pairs` (pairs grouped by
  input row, in bounded-size groups), :func:`batch_entries`.
- **files**: :func:`save_checkpoint` / :func:`load_checkpoint`, :func:`save_model` /
  :func:`load_model` (config + weights + the train part needed for prediction), all written
  atomically (temp file in the same folder + ``os.replace``).

Model semantics (both backends): layer k maps ``sizes[k] -> sizes[k+1]`` with ``sizes = [n_in,
*hidden, n_in]``; hidden layers use ``hidden_activation``, the output layer ``output_activation``;
dropout (``config.dropout``) is applied to the output of every hidden layer in training (for the
one-hidden-layer model that is D2L's dropout on the encoder output).  Training sees observed entries
only: with SSE the sum of squared errors at the observed entries of a batch of ``b`` rows (``nnz``
of them) and ``n_in`` columns, the batch objective is ``loss_multiplier(...) * SSE`` plus, for
``reg_form="paper"``, ``reg/2 * sum ||W_k||^2 * b / n_rows`` (weight matrices only).  With
``reg_form="wd"`` the optimizer applies coupled weight decay ``reg`` to every parameter.
Epoch numbers are 1-based everywhere (history, ``lr_at``, ``epoch_seed``, ``epoch_batches``).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from autorec.config import AutoRecConfig
from autorec.atomic import atomic_write
from autorec.errors import ConfigError, DataError, TrainingDivergedError
from autorec.interactions import Interactions
from autorec.models.base import FitInfo, ProgressFn, Recommender
from autorec.models.batching import batches, epoch_order

CHECKPOINT_FORMAT = "autorec-checkpoint/1"
MODEL_FORMAT = "autorec-model/1"

# config keys that may differ between a checkpoint and the run resuming from it
RESUME_MUTABLE = ("epochs", "patience", "threads", "devices", "extra", "restore_best")


# ====================================================================== config
def resolve_config(config: "AutoRecConfig | dict[str, Any] | None") -> AutoRecConfig:
    """An :class:`AutoRecConfig` from a config, a dict of parameters, or ``None`` (defaults);
    validated, and a copy (changing it later does not change the model's config)."""
    if config is None:
        cfg = AutoRecConfig()
        cfg.validate()
        return cfg
    if isinstance(config, AutoRecConfig):
        return AutoRecConfig.from_dict(config.to_dict())
    if isinstance(config, dict):
        return AutoRecConfig.from_dict(config)
    raise ConfigError(f"AutoRec config must be an AutoRecConfig or a dict, got {type(config).__name__}")


def config_summary(config: AutoRecConfig) -> str:
    """A one-line description of a config for error messages."""
    c = config
    return (f"based={c.based} hidden={list(c.hidden)} {c.hidden_activation}/{c.output_activation} "
            f"optimizer={c.optimizer} lr={c.lr:g} schedule={c.lr_schedule} reg={c.reg:g} ({c.reg_form}) "
            f"loss={c.loss} dropout={c.dropout:g} batch_size={c.batch_size} init={c.init}"
            f"({c.init_scale:g}) path={c.path} seed={c.seed}")


def layer_sizes(config: AutoRecConfig, n_in: int) -> list[int]:
    """``[n_in, *hidden, n_in]``: layer k maps ``sizes[k]`` inputs to ``sizes[k+1]`` outputs."""
    if int(n_in) <= 0:
        raise DataError(f"AutoRec input width is {n_in}: the train part has no "
                        f"{'users' if config.based == 'item' else 'items'}")
    return [int(n_in), *[int(h) for h in config.hidden], int(n_in)]


def layer_activations(config: AutoRecConfig) -> list[str]:
    """Activation of each layer: ``hidden_activation`` for hidden layers, then ``output_activation``."""
    return [config.hidden_activation] * len(config.hidden) + [config.output_activation]


def weight_names(n_layers: int) -> list[str]:
    """``["W0", "b0", "W1", "b1", ...]``: the weight-layout contract of :mod:`autorec.config`."""
    out = []
    for k in range(n_layers):
        out += [f"W{k}", f"b{k}"]
    return out


def expected_shapes(sizes: list[int]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(len(sizes) - 1):
        shapes[f"W{k}"] = (sizes[k + 1], sizes[k])
        shapes[f"b{k}"] = (sizes[k + 1],)
    return shapes


def check_weights(weights: dict[str, Any], sizes: list[int], where: str = "set_weights") -> dict[str, np.ndarray]:
    """Validate a weight dict against the layout for ``sizes``; returns float32 C-contiguous copies.

    Raises :class:`ConfigError` naming missing, unexpected, mis-shaped or non-finite arrays."""
    shapes = expected_shapes(sizes)
    if not isinstance(weights, dict):
        raise ConfigError(f"{where}: weights must be a dict name -> array, got {type(weights).__name__}")
    missing = [k for k in shapes if k not in weights]
    extra = sorted(set(weights) - set(shapes))
    if missing or extra:
        raise ConfigError(f"{where}: weight names do not match layer sizes {sizes}: missing {missing}, "
                          f"unexpected {extra} (layout W0,b0,W1,b1,... with W{{k}} of shape (out, in))")
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

    - ``normal``: N(0, init_scale) for weights, zero biases - exactly what D2L's
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
        elif config.init == "xavier":
            a = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-a, a, size=(fan_out, fan_in))
            b = np.zeros(fan_out)
        else:  # pragma: no cover - validate() rejects it
            raise ConfigError(f"init={config.init!r} unknown")
        out[f"W{k}"] = w.astype(np.float32)
        out[f"b{k}"] = b.astype(np.float32)
    return out


_DEV = re.compile(r"^(cpu|cuda|gpu)(?::(\d+)|\((\d+)\))?$")


def parse_device(dev: str) -> tuple[str, int | None]:
    """``"cpu"``, ``"cpu(0)"`` -> ``("cpu", None|0)``; ``"cuda:1"``, ``"gpu(1)"``, ``"gpu"`` ->
    ``("gpu", 1|None)``.  Raises :class:`ConfigError` for anything else."""
    m = _DEV.match(str(dev).strip())
    if not m:
        raise ConfigError(f"device {dev!r} is not a device string (cpu, cpu(0), cuda:0, gpu(1), ...)")
    kind = "cpu" if m.group(1) == "cpu" else "gpu"
    idx = m.group(2) if m.group(2) is not None else m.group(3)
    return kind, (int(idx) if idx is not None else None)


# ====================================================================== semantics
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


def lr_at(config: AutoRecConfig, epoch: int) -> float:
    """Learning rate of (1-based) ``epoch``: constant, step (``lr * lr_gamma ** ((epoch-1) //
    lr_step)``) or cosine (``lr * (1 + cos(pi * (epoch-1) / epochs)) / 2``)."""
    e = max(int(epoch) - 1, 0)
    if config.lr_schedule == "constant":
        return float(config.lr)
    if config.lr_schedule == "step":
        return float(config.lr * config.lr_gamma ** (e // max(int(config.lr_step), 1)))
    if config.lr_schedule == "cosine":
        return float(config.lr * 0.5 * (1.0 + math.cos(math.pi * e / max(int(config.epochs), 1))))
    raise ConfigError(f"lr_schedule={config.lr_schedule!r} unknown")


def epoch_seed(seed: int, epoch: int) -> int:
    """The framework RNG seed for (1-based) ``epoch`` (dropout masks): reseeding at each epoch start
    makes a resumed run draw the same masks as an uninterrupted one."""
    return int(np.random.default_rng([int(seed), int(epoch), 0xD120]).integers(0, 2**31 - 1))


def is_full_batch(config: AutoRecConfig) -> bool:
    """Rprop and L-BFGS take one step per epoch on the full-batch gradient (accumulated over
    chunks of ``batch_size`` rows)."""
    return config.optimizer in ("rprop", "lbfgs")


def epoch_batches(n_rows: int, config: AutoRecConfig, epoch: int) -> list[np.ndarray]:
    """The row batches of (1-based) ``epoch``, from :func:`autorec.models.batching.epoch_order`:
    the same in every backend.  For full-batch optimizers they are the chunks of one step."""
    return batches(epoch_order(int(n_rows), int(config.seed), int(epoch)), int(config.batch_size))


@dataclass
class EpochStats:
    """Accumulates the observed squared error of an epoch; ``result()`` gives ``train_loss`` (the
    epoch's objective per ``config.loss`` computed on all its rows, without the regulariser) and
    ``train_rmse`` (over the observed entries, in training mode)."""

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
        return {"train_loss": float(loss),
                "train_rmse": float(math.sqrt(self.sse / self.nnz)) if self.nnz else float("nan"),
                "steps": int(self.steps)}


# ====================================================================== faults
def check_finite(value: float, *, epoch: int, batch: int | None, config: AutoRecConfig,
                 what: str = "training loss") -> float:
    """``value`` if finite, else :class:`TrainingDivergedError` naming epoch, batch and config."""
    v = float(value)
    if math.isfinite(v):
        return v
    where = f"epoch {epoch}" + (f", batch {batch}" if batch is not None else "")
    raise TrainingDivergedError(
        f"training diverged: {what} is {v} at {where} (config: {config_summary(config)}). "
        f"Fix: lower lr (now {config.lr:g}), use lr_schedule='step'/'cosine', raise reg, or switch "
        f"optimizer.")


def progress_printer(stream=None, every: int = 1) -> ProgressFn:
    """A ready-made ``progress`` callback printing one line every ``every`` epochs (to stderr)."""
    import sys

    def _progress(epoch: int, n_epochs: int, info: dict) -> None:
        if epoch % max(int(every), 1) and epoch != n_epochs:
            return
        parts = [f"epoch {epoch}/{n_epochs}", f"train_loss={info.get('train_loss', float('nan')):.6g}"]
        if info.get("valid_rmse") is not None:
            parts.append(f"valid_rmse={info['valid_rmse']:.5f}")
        if info.get("seconds") is not None:
            parts.append(f"{info['seconds']:.2f}s")
        print(" ".join(parts), file=stream or sys.stderr, flush=True)

    return _progress


# ====================================================================== prediction helpers
def pairs_to_rows(users: np.ndarray, items: np.ndarray, based: str) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each (user, item) pair in the AutoRec matrix: items x users for I-AutoRec,
    users x items for U-AutoRec."""
    users = np.asarray(users, dtype=np.int64).ravel()
    items = np.asarray(items, dtype=np.int64).ravel()
    return (items, users) if based == "item" else (users, items)


def check_pairs(users: Any, items: Any, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 copies of ``users``/``items``; :class:`DataError` for a length mismatch or an index
    outside the dataset's index space."""
    u = np.asarray(users)
    i = np.asarray(items)
    if u.ndim != 1 or i.ndim != 1 or len(u) != len(i):
        raise DataError(f"predict: users and items must be 1-D of equal length, got shapes {u.shape} "
                        f"and {i.shape}")
    if len(u) and not (np.issubdtype(u.dtype, np.integer) and np.issubdtype(i.dtype, np.integer)):
        raise DataError(f"predict: users/items must be integer indices, got {u.dtype}/{i.dtype}")
    u = u.astype(np.int64)
    i = i.astype(np.int64)
    for name, arr, n in (("user", u, n_users), ("item", i, n_items)):
        if len(arr) and (arr.min() < 0 or arr.max() >= n):
            bad = arr[(arr < 0) | (arr >= n)][0]
            raise DataError(f"predict: {name} index {int(bad)} outside [0, {n}) of the training index space")
    return u, i


@dataclass
class PairGroup:
    """One bounded group of prediction pairs sharing their input rows.

    ``index``: positions of the pairs in the caller's arrays; ``rows``: the distinct input rows of
    the group (sorted); ``local``: for each pair, the position of its row in ``rows``; ``cols``: the
    output column of each pair."""

    index: np.ndarray
    rows: np.ndarray
    local: np.ndarray
    cols: np.ndarray


def group_pairs(rows: np.ndarray, cols: np.ndarray, max_rows: int = 1024,
                max_pairs: int = 1 << 20) -> Iterator[PairGroup]:
    """Pairs grouped by input row, at most ``max_rows`` distinct rows and (unless one row alone has
    more) ``max_pairs`` pairs per group, so a backend reconstructs each needed row once and in
    bounded memory."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if len(rows) == 0:
        return
    order = np.argsort(rows, kind="stable")
    srows = rows[order]
    uniq, first, counts = np.unique(srows, return_index=True, return_counts=True)
    cum = np.concatenate([[0], np.cumsum(counts)])
    n_u = len(uniq)
    start = 0
    max_rows = max(int(max_rows), 1)
    while start < n_u:
        end = min(start + max_rows, n_u)
        end_pairs = int(np.searchsorted(cum, cum[start] + max_pairs, side="right")) - 1
        end = max(start + 1, min(end, end_pairs))
        lo, hi = int(cum[start]), int(cum[end])
        idx = order[lo:hi]
        local = np.repeat(np.arange(end - start, dtype=np.int64), counts[start:end])
        yield PairGroup(index=idx, rows=uniq[start:end], local=local, cols=cols[idx])
        start = end


def batch_entries(csr, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The observed entries of ``rows`` of a CSR matrix: ``(indptr, local_row, col, value)`` with
    ``local_row`` the position in ``rows`` (int64 indices, float32 values)."""
    sub = csr[np.asarray(rows, dtype=np.int64)]
    indptr = sub.indptr.astype(np.int64)
    local = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(indptr))
    return indptr, local, sub.indices.astype(np.int64), sub.data.astype(np.float32)


def validation_sums(model, train: Interactions, valid: Interactions, cold_start: str,
                    part: slice | None = None) -> tuple[float, int]:
    """(sum of squared errors, count) of the final predictions (cold-start policy + clipping via
    :func:`autorec.metrics.predict_pairs`) on ``valid`` (or the ``part`` slice of its pairs: a
    rank's share in data-parallel training, reduced by summing)."""
    from autorec.metrics import predict_pairs

    users, items, truth = valid.users, valid.items, valid.ratings
    if part is not None:
        users, items, truth = users[part], items[part], truth[part]
    if len(truth) == 0:
        return 0.0, 0
    try:
        pred, _ = predict_pairs(model, train, users, items, cold_start)
    except FloatingPointError as exc:
        raise TrainingDivergedError(f"validation predictions are not finite: {exc}") from None
    err = pred - np.asarray(truth, dtype=np.float64)
    return float(np.dot(err, err)), int(len(err))


def validation_rmse(model, train: Interactions, valid: Interactions, cold_start: str) -> float:
    sse, n = validation_sums(model, train, valid, cold_start)
    return float(math.sqrt(sse / n)) if n else float("nan")


# ====================================================================== files
def _json_bytes(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, allow_nan=True).encode("utf-8"), dtype=np.uint8)


def _from_json(arr: np.ndarray):
    return json.loads(bytes(np.asarray(arr, dtype=np.uint8)).decode("utf-8"))


def atomic_write_bytes(path: "str | os.PathLike", write: Callable[[io.BufferedWriter], None]) -> None:
    """Write a file atomically (see :func:`autorec.atomic.atomic_write`)."""
    atomic_write(path, write)


def atomic_savez(path: "str | os.PathLike", arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to exactly ``path`` (no ``.npz`` appended), atomically."""
    atomic_write_bytes(path, lambda fh: np.savez(fh, **arrays))


def _read_npz(path, kind: str) -> dict[str, np.ndarray]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{kind} file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{kind} file {path!r} is not a readable {kind} ({exc})") from None


@dataclass
class Checkpoint:
    """What :func:`save_checkpoint` stores: the state after ``epoch`` completed epochs."""

    config: dict
    backend: str
    epoch: int
    weights: dict[str, np.ndarray]
    optimizer_state: bytes
    history: list[dict]
    best_epoch: int | None = None
    best_rmse: float | None = None
    best_weights: dict[str, np.ndarray] | None = None
    since_best: int = 0
    stopped: bool = False
    extra: dict = field(default_factory=dict)


def save_checkpoint(path, ck: Checkpoint) -> None:
    """One ``.npz`` file: weights as ``w/<name>``, best weights as ``best/<name>``, the backend's
    optimizer state as opaque bytes ``optimizer``, everything else as JSON ``meta``; atomic."""
    meta = {"format": CHECKPOINT_FORMAT, "config": ck.config, "backend": ck.backend, "epoch": int(ck.epoch),
            "history": ck.history, "best_epoch": ck.best_epoch, "best_rmse": ck.best_rmse,
            "since_best": int(ck.since_best), "stopped": bool(ck.stopped), "extra": ck.extra,
            "saved_at": time.time()}
    arrays = {"meta": _json_bytes(meta),
              "optimizer": np.frombuffer(bytes(ck.optimizer_state), dtype=np.uint8)}
    for k, v in ck.weights.items():
        arrays[f"w/{k}"] = np.asarray(v, dtype=np.float32)
    for k, v in (ck.best_weights or {}).items():
        arrays[f"best/{k}"] = np.asarray(v, dtype=np.float32)
    atomic_savez(path, arrays)


def load_checkpoint(path) -> Checkpoint:
    z = _read_npz(path, "checkpoint")
    if "meta" not in z:
        raise DataError(f"checkpoint file {os.fspath(path)!r} has no meta record: not an AutoRec checkpoint")
    meta = _from_json(z["meta"])
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"checkpoint file {os.fspath(path)!r} has format {meta.get('format')!r}, "
                        f"expected {CHECKPOINT_FORMAT!r}")
    weights = {k[2:]: v for k, v in z.items() if k.startswith("w/")}
    best = {k[5:]: v for k, v in z.items() if k.startswith("best/")} or None
    return Checkpoint(config=meta["config"], backend=meta["backend"], epoch=int(meta["epoch"]),
                      weights=weights, optimizer_state=bytes(z["optimizer"].astype(np.uint8)),
                      history=meta["history"], best_epoch=meta["best_epoch"], best_rmse=meta["best_rmse"],
                      best_weights=best, since_best=int(meta["since_best"]), stopped=bool(meta["stopped"]),
                      extra=meta.get("extra", {}))


def check_resume_config(saved: dict, config: AutoRecConfig, path) -> None:
    """:class:`ConfigError` if the checkpoint was written by a run with a different model/training
    config (only ``RESUME_MUTABLE`` keys may change)."""
    now = config.to_dict()
    diff = sorted(k for k in set(saved) | set(now)
                  if k not in RESUME_MUTABLE and saved.get(k) != now.get(k))
    if diff:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in diff)
        raise ConfigError(f"cannot resume from {os.fspath(path)!r}: config differs ({detail}); resume "
                          f"with the checkpoint's config or start a fresh run")


def save_model(path, *, config: AutoRecConfig, backend: str, weights: dict[str, np.ndarray],
               train: Interactions, meta: dict | None = None) -> None:
    """A trained model as one ``.npz``: config, weights and the train part (the inputs of
    prediction); written atomically."""
    m = {"format": MODEL_FORMAT, "config": config.to_dict(), "backend": backend,
         "n_users": int(train.n_users), "n_items": int(train.n_items),
         "rating_scale": [float(train.rating_scale[0]), float(train.rating_scale[1])], "meta": meta or {}}
    arrays = {"meta": _json_bytes(m), "train_users": np.asarray(train.users, dtype=np.int32),
              "train_items": np.asarray(train.items, dtype=np.int32),
              "train_ratings": np.asarray(train.ratings, dtype=np.float32)}
    for k, v in weights.items():
        arrays[f"w/{k}"] = np.asarray(v, dtype=np.float32)
    atomic_savez(path, arrays)


def load_model(path) -> tuple[AutoRecConfig, dict[str, np.ndarray], Interactions, dict]:
    """``(config, weights, train, meta)`` from a :func:`save_model` file (``meta`` holds ``backend``
    and what the saver added)."""
    z = _read_npz(path, "model")
    if "meta" not in z:
        raise DataError(f"model file {os.fspath(path)!r} has no meta record: not an AutoRec model")
    m = _from_json(z["meta"])
    if m.get("format") != MODEL_FORMAT:
        raise DataError(f"model file {os.fspath(path)!r} has format {m.get('format')!r}, expected {MODEL_FORMAT!r}")
    config = AutoRecConfig.from_dict(m["config"])
    train = Interactions(users=z["train_users"].astype(np.int32), items=z["train_items"].astype(np.int32),
                         ratings=z["train_ratings"].astype(np.float32), n_users=int(m["n_users"]),
                         n_items=int(m["n_items"]), rating_scale=tuple(m["rating_scale"]))
    weights = {k[2:]: v for k, v in z.items() if k.startswith("w/")}
    return config, weights, train, {"backend": m.get("backend"), **m.get("meta", {})}


# ====================================================================== the epoch loop
class Trainer(Protocol):
    """What :func:`run_training` needs from a backend."""

    def train_epoch(self, epoch: int) -> dict:
        """Run (1-based) ``epoch``: set ``lr_at(config, epoch)``, reseed with ``epoch_seed``, step over
        ``epoch_batches``; return at least ``train_loss`` (e.g. :meth:`EpochStats.result`).  Raise
        via :func:`check_finite` on a non-finite batch loss."""

    def get_weights(self) -> dict[str, np.ndarray]: ...

    def set_weights(self, weights: dict[str, np.ndarray]) -> None: ...

    def optimizer_state(self) -> bytes: ...

    def load_optimizer_state(self, state: bytes) -> None: ...


def run_training(trainer: Trainer, config: AutoRecConfig, *, backend: str,
                 valid_fn: Callable[[], float] | None = None, progress: ProgressFn | None = None,
                 checkpoint: "str | os.PathLike | None" = None, checkpoint_every: int = 1,
                 resume: "str | os.PathLike | None" = None, log: Callable[[str], None] | None = None) -> FitInfo:
    """The epoch loop shared by every backend.

    Per epoch: ``trainer.train_epoch(epoch)``, then the validation RMSE (``valid_fn``), the history
    record (``epoch, train_loss, valid_rmse, seconds`` plus the trainer's extra stats and ``lr``),
    early-stopping bookkeeping, an atomic checkpoint every ``checkpoint_every`` epochs (and at the
    last one), then ``progress(epoch, epochs, record)``.  Early stopping: stop once the validation
    RMSE has not improved for ``config.patience`` epochs; at the end the best weights are restored
    (``config.restore_best``).  ``resume`` continues from a checkpoint to the same result as an
    uninterrupted run (the trainer reseeds per epoch; the optimizer state is restored).
    """
    if checkpoint_every is not None and int(checkpoint_every) <= 0:
        raise ConfigError(f"checkpoint_every={checkpoint_every!r} must be a positive number of epochs")
    history: list[dict] = []
    best_epoch: int | None = None
    best_rmse: float | None = None
    best_weights: dict[str, np.ndarray] | None = None
    since_best = 0
    start = 1
    stopped = False
    if resume is not None:
        ck = load_checkpoint(resume)
        if ck.backend != backend:
            raise ConfigError(f"cannot resume from {os.fspath(resume)!r}: written by the {ck.backend} "
                              f"backend, this is {backend}")
        check_resume_config(ck.config, config, resume)
        trainer.set_weights(ck.weights)
        trainer.load_optimizer_state(ck.optimizer_state)
        history = list(ck.history)
        best_epoch, best_rmse, best_weights = ck.best_epoch, ck.best_rmse, ck.best_weights
        since_best, stopped = ck.since_best, ck.stopped
        start = ck.epoch + 1
        if log:
            log(f"resumed from {os.fspath(resume)} after epoch {ck.epoch}")

    epoch = start - 1
    for epoch in range(start, int(config.epochs) + 1):
        if stopped:
            break
        t0 = time.perf_counter()
        stats = dict(trainer.train_epoch(epoch))
        train_loss = check_finite(stats.pop("train_loss"), epoch=epoch, batch=None, config=config)
        valid_rmse = None
        if valid_fn is not None:
            valid_rmse = check_finite(valid_fn(), epoch=epoch, batch=None, config=config,
                                      what="validation RMSE")
        seconds = time.perf_counter() - t0
        rec = {"epoch": epoch, "train_loss": train_loss, "valid_rmse": valid_rmse, "seconds": seconds,
               "lr": lr_at(config, epoch), **stats}
        history.append(rec)
        if valid_rmse is not None:
            if best_rmse is None or valid_rmse < best_rmse:
                best_rmse, best_epoch, since_best = valid_rmse, epoch, 0
                best_weights = trainer.get_weights() if config.restore_best else None
            else:
                since_best += 1
            if config.patience is not None and since_best >= config.patience:
                stopped = True
        if checkpoint is not None and (epoch % int(checkpoint_every) == 0 or stopped
                                       or epoch == int(config.epochs)):
            save_checkpoint(checkpoint, Checkpoint(
                config=config.to_dict(), backend=backend, epoch=epoch, weights=trainer.get_weights(),
                optimizer_state=trainer.optimizer_state(), history=history, best_epoch=best_epoch,
                best_rmse=best_rmse, best_weights=best_weights, since_best=since_best, stopped=stopped))
        if log:
            log(f"epoch {epoch}/{config.epochs} train_loss={train_loss:.6g}"
                + (f" valid_rmse={valid_rmse:.5f}" if valid_rmse is not None else "") + f" ({seconds:.2f}s)")
        if progress is not None:
            progress(epoch, int(config.epochs), dict(rec))

    last = history[-1]["epoch"] if history else 0
    restored = False
    if (config.restore_best and best_weights is not None and best_epoch is not None and best_epoch != last):
        trainer.set_weights(best_weights)
        restored = True
    return FitInfo(history=history, best_epoch=best_epoch, epochs_run=len(history),
                   extra={"stopped_early": bool(stopped and last < int(config.epochs)),
                          "best_valid_rmse": best_rmse, "restored_best": restored,
                          "resumed_from_epoch": (start - 1) if resume is not None else None})


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
        raise ConfigError(f"output_activation={config.output_activation!r} outputs values in {rng} but the "
                          f"ratings are on [{lo:g}, {hi:g}]; use 'identity' (or an unbounded activation), "
                          f"or rescale the ratings into {rng} first")


# ====================================================================== the wrapper glue
class AutoRecBase(Recommender):
    """The framework-free half of every backend's AutoRec model: configuration, the train matrix,
    weight loading, argument checks of ``fit`` / ``predict`` / ``reconstruct``, and the saved-model
    file.  A backend sets ``backend``, builds ``self.config`` / ``self.net`` and implements
    ``_build(n_in)`` (a network with the configured initialisation), ``_assign(weights)`` (checked
    contract-layout weights into the network), ``get_weights``, ``fit``, ``predict`` and
    ``reconstruct``."""

    name = "autorec"
    config: AutoRecConfig

    def _init_state(self) -> None:
        self.net = None
        self._train: Interactions | None = None
        self._csr = None
        self.fit_info: FitInfo | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "AutoRecBase":
        return cls(dict(params))

    def params(self) -> dict[str, Any]:
        return self.config.to_dict()

    # ------------------------------------------------------------------ state
    def _need_net(self, what: str) -> None:
        if self.net is None:
            raise ConfigError(f"{what}: the model has no weights yet; call fit(), set_weights() or load() first")

    def _set_train(self, train: Interactions) -> None:
        if not isinstance(train, Interactions):
            raise DataError(f"fit: train must be an autorec.interactions.Interactions, got {type(train).__name__}")
        if len(train) == 0:
            raise DataError("fit: the train part has no ratings")
        self._train = train
        self._csr = train.csr(self.config.based)

    def _start_fit(self, train: Interactions, valid: "Interactions | None",
                   initial_weights: "dict[str, np.ndarray] | None") -> None:
        """Checks of ``fit``'s arguments, then the train matrix and a freshly built network."""
        self._set_train(train)
        check_output_range(self.config, train.rating_scale)
        if valid is not None and not isinstance(valid, Interactions):
            raise DataError(f"fit: valid must be Interactions or None, got {type(valid).__name__}")
        if valid is not None and (valid.n_users, valid.n_items) != (train.n_users, train.n_items):
            raise DataError(f"fit: valid index space {valid.n_users}x{valid.n_items} differs from train's "
                            f"{train.n_users}x{train.n_items}; both must come from one split")
        self._build(self._csr.shape[1])
        if initial_weights is not None:
            self.set_weights(initial_weights)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load weights in the contract layout (``W0, b0, W1, b1, ...``); builds the network from
        their shapes if there is none yet."""
        if self.net is None:
            if not isinstance(weights, dict) or "W0" not in weights:
                raise ConfigError("set_weights: weights must be a dict holding at least W0 (shape (hidden, n_in))")
            self._build(int(np.shape(weights["W0"])[1]))
        self._assign(check_weights(weights, self.net.sizes))

    def _fit_extra(self, world_size: int) -> dict:
        return {"backend": self.backend, "path": self.config.path, "n_rows": int(self._csr.shape[0]),
                "n_in": int(self._csr.shape[1]), "world_size": world_size}

    # ------------------------------------------------------------------ prediction inputs
    def _pairs(self, users: Any, items: Any) -> tuple[np.ndarray, np.ndarray, int]:
        """``predict``'s checked (row, column) pairs of the AutoRec matrix and their count."""
        self._need_net("predict")
        if self._train is None:
            raise ConfigError("predict: the model has no train matrix (its inputs); fit() or load() first")
        u, i = check_pairs(users, items, self._train.n_users, self._train.n_items)
        rows, cols = pairs_to_rows(u, i, self.config.based)
        return rows, cols, len(u)

    def _reconstruct_rows(self, rows: "np.ndarray | None", batch_size: int) -> np.ndarray:
        """``reconstruct``'s checked row indices (all rows by default)."""
        self._need_net("reconstruct")
        if self._csr is None:
            raise ConfigError("reconstruct: the model has no train matrix; fit() or load() first")
        if isinstance(batch_size, bool) or int(batch_size) <= 0:
            raise ConfigError(f"reconstruct: batch_size={batch_size!r} must be > 0")
        n_rows = self._csr.shape[0]
        rows = np.arange(n_rows, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).ravel()
        if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
            raise DataError(f"reconstruct: row index outside [0, {n_rows})")
        return rows

    # ------------------------------------------------------------------ persistence
    def save(self, path: "str | os.PathLike") -> None:
        """Config, weights and the train part (prediction inputs) in one file, written atomically
        (one format for every backend: either backend loads it)."""
        self._need_net("save")
        if self._train is None:
            raise ConfigError("save: the model has no train matrix; fit() first")
        save_model(path, config=self.config, backend=self.backend, weights=self.get_weights(),
                   train=self._train, meta={"fit_info": None if self.fit_info is None else {
                       "best_epoch": self.fit_info.best_epoch, "epochs_run": self.fit_info.epochs_run}})

    @classmethod
    def load(cls, path: "str | os.PathLike", devices: "tuple[str, ...] | None" = None) -> "AutoRecBase":
        """A model saved by :meth:`save` (optionally placed on other ``devices``)."""
        config, weights, train, _meta = load_model(path)
        if devices is not None:
            config = config.replace(devices=tuple(devices))
        model = cls(config)
        model._set_train(train)
        model._build(model._csr.shape[1])
        model.set_weights(weights)
        return model
