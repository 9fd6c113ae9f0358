"""The one training loop of every iterative model, and its checkpoint file.

A model that trains epoch by epoch (AutoRec in every backend, ALS, biased MF, D2L MF, the bias
model, ...) hands :func:`train_loop` an :class:`EpochTrainer`: an object that runs one epoch at a
time and can snapshot and restore the model's learned state.  The loop owns everything else, the
same way for every model, so that the families the verdict compares stop by the same rule:

- **history**: one record per epoch: ``epoch`` (1-based), ``train_loss``, ``valid_rmse``,
  ``seconds`` (the epoch's wall time, its validation pass included), then the trainer's own
  statistics;
- **early stopping**: an epoch *improves* when its validation RMSE is strictly lower than the best
  so far; training stops once ``config.patience`` epochs in a row did not improve (``None``: never),
  or when the trainer reports ``converged`` (a fixed point, e.g. the bias model's sweeps);
- **best weights**: with ``config.restore_best`` the state of the best epoch is kept and restored at
  the end; ``FitInfo.best_epoch`` is always the best validation epoch and ``FitInfo.weights_epoch``
  the epoch whose weights the model holds;
- **divergence**: a non-finite training loss, validation predictions that are not finite or lie far
  off the rating scale (:data:`autorec.metrics.DIVERGED_WIDTHS`), or (in a fit
  without validation, whose last step nothing else checks) non-finite learned parameters at the
  end raise :class:`~autorec.errors.TrainingDivergedError` naming the model, the epoch and the
  config; the error carries the history up to that epoch (``exc.history``);
- **progress**: ``progress(epoch, epochs, record)`` after every epoch;
- **checkpoints**: every ``checkpoint_every`` epochs (and at the last one) an atomic ``.npz`` with
  the state, the trainer's optimizer state, the history and the early-stopping bookkeeping;
  ``resume`` continues from one to the same result as an uninterrupted run (trainers reseed per
  epoch).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from autorec.atomic import atomic_write
from autorec.errors import ConfigError, DataError, TrainingDivergedError
from autorec.models.config import IterativeConfig

CHECKPOINT_FORMAT = "autorec-bench-checkpoint/3"
#: formats :func:`load_checkpoint` reads (2: the optimizer state always one byte string)
READABLE_FORMATS = ("autorec-bench-checkpoint/2", CHECKPOINT_FORMAT)
#: the optimizer state's entries in a checkpoint: one byte string, or named arrays
OPTIMIZER, OPTIMIZER_ARRAYS = "optimizer", "opt/"

#: what a trainer's optimizer state is: a byte string, or named arrays (which may be views of the
#: optimizer's own memory: the checkpoint writes them before the next step)
OptimizerState = bytes | dict[str, np.ndarray]


class EpochTrainer(Protocol):
    """What :func:`train_loop` needs from a model's fit."""

    def train_epoch(self, epoch: int) -> dict:
        """Run (1-based) ``epoch``; return at least ``train_loss`` (plus any statistics to record).
        Raise :func:`diverged` on a non-finite batch loss to name the batch."""
        ...

    def state(self, copy: bool = True) -> dict[str, np.ndarray]:
        """The learned parameters (restoring them gives the same predictions): a copy, or with
        ``copy=False`` arrays that may share memory with the model, for a caller that is done with
        them before the next step (a checkpoint writes them at once)."""
        ...

    def load_state(self, state: dict[str, np.ndarray]) -> None: ...

    def optimizer_state(self) -> OptimizerState:
        """Whatever else a resumed fit needs (optimizer moments, step counters); ``b""`` if none.
        Named arrays are written as they are, so large moments need not be serialised into a copy
        first."""
        ...

    def load_optimizer_state(self, state: OptimizerState) -> None:
        """Restore what :meth:`optimizer_state` returned (the same kind: bytes or named arrays)."""
        ...


