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

import io
import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from autorec.devices import parse_device
from autorec.env import set_threads
from autorec.errors import ConfigError
from autorec.interactions import Interactions
from autorec.models.base import IterativeRecommender
from autorec.models.batching import batches, epoch_order
from autorec.models.config import IterativeConfig, choice, devices_ok, nonnegative, param, positive, threads_param
from baselines.d2l_spec import D2LMF, TABLES, D2LConfig

PREDICT_BATCH = 1 << 16


def torch_device(label: str, devices: tuple[str, ...]) -> Any:
    """The one torch device of ``devices`` (``cpu``, ``cuda``, ``cuda:N``, ``gpu(N)``);
    :class:`ConfigError` for several devices or a CUDA device this machine does not have."""
    import torch

    if len(devices) != 1:
        raise ConfigError(
            f"{label}: devices={list(devices)!r}: the PyTorch baselines train on one device "
            f"(use the mxnet backend for several contexts)"
        )
    kind, idx = parse_device(devices[0])
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"{label}: device {devices[0]!r} requested but CUDA is not available; use devices=['cpu']")
    idx = idx or 0
    if idx >= torch.cuda.device_count():
        raise ConfigError(f"{label}: device {devices[0]!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return torch.device(f"cuda:{idx}")


@dataclass(frozen=True)
class BiasedMFTorchConfig(IterativeConfig):
    factors: int = param(64, low=1, doc="latent dimension k")
    optimizer: str = choice("adam", ("adam", "sgd"), "torch.optim.Adam or torch.optim.SGD (no momentum)")
    lr: float = positive(0.002, "learning rate")
    reg: float = nonnegative(0.02, "per-rating penalty on |p_u|^2 + |q_i|^2")
    reg_bias: float | None = param(None, low=0, doc="per-rating penalty on b_u^2 + b_i^2; None = reg")
    epochs: int = param(40, low=1, doc="maximum epochs")
    patience: int | None = param(3, low=1, doc="early stopping patience on validation RMSE; None = off")
    batch_size: int = param(1024, low=1, doc="ratings per step")
    init_std: float = positive(0.1, "std of the N(0, init_std) initial factors (biases start at 0)")
    devices: tuple[str, ...] = param(("cpu",), check=devices_ok, rule="a non-empty list of devices", doc="one device")
    threads: int | None = threads_param()


TorchConfig = TypeVar("TorchConfig", BiasedMFTorchConfig, D2LConfig)


class _TorchMF(IterativeRecommender[TorchConfig]):
    """What both PyTorch models share: the device, the ``P``, ``Q``, ``user_bias``, ``item_bias``
    embeddings (``self.net``, built by the trainer), batched prediction and the weights as numpy."""

    backend = "torch"
    requires = (("torch", "torch"),)
    net: Any

    def __init__(self, config: Any = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.device = torch_device(self.label(), self.config.devices)

    @abstractmethod
    def _forward(self, u: Any, i: Any) -> Any:
        """The scores of index tensors ``u``, ``i`` (a float32 tensor)."""

    def _build_net(self, train: Interactions, std_factors: float, std_bias: float) -> None:
        """``net`` with N(0, std) embeddings drawn from a generator seeded with ``config.seed``."""
        import torch

        cfg = self.config
        g = torch.Generator().manual_seed(cfg.seed)
        net = torch.nn.Module()
        for name, n, k, std in (
            ("P", train.n_users, cfg.factors, std_factors),
            ("Q", train.n_items, cfg.factors, std_factors),
            ("user_bias", train.n_users, 1, std_bias),
            ("item_bias", train.n_items, 1, std_bias),
        ):
            emb = torch.nn.Embedding(n, k)
            with torch.no_grad():
                emb.weight.copy_(torch.randn(n, k, generator=g) * std)
            setattr(net, name, emb)
        self.net = net.to(self.device)

    def _tensors(self, inter: Interactions) -> tuple[Any, Any, Any]:
        import torch

        return (
            torch.from_numpy(inter.users.astype(np.int64)).to(self.device),
            torch.from_numpy(inter.items.astype(np.int64)).to(self.device),
            torch.from_numpy(inter.ratings.astype(np.float32)).to(self.device),
        )

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        import torch

        out = np.empty(len(users), dtype=np.float64)
        self.net.eval()
        with torch.no_grad():
            for s in range(0, len(users), PREDICT_BATCH):
                u = torch.from_numpy(users[s : s + PREDICT_BATCH]).to(self.device)
                i = torch.from_numpy(items[s : s + PREDICT_BATCH]).to(self.device)
                out[s : s + PREDICT_BATCH] = self._forward(u, i).double().cpu().numpy()
        return out

    def get_weights(self) -> dict[str, np.ndarray]:
        """Embedding tables as float32 numpy arrays: ``P`` (users x k), ``Q`` (items x k),
        ``user_bias`` (users,), ``item_bias`` (items,): the layout :mod:`baselines.mf_mxnet` uses."""
        out = {}
        for name in TABLES:
            w = getattr(self.net, name).weight.detach().cpu().numpy()
            out[name] = (w.reshape(-1) if name.endswith("_bias") else w).copy()
        return out

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        import torch

        for name in TABLES:
            if name not in weights:
                raise ConfigError(f"{self.label()}: set_weights needs {name!r}")
            emb = getattr(self.net, name)
            w = np.asarray(weights[name], dtype=np.float32).reshape(emb.weight.shape)
            with torch.no_grad():
                emb.weight.copy_(torch.from_numpy(w))


class _TorchEpochs:
    """The trainer half both PyTorch models share: threads, the train tensors, the state as the
    model's weights; subclasses write ``train_epoch`` and the optimizer state."""

    def __init__(self, model: Any, train: Interactions) -> None:
        set_threads(model.config.threads)  # None: the default count (autorec.env.default_thread_count)
        self.m = model
        self.n = len(train)
        self.users, self.items, self.ratings = model._tensors(train)

    def state(self, copy: bool = True) -> dict[str, np.ndarray]:
        return self.m.get_weights()  # copies (small tables)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.m.set_weights(state)


# --------------------------------------------------------------------------------------- biased-mf
class BiasedMFTorch(_TorchMF[BiasedMFTorchConfig]):
    """Biased MF on minibatches: loss = mean over the batch of
    ``e^2 + reg (|p_u|^2 + |q_i|^2) + reg_bias (b_u^2 + b_i^2)`` (the per-rating regularised
    objective of Koren 2008), optimised with Adam or plain SGD, early-stopped on validation RMSE."""

    name = "biased-mf"
    family = "mf"
    Config = BiasedMFTorchConfig
    # The strong MF settings of the literature (Rendle et al. 2019): 50-500 factors with strong
    # regularisation, trained long; Adam steps around its usual 1e-3; large batches keep an
    # epoch cheap; a large epoch budget, early stopping decides.
    SPACE = {
        "factors": {"dist": "logint", "low": 16, "high": 500},
        "lr": {"dist": "loguniform", "low": 0.0003, "high": 0.01},
        "reg": {"dist": "loguniform", "low": 0.001, "high": 0.5},
        "batch_size": [256, 512, 1024],
        "epochs": 200,
        "patience": 5,
    }
    mu: float

    def make_trainer(self, train: Interactions, valid: Interactions | None) -> _BiasedMFEpochs:
        return _BiasedMFEpochs(self, train)

    def _forward(self, u: Any, i: Any) -> Any:
        n = self.net
        return self.mu + n.user_bias(u)[:, 0] + n.item_bias(i)[:, 0] + (n.P(u) * n.Q(i)).sum(1)


class _BiasedMFEpochs(_TorchEpochs):
    def __init__(self, model: BiasedMFTorch, train: Interactions) -> None:
        import torch

        super().__init__(model, train)
        c = model.config
        model.mu = float(train.global_mean)
        model._build_net(train, c.init_std, 0.0)  # biases start at 0
        opt_cls = torch.optim.Adam if c.optimizer == "adam" else torch.optim.SGD
        self.opt = opt_cls(model.net.parameters(), lr=c.lr)
        self.reg_b = c.reg if c.reg_bias is None else c.reg_bias

    def train_epoch(self, epoch: int) -> dict:
        import torch

        m, c = self.m, self.m.config
        net = m.net
        net.train()
        total, n = 0.0, 0
        order = torch.from_numpy(epoch_order(self.n, c.seed, epoch - 1)).to(m.device)
        for idx in torch.split(order, c.batch_size):
            u, i, r = self.users[idx], self.items[idx], self.ratings[idx]
            pu, qi = net.P(u), net.Q(i)
            bu, bi = net.user_bias(u)[:, 0], net.item_bias(i)[:, 0]
            err = r - (m.mu + bu + bi + (pu * qi).sum(1))
            loss = (
                err.square()
                + c.reg * (pu.square().sum(1) + qi.square().sum(1))
                + self.reg_b * (bu.square() + bi.square())
            ).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += float(err.detach().square().sum())
            n += len(idx)
        return {"train_loss": total / n}

    def optimizer_state(self) -> bytes:
        import torch

        buf = io.BytesIO()
        torch.save(self.opt.state_dict(), buf)
        return buf.getvalue()

    def load_optimizer_state(self, state: bytes) -> None:
        import torch

        self.opt.load_state_dict(torch.load(io.BytesIO(state), map_location=self.m.device, weights_only=True))


# --------------------------------------------------------------------------------------- d2l-mf
class MXNetAdam:
    """Adam exactly as MXNet 1.x's ``mx.optimizer.Adam`` with a Gluon Trainer::

        g = grad * rescale_grad + wd * w
        m = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g^2
        w -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + epsilon)

    (torch's Adam puts epsilon inside the bias correction, which differs for rows with tiny
    gradients, i.e. embedding rows absent from a batch.)
    """

    def __init__(
        self, params: Any, lr: float, wd: float, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8
    ) -> None:
        import torch

        self.params = list(params)
        self.lr, self.wd, self.beta1, self.beta2, self.eps = lr, wd, beta1, beta2, epsilon
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, rescale_grad: float) -> None:
        import torch

        self.t += 1
        lr = self.lr * math.sqrt(1.0 - self.beta2**self.t) / (1.0 - self.beta1**self.t)
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                g = p.grad * rescale_grad + self.wd * p
                m.mul_(self.beta1).add_(g, alpha=1.0 - self.beta1)
                v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
                p.sub_(lr * m / (v.sqrt() + self.eps))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_bytes(self) -> bytes:
        """The moments and the step count as ``.npz`` bytes."""
        arrays = {f"m{k}": m.cpu().numpy() for k, m in enumerate(self.m)}
        arrays.update({f"v{k}": v.cpu().numpy() for k, v in enumerate(self.v)})
        buf = io.BytesIO()
        np.savez(buf, t=np.int64(self.t), **arrays)
        return buf.getvalue()

    def load_state_bytes(self, state: bytes) -> None:
        import torch

        with np.load(io.BytesIO(state)) as z:
            self.t = int(z["t"])
            with torch.no_grad():
                for k, (m, v) in enumerate(zip(self.m, self.v)):
                    m.copy_(torch.from_numpy(z[f"m{k}"]))
                    v.copy_(torch.from_numpy(z[f"v{k}"]))


class D2LMFTorch(D2LMF, _TorchMF[D2LConfig]):
    """The D2L chapter's MF in PyTorch, step for step as :class:`baselines.mf_mxnet.D2LMFMXNet`."""

    backend = "torch"

    def make_trainer(self, train: Interactions, valid: Interactions | None) -> _D2LEpochs:
        return _D2LEpochs(self, train)

    def _forward(self, u: Any, i: Any) -> Any:
        n = self.net
        return (n.P(u) * n.Q(i)).sum(1) + n.user_bias(u)[:, 0] + n.item_bias(i)[:, 0]


class _D2LEpochs(_TorchEpochs):
    def __init__(self, model: D2LMFTorch, train: Interactions) -> None:
        super().__init__(model, train)
        c = model.config
        model._build_net(train, c.init_std, c.init_std)
        if model.initial_weights is not None:
            model.set_weights(model.initial_weights)
        self.opt = MXNetAdam(model.net.parameters(), lr=c.lr, wd=c.wd)

    def train_epoch(self, epoch: int) -> dict:
        import torch

        m, c = self.m, self.m.config
        m.net.train()
        batch_losses = []
        for idx_np in batches(epoch_order(self.n, c.seed, epoch - 1), c.batch_size):
            idx = torch.from_numpy(idx_np).to(m.device)
            u, i, r = self.users[idx], self.items[idx], self.ratings[idx]
            per_rating = 0.5 * (m._forward(u, i) - r).square()  # gluon.loss.L2Loss
            self.opt.zero_grad()
            per_rating.sum().backward()
            self.opt.step(1.0 / len(idx_np))  # trainer.step(batch_size)
            batch_losses.append(float(per_rating.detach().mean()))
        return {"train_loss": float(np.mean(batch_losses))}

    def optimizer_state(self) -> bytes:
        return self.opt.state_bytes()

    def load_optimizer_state(self, state: bytes) -> None:
        self.opt.load_state_bytes(state)
