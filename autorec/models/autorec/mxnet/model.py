"""AutoRec in MXNet Gluon (:class:`AutoRecMXNet`): I-/U-AutoRec, deep stacks, dense and sparse paths
(:mod:`.block`), one or several contexts.

The D2L chapter's model, as the chapter trains it: ``nn.Dense`` encoder -> activation ->
``nn.Dropout`` -> ``nn.Dense`` decoder, the output masked by the observed entries of the input,
``gluon.loss.L2Loss`` on ``(pred * mask, x)``, ``l.backward()`` on each context's share,
``trainer.step(batch_size)``; each batch spread over the contexts with
``gluon.utils.split_and_load`` and the gradients summed by the Trainer's kvstore.  The semantics
are :mod:`autorec.models.autorec.semantics`, shared with the PyTorch backend, so one config trains
the same model in both.

Objective per batch of ``B`` rows (summed over its context shares): ``B * loss_multiplier * SSE``
(+ ``B * reg/2 * sum ||W_k||^2 * B / n_rows`` on the first context for ``reg_form="paper"``), then
``trainer.step(B)`` divides the gradient by ``B``.  For ``loss="d2l"`` ``B * loss_multiplier = 0.5 /
n_in``, which is exactly Gluon's ``L2Loss`` summed over the rows, and the dense path computes it
with ``L2Loss``.  The mask is the stored pattern of the CSR batch (D2L's ``sign(x)`` equals it for
ratings > 0).  ``reg_form="wd"`` is the Trainer's ``wd`` (coupled weight decay on every parameter,
as D2L and as torch's ``weight_decay``).  At MovieLens densities (~6%) with h = 500 the sparse
path's gathered ``(nnz, h)`` arrays are larger than the dense batch, so the dense path is the faster
one in MXNet (measurements: docs/measurements.md).

Contexts: ``devices=("cpu(0)", "cpu(1)")`` or ``("gpu(0)", "gpu(1)")`` (``cpu``, ``gpu``,
``cuda:N`` are accepted; ``cuda:N`` is ``gpu(N)``).  A GPU that MXNet does not see, a repeated
context and a mix of CPU and GPU contexts are rejected with :class:`ConfigError` at construction.
With several contexts the Trainer's kvstore (``extra["kvstore"]``: ``"device"``, D2L's default, or
``"local"``) sums the gradients and every replica applies the same update
(``update_on_kvstore=False``: the optimizer state then lives with the replicas, which keeps
``set_weights`` and checkpoints exact).  A batch smaller than the number of contexts leaves some
contexts without rows: they back-propagate a zero so that their (zero) gradient is fresh and the
replicas stay identical.

Optimizers: ``adam`` and ``sgd`` (``extra["sgd_momentum"]``, default 0; MXNet folds the lr into the
momentum buffer, which equals torch's rule while the lr is constant).  Gluon has no Rprop and no
L-BFGS: ``optimizer="rprop"`` / ``"lbfgs"`` raise :class:`ConfigError` naming the PyTorch backend.
``extra["adam_epsilon"]``: ``"gluon"`` (default, Gluon's Adam as D2L) or ``"torch"``
(:class:`.optim.TorchAdam`, epsilon placed as ``torch.optim.Adam``).  Other knobs:
``record_batch_losses`` and ``predict_batch_rows``.  ``init="default"`` is Gluon's own
initialisation (``Uniform(0.07)`` weights, zero biases) seeded by ``config.seed``.  Dropout masks
come from MXNet's RNG reseeded every epoch, so trajectories agree across backends only with
``dropout=0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from autorec.devices import parse_device
from autorec.env import set_threads
from autorec.errors import ConfigError
from autorec.models.autorec.base import AutoRecBase
from autorec.models.autorec.config import AutoRecConfig
from autorec.models.autorec.mxnet import optim
from autorec.models.autorec.mxnet.block import AutoRecBlock, nd
from autorec.models.autorec.rows import PairGroup, batch_entries
from autorec.models.autorec.semantics import (
    EpochStats,
    epoch_batches,
    epoch_seed,
    layer_activations,
    loss_multiplier,
    lr_at,
    paper_reg_fraction,
)

KVSTORES = ("device", "local")
ADAM_EPSILON = ("gluon", "torch")


def mx_contexts(label: str, devices: tuple[str, ...]) -> list:
    """The MXNet contexts of ``devices``; :class:`ConfigError` for a GPU MXNet does not see, a
    repeated context, or a mix of CPU and GPU contexts."""
    out = []
    for dev in devices:
        kind, idx = parse_device(dev)
        idx = 0 if idx is None else idx
        if kind == "cpu":
            out.append(mx.cpu(idx))
            continue
        n = mx.context.num_gpus()
        if idx >= n:
            raise ConfigError(
                f"{label}: device {dev!r} does not exist: MXNet {mx.__version__} sees {n} GPU(s)"
                + (" (a CPU-only mxnet build, or no CUDA device)" if n == 0 else f" (gpu(0)..gpu({n - 1}))")
                + "; use devices=('cpu',) or ('cpu(0)', 'cpu(1)')"
            )
        out.append(mx.gpu(idx))
    names = [str(c) for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{label}: devices={list(devices)}: context repeated ({names}); name each context once")
    if len({c.device_type for c in out}) > 1:
        raise ConfigError(
            f"{label}: devices={list(devices)}: mixing CPU and GPU contexts is not supported; "
            f"use only cpu(N) or only gpu(N)"
        )
    return out


def split_sizes(n_rows: int, n_parts: int) -> list[int]:
    """The share of each context in a batch of ``n_rows``: ``gluon.utils.split_data``'s partition
    with ``even_split=False`` (the first ``n_rows % n_parts`` shares one row larger)."""
    each, extra = divmod(int(n_rows), int(n_parts))
    return [each + 1] * extra + [each] * (n_parts - extra)


class MXNetEpochs:
    """One fit's Gluon Trainer and epoch step (:class:`autorec.models.training.EpochTrainer`)."""

    def __init__(self, model: AutoRecMXNet) -> None:
        self.m = model
        self.cfg = model.config
        self.csr = model.train_matrix
        self.n_rows, self.n_in = model.n_rows, model.n_in
        self.row_nnz = np.diff(self.csr.indptr).astype(np.int64)
        self.net: AutoRecBlock = model.net
        self.ctxs = model.contexts
        self.record = bool(self.cfg.extra.get("record_batch_losses", False))
        self.l2 = gluon.loss.L2Loss()
        self.trainer = gluon.Trainer(
            self.net.collect_params(),
            self._optimizer(),
            kvstore=self.cfg.extra.get("kvstore", "device"),
            update_on_kvstore=False if len(self.ctxs) > 1 else None,
        )

    def _optimizer(self) -> mx.optimizer.Optimizer:
        cfg = self.cfg
        wd = float(cfg.reg) if cfg.reg_form == "wd" else 0.0
        if cfg.optimizer == "sgd":
            return mx.optimizer.SGD(learning_rate=cfg.lr, wd=wd, momentum=float(cfg.extra.get("sgd_momentum", 0.0)))
        if cfg.extra.get("adam_epsilon", "gluon") == "torch":
            return optim.TorchAdam(learning_rate=cfg.lr, wd=wd)
        return mx.optimizer.Adam(learning_rate=cfg.lr, wd=wd)

    def state(self, copy: bool = True) -> dict[str, np.ndarray]:
        return self.m.get_weights()  # always copies (asnumpy)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.m.set_weights(state)

    def optimizer_state(self) -> bytes:
        return optim.dump_state(self.trainer)

    def load_optimizer_state(self, state: bytes) -> None:
        optim.load_state(self.trainer, state)

    # ------------------------------------------------------------------ objective
    def _reg_term(self, ctx: Any) -> Any:
        """``reg/2 * sum ||W_k||^2`` (weight matrices only) on ``ctx``."""
        sq: Any = None
        for layer in self.net.layers:
            w = layer.weight.data(ctx)
            s = nd.sum(w * w)
            sq = s if sq is None else sq + s
        return 0.5 * float(self.cfg.reg) * sq

    def _zero_touch(self, ctx: Any) -> Any:
        """A zero that depends on every parameter of ``ctx`` (its gradient is a fresh zero)."""
        total: Any = None
        for p in self.net.collect_params().values():
            s = nd.sum(p.data(ctx))
            total = s if total is None else total + s
        return total * 0.0

    def _share_inputs(self, rows: np.ndarray) -> list:
        """Per context: ``None`` for an empty share, else the path's input arrays on that context."""
        sizes = split_sizes(len(rows), len(self.ctxs))
        out: list = []
        if self.cfg.path == "dense":
            sub = self.csr[rows]
            x = sub.toarray()
            mask = sub.copy()
            mask.data[:] = 1.0
            mask = mask.toarray()
            if min(sizes) > 0:
                xs = gluon.utils.split_and_load(x, self.ctxs, even_split=False)
                ms = gluon.utils.split_and_load(mask, self.ctxs, even_split=False)
                return list(zip(xs, ms))
            start = 0
            for ctx, n in zip(self.ctxs, sizes):
                if n == 0:
                    out.append(None)
                    continue
                out.append((nd.array(x[start : start + n], ctx=ctx), nd.array(mask[start : start + n], ctx=ctx)))
                start += n
            return out
        start = 0
        for ctx, n in zip(self.ctxs, sizes):
            if n == 0:
                out.append(None)
                continue
            part = rows[start : start + n]
            start += n
            indptr, local, cols, vals = batch_entries(self.csr, part)
            x = nd.sparse.csr_matrix((vals, cols, indptr), shape=(n, self.n_in), ctx=ctx, dtype="float32")
            out.append(
                (
                    x,
                    nd.array(local, ctx=ctx, dtype="int64"),
                    nd.array(cols, ctx=ctx, dtype="int64"),
                    nd.array(vals, ctx=ctx, dtype="float32"),
                    int(len(vals)),
                )
            )
        return out

    def _objective(self, inp: Any, ctx: Any, scale: float, reg_scale: float | None) -> tuple[Any, Any]:
        """(objective, sse) of one context's share, recorded; ``scale`` multiplies the SSE,
        ``reg_scale`` (first context only) the paper regulariser."""
        if inp is None:
            obj, sse = self._zero_touch(ctx), None
        elif self.cfg.path == "dense":
            x, mask = inp
            out = self.net(x) * mask
            if self.cfg.loss == "d2l":
                obj = nd.sum(self.l2(out, x))  # Gluon L2Loss: 0.5 * mean_j per row, summed over rows
            else:
                obj = scale * nd.sum(nd.square(out - x))
            sse = nd.sum(nd.square(out.detach() - x))
        else:
            x, local, cols, vals, nnz = inp
            if nnz == 0:
                obj, sse = self._zero_touch(ctx), None
            else:
                h = self.net.hidden_sparse(x, ctx)
                pred = self.net.decode_pairs(h, local, cols, ctx)
                sse = nd.sum(nd.square(pred - vals))
                obj = scale * sse
        if reg_scale is not None and self.cfg.reg_form == "paper" and self.cfg.reg > 0:
            obj = obj + reg_scale * self._reg_term(ctx)
        return obj, sse

    def batch_step(self, rows: np.ndarray, epoch: int, bi: int) -> tuple[float, float, int]:
        """Forward/backward of one batch over the contexts, then ``trainer.step``.  Returns
        (objective, sse, nnz) of the batch."""
        cfg = self.cfg
        b = len(rows)
        nnz = int(self.row_nnz[rows].sum())
        mult = loss_multiplier(cfg.loss, b, self.n_in, nnz)
        frac = paper_reg_fraction(b, self.n_rows)
        inputs = self._share_inputs(rows)
        with autograd.record():
            results = [
                self._objective(inp, ctx, b * mult, b * frac if c == 0 else None)
                for c, (inp, ctx) in enumerate(zip(inputs, self.ctxs))
            ]
        for obj, _ in results:
            obj.backward()
        obj_v = sum(float(obj.asscalar()) for obj, _ in results) / b
        sse_v = sum(float(sse.asscalar()) for _, sse in results if sse is not None)
        self.m.check_batch_loss(obj_v, epoch=epoch, batch=bi)
        self.trainer.step(b)
        return obj_v, sse_v, nnz

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        lr = lr_at(cfg, epoch)
        self.trainer.set_learning_rate(lr)
        mx.random.seed(epoch_seed(cfg.seed, epoch))
        stats = EpochStats(cfg.loss, self.n_in)
        batch_losses: list[float] = []
        for bi, rows in enumerate(epoch_batches(self.n_rows, cfg, epoch)):
            obj_v, sse_v, nnz = self.batch_step(rows, epoch, bi)
            stats.add(sse_v, nnz, len(rows))
            stats.steps += 1
            batch_losses.append(obj_v)
        out: dict[str, Any] = {**stats.result(), "lr": lr}
        if self.record:
            out["batch_losses"] = batch_losses
        return out