def diverged(
    model: str,
    config: IterativeConfig,
    *,
    epoch: int,
    what: str,
    value: Any,
    batch: int | None = None,
    history: list[dict] | None = None,
) -> TrainingDivergedError:
    """The divergence error: model, epoch (and batch), the config, a hint."""
    where = f"epoch {epoch}" + (f", batch {batch}" if batch is not None else "")
    lr = getattr(config, "lr", None)
    hint = "look for an extreme value among the config's others (regularisation, initialisation)"
    if isinstance(lr, (int, float)):
        hint = f"lower the step sizes (lr now {lr:g}, and any per-parameter ones); or {hint}"
    exc = TrainingDivergedError(
        f"{model}: training diverged: {what} is {value} at {where} (config: {config.summary()}). Fix: {hint}."
    )
    exc.history = list(history or [])  # type: ignore[attr-defined]
    exc.epoch = epoch  # type: ignore[attr-defined]
    return exc


def train_loop(
    trainer: EpochTrainer,
    config: IterativeConfig,
    *,
    model: str,
    valid_fn: Callable[[], float] | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: str | os.PathLike | None = None,
    data_key: str | None = None,
) -> Any:
    """Train ``trainer`` for up to ``config.epochs`` epochs; returns a
    :class:`autorec.models.base.FitInfo` (see the module docstring for the rules).  ``data_key``
    (:func:`data_fingerprint` of the fit's parts) is written into checkpoints, and a checkpoint
    written on other data is refused on ``resume``."""
    from autorec.models.base import FitInfo

    if int(checkpoint_every) <= 0:
        raise ConfigError(f"checkpoint_every={checkpoint_every!r} must be a positive number of epochs")
    st = _LoopState()
    start = 1
    if resume is not None:
        ck = load_checkpoint(resume)
        if ck.model != model:
            raise ConfigError(f"cannot resume from {os.fspath(resume)!r}: written by {ck.model}, this is {model}")
        check_resume_config(ck.config, config, resume)
        if ck.data is not None and data_key is not None and ck.data != data_key:
            raise ConfigError(
                f"cannot resume from {os.fspath(resume)!r}: it was trained on other data (train/validation "
                f"fingerprint {ck.data[:16]}..., this fit's {data_key[:16]}...); resume on the parts it was written on"
            )
        trainer.load_state(ck.state)
        trainer.load_optimizer_state(ck.optimizer_state)
        st = ck.loop
        start = ck.epoch + 1
    epochs = int(config.epochs)
    for epoch in range(start, epochs + 1):
        if st.stopped:
            break
        t0 = time.perf_counter()
        try:
            stats = dict(trainer.train_epoch(epoch))
        except TrainingDivergedError as exc:  # a batch diverged: the error carries the history so far
            if not getattr(exc, "history", None):
                exc.history = list(st.history)  # type: ignore[attr-defined]
            raise
        train_loss = float(stats.pop("train_loss"))
        converged = bool(stats.pop("converged", False))
        if not math.isfinite(train_loss):
            raise diverged(model, config, epoch=epoch, what="the training loss", value=train_loss, history=st.history)
        valid_rmse = None
        if valid_fn is not None:
            try:
                valid_rmse = float(valid_fn())
            except FloatingPointError as exc:
                raise diverged(
                    model,
                    config,
                    epoch=epoch,
                    what="a validation prediction",
                    value=f"not finite or far off the rating scale ({exc})",
                    history=st.history,
                ) from None
            if not math.isfinite(valid_rmse):
                raise diverged(
                    model, config, epoch=epoch, what="the validation RMSE", value=valid_rmse, history=st.history
                )
        rec = {
            "epoch": epoch,
            "train_loss": train_loss,
            "valid_rmse": valid_rmse,
            "seconds": time.perf_counter() - t0,
            **stats,
        }
        st.history.append(rec)
        if valid_rmse is not None:
            if st.best_rmse is None or valid_rmse < st.best_rmse:
                st.best_rmse, st.best_epoch, st.since_best = valid_rmse, epoch, 0
                st.best_state = trainer.state() if config.restore_best else None
            else:
                st.since_best += 1
            if config.patience is not None and st.since_best >= int(config.patience):
                st.stopped = True
        if converged:
            st.stopped = st.converged = True
        if checkpoint is not None and (epoch % int(checkpoint_every) == 0 or st.stopped or epoch == epochs):
            save_checkpoint(
                checkpoint,
                Checkpoint(
                    model=model,
                    config=config.to_dict(),
                    epoch=epoch,
                    state=trainer.state(copy=False),
                    optimizer_state=trainer.optimizer_state(),
                    loop=st,
                    data=data_key,
                ),
            )
        if progress is not None:
            progress(epoch, epochs, dict(rec))

    last = st.history[-1]["epoch"] if st.history else 0
    if valid_fn is None and st.history:
        # an epoch's loss is taken before its updates, and nothing validates this fit: the last
        # epoch's step could have left non-finite weights (a refit on train + validation) unseen
        _check_finite_state(trainer, model, config, epoch=last, history=st.history)
    restored = False
    if config.restore_best and st.best_state is not None and st.best_epoch not in (None, last):
        trainer.load_state(st.best_state)
        restored = True
    return FitInfo(
        history=st.history,
        best_epoch=st.best_epoch,
        epochs_run=len(st.history),
        weights_epoch=st.best_epoch if restored else last,
        extra={
            "stopped_early": bool(st.stopped and last < epochs),
            "best_valid_rmse": st.best_rmse,
            "restored_best": restored,
            "converged": st.converged,
            "resumed_from_epoch": (start - 1) if resume is not None else None,
        },
    )


