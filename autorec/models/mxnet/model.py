"""AutoRec in MXNet Gluon (``AutoRecMXNet``): I-/U-AutoRec, deep stacks, dense and sparse paths,
one or several contexts.

The D2L chapter's model, as the chapter trains it: ``nn.Dense`` encoder -> activation ->
``nn.Dropout`` -> ``nn.Dense`` decoder, the output masked by the observed entries of the input,
``gluon.loss.L2Loss`` on ``(pred * mask, x)``, ``l.backward()`` on each context's share,
``trainer.step(batch_size)``; each batch spread over the contexts with
``gluon.utils.split_and_load`` and the gradients summed by the Trainer's kvstore.  The semantics
(objective scaling, paper regulariser, lr schedules, batch order, dropout seeding, initial weights,
early stopping, checkpoints) are the ones of :mod:`autorec.models.common`, shared with
:class:`autorec.models.torch.AutoRecTorch`, so one config trains the same model in both.

Objective per batch of ``B`` rows (summed over its context shares): ``B * loss_multiplier *
SSE`` (+ ``B * reg/2 * sum ||W_k||^2 * B / n_rows`` on the first context for ``reg_form="paper"``),
then ``trainer.step(B)`` divides the gradient by ``B``.  For ``loss="d2l"`` ``B *
loss_multiplier = 0.5 / n_in``, which is exactly Gluon's ``L2Loss`` summed over the rows, and the
dense path computes it with ``L2Loss``.  The mask is the stored pattern of the CSR batch (D2L's
``sign(x)`` equals it for ratings > 0).  ``reg_form="wd"`` is the Trainer's ``wd`` (coupled weight
decay on every parameter, as D2L and as torch's ``weight_decay``).

Two training paths, one objective:

- ``path="dense"``: the seed's formulation; each batch is densified from CSR on the host.
- ``path="sparse"``: the batch is an ``mx.nd.sparse.csr_matrix`` on each context.  The encoder is
  ``mx.nd.sparse.dot(X, W0^T)`` (the csr x dense kernel, O(nnz * h)), the middle layers are dense
  ``(b, h)``, and the decoder is evaluated at the observed entries only: decoder rows gathered with
  ``nd.take(W_L, cols)``, hidden rows with ``nd.take(h, local_row)``, a row-wise dot, plus the bias
  taken at those columns.  No ``(b, n_in)`` array is built.

What did not work in MXNet 1.9.1, and why the encoder is written as it is:

- ``mx.nd.sparse.dot(csr, weight, transpose_b=True)`` (the obvious form, weight stored (out, in))
  has no sparse kernel: MXNet logs "Storage type fallback detected: operator = dot, input storage
  types = [csr, default, ], output storage types = [default, ], params = {"transpose_b" : True, }
  ... Temporary dense ndarrays are generated in order to execute the operator", i.e. it densifies
  the CSR batch, and its backward (``_backward_dot`` with ``[default, csr, default]``) falls back
  likewise.  The kernels that exist on CPU are ``dot(csr, default) -> default`` and
  ``dot(csr.T, default) -> row_sparse``.
- Under autograd, ``dot(csr, W.T)`` (``W.T`` via ``nd.transpose``) runs the sparse forward kernel;
  its backward produces a ``row_sparse`` gradient for ``W.T`` and then ``transpose`` of that
  ``row_sparse`` array falls back to dense (another "Storage type fallback" log line).  The
  gradient of a ``Dense`` weight is dense anyway (``grad_stype='default'``), so the encoder is a
  small ``autograd.Function`` (:class:`_CsrTimesWT`): forward ``dot(X, transpose(W))``, backward
  ``transpose(dot(X, dY, transpose_a=True).tostype('default'))``: sparse kernels both ways, the
  gradient densified once, explicitly, and no fallback.
- A ``row_sparse`` weight gradient (``grad_stype='row_sparse'``) is deliberately not used: Gluon's
  Adam/SGD then default to *lazy* updates (moments and weight decay applied only to rows present in
  the batch), which is a different optimizer than the dense path's and torch's.
- MXNet 1.9.1 has no sampled dense-dense matmul (torch's ``sampled_addmm``), so the decoder at the
  observed entries gathers ``(nnz, h)`` arrays (hidden rows and decoder rows) and autograd keeps
  them for backward (``take``'s backward is a scatter-add): memory O(nnz_batch * h), and it is
  memory-bound.  A custom ``autograd.Function`` that avoids the gathers in backward (``dh = D @ W``,
  ``dW = D^T @ h`` with ``D`` the CSR matrix of the incoming gradient) does not work: building ``D``
  inside ``backward`` with ``mx.nd.sparse.csr_matrix((dz, cols, indptr), ...)`` goes through
  ``MXNDArraySyncCopyFromNDArray`` and deadlocks the engine (the next ``asscalar()`` never
  returns), since a Function's backward runs inside the engine.
- Measured on ML-100K (random 90/10, seed 0, D2L config, 25 epochs; 2 CPU cores shared with other
  jobs, so seconds are indicative and varied 2-4x between runs): I-AutoRec 0.27 s/epoch dense vs
  0.70 s/epoch sparse, U-AutoRec 0.15 vs 1.49, with identical test RMSE (0.8975 and 0.9869).  At MovieLens densities
  (~6%) with h = 500 the gathered arrays (nnz * h) are larger than the dense batch (b * n_in), so
  the dense path is the faster one here; the sparse path never builds a ``(b, n_in)`` array.

Contexts: ``devices=("cpu(0)", "cpu(1)")`` or ``("gpu(0)", "gpu(1)")`` (``cpu``, ``gpu``,
``cuda:N`` are accepted; ``cuda:N`` is ``gpu(N)``).  A GPU that MXNet does not see, a repeated
context and a mix of CPU and GPU contexts are rejected with :class:`ConfigError` at construction.
With several contexts the Trainer's kvstore (``config.extra["kvstore"]``: ``"device"``, D2L's
default, or ``"local"``) sums the gradients and every replica applies the same update
(``update_on_kvstore=False``: the optimizer state then lives with the replicas, which keeps
``set_weights`` and checkpoints exact; the kvstore still does the aggregation).  A batch smaller
than the number of contexts leaves some contexts without rows: they back-propagate a zero so that
their (zero) gradient is fresh and the replicas stay identical.

Optimizers: ``adam`` and ``sgd`` (``extra["sgd_momentum"]``, default 0; MXNet folds the lr into
the momentum buffer, which equals torch's rule while the lr is constant).  Gluon has no Rprop and
no L-BFGS optimizer: ``optimizer="rprop"`` / ``"lbfgs"`` raise :class:`ConfigError` naming this
and pointing to the PyTorch backend (:class:`autorec.models.torch.AutoRecTorch`).
``extra["adam_epsilon"]``: ``"gluon"`` (default, Gluon's Adam as D2L) or ``"torch"``
(:class:`autorec.models.mxnet.optim.TorchAdam`, epsilon placed as ``torch.optim.Adam``; see that
module for why it matters).  Other knobs in ``config.extra``: ``record_batch_losses`` (every history
record then holds ``batch_losses``, the objective of each step) and ``predict_batch_rows``.

Initial weights come from :func:`autorec.models.common.initial_weights` (numpy, identical to the
torch backend's for the same seed; ``normal`` is N(0, init_scale) weights and zero biases, which is
what D2L's ``net.initialize(init=mx.init.Normal(0.01))`` gives ``Dense`` layers);
``init="default"`` is Gluon's own default (``mx.init.Uniform(0.07)`` weights, zero biases), seeded
by ``config.seed``.  Dropout masks come from MXNet's RNG, reseeded at every epoch from
:func:`autorec.models.common.epoch_seed` (so a resumed run equals an uninterrupted one); they are
not the torch backend's masks, so trajectories agree across backends only with ``dropout=0``.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd
from mxnet.gluon import nn

from autorec import env
from autorec.config import AutoRecConfig
from autorec.errors import ConfigError
from autorec.interactions import Interactions
from autorec.models import common
from autorec.models.base import FitInfo, ProgressFn
from autorec.models.mxnet import optim

KNOWN_EXTRA = ("sgd_momentum", "record_batch_losses", "predict_batch_rows", "kvstore", "adam_epsilon")
KVSTORES = ("device", "local")
ADAM_EPSILON = ("gluon", "torch")


def _act(name: str, x):
    if name == "identity":
        return x
    if name == "sigmoid":
        return nd.sigmoid(x)
    if name == "relu":
        return nd.relu(x)
    if name == "tanh":
        return nd.tanh(x)
    if name == "elu":
        return nd.LeakyReLU(x, act_type="elu", slope=1.0)  # alpha 1, as torch's F.elu
    if name == "selu":
        return nd.LeakyReLU(x, act_type="selu")
    raise ConfigError(f"activation {name!r} unknown")  # pragma: no cover - validate() rejects it


def mx_contexts(config: AutoRecConfig) -> list:
    """The MXNet contexts of ``config.devices``; :class:`ConfigError` for a GPU MXNet does not see,
    a repeated context, or a mix of CPU and GPU contexts."""
    out = []
    for dev in config.devices:
        kind, idx = common.parse_device(dev)
        idx = 0 if idx is None else idx
        if kind == "cpu":
            out.append(mx.cpu(idx))
            continue
        n = mx.context.num_gpus()
        if idx >= n:
            raise ConfigError(
                f"device {dev!r} does not exist: MXNet {mx.__version__} sees {n} GPU(s)"
                + (" (a CPU-only mxnet build, or no CUDA device)" if n == 0 else f" (gpu(0)..gpu({n - 1}))")
                + "; use devices=('cpu',) or ('cpu(0)', 'cpu(1)')")
        out.append(mx.gpu(idx))
    names = [str(c) for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"devices={list(config.devices)}: context repeated ({names}); name each context once")
    if len({c.device_type for c in out}) > 1:
        raise ConfigError(f"devices={list(config.devices)}: mixing CPU and GPU contexts is not supported; "
                          f"use only cpu(N) or only gpu(N)")
    return out


def check_backend_config(config: AutoRecConfig) -> None:
    """What the MXNet backend cannot do, rejected up front."""
    if config.optimizer in ("rprop", "lbfgs"):
        raise ConfigError(
            f"optimizer={config.optimizer!r} is not available in the MXNet backend: Gluon has no "
            f"{'Rprop' if config.optimizer == 'rprop' else 'L-BFGS'} optimizer (mx.optimizer offers "
            f"adam, sgd, ...); use optimizer='adam' or 'sgd' here, or train this config with the "
            f"PyTorch backend (autorec.models.torch.AutoRecTorch)")
    unknown = sorted(set(config.extra) - set(KNOWN_EXTRA))
    if unknown:
        raise ConfigError(f"unknown mxnet backend knob(s) in extra: {unknown}; known: {list(KNOWN_EXTRA)}")
    kv = config.extra.get("kvstore", "device")
    if kv not in KVSTORES:
        raise ConfigError(f"extra['kvstore']={kv!r} is not one of {list(KVSTORES)}")
    eps = config.extra.get("adam_epsilon", "gluon")
    if eps not in ADAM_EPSILON:
        raise ConfigError(f"extra['adam_epsilon']={eps!r} is not one of {list(ADAM_EPSILON)}")
    mom = config.extra.get("sgd_momentum", 0.0)
    if not isinstance(mom, (int, float)) or isinstance(mom, bool) or not 0.0 <= float(mom) < 1.0:
        raise ConfigError(f"extra['sgd_momentum']={mom!r} must be a number in [0, 1)")
    pbr = config.extra.get("predict_batch_rows")
    if pbr is not None and (isinstance(pbr, bool) or not isinstance(pbr, int) or pbr <= 0):
        raise ConfigError(f"extra['predict_batch_rows']={pbr!r} must be a positive integer")


class _CsrTimesWT(autograd.Function):
    """``X @ W.T`` for a CSR ``X`` (b, n_in) and a dense ``W`` (out, n_in), with sparse kernels in
    both directions (see the module docstring for why ``dot(X, W, transpose_b=True)`` is not used)."""

    def __init__(self, x_csr):
        super().__init__()
        self.x = x_csr

    def forward(self, w):
        return nd.sparse.dot(self.x, nd.transpose(w))

    def backward(self, dy):
        g = nd.sparse.dot(self.x, dy, transpose_a=True)  # (n_in, out), row_sparse on CPU
        if g.stype != "default":
            g = g.tostype("default")
        return nd.transpose(g)


class AutoRecBlock(gluon.Block):
    """The encoder-decoder stack ``sizes = [n_in, *hidden, n_in]`` (``layers[k]`` holds ``W{k}, b{k}``
    as an ``nn.Dense(sizes[k+1], in_units=sizes[k])``)."""

    def __init__(self, sizes: list[int], activations: list[str], dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.sizes = list(sizes)
        self.activations = list(activations)
        self.rate = float(dropout)
        with self.name_scope():
            self.layers = nn.Sequential()
            for k in range(len(sizes) - 1):
                self.layers.add(nn.Dense(sizes[k + 1], in_units=sizes[k], flatten=False))
            self.dropout = nn.Dropout(self.rate) if self.rate > 0 else None

    @property
    def n_in(self) -> int:
        return self.sizes[0]

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def _hidden_tail(self, z0):
        h = _act(self.activations[0], z0)
        if self.dropout is not None:
            h = self.dropout(h)
        for k in range(1, self.n_layers - 1):
            h = _act(self.activations[k], self.layers[k](h))
            if self.dropout is not None:
                h = self.dropout(h)
        return h

    def forward(self, x):
        """The full reconstruction ``(b, n_in)`` of a dense batch (dropout only in training mode)."""
        h = self._hidden_tail(self.layers[0](x))
        return _act(self.activations[-1], self.layers[self.n_layers - 1](h))

    def hidden_sparse(self, x_csr, ctx):
        """The last hidden representation of a CSR batch: ``X @ W0^T + b0`` first."""
        first = self.layers[0]
        z0 = _CsrTimesWT(x_csr)(first.weight.data(ctx))
        z0 = nd.broadcast_add(z0, first.bias.data(ctx).reshape((1, -1)))
        return self._hidden_tail(z0)

    def decode_pairs(self, h, local, cols, ctx):
        """Outputs at (row of ``h``, column) pairs: the row-wise dot of gathered hidden rows and
        gathered decoder rows, plus the decoder bias at those columns."""
        last = self.layers[self.n_layers - 1]
        z = nd.sum(nd.take(h, local) * nd.take(last.weight.data(ctx), cols), axis=1)
        return _act(self.activations[-1], z + nd.take(last.bias.data(ctx), cols))

    def full_from_hidden(self, h, ctx):
        last = self.layers[self.n_layers - 1]
        return _act(self.activations[-1], last(h))


def split_sizes(n_rows: int, n_parts: int) -> list[int]:
    """The share of each context in a batch of ``n_rows``: ``gluon.utils.split_data``'s partition
    with ``even_split=False`` (the first ``n_rows % n_parts`` shares one row larger)."""
    each, extra = divmod(int(n_rows), int(n_parts))
    return [each + 1] * extra + [each] * (n_parts - extra)


class _Trainer:
    """One fit's Gluon Trainer and epoch step (the backend half of :func:`common.run_training`)."""

    def __init__(self, model: "AutoRecMXNet", csr):
        self.m = model
        self.cfg = model.config
        self.csr = csr
        self.n_rows, self.n_in = csr.shape
        self.row_nnz = np.diff(csr.indptr).astype(np.int64)
        self.net = model.net
        self.ctxs = model.ctxs
        self.record = bool(self.cfg.extra.get("record_batch_losses", False))
        self.l2 = gluon.loss.L2Loss()
        self.trainer = gluon.Trainer(self.net.collect_params(), self._optimizer(),
                                     kvstore=self.cfg.extra.get("kvstore", "device"),
                                     update_on_kvstore=False if len(self.ctxs) > 1 else None)

    def _optimizer(self):
        cfg = self.cfg
        wd = float(cfg.reg) if cfg.reg_form == "wd" else 0.0
        if cfg.optimizer == "adam":
            if cfg.extra.get("adam_epsilon", "gluon") == "torch":
                return optim.TorchAdam(learning_rate=cfg.lr, wd=wd)
            return mx.optimizer.Adam(learning_rate=cfg.lr, wd=wd)
        if cfg.optimizer == "sgd":
            return mx.optimizer.SGD(learning_rate=cfg.lr, wd=wd,
                                    momentum=float(cfg.extra.get("sgd_momentum", 0.0)))
        raise ConfigError(f"optimizer={cfg.optimizer!r} unknown")  # pragma: no cover - checked up front

    def optimizer_state(self) -> bytes:
        return optim.dump_state(self.trainer)

    def load_optimizer_state(self, state: bytes) -> None:
        optim.load_state(self.trainer, state)

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.m.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.m.set_weights(weights)

    # ------------------------------------------------------------------ objective
    def _reg_term(self, ctx):
        """``reg/2 * sum ||W_k||^2`` (weight matrices only) on ``ctx``."""
        sq = None
        for layer in self.net.layers:
            w = layer.weight.data(ctx)
            s = nd.sum(w * w)
            sq = s if sq is None else sq + s
        return 0.5 * float(self.cfg.reg) * sq

    def _zero_touch(self, ctx):
        """A zero that depends on every parameter of ``ctx`` (its gradient is a fresh zero)."""
        total = None
        for p in self.net.collect_params().values():
            s = nd.sum(p.data(ctx))
            total = s if total is None else total + s
        return total * 0.0

    def _share_inputs(self, rows: np.ndarray):
        """Per context: ``None`` for an empty share, else the path's input arrays on that context."""
        sizes = split_sizes(len(rows), len(self.ctxs))
        out = []
        if self.cfg.path == "dense":
            sub = self.csr[rows]
            x = sub.toarray()
            mask = sub.copy()
            mask.data[:] = 1.0
            mask = mask.toarray()
            if min(sizes) > 0:
                xs = gluon.utils.split_and_load(x, self.ctxs, even_split=False)
                ms = gluon.utils.split_and_load(mask, self.ctxs, even_split=False)
                assert [a.shape[0] for a in xs] == sizes
                return list(zip(xs, ms))
            start = 0
            for ctx, n in zip(self.ctxs, sizes):
                out.append(None if n == 0 else (nd.array(x[start:start + n], ctx=ctx),
                                                nd.array(mask[start:start + n], ctx=ctx)))
                start += n
            return out
        start = 0
        for ctx, n in zip(self.ctxs, sizes):
            if n == 0:
                out.append(None)
                continue
            part = rows[start:start + n]
            start += n
            indptr, local, cols, vals = common.batch_entries(self.csr, part)
            x = nd.sparse.csr_matrix((vals, cols, indptr), shape=(n, self.n_in), ctx=ctx, dtype="float32")
            out.append((x, nd.array(local, ctx=ctx, dtype="int64"), nd.array(cols, ctx=ctx, dtype="int64"),
                        nd.array(vals, ctx=ctx, dtype="float32"), int(len(vals))))
        return out

    def _objective(self, inp, ctx, scale: float, reg_scale: float | None):
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

    def batch_step(self, rows: np.ndarray, epoch: int, bi: int, step: bool = True) -> tuple[float, float, int]:
        """Forward/backward of one batch over the contexts, then (if ``step``) ``trainer.step``.
        Returns (objective, sse, nnz) of the batch."""
        cfg = self.cfg
        b = len(rows)
        nnz = int(self.row_nnz[rows].sum())
        mult = common.loss_multiplier(cfg.loss, b, self.n_in, nnz)
        frac = common.paper_reg_fraction(b, self.n_rows)
        inputs = self._share_inputs(rows)
        with autograd.record():
            results = [self._objective(inp, ctx, b * mult, b * frac if c == 0 else None)
                       for c, (inp, ctx) in enumerate(zip(inputs, self.ctxs))]
        for obj, _ in results:
            obj.backward()
        obj_v = sum(float(obj.asscalar()) for obj, _ in results) / b
        sse_v = sum(float(sse.asscalar()) for _, sse in results if sse is not None)
        common.check_finite(obj_v, epoch=epoch, batch=bi, config=cfg)
        if step:
            self.trainer.step(b)
        return obj_v, sse_v, nnz

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        self.trainer.set_learning_rate(common.lr_at(cfg, epoch))
        mx.random.seed(common.epoch_seed(cfg.seed, epoch))
        stats = common.EpochStats(cfg.loss, self.n_in)
        batch_losses: list[float] = []
        for bi, rows in enumerate(common.epoch_batches(self.n_rows, cfg, epoch)):
            obj_v, sse_v, nnz = self.batch_step(rows, epoch, bi)
            stats.add(sse_v, nnz, len(rows))
            stats.steps += 1
            batch_losses.append(obj_v)
        out = stats.result()
        if self.record:
            out["batch_losses"] = batch_losses
        return out