class AutoRecMXNet(AutoRecBase):
    """AutoRec in MXNet Gluon on one or several contexts (:meth:`launcher` says ``contexts``)."""

    backend = "mxnet"
    requires = (("mxnet", "mxnet"),)
    KNOWN_EXTRA: ClassVar[tuple[str, ...]] = (
        "sgd_momentum",
        "record_batch_losses",
        "predict_batch_rows",
        "kvstore",
        "adam_epsilon",
    )
    # Gluon has neither Rprop nor L-BFGS: the MXNet backend searches the common part + the Adam variant
    SPACE: ClassVar[dict[str, Any]] = {
        **{k: v for k, v in AutoRecBase.SPACE.items() if k != "one_of"},
        **AutoRecBase.SPACE["one_of"]["adam"],
    }
    net: AutoRecBlock

    def __init__(self, config: AutoRecConfig | Mapping[str, Any] | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._check_backend_config()
        self.ctxs = mx_contexts(self.label(), self.config.devices)
        set_threads(self.config.threads, mxnet=True)

    def _check_backend_config(self) -> None:
        """What the MXNet backend cannot do, rejected up front."""
        cfg, label = self.config, self.label()
        if cfg.full_batch:
            name = "Rprop" if cfg.optimizer == "rprop" else "L-BFGS"
            raise ConfigError(
                f"{label}: optimizer={cfg.optimizer!r} is not available in the MXNet backend: Gluon has no {name} "
                f"optimizer (mx.optimizer offers adam, sgd, ...); use optimizer='adam' or 'sgd' here, or train "
                f"this config with the PyTorch backend (backend 'torch', AutoRecTorch)"
            )
        kv = cfg.extra.get("kvstore", "device")
        if kv not in KVSTORES:
            raise ConfigError(f"{label}: extra['kvstore']={kv!r} is not one of {list(KVSTORES)}")
        eps = cfg.extra.get("adam_epsilon", "gluon")
        if eps not in ADAM_EPSILON:
            raise ConfigError(f"{label}: extra['adam_epsilon']={eps!r} is not one of {list(ADAM_EPSILON)}")

    @classmethod
    def launcher(cls, devices: tuple[str, ...] | list[str]) -> str:
        return "contexts" if len(devices) > 1 else "single"

    @property
    def contexts(self) -> list:
        """The MXNet contexts the model lives on (the first one predicts)."""
        return list(self.ctxs)

    # ------------------------------------------------------------------ network
    def _build(self, n_in: int) -> None:
        sizes, init = self._initial(n_in)
        net = AutoRecBlock(sizes, layer_activations(self.config), self.config.dropout)
        if init is None:
            mx.random.seed(int(self.config.seed))
            net.initialize(ctx=self.ctxs)  # Gluon's default: Uniform(0.07) weights, zero biases
        else:
            net.initialize(mx.init.Zero(), ctx=self.ctxs)
        self.net = net
        if init is not None:
            self._assign(init)

    def _assign(self, weights: dict[str, np.ndarray]) -> None:
        for k, layer in enumerate(self.net.layers):
            layer.weight.set_data(nd.array(weights[f"W{k}"], dtype="float32"))
            layer.bias.set_data(nd.array(weights[f"b{k}"], dtype="float32"))

    def get_weights(self) -> dict[str, np.ndarray]:
        """The weights of the first context."""
        return self.replica_weights()[0]

    def replica_weights(self) -> list[dict[str, np.ndarray]]:
        """The weights held on each context (identical after every step), float32 copies."""
        self._need_net("get_weights")
        out = []
        for ctx in self.ctxs:
            d = {}
            for k, layer in enumerate(self.net.layers):
                d[f"W{k}"] = layer.weight.data(ctx).asnumpy().astype(np.float32, copy=True)
                d[f"b{k}"] = layer.bias.data(ctx).asnumpy().astype(np.float32, copy=True)
            out.append(d)
        return out

    def _trainer(self) -> MXNetEpochs:
        return MXNetEpochs(self)

    def _fit_extra(self) -> dict[str, Any]:
        # Gluon creates no kvstore for a single context; several aggregate through the configured one
        kvstore = self.config.extra.get("kvstore", "device") if len(self.ctxs) > 1 else None
        devices = [str(c) for c in self.ctxs]
        return {**super()._fit_extra(), "world_size": len(self.ctxs), "devices": devices, "kvstore": kvstore}

    # ------------------------------------------------------------------ prediction
    def _input(self, rows: np.ndarray, ctx: Any) -> Any:
        if self.config.path == "sparse":
            indptr, _, cols, vals = batch_entries(self.train_matrix, rows)
            return nd.sparse.csr_matrix((vals, cols, indptr), shape=(len(rows), self.n_in), ctx=ctx, dtype="float32")
        return nd.array(self.train_matrix[rows].toarray(), ctx=ctx, dtype="float32")

    def _estimate_group(self, group: PairGroup) -> np.ndarray:
        ctx = self.ctxs[0]
        x = self._input(group.rows, ctx)
        local = nd.array(group.local, ctx=ctx, dtype="int64")
        col = nd.array(group.cols, ctx=ctx, dtype="int64")
        if self.config.path == "sparse":
            return self.net.decode_pairs(self.net.hidden_sparse(x, ctx), local, col, ctx).asnumpy()
        return nd.gather_nd(self.net(x), nd.stack(local, col)).asnumpy()

    def _reconstruct_batch(self, rows: np.ndarray) -> np.ndarray:
        ctx = self.ctxs[0]
        x = self._input(rows, ctx)
        if self.config.path == "sparse":
            return self.net.full_from_hidden(self.net.hidden_sparse(x, ctx)).asnumpy()
        return self.net(x).asnumpy()
