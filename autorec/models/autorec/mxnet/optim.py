"""Optimizer pieces of the MXNet backend: a torch-equivalent Adam, and a pickle-free serialisation
of a Gluon ``Trainer``'s optimizer state (what checkpoints store).

Gluon's ``adam`` and torch's ``Adam`` differ in one place: where epsilon enters.  Gluon
(``mx.optimizer.Adam``, MXNet 1.9.1) folds both bias corrections into the step size and adds
epsilon to the *uncorrected* root of the second moment::

    w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

torch adds epsilon to the *bias-corrected* root::

    w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
       = lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps * sqrt(1 - b2^t))

so Gluon's effective epsilon is ``1 / sqrt(1 - b2^t)`` times larger (about 32x at step 1, 3.2x at
step 100).  That only matters for parameters whose gradients are as small as epsilon, but AutoRec
has many: an encoder column of a user (I-AutoRec) without a rating in the batch gets only the weight
decay gradient ``wd * w`` ~ 1e-5 * 0.01 = 1e-7, and there the two rules move the weight by 0.24 lr
and 0.91 lr at step 1.  :class:`TorchAdam` is Gluon's Adam with torch's epsilon placement
(``config.extra["adam_epsilon"] = "torch"``); the default stays Gluon's (``"gluon"``), as the D2L
chapter trains.
"""

from __future__ import annotations

import io
import json
import math
import zipfile

import mxnet as mx
import numpy as np
from mxnet import nd

from autorec.errors import DataError

STATE_FORMAT = "autorec-mxnet-optimizer/1"


class TorchAdam(mx.optimizer.Adam):
    """``mx.optimizer.Adam`` with epsilon added after the bias correction, as ``torch.optim.Adam``."""

    def __init__(self, **kwargs):
        kwargs.setdefault("lazy_update", False)
        super().__init__(**kwargs)

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr = self._get_lr(index)
        wd = self._get_wd(index)
        t = self._index_update_count[index]
        coef1 = 1.0 - self.beta1**t
        coef2 = 1.0 - self.beta2**t
        kwargs = {
            "beta1": self.beta1,
            "beta2": self.beta2,
            "rescale_grad": self.rescale_grad,
            "epsilon": self.epsilon * math.sqrt(coef2),
        }
        if self.clip_gradient:
            kwargs["clip_gradient"] = self.clip_gradient
        mean, var = state
        nd.adam_update(
            weight, grad, mean, var, out=weight, lazy_update=False, lr=lr * math.sqrt(coef2) / coef1, wd=wd, **kwargs
        )


def _updaters(trainer) -> list:
    if trainer._update_on_kvstore:  # pragma: no cover - the backend always sets it False
        raise RuntimeError("optimizer state of a trainer that updates on the kvstore is not supported")
    return list(trainer._updaters)


def _ensure_initialised(trainer) -> None:
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()


def dump_state(trainer) -> bytes:
    """The optimizer state of a Gluon ``Trainer`` as ``.npz`` bytes (no pickle): the per-parameter
    state arrays of the first replica's updater (every replica holds the same ones: they apply the
    same kvstore-reduced gradient), and the optimizer's per-device update counts."""
    _ensure_initialised(trainer)
    upd = _updaters(trainer)[0]
    opt = trainer._optimizer
    arrays: dict[str, np.ndarray] = {}
    layout: dict[str, object] = {}
    for idx, st in upd.states.items():
        key = str(int(idx))
        if st is None:
            layout[key] = None
        elif isinstance(st, nd.NDArray):
            layout[key] = "array"
            arrays[f"s/{key}/0"] = st.asnumpy()
        elif isinstance(st, (tuple, list)):
            layout[key] = len(st)
            for j, a in enumerate(st):
                arrays[f"s/{key}/{j}"] = a.asnumpy()
        else:  # pragma: no cover - Adam/SGD states are None, an array or a tuple of arrays
            raise TypeError(f"unsupported optimizer state type {type(st).__name__}")
    meta = {
        "format": STATE_FORMAT,
        "optimizer": type(opt).__name__,
        "layout": layout,
        "num_update": int(opt.num_update),
        "counts": {
            str(dev): {str(int(i)): int(c) for i, c in counts.items()}
            for dev, counts in opt._all_index_update_counts.items()
        },
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def load_state(trainer, state: bytes) -> None:
    """Restore what :func:`dump_state` wrote into every replica's updater."""
    _ensure_initialised(trainer)
    try:
        with np.load(io.BytesIO(bytes(state)), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"checkpoint optimizer state is not readable ({exc})") from None
    if "meta" not in arrays:
        raise DataError("checkpoint optimizer state has no meta record (not written by the mxnet backend)")
    meta = json.loads(bytes(arrays["meta"]).decode("utf-8"))
    if meta.get("format") != STATE_FORMAT:
        raise DataError(f"checkpoint optimizer state has format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
    opt = trainer._optimizer
    if meta["optimizer"] != type(opt).__name__:
        raise DataError(f"checkpoint optimizer state is of {meta['optimizer']}, this run uses {type(opt).__name__}")
    for upd in _updaters(trainer):
        states = {}
        for key, kind in meta["layout"].items():
            if kind is None:
                states[int(key)] = None
            elif kind == "array":
                states[int(key)] = nd.array(arrays[f"s/{key}/0"], dtype=arrays[f"s/{key}/0"].dtype)
            else:
                states[int(key)] = tuple(
                    nd.array(arrays[f"s/{key}/{j}"], dtype=arrays[f"s/{key}/{j}"].dtype) for j in range(int(kind))
                )
        upd.states = states
        upd.states_synced = dict.fromkeys(states, False)  # moved to each replica's context on first use
    # every replica applied every update, so the counts of each saved device are the same: each device of
    # this trainer takes them, also one the checkpoint did not have (resumed on more contexts, a device
    # left without counts restarted Adam's bias correction at step 1 and its replica drifted away)
    saved = [{int(i): int(c) for i, c in counts.items()} for counts in meta["counts"].values()] or [{}]
    devices = sorted({int(ctx.device_id) for ctx in trainer._contexts}) or [0]
    opt._all_index_update_counts = {dev: dict(saved[0]) for dev in devices}
    opt._index_update_count = opt._all_index_update_counts[devices[0]]
    opt.num_update = int(meta["num_update"])
