"""The D2L book's matrix factorisation (d2l.ai chapter "Matrix Factorization") in MXNet Gluon, as
the chapter trains it: ``MF(30, ...)`` with ``P``, ``Q``, ``user_bias``, ``item_bias`` embeddings and
no global mean, ``net.initialize(ctx=devices, init=mx.init.Normal(0.01))`` (biases included, they are
embedding weights), ``gluon.loss.L2Loss()``, ``gluon.Trainer(..., 'adam', {'learning_rate': 0.002,
'wd': 1e-5})``, ``trainer.step(batch_size)``, 20 epochs, batch 512, each batch spread over the
contexts with ``gluon.utils.split_and_load`` (``even_split=False``, since our last batch may be short;
D2L's DataLoader rolls it over instead).  Batches follow :func:`autorec.models.batching.epoch_order`,
the order :class:`baselines.mf_torch.D2LMFTorch` uses too.

Written with the classic ``mx.nd`` API (the chapter uses ``npx.set_np()``; the arithmetic is the
same, and switching the global numpy mode would change other MXNet code in the process).  mxnet is
imported lazily: without it, constructing the model raises
:class:`~autorec.errors.MissingDependencyError` naming ``pip install .[mxnet]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autorec.devices import parse_device
from autorec.env import set_threads
from autorec.errors import ConfigError
from autorec.interactions import Interactions
from autorec.models.batching import batches, epoch_order
from baselines.d2l_spec import D2LMF, TABLES

PREDICT_BATCH = 1 << 16


def mx_contexts(label: str, devices: tuple[str, ...]) -> list:
    """The MXNet contexts of ``devices``; :class:`ConfigError` for a GPU MXNet does not see or a
    repeated context."""
    import mxnet as mx

    out = []
    for dev in devices:
        kind, idx = parse_device(dev)
        if kind == "cpu":
            out.append(mx.cpu(idx or 0))
            continue
        n = mx.context.num_gpus()
        if (idx or 0) >= n:
            raise ConfigError(f"{label}: device {dev!r} requested but MXNet sees {n} GPU(s)")
        out.append(mx.gpu(idx or 0))
    if len(set(map(str, out))) != len(out):
        raise ConfigError(f"{label}: devices {list(devices)!r} repeat a context")
    return out


def _net_class() -> Any:
    import mxnet as mx

    nn = mx.gluon.nn

    class MF(nn.Block):
        """D2L's ``MF`` block."""

        def __init__(self, num_factors, num_users, num_items, **kwargs):
            super().__init__(**kwargs)
            self.P = nn.Embedding(input_dim=num_users, output_dim=num_factors)
            self.Q = nn.Embedding(input_dim=num_items, output_dim=num_factors)
            self.user_bias = nn.Embedding(num_users, 1)
            self.item_bias = nn.Embedding(num_items, 1)

        def forward(self, user_id, item_id):
            P_u = self.P(user_id)
            Q_i = self.Q(item_id)
            b_u = self.user_bias(user_id)
            b_i = self.item_bias(item_id)
            outputs = (P_u * Q_i).sum(axis=1) + b_u.reshape((-1,)) + b_i.reshape((-1,))
            return outputs.reshape((-1,))

    return MF