def data_fingerprint(*parts: Any) -> str:
    """A SHA-256 of fit parts (:class:`~autorec.interactions.Interactions`, or ``None`` for an absent
    one): their index spaces, scales, pairs and ratings, what a checkpoint must be resumed on."""
    h = hashlib.sha256()
    for part in parts:
        if part is None or len(part) == 0:
            h.update(b"none;")
            continue
        h.update(f"{int(part.n_users)},{int(part.n_items)},{tuple(float(x) for x in part.rating_scale)};".encode())
        for arr, dtype in ((part.users, np.int32), (part.items, np.int32), (part.ratings, np.float32)):
            # the content in Interactions' own dtypes (no copy of a part that has them: a Netflix part is
            # 1.2 GB), so int64 copies of the same indices are the same data
            a = np.ascontiguousarray(arr, dtype=dtype)
            h.update(f"{a.shape};".encode())
            h.update(a.data)
    return h.hexdigest()


def _check_finite_state(
    trainer: EpochTrainer, model: str, config: IterativeConfig, *, epoch: int, history: list[dict]
) -> None:
    for name, value in trainer.state(copy=False).items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "fc":
            continue
        flat = arr.reshape(-1)
        step = 1 << 22  # in blocks: a Netflix-size weight's mask would be another 240 MB
        bad = sum(
            flat[s : s + step].size - int(np.isfinite(flat[s : s + step]).sum()) for s in range(0, flat.size, step)
        )
        if bad:
            raise diverged(
                model,
                config,
                epoch=epoch,
                what=f"the learned {name!r} after the last step",
                value=f"not finite ({bad} of {arr.size} values)",
                history=history,
            )