class AutoRecMXNet(common.AutoRecBase):
    """AutoRec (Sedhain et al. 2015) in MXNet Gluon; configuration :class:`~autorec.config.AutoRecConfig`.

    ``AutoRecMXNet(config)``, ``AutoRecMXNet(dict)`` or ``AutoRecMXNet(hidden=(500,), ...)``.
    """

    backend = "mxnet"

    def __init__(self, config: "AutoRecConfig | dict | None" = None, **params: Any):
        if params:
            config = {**common.resolve_config(config).to_dict(), **params}
        self.config = common.resolve_config(config)
        check_backend_config(self.config)
        self.ctxs = mx_contexts(self.config)
        env.set_threads(self.config.threads)
        self._init_state()

    def __repr__(self) -> str:
        return f"AutoRecMXNet({common.config_summary(self.config)}, contexts={[str(c) for c in self.ctxs]})"

    @property
    def contexts(self) -> list:
        return list(self.ctxs)

    # ------------------------------------------------------------------ network
    def _build(self, n_in: int) -> None:
        cfg = self.config
        sizes = common.layer_sizes(cfg, n_in)
        net = AutoRecBlock(sizes, common.layer_activations(cfg), cfg.dropout)
        init = common.initial_weights(cfg, sizes)
        if init is None:
            mx.random.seed(int(cfg.seed))
            net.initialize(ctx=self.ctxs)  # Gluon's default: Uniform(0.07) weights, zero biases
        else:
            net.initialize(mx.init.Zero(), ctx=self.ctxs)
        self.net = net
        if init is not None:
            self._assign(init)

    def _assign(self, w: dict[str, np.ndarray]) -> None:
        for k, layer in enumerate(self.net.layers):
            layer.weight.set_data(nd.array(w[f"W{k}"], dtype="float32"))
            layer.bias.set_data(nd.array(w[f"b{k}"], dtype="float32"))

    def get_weights(self) -> dict[str, np.ndarray]:
        """``W0, b0, W1, b1, ...`` as float32 numpy copies from the first context (the layout
        contract of :mod:`autorec.config`)."""
        self._need_net("get_weights")
        out = {}
        for k, layer in enumerate(self.net.layers):
            out[f"W{k}"] = layer.weight.data(self.ctxs[0]).asnumpy().astype(np.float32, copy=True)
            out[f"b{k}"] = layer.bias.data(self.ctxs[0]).asnumpy().astype(np.float32, copy=True)
        return out

    def replica_weights(self) -> list[dict[str, np.ndarray]]:
        """The weights held on each context (identical after every step)."""
        self._need_net("replica_weights")
        out = []
        for ctx in self.ctxs:
            d = {}
            for k, layer in enumerate(self.net.layers):
                d[f"W{k}"] = layer.weight.data(ctx).asnumpy()
                d[f"b{k}"] = layer.bias.data(ctx).asnumpy()
            out.append(d)
        return out

    # ------------------------------------------------------------------ training
    def fit(self, train: Interactions, valid: Interactions | None = None, *, progress: ProgressFn | None = None,
            checkpoint: "str | os.PathLike | None" = None, checkpoint_every: int = 1,
            resume: "str | os.PathLike | None" = None,
            initial_weights: dict[str, np.ndarray] | None = None) -> FitInfo:
        """Train on ``train`` (early stopping on ``valid`` RMSE with ``config.patience``).

        ``checkpoint``: path of an atomic checkpoint written every ``checkpoint_every`` epochs;
        ``resume``: a checkpoint to continue from (same config); ``initial_weights``: start from
        these weights (contract layout) instead of the configured initialisation."""
        cfg = self.config
        env.set_threads(cfg.threads)
        self._start_fit(train, valid, initial_weights)
        trainer = self._trainer()
        valid_fn = None
        if valid is not None and len(valid):
            valid_fn = lambda: common.validation_rmse(self, train, valid, cfg.cold_start)  # noqa: E731
        info = common.run_training(trainer, cfg, backend=self.backend, valid_fn=valid_fn, progress=progress,
                                   checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume)
        info.extra.update({**self._fit_extra(len(self.ctxs)), "devices": [str(c) for c in self.ctxs], "kvstore": trainer.trainer._kvstore.type
                           if trainer.trainer._kvstore is not None else None})
        self.fit_info = info
        return info

    def _trainer(self) -> _Trainer:
        return _Trainer(self, self._csr)

    # ------------------------------------------------------------------ prediction
    def _predict_rows(self) -> int:
        n = self.config.extra.get("predict_batch_rows")
        if n:
            return max(int(n), 1)
        return max(1, min(4096, (1 << 22) // max(self.net.n_in, 1)))  # ~16 MB of dense output

    def _input(self, rows: np.ndarray, ctx):
        indptr, _, cols, vals = common.batch_entries(self._csr, rows)
        if self.config.path == "sparse":
            return nd.sparse.csr_matrix((vals, cols, indptr), shape=(len(rows), self.net.n_in), ctx=ctx,
                                        dtype="float32")
        return nd.array(self._csr[rows].toarray(), ctx=ctx, dtype="float32")

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Raw reconstructions for (user, item) pairs (no cold-start fill, no clipping: see
        :func:`autorec.metrics.predict_pairs`).  Pairs are grouped by input row; each needed row is
        reconstructed once, in bounded-memory groups, on the first context; on the sparse path only
        the needed outputs are evaluated."""
        rows, cols, n = self._pairs(users, items)
        out = np.empty(n, dtype=np.float32)
        ctx = self.ctxs[0]
        sparse = self.config.path == "sparse"
        max_pairs = 1 << 14 if sparse else 1 << 20
        for g in common.group_pairs(rows, cols, max_rows=self._predict_rows(), max_pairs=max_pairs):
            x = self._input(g.rows, ctx)
            local = nd.array(g.local, ctx=ctx, dtype="int64")
            col = nd.array(g.cols, ctx=ctx, dtype="int64")
            if sparse:
                vals = self.net.decode_pairs(self.net.hidden_sparse(x, ctx), local, col, ctx)
            else:
                vals = nd.gather_nd(self.net(x), nd.stack(local, col))
            out[g.index] = vals.asnumpy()
        return out

    def reconstruct(self, rows: np.ndarray | None = None, batch_size: int = 256
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_indices, outputs)`` with ``outputs`` the dense ``(len(row_indices), n_in)``
        reconstruction of those rows of the train matrix (items for I-AutoRec, users for
        U-AutoRec), ``batch_size`` rows at a time (bounded memory)."""
        rows = self._reconstruct_rows(rows, batch_size)
        ctx = self.ctxs[0]
        for s in range(0, len(rows), int(batch_size)):
            part = rows[s:s + int(batch_size)]
            x = self._input(part, ctx)
            if self.config.path == "sparse":
                outp = self.net.full_from_hidden(self.net.hidden_sparse(x, ctx), ctx)
            else:
                outp = self.net(x)
            yield part, outp.asnumpy()
