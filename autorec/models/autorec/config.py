"""The one AutoRec configuration, shared by every backend.

The same :class:`AutoRecConfig` trains the same model in PyTorch or in MXNet.  Every field carries
its rule (:func:`~autorec.models.config.param`), so an invalid value (unknown activation, hidden
size 0, a bad device string, ...) is a :class:`~autorec.errors.ConfigError` before any work starts.
What only one backend can do (Rprop / L-BFGS, its ``extra`` knobs, whether a device exists) is
checked by that backend's constructor.

Weight layout, identical in every backend (what ``get_weights`` / ``set_weights`` exchange as numpy
float32 arrays): for layer k of the stack with sizes ``[n_in, *hidden, n_in]``, ``W{k}`` of shape
``(out, in)`` and ``b{k}`` of shape ``(out,)`` (the PyTorch ``Linear`` / MXNet ``Dense``
convention).  For the paper's one-hidden-layer model ``W0``/``b0`` are V/mu (encoder) and
``W1``/``b1`` are W/b (decoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from autorec.models.config import (
    IterativeConfig,
    ModelConfig,
    choice,
    devices_ok,
    nonnegative,
    param,
    positive,
    threads_param,
)

ACTIVATIONS = ("identity", "sigmoid", "relu", "tanh", "elu", "selu")
OPTIMIZERS = ("adam", "sgd", "rprop", "lbfgs")
#: optimizers that take one step per epoch on the full-batch gradient
FULL_BATCH_OPTIMIZERS = ("rprop", "lbfgs")
REG_FORMS = ("paper", "wd")
PATHS = ("dense", "sparse")
BASES = ("item", "user")
INITS = ("xavier", "normal", "uniform", "default")
LOSSES = ("d2l", "observed-sum", "observed-mean")
SCHEDULES = ("constant", "step", "cosine")


def _layer_sizes_ok(hidden: tuple[int, ...]) -> bool:
    return bool(hidden) and all(h > 0 for h in hidden)


@dataclass(frozen=True)
class AutoRecConfig(IterativeConfig):
    """h(r) = f(W_L ... g(W_0 r + b_0) ... + b_L), trained on observed entries only.

    Defaults are the D2L chapter's setting (item-based, hidden 500, sigmoid / identity, dropout 0.05,
    Adam lr 0.002, weight decay 1e-5, 25 epochs, batch 256).
    """

    based: str = choice("item", BASES, "item = I-AutoRec (rows are items), user = U-AutoRec")
    hidden: tuple[int, ...] = param(
        (500,),
        check=_layer_sizes_ok,
        rule="a non-empty list of positive layer sizes",
        doc="hidden layer sizes; several = deep AutoRec, e.g. [500, 250, 500]",
    )
    hidden_activation: str = choice("sigmoid", ACTIVATIONS, "g, after every hidden layer")
    output_activation: str = choice("identity", ACTIVATIONS, "f, after the output layer")
    dropout: float = param(
        0.05, low=0, check=lambda p: p < 1, rule="in [0, 1)", doc="on every hidden representation (as D2L)"
    )
    reg: float = nonnegative(1e-5, "lambda (reg_form paper) or the weight decay (reg_form wd)")
    reg_form: str = choice(
        "wd", REG_FORMS, "paper: loss + reg/2 (||W||^2 + ||V||^2); wd: the optimizer's coupled weight decay"
    )
    init: str = choice("normal", INITS, "normal: N(0, init_scale) as D2L; default: the framework's own")
    init_scale: float = positive(0.01, "std (normal) or half-width (uniform) of the initial weights")
    loss: str = choice(
        "d2l",
        LOSSES,
        "d2l: Gluon L2Loss on the masked output (0.5 * mean over rows x n_in of the observed squared "
        "error); observed-sum: the paper's sum of squared errors; observed-mean: that sum / observed count",
    )
    optimizer: str = choice("adam", OPTIMIZERS, "adam / sgd per batch; rprop / lbfgs full batch (torch only)")
    lr: float = positive(0.002, "learning rate (Rprop: initial step size)")
    lr_schedule: str = choice("constant", SCHEDULES, "step: lr * lr_gamma every lr_step epochs; cosine")
    lr_step: int = param(10, low=1, doc="epochs between two lr reductions of the step schedule")
    lr_gamma: float = positive(0.5, "factor of the step schedule")
    batch_size: int = param(256, low=1, doc="rows per step (full-batch optimizers: rows per gradient chunk)")
    path: str = choice("dense", PATHS, "dense: the seed's masked formulation; sparse: O(nnz * hidden) per step")
    devices: tuple[str, ...] = param(
        ("cpu",), check=devices_ok, rule="a non-empty list of devices", doc="torch: one per rank; mxnet: contexts"
    )
    threads: int | None = threads_param()
    extra: dict[str, Any] = param(
        default_factory=dict, doc="backend-specific knobs (see each backend's KNOWN_EXTRA), recorded as given"
    )

    RESUME_MUTABLE: ClassVar[tuple[str, ...]] = (*ModelConfig.RESUME_MUTABLE, "extra")
    #: the ``extra`` knobs a resumed fit may change: how the same step is computed or recorded
    #: (kernels, fusion, kvstore, batch-loss records, prediction groups), never what it computes
    RESUME_MUTABLE_EXTRA: ClassVar[tuple[str, ...]] = (
        "record_batch_losses",
        "predict_batch_rows",
        "sparse_kernel",
        "fused_step",
        "fused_optimizer",
        "kvstore",
    )

    def resume_mutable(self) -> tuple[str, ...]:
        # the cosine schedule's learning rates depend on the number of epochs
        mutable = super().resume_mutable()
        return tuple(k for k in mutable if k != "epochs") if self.lr_schedule == "cosine" else mutable

    @property
    def full_batch(self) -> bool:
        """Rprop and L-BFGS take one step per epoch on the full-batch gradient (accumulated over
        chunks of ``batch_size`` rows)."""
        return self.optimizer in FULL_BATCH_OPTIMIZERS