class D2LMFMXNet(D2LMF):
    """The D2L chapter's MF in MXNet Gluon (see the module docstring); several devices are several
    contexts of one process."""

    backend = "mxnet"
    requires = (("mxnet", "mxnet"),)
    net: Any

    def __init__(self, config: Any = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.ctx = mx_contexts(self.label(), self.config.devices)

    @classmethod
    def launcher(cls, devices: tuple[str, ...] | list[str]) -> str:
        return "contexts" if len(devices) > 1 else "single"

    def make_trainer(self, train: Interactions, valid: Interactions | None) -> _D2LEpochs:
        return _D2LEpochs(self, train)

    def get_weights(self) -> dict[str, np.ndarray]:
        """Same layout as :meth:`baselines.mf_torch.D2LMFTorch.get_weights`."""
        out = {}
        for name in TABLES:
            w = getattr(self.net, name).weight.data(self.ctx[0]).asnumpy().astype(np.float32)
            out[name] = w.reshape(-1) if name.endswith("_bias") else w
        return out

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        import mxnet as mx

        for name in TABLES:
            if name not in weights:
                raise ConfigError(f"{self.label()}: set_weights needs {name!r}")
            emb = getattr(self.net, name)
            w = np.asarray(weights[name], dtype=np.float32).reshape(emb.weight.shape)
            emb.weight.set_data(mx.nd.array(w, dtype="float32"))

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        import mxnet as mx

        ctx = self.ctx[0]
        out = np.empty(len(users), dtype=np.float64)
        for s in range(0, len(users), PREDICT_BATCH):
            u = mx.nd.array(users[s : s + PREDICT_BATCH].astype(np.float32), ctx=ctx)
            i = mx.nd.array(items[s : s + PREDICT_BATCH].astype(np.float32), ctx=ctx)
            out[s : s + PREDICT_BATCH] = self.net(u, i).asnumpy()
        return out


class _D2LEpochs:
    """One pass over the batches per epoch (order from ``(seed, epoch)``); the state is the
    embedding tables, the optimizer state the Gluon Trainer's (pickle-free ``.npz`` bytes)."""

    def __init__(self, model: D2LMFMXNet, train: Interactions) -> None:
        import mxnet as mx
        from mxnet import gluon

        c = model.config
        set_threads(c.threads, mxnet=True)  # None: the default count (autorec.env.default_thread_count)
        self.m = model
        mx.random.seed(c.seed)
        model.net = _net_class()(c.factors, train.n_users, train.n_items)
        model.net.initialize(ctx=model.ctx, force_reinit=True, init=mx.init.Normal(sigma=c.init_std))
        if model.initial_weights is not None:
            model.set_weights(model.initial_weights)
        self.loss = gluon.loss.L2Loss()
        # Parameters as a list in the block's order: a ParameterDict is sorted by global-counter
        # names (embedding10 < embedding9), which moves the optimizer-state indices between a
        # checkpoint and its resume.  Several contexts update locally (each replica applies the
        # reduced gradient), so that the optimizer state can be checkpointed.
        self.trainer = gluon.Trainer(
            list(model.net.collect_params().values()),
            "adam",
            {"learning_rate": c.lr, "wd": c.wd},
            update_on_kvstore=False if len(model.ctx) > 1 else None,
        )
        self.users = train.users.astype(np.float32)
        self.items = train.items.astype(np.float32)
        self.ratings = train.ratings.astype(np.float32)

    def train_epoch(self, epoch: int) -> dict:
        import mxnet as mx
        from mxnet import autograd, gluon

        m, c = self.m, self.m.config
        cpu = mx.cpu()
        batch_losses = []
        for idx in batches(epoch_order(len(self.ratings), c.seed, epoch - 1), c.batch_size):
            ctx = m.ctx[: min(len(m.ctx), len(idx))]
            u = gluon.utils.split_and_load(mx.nd.array(self.users[idx], ctx=cpu), ctx, even_split=False)
            i = gluon.utils.split_and_load(mx.nd.array(self.items[idx], ctx=cpu), ctx, even_split=False)
            r = gluon.utils.split_and_load(mx.nd.array(self.ratings[idx], ctx=cpu), ctx, even_split=False)
            with autograd.record():
                preds = [m.net(uu, ii) for uu, ii in zip(u, i)]
                ls = [self.loss(pp, rr) for pp, rr in zip(preds, r)]
            for lv in ls:
                lv.backward()
            self.trainer.step(len(idx))
            batch_losses.append(sum(float(lv.sum().asscalar()) for lv in ls) / len(idx))
        return {"train_loss": float(np.mean(batch_losses))}

    def state(self, copy: bool = True) -> dict[str, np.ndarray]:
        return self.m.get_weights()  # always copies (asnumpy)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.m.set_weights(state)

    def optimizer_state(self) -> bytes:
        from autorec.models.autorec.mxnet.optim import dump_state

        return dump_state(self.trainer)

    def load_optimizer_state(self, state: bytes) -> None:
        from autorec.models.autorec.mxnet.optim import load_state

        load_state(self.trainer, state)
