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

import re

import numpy as np

from autorec.errors import ConfigError
from autorec.interactions import Interactions
from autorec.models.base import FitInfo, ProgressFn
from autorec.models.batching import batches, epoch_order

from baselines._common import Baseline, EpochLoop, check_pairs, check_train, check_valid, require
from baselines.d2l_spec import D2L_PARAMS, d2l_describe

PREDICT_BATCH = 1 << 16
_CTX = re.compile(r"^(cpu|gpu|cuda)(?:\((\d+)\)|:(\d+))?$")


def _mx():
    return require("mxnet", "mxnet", "d2l-mf (mxnet)")


def _contexts(label: str, devices: tuple[str, ...]):
    mx = _mx()
    out = []
    for dev in devices:
        m = _CTX.match(dev.strip())
        if not m:
            raise ConfigError(f"{label}: device {dev!r} is not an MXNet context (cpu, cpu(N), gpu(N), cuda:N)")
        kind, idx = m.group(1), int(m.group(2) or m.group(3) or 0)
        if kind == "cpu":
            out.append(mx.cpu(idx))
        else:
            n = mx.context.num_gpus()
            if idx >= n:
                raise ConfigError(f"{label}: device {dev!r} requested but MXNet sees {n} GPU(s)")
            out.append(mx.gpu(idx))
    if len(set(map(str, out))) != len(out):
        raise ConfigError(f"{label}: devices {list(devices)!r} repeat a context")
    return out


def _net_class():
    mx = _mx()
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


class D2LMFMXNet(Baseline):
    """The D2L chapter's MF in MXNet Gluon (see the module docstring)."""

    name = "d2l-mf"
    backend = "mxnet"
    PARAMS = D2L_PARAMS

    @classmethod
    def _require_dependencies(cls) -> None:
        require("mxnet", "mxnet", cls.label())

    def validate(self) -> None:
        self.ctx = _contexts(self.label(), self.p["devices"])

    def describe(self) -> dict:
        return {"algorithm": d2l_describe("mxnet")}

    def _tables(self):
        return [("P", self.net.P, (self.n_users, -1)), ("Q", self.net.Q, (self.n_items, -1)),
                ("user_bias", self.net.user_bias, (self.n_users,)), ("item_bias", self.net.item_bias, (self.n_items,))]

    def get_weights(self) -> dict[str, np.ndarray]:
        """Same layout as :meth:`baselines.mf_torch.D2LMFTorch.get_weights`."""
        self._check_fitted()
        return {name: emb.weight.data(self.ctx[0]).asnumpy().reshape(shape).astype(np.float32)
                for name, emb, shape in self._tables()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        mx = _mx()
        for name, emb, _ in self._tables():
            if name not in weights:
                raise ConfigError(f"{self.label()}: set_weights needs {name!r}")
            w = np.asarray(weights[name], dtype=np.float32).reshape(emb.weight.shape)
            emb.weight.set_data(mx.nd.array(w, dtype="float32"))

    def _state(self):
        return {name: emb.weight.data(self.ctx[0]).copy() for name, emb, _ in self._tables()}

    def _restore(self, state) -> None:
        for name, emb, _ in self._tables():
            emb.weight.set_data(state[name])

    def fit(self, train: Interactions, valid: Interactions | None = None, *,
            progress: ProgressFn | None = None, initial_weights: dict[str, np.ndarray] | None = None) -> FitInfo:
        """``initial_weights`` (the :meth:`get_weights` layout) replaces the random init."""
        check_train(self.label(), train)
        check_valid(self.label(), train, valid)
        mx = _mx()
        from mxnet import autograd, gluon
        if self.p["threads"] is not None:
            from autorec.env import set_threads
            set_threads(self.p["threads"])
        p = self.p
        self.n_users, self.n_items = train.n_users, train.n_items
        mx.random.seed(p["seed"])
        self.net = _net_class()(p["factors"], self.n_users, self.n_items)
        self.net.initialize(ctx=self.ctx, force_reinit=True, init=mx.init.Normal(p["init_std"]))
        self._fitted = True
        if initial_weights is not None:
            self.set_weights(initial_weights)
        loss = gluon.loss.L2Loss()
        trainer = gluon.Trainer(self.net.collect_params(), "adam",
                                {"learning_rate": p["lr"], "wd": p["wd"]})
        users = train.users.astype(np.float32)
        items = train.items.astype(np.float32)
        ratings = train.ratings.astype(np.float32)
        cpu = mx.cpu()
        loop = EpochLoop(self, train, valid, p["epochs"], p["patience"], progress, self._state,
                         self._restore, cold_start=p["cold_start"], describe=self.label(),
                         restore_best=p["patience"] is not None)
        for epoch in loop:
            batch_losses = []
            order = epoch_order(len(train), p["seed"], epoch - 1)
            for idx in batches(order, p["batch_size"]):
                ctx = self.ctx[:min(len(self.ctx), len(idx))]
                u = gluon.utils.split_and_load(mx.nd.array(users[idx], ctx=cpu), ctx, even_split=False)
                i = gluon.utils.split_and_load(mx.nd.array(items[idx], ctx=cpu), ctx, even_split=False)
                r = gluon.utils.split_and_load(mx.nd.array(ratings[idx], ctx=cpu), ctx, even_split=False)
                with autograd.record():
                    preds = [self.net(uu, ii) for uu, ii in zip(u, i)]
                    ls = [loss(pp, rr) for pp, rr in zip(preds, r)]
                for lv in ls:
                    lv.backward()
                trainer.step(len(idx))
                batch_losses.append(sum(float(lv.sum().asscalar()) for lv in ls) / len(idx))
            if loop.end_epoch(float(np.mean(batch_losses))):
                break
        return loop.finish()

    def predict(self, users, items) -> np.ndarray:
        self._check_fitted()
        users, items = check_pairs(self.label(), users, items, self.n_users, self.n_items)
        mx = _mx()
        ctx = self.ctx[0]
        out = np.empty(len(users), dtype=np.float64)
        for s in range(0, len(users), PREDICT_BATCH):
            u = mx.nd.array(users[s:s + PREDICT_BATCH].astype(np.float32), ctx=ctx)
            i = mx.nd.array(items[s:s + PREDICT_BATCH].astype(np.float32), ctx=ctx)
            out[s:s + PREDICT_BATCH] = self.net(u, i).asnumpy()
        return out