@dataclass
class _LoopState:
    """The loop's bookkeeping (what a checkpoint must carry besides the model's state)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_rmse: float | None = None
    best_state: dict[str, np.ndarray] | None = None
    since_best: int = 0
    stopped: bool = False
    converged: bool = False


# ====================================================================== checkpoints
@dataclass
class Checkpoint:
    """The state after ``epoch`` completed epochs."""

    model: str
    config: dict
    epoch: int
    state: dict[str, np.ndarray]
    optimizer_state: OptimizerState
    loop: _LoopState
    #: the fingerprint of the fit's train and validation parts (:func:`data_fingerprint`); ``None``
    #: in checkpoints written before it was recorded
    data: str | None = None


def save_checkpoint(path: str | os.PathLike, ck: Checkpoint) -> None:
    """One ``.npz``: the state as ``w/<name>``, the best state as ``best/<name>`` (dtypes kept), the
    optimizer state as bytes (``optimizer``) or as arrays (``opt/<name>``), everything else as JSON
    ``meta``; written atomically."""
    lp = ck.loop
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": ck.model,
        "config": ck.config,
        "epoch": int(ck.epoch),
        "history": lp.history,
        "best_epoch": lp.best_epoch,
        "best_rmse": lp.best_rmse,
        "since_best": int(lp.since_best),
        "stopped": bool(lp.stopped),
        "converged": bool(lp.converged),
        "data": ck.data,
    }
    arrays = {"meta": json_array(meta)}
    if isinstance(ck.optimizer_state, dict):
        arrays.update({OPTIMIZER_ARRAYS + k: np.asarray(v) for k, v in ck.optimizer_state.items()})
    else:
        arrays[OPTIMIZER] = np.frombuffer(bytes(ck.optimizer_state), dtype=np.uint8)
    arrays.update({f"w/{k}": np.asarray(v) for k, v in ck.state.items()})
    arrays.update({f"best/{k}": np.asarray(v) for k, v in (lp.best_state or {}).items()})
    atomic_savez(path, arrays)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    z = read_npz(path, "checkpoint")
    meta = json_from_array(z["meta"]) if "meta" in z else {}
    if meta.get("format") not in READABLE_FORMATS:
        raise DataError(
            f"checkpoint file {os.fspath(path)!r} has format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
        )
    state = {k[2:]: v for k, v in z.items() if k.startswith("w/")}
    best = {k[5:]: v for k, v in z.items() if k.startswith("best/")} or None
    loop = _LoopState(
        history=meta["history"],
        best_epoch=meta["best_epoch"],
        best_rmse=meta["best_rmse"],
        best_state=best,
        since_best=int(meta["since_best"]),
        stopped=bool(meta["stopped"]),
        converged=bool(meta.get("converged", False)),
    )
    return Checkpoint(
        model=meta["model"],
        config=meta["config"],
        epoch=int(meta["epoch"]),
        state=state,
        optimizer_state=_optimizer_state(z, path),
        loop=loop,
        data=meta.get("data"),
    )


def _optimizer_state(z: dict[str, np.ndarray], path: str | os.PathLike) -> OptimizerState:
    named = {k[len(OPTIMIZER_ARRAYS) :]: v for k, v in z.items() if k.startswith(OPTIMIZER_ARRAYS)}
    if named:
        return named
    if OPTIMIZER not in z:
        raise DataError(f"checkpoint file {os.fspath(path)!r} holds no optimizer state")
    return bytes(z[OPTIMIZER].astype(np.uint8))


def check_resume_config(saved: dict, config: IterativeConfig, path: str | os.PathLike) -> None:
    """:class:`ConfigError` if the checkpoint was written with another configuration (only the
    config's :meth:`resume_mutable` fields may change, and of ``extra`` only its class's
    ``RESUME_MUTABLE_EXTRA`` keys)."""
    now = config.to_dict()
    mutable = config.resume_mutable()
    # (name, checkpoint value, value now) of every field that differs and may not
    diff = [(k, saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now)) if k not in mutable]
    if "extra" in mutable:  # of extra, only the keys that change how a step is computed, not what
        was, is_ = dict(saved.get("extra") or {}), dict(now.get("extra") or {})
        free = type(config).RESUME_MUTABLE_EXTRA
        diff += [(f"extra[{k!r}]", was.get(k), is_.get(k)) for k in sorted(set(was) | set(is_)) if k not in free]
    diff = [(k, a, b) for k, a, b in diff if a != b]
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, a, b in diff)
        raise ConfigError(
            f"cannot resume from {os.fspath(path)!r}: config differs ({detail}); resume "
            f"with the checkpoint's config or start a fresh run"
        )


# ====================================================================== npz helpers
def json_array(obj: Any) -> np.ndarray:
    """JSON text as a uint8 array (how ``.npz`` files here carry metadata)."""
    return np.frombuffer(json.dumps(obj, allow_nan=True).encode("utf-8"), dtype=np.uint8)


def json_from_array(arr: np.ndarray) -> Any:
    return json.loads(bytes(np.asarray(arr, dtype=np.uint8)).decode("utf-8"))


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to exactly ``path`` (no ``.npz`` appended), atomically."""
    named: dict[str, Any] = dict(arrays)
    atomic_write(path, lambda fh: np.savez(fh, **named))


def read_npz(path: str | os.PathLike, kind: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``; :class:`DataError` naming the file when it is missing or unreadable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{kind} file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # a truncated or damaged file
        raise DataError(f"{kind} file {path!r} is not a readable {kind} ({type(exc).__name__}: {exc})") from None
