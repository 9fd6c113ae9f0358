"""The one AutoRec configuration type, shared by every backend.

The same :class:`AutoRecConfig` trains the same model in PyTorch or in MXNet.  ``validate()`` rejects
an invalid config before any work starts (unknown activation, hidden size 0, bad device string, ...).

Weight layout, identical in every backend (and what ``get_weights`` / ``set_weights`` exchange as
numpy float32 arrays): for layer k of an encoder-decoder stack with sizes
``[n_in, *hidden, n_in]``: ``W{k}`` of shape ``(out, in)`` and ``b{k}`` of shape ``(out,)``
(the PyTorch ``Linear`` / MXNet ``Dense`` convention).  For the paper's one-hidden-layer model,
``W0``/``b0`` are V/mu (encoder) and ``W1``/``b1`` are W/b (decoder).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from typing import Any

from autorec.errors import ConfigError

ACTIVATIONS = ("identity", "sigmoid", "relu", "tanh", "elu", "selu")
OPTIMIZERS = ("adam", "sgd", "rprop", "lbfgs")
REG_FORMS = ("paper", "wd")
PATHS = ("dense", "sparse")
BASES = ("item", "user")
INITS = ("xavier", "normal", "uniform", "default")
LOSSES = ("d2l", "observed-sum", "observed-mean")
SCHEDULES = ("constant", "step", "cosine")
COLD_START = ("constant", "global-mean")
_DEVICE_RE = re.compile(r"^(cpu|cuda|gpu)(:\d+)?$|^(cpu|gpu)\(\d+\)$")


@dataclass
class AutoRecConfig:
    """h(r) = f(W_L ... g(W_0 r + b_0) ... + b_L), trained on observed entries only.

    Defaults are the D2L chapter's setting (item-based, hidden 500, sigmoid / identity, dropout 0.05,
    Adam lr 0.002, wd 1e-5, 25 epochs, batch 256).
    """

    based: str = "item"                      # "item" = I-AutoRec, "user" = U-AutoRec
    hidden: tuple[int, ...] = (500,)         # several = deep AutoRec, e.g. (500, 250, 500)
    hidden_activation: str = "sigmoid"       # g
    output_activation: str = "identity"      # f
    dropout: float = 0.05                    # on the hidden representation (as D2L)
    reg: float = 1e-5                        # lambda (paper form) or weight decay (wd form)
    reg_form: str = "wd"                     # "paper": loss + reg/2 (||W||^2 + ||V||^2); "wd": optimizer weight decay
    init: str = "normal"                     # "normal": N(0, init_scale) as D2L; "default" = framework default
    init_scale: float = 0.01
    loss: str = "d2l"                        # "d2l": Gluon L2Loss on the masked output, i.e. 0.5 * mean over
                                             #   (batch rows x n_in) of squared error at observed entries;
                                             # "observed-sum": sum of squared errors at observed entries
                                             #   (the paper's objective; "paper" reg scaled by rows/n_rows);
                                             # "observed-mean": that sum divided by the observed count
    optimizer: str = "adam"
    lr: float = 0.002
    lr_schedule: str = "constant"
    lr_step: int = 10                        # for "step": multiply lr by lr_gamma every lr_step epochs
    lr_gamma: float = 0.5
    batch_size: int = 256
    epochs: int = 25
    patience: int | None = None              # early stopping on validation RMSE; None = no early stop
    restore_best: bool = True
    path: str = "dense"                      # "dense" (the seed's masked formulation) or "sparse"
    devices: tuple[str, ...] = ("cpu",)
    threads: int | None = None               # intra-op threads; None = all cores
    seed: int = 0
    cold_start: str = "global-mean"          # policy used in validation RMSE during training
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific knobs, recorded as given

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "AutoRecConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"unknown AutoRec parameter(s) {unknown}; known: {sorted(known)}")
        kw = dict(params)
        for key in ("hidden", "devices"):
            if key in kw:
                kw[key] = _as_tuple(kw[key], key)
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["devices"] = list(self.devices)
        return d

    def replace(self, **changes) -> "AutoRecConfig":
        return AutoRecConfig.from_dict({**self.to_dict(), **changes})

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name}={value!r} is not one of {list(allowed)}")

        choice("based", BASES)
        choice("hidden_activation", ACTIVATIONS)
        choice("output_activation", ACTIVATIONS)
        choice("optimizer", OPTIMIZERS)
        choice("reg_form", REG_FORMS)
        choice("path", PATHS)
        choice("init", INITS)
        choice("loss", LOSSES)
        if not self.init_scale > 0:
            raise ConfigError(f"init_scale={self.init_scale!r} must be > 0")
        choice("lr_schedule", SCHEDULES)
        choice("cold_start", COLD_START)
        if not self.hidden or any((not isinstance(h, int)) or h <= 0 for h in self.hidden):
            raise ConfigError(f"hidden={list(self.hidden)!r}: every hidden layer size must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout!r} must be in [0, 1)")
        if self.reg < 0:
            raise ConfigError(f"reg={self.reg!r} must be >= 0")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr!r} must be > 0")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size={self.batch_size!r} must be > 0")
        if self.epochs <= 0:
            raise ConfigError(f"epochs={self.epochs!r} must be > 0")
        if self.patience is not None and self.patience <= 0:
            raise ConfigError(f"patience={self.patience!r} must be > 0 or None")
        if self.threads is not None and self.threads <= 0:
            raise ConfigError(f"threads={self.threads!r} must be > 0 or None")
        if not self.devices:
            raise ConfigError("devices must name at least one device")
        for dev in self.devices:
            if not _DEVICE_RE.match(dev):
                raise ConfigError(f"device {dev!r} is not a device string (cpu, cpu(0), cuda:0, gpu(1), ...)")


def _as_tuple(value, key) -> tuple:
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\-\s]+", value) if p] if key == "hidden" else \
            [p.strip() for p in re.split(r",(?![^()]*\))", value) if p.strip()]
        value = parts
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    out = []
    for v in value:
        if key == "hidden":
            try:
                iv = int(v)
            except (TypeError, ValueError):
                raise ConfigError(f"hidden layer size {v!r} is not an integer") from None
            if str(iv) != str(v).strip() and not isinstance(v, int):
                raise ConfigError(f"hidden layer size {v!r} is not an integer")
            out.append(iv)
        else:
            out.append(str(v))
    return tuple(out)
