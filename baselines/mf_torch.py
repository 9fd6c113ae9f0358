"""PyTorch matrix factorisation baselines.

- :class:`BiasedMFTorch` (``biased-mf``, backend ``torch``): ``mu + b_u + b_i + p_u . q_i`` trained on
  shuffled minibatches with Adam (default) or plain SGD on the per-rating regularised squared error
  (Koren 2008's objective), early-stopped on validation RMSE.
- :class:`D2LMFTorch` (``d2l-mf``, backend ``torch``): the D2L book's MF chapter
  ("Matrix Factorization", d2l.ai chapter 21.3) with its exact semantics, mirroring
  :mod:`baselines.mf_mxnet`: 30 factors, user and item bias embeddings and NO global mean, every
  embedding initialised N(0, 0.01) (``mx.init.Normal(0.01)`` initialises the bias embeddings too),
  Gluon ``L2Loss`` (0.5 squared error per rating) summed over the batch and divided by the batch size
  (``trainer.step(batch_size)``), MXNet's Adam (coupled weight decay ``wd`` added to the rescaled
  gradient, bias correction folded into the step size, epsilon outside the bias correction:
  implemented here exactly as MXNet does, see :class:`MXNetAdam`), lr 0.002, wd 1e-5, 20 epochs,
  batch 512 in the order of :func:`autorec.models.batching.epoch_order`.

torch is imported lazily: without it, constructing a model raises
:class:`~autorec.errors.MissingDependencyError` naming ``pip install .[torch]``.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import numpy as np

from autorec.errors import ConfigError
from autorec.interactions import Interactions
from autorec.models.base import FitInfo, ProgressFn
from autorec.models.batching import batches, epoch_order

from baselines._common import (Baseline, EpochLoop, Param, check_pairs, check_train, check_valid, choice,
                               nonnegative, positive, require)
from baselines.d2l_spec import D2L_PARAMS, d2l_describe
from baselines.simple import _cold_start_param

_TORCH_DEVICE = re.compile(r"^(cpu|cuda)(:\d+)?$")
PREDICT_BATCH = 1 << 16


def _torch():
    return require("torch", "torch", "this PyTorch baseline")


def _torch_device(label: str, devices: tuple[str, ...]):
    torch = _torch()
    if len(devices) != 1:
        raise ConfigError(f"{label}: devices={list(devices)!r}: the PyTorch baselines train on one device "
                          f"(use the mxnet backend for several contexts)")
    dev = devices[0].strip()
    m = re.match(r"^gpu\((\d+)\)$", dev)
    if m:
        dev = f"cuda:{m.group(1)}"
    if not _TORCH_DEVICE.match(dev):
        raise ConfigError(f"{label}: device {devices[0]!r} is not a torch device (cpu, cuda, cuda:N)")
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{label}: device {dev!r} requested but CUDA is not available; use devices=['cpu']")
        idx = int(dev.split(":")[1]) if ":" in dev else 0
        if idx >= torch.cuda.device_count():
            raise ConfigError(f"{label}: device {dev!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return torch.device(dev)


def _set_threads(n):
    if n is not None:
        from autorec.env import set_threads
        set_threads(n)


class _TorchBaseline(Baseline):
    backend = "torch"

    @classmethod
    def _require_dependencies(cls) -> None:
        require("torch", "torch", cls.label())

    def validate(self) -> None:
        self.device = _torch_device(self.label(), self.p["devices"])

    def _tensors(self, inter: Interactions):
        torch = _torch()
        return (torch.from_numpy(inter.users.astype(np.int64)).to(self.device),
                torch.from_numpy(inter.items.astype(np.int64)).to(self.device),
                torch.from_numpy(inter.ratings.astype(np.float32)).to(self.device))

    def _state(self):
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def _restore(self, state) -> None:
        self.net.load_state_dict(state)

    def predict(self, users, items) -> np.ndarray:
        self._check_fitted()
        users, items = check_pairs(self.label(), users, items, self.n_users, self.n_items)
        torch = _torch()
        out = np.empty(len(users), dtype=np.float64)
        self.net.eval()
        with torch.no_grad():
            for s in range(0, len(users), PREDICT_BATCH):
                u = torch.from_numpy(users[s:s + PREDICT_BATCH]).to(self.device)
                i = torch.from_numpy(items[s:s + PREDICT_BATCH]).to(self.device)
                out[s:s + PREDICT_BATCH] = self._forward(u, i).double().cpu().numpy()
        return out

    def get_weights(self) -> dict[str, np.ndarray]:
        """Embedding tables as float32 numpy arrays: ``P`` (users x k), ``Q`` (items x k),
        ``user_bias`` (users,), ``item_bias`` (items,) — the layout :mod:`baselines.mf_mxnet` uses."""
        self._check_fitted()
        return {name: emb.weight.detach().cpu().numpy().reshape(shape).astype(np.float32).copy()
                for name, emb, shape in self._tables()}


def _embedding(torch, n: int, k: int, std: float, generator, mean: float = 0.0):
    emb = torch.nn.Embedding(n, k)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(n, k, generator=generator) * std + mean)
    return emb


# --------------------------------------------------------------------------------------- biased-mf
class BiasedMFTorch(_TorchBaseline):
    """Biased MF on minibatches: loss = mean over the batch of
    ``e^2 + reg (|p_u|^2 + |q_i|^2) + reg_bias (b_u^2 + b_i^2)`` (the per-rating regularised
    objective of Koren 2008), optimised with Adam or plain SGD, early-stopped on validation RMSE."""

    name = "biased-mf"
    PARAMS = {
        "factors": positive(int, 64, "latent dimension k"),
        "optimizer": choice("adam", ("adam", "sgd"), "torch.optim.Adam or torch.optim.SGD (no momentum)"),
        "lr": positive(float, 0.002, "learning rate"),
        "reg": nonnegative(float, 0.02, "per-rating penalty on |p_u|^2 + |q_i|^2"),
        "reg_bias": nonnegative(float, None, "per-rating penalty on b_u^2 + b_i^2; None = reg", nullable=True),
        "epochs": positive(int, 40, "maximum epochs"),
        "patience": positive(int, 3, "early stopping patience on validation RMSE; None = off", nullable=True),
        "batch_size": positive(int, 1024, "ratings per step"),
        "init_std": nonnegative(float, 0.1, "std of the normal initial factors (biases start at 0)"),
        "seed": Param(0, int, ">= 0", lambda v: v >= 0),
        "devices": Param(("cpu",), "devices", doc="one torch device"),
        "threads": positive(int, None, "intra-op threads set at fit (None = leave as is)", nullable=True),
        "cold_start": _cold_start_param(),
    }

    def describe(self) -> dict:
        opt = "Adam" if self.p["optimizer"] == "adam" else "plain SGD"
        return {"algorithm": f"{opt} on minibatches of {self.p['batch_size']} ratings, mean per-rating "
                             f"regularised squared error"}

    def _tables(self):
        return [("P", self.net.P, (self.n_users, -1)), ("Q", self.net.Q, (self.n_items, -1)),
                ("user_bias", self.net.user_bias, (self.n_users,)), ("item_bias", self.net.item_bias, (self.n_items,))]

    def _forward(self, u, i):
        n = self.net
        return self.mu + n.user_bias(u)[:, 0] + n.item_bias(i)[:, 0] + (n.P(u) * n.Q(i)).sum(1)

    def fit(self, train: Interactions, valid: Interactions | None = None, *,
            progress: ProgressFn | None = None) -> FitInfo:
        check_train(self.label(), train)
        check_valid(self.label(), train, valid)
        torch = _torch()
        _set_threads(self.p["threads"])
        p = self.p
        k = p["factors"]
        reg_b = p["reg"] if p["reg_bias"] is None else p["reg_bias"]
        self.n_users, self.n_items = train.n_users, train.n_items
        self.mu = float(train.global_mean)
        g = torch.Generator().manual_seed(p["seed"])
        net = torch.nn.Module()
        net.P = _embedding(torch, self.n_users, k, p["init_std"], g)
        net.Q = _embedding(torch, self.n_items, k, p["init_std"], g)
        net.user_bias = _embedding(torch, self.n_users, 1, 0.0, g)
        net.item_bias = _embedding(torch, self.n_items, 1, 0.0, g)
        self.net = net.to(self.device)
        opt_cls = torch.optim.Adam if p["optimizer"] == "adam" else torch.optim.SGD
        opt = opt_cls(self.net.parameters(), lr=p["lr"])
        users, items, ratings = self._tensors(train)
        self._fitted = True
        loop = EpochLoop(self, train, valid, p["epochs"], p["patience"], progress, self._state,
                         self._restore, cold_start=p["cold_start"], describe=self.label())
        for epoch in loop:
            self.net.train()
            total, n = 0.0, 0
            order = torch.from_numpy(epoch_order(len(train), p["seed"], epoch - 1)).to(self.device)
            for idx in torch.split(order, p["batch_size"]):
                u, i, r = users[idx], items[idx], ratings[idx]
                pu, qi = self.net.P(u), self.net.Q(i)
                bu, bi = self.net.user_bias(u)[:, 0], self.net.item_bias(i)[:, 0]
                err = r - (self.mu + bu + bi + (pu * qi).sum(1))
                loss = (err.square() + p["reg"] * (pu.square().sum(1) + qi.square().sum(1))
                        + reg_b * (bu.square() + bi.square())).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(err.detach().square().sum())
                n += len(idx)
            if loop.end_epoch(total / n):
                break
        return loop.finish()


# --------------------------------------------------------------------------------------- d2l-mf
class MXNetAdam:
    """Adam exactly as MXNet 1.x's ``mx.optimizer.Adam`` with a Gluon Trainer::

        g = grad * rescale_grad + wd * w
        m = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g^2
        w -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + epsilon)

    (torch's Adam puts epsilon inside the bias correction, which differs for rows with tiny
    gradients, i.e. embedding rows absent from a batch.)
    """

    def __init__(self, params, lr: float, wd: float, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8) -> None:
        torch = _torch()
        self.params = list(params)
        self.lr, self.wd, self.beta1, self.beta2, self.eps = lr, wd, beta1, beta2, epsilon
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, rescale_grad: float) -> None:
        torch = _torch()
        self.t += 1
        lr = self.lr * math.sqrt(1.0 - self.beta2 ** self.t) / (1.0 - self.beta1 ** self.t)
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                g = p.grad * rescale_grad + self.wd * p
                m.mul_(self.beta1).add_(g, alpha=1.0 - self.beta1)
                v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
                p.sub_(lr * m / (v.sqrt() + self.eps))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class D2LMFTorch(_TorchBaseline):
    """The D2L chapter's MF in PyTorch, step for step as :class:`baselines.mf_mxnet.D2LMFMXNet`."""

    name = "d2l-mf"
    PARAMS = D2L_PARAMS

    def describe(self) -> dict:
        return {"algorithm": d2l_describe("torch")}

    def _tables(self):
        return [("P", self.net.P, (self.n_users, -1)), ("Q", self.net.Q, (self.n_items, -1)),
                ("user_bias", self.net.user_bias, (self.n_users,)), ("item_bias", self.net.item_bias, (self.n_items,))]

    def _forward(self, u, i):
        n = self.net
        return (n.P(u) * n.Q(i)).sum(1) + n.user_bias(u)[:, 0] + n.item_bias(i)[:, 0]

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        torch = _torch()
        for name, emb, _ in self._tables():
            if name not in weights:
                raise ConfigError(f"{self.label()}: set_weights needs {name!r}")
            w = np.asarray(weights[name], dtype=np.float32).reshape(emb.weight.shape)
            with torch.no_grad():
                emb.weight.copy_(torch.from_numpy(w))

    def fit(self, train: Interactions, valid: Interactions | None = None, *,
            progress: ProgressFn | None = None, initial_weights: dict[str, np.ndarray] | None = None) -> FitInfo:
        """``initial_weights`` (the :meth:`get_weights` layout) replaces the random init, e.g. to
        start both backends from identical weights."""
        check_train(self.label(), train)
        check_valid(self.label(), train, valid)
        torch = _torch()
        _set_threads(self.p["threads"])
        p = self.p
        k = p["factors"]
        self.n_users, self.n_items = train.n_users, train.n_items
        g = torch.Generator().manual_seed(p["seed"])
        net = torch.nn.Module()
        net.P = _embedding(torch, self.n_users, k, p["init_std"], g)
        net.Q = _embedding(torch, self.n_items, k, p["init_std"], g)
        net.user_bias = _embedding(torch, self.n_users, 1, p["init_std"], g)
        net.item_bias = _embedding(torch, self.n_items, 1, p["init_std"], g)
        self.net = net.to(self.device)
        self._fitted = True
        if initial_weights is not None:
            self.set_weights(initial_weights)
        opt = MXNetAdam(self.net.parameters(), lr=p["lr"], wd=p["wd"])
        users, items, ratings = self._tensors(train)
        loop = EpochLoop(self, train, valid, p["epochs"], p["patience"], progress, self._state,
                         self._restore, cold_start=p["cold_start"], describe=self.label(),
                         restore_best=p["patience"] is not None)
        for epoch in loop:
            self.net.train()
            batch_losses = []
            order = epoch_order(len(train), p["seed"], epoch - 1)
            for idx_np in batches(order, p["batch_size"]):
                idx = torch.from_numpy(idx_np).to(self.device)
                u, i, r = users[idx], items[idx], ratings[idx]
                per_rating = 0.5 * (self._forward(u, i) - r).square()   # gluon.loss.L2Loss
                opt.zero_grad()
                per_rating.sum().backward()
                opt.step(1.0 / len(idx_np))                              # trainer.step(batch_size)
                batch_losses.append(float(per_rating.detach().mean()))
            if loop.end_epoch(float(np.mean(batch_losses))):
                break
        return loop.finish()
