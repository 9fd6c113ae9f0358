"""AutoRec in PyTorch: I-/U-AutoRec, deep stacks, dense (the D2L seed's) and sparse training paths.

``h(r) = f(W_L ... g(W_0 r + b_0) ... + b_L)``, trained on the observed entries of each input row
only (semantics in :mod:`autorec.models.common`, shared with the MXNet backend).

Two training paths, one objective:

- ``path="dense"``: every batch is densified from CSR into a ``(batch, n_in)`` input; the output is
  multiplied by the observed mask (as D2L's ``pred * sign(x)``) and compared with the input.
- ``path="sparse"``: the batch stays a ``torch.sparse_csr_tensor``; the first layer is
  ``torch.sparse.mm(X, W_0^T)`` (O(nnz * h)), the middle layers are dense ``(batch, h)``, and the
  output layer is evaluated at the observed entries only with ``torch.sparse.sampled_addmm`` (the
  row-wise dot of each observed entry's hidden vector and decoder row, O(nnz * h)), plus the bias
  gathered at the observed columns.  No ``(batch, n_in)`` tensor is ever built on this path.

Optimizers: Adam and SGD take one step per batch (coupled weight decay ``reg`` with
``reg_form="wd"``, as torch's ``weight_decay``); Rprop and L-BFGS take one step per epoch on the
full-batch gradient, accumulated over chunks of ``batch_size`` rows (neither torch optimizer has a
``weight_decay``: with ``reg_form="wd"`` the equivalent term ``reg/2 * sum ||p||^2`` over every
parameter is added to their objective).  Backend knobs in ``config.extra`` (all optional):
``sgd_momentum`` (0), ``lbfgs_max_iter`` (20), ``lbfgs_history`` (100), ``lbfgs_line_search``
(``None`` or ``"strong_wolfe"``), ``record_batch_losses`` (False: when True every history record
holds ``batch_losses``, the objective of each optimizer step), ``predict_batch_rows``.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autorec import env
from autorec.config import AutoRecConfig
from autorec.errors import ConfigError
from autorec.interactions import Interactions
from autorec.models import common
from autorec.models.base import FitInfo, ProgressFn
from autorec.models.batching import shard

_ACT = {
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "tanh": torch.tanh,
    "elu": F.elu,
    "selu": F.selu,
}

KNOWN_EXTRA = ("sgd_momentum", "lbfgs_max_iter", "lbfgs_history", "lbfgs_line_search",
               "record_batch_losses", "predict_batch_rows",
               # scale knobs (autorec.models.torch.native): "torch" | "native" | "auto", and
               # torch's fused (single-kernel, same algorithm) Adam
               "sparse_kernel", "fused_optimizer")


def torch_device(config: AutoRecConfig, index: int = 0) -> torch.device:
    """The torch device of ``config.devices[index]``; :class:`ConfigError` if it does not exist here."""
    dev = config.devices[index]
    kind, idx = common.parse_device(dev)
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {dev!r}: CUDA is not available in this torch build/machine "
                          f"(torch {torch.__version__}); use devices=('cpu',)")
    idx = 0 if idx is None else idx
    n = torch.cuda.device_count()
    if idx >= n:
        raise ConfigError(f"device {dev!r} does not exist: {n} CUDA device(s) visible (cuda:0..cuda:{n - 1})")
    return torch.device(f"cuda:{idx}")


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, val, size=(n_rows, n_cols), check_invariants=False)


class AutoRecNet(nn.Module):
    """The encoder-decoder stack ``sizes = [n_in, *hidden, n_in]`` (``layers[k]`` is ``W{k}, b{k}``).

    ``forward(crow, col, val, n_rows)`` takes one CSR batch and returns the sum of squared errors at
    its observed entries along the configured path (one entry point, so DistributedDataParallel
    can wrap it)."""

    def __init__(self, sizes: list[int], activations: list[str], dropout: float, path: str,
                 kernel: str = "torch"):
        super().__init__()
        self.sizes = list(sizes)
        self.activations = list(activations)
        self.dropout = float(dropout)
        self.path = path
        self.layers = nn.ModuleList(nn.Linear(sizes[k], sizes[k + 1]) for k in range(len(sizes) - 1))
        self.kernel = kernel
        if kernel == "native":  # first-layer weight stored (n_in, h)-contiguous for the kernels
            from autorec.models.torch import native
            native.store_first_layer_transposed(self)

    @property
    def n_in(self) -> int:
        return self.sizes[0]

    def _drop(self, h: torch.Tensor, batch: tuple[int, int, int] | None) -> torch.Tensor:
        """Inverted dropout.  The keep mask is drawn for the whole *global* batch, ``(batch_rows,
        width)``, and this call keeps its rows ``offset::stride`` (``batch = (batch_rows, offset,
        stride)``): a data-parallel rank then draws exactly the masks the single-device run draws for
        the same rows."""
        if not self.training or self.dropout <= 0:
            return h
        if batch is None:
            keep = torch.rand(h.shape, device=h.device) >= self.dropout
        else:
            rows, offset, stride = batch
            keep = (torch.rand((rows, h.shape[1]), device=h.device) >= self.dropout)[offset::stride]
        return h * keep.to(h.dtype) * (1.0 / (1.0 - self.dropout))

    def _hidden_tail(self, z0: torch.Tensor, batch: tuple[int, int, int] | None = None) -> torch.Tensor:
        """From the first layer's pre-activation to the last hidden representation (activations,
        dropout on every hidden output, dense middle layers)."""
        h = self._drop(_ACT[self.activations[0]](z0), batch)
        for k in range(1, len(self.layers) - 1):
            h = self._drop(_ACT[self.activations[k]](self.layers[k](h)), batch)
        return h

    def forward_dense(self, x: torch.Tensor, batch: tuple[int, int, int] | None = None) -> torch.Tensor:
        """The full reconstruction ``(batch, n_in)`` of dense inputs."""
        h = self._hidden_tail(self.layers[0](x), batch)
        return _ACT[self.activations[-1]](self.layers[-1](h))

    def hidden_sparse(self, x_csr: torch.Tensor, batch: tuple[int, int, int] | None = None) -> torch.Tensor:
        """The last hidden representation of a sparse CSR batch: ``sparse.mm(X, W0^T) + b0`` first."""
        first = self.layers[0]
        z0 = torch.sparse.mm(x_csr, first.weight.t()) + first.bias
        return self._hidden_tail(z0, batch)

    def decode_observed(self, h: torch.Tensor, pattern_csr: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """The outputs at the stored entries of ``pattern_csr`` (in its CSR order) only."""
        last = self.layers[-1]
        z = torch.sparse.sampled_addmm(pattern_csr, h, last.weight.t(), beta=0.0).values()
        return _ACT[self.activations[-1]](z + last.bias[col])

    def decode_pairs(self, h: torch.Tensor, local: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """Outputs at arbitrary (row-of-h, column) pairs: row-wise dot with gathered decoder rows."""
        last = self.layers[-1]
        z = (h[local] * last.weight[col]).sum(dim=1) + last.bias[col]
        return _ACT[self.activations[-1]](z)

    def forward(self, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, n_rows: int,
                batch_rows: int | None = None, offset: int = 0, stride: int = 1) -> torch.Tensor:
        """Sum of squared errors at the observed entries of a CSR batch of ``n_rows`` rows: the rows
        ``offset::stride`` of a global batch of ``batch_rows`` rows (default: the whole batch)."""
        batch = (int(batch_rows if batch_rows is not None else n_rows), int(offset), int(stride))
        if n_rows == 0:
            # an empty share of a global batch (data-parallel): draw the same dropout masks as the
            # other ranks (keeps the RNG streams aligned) and return a zero that touches every
            # parameter, so the gradient all-reduce sees all of them
            if self.training and self.dropout > 0:
                for width in self.sizes[1:-1]:
                    torch.rand((batch[0], width), device=val.device)
            return sum(p.sum() for p in self.parameters()) * 0.0
        if self.path == "sparse" and self.kernel == "native":
            from autorec.models.torch import native
            return native.sparse_sse(self, crow, col, val, n_rows, _ACT[self.activations[-1]], batch)
        x = _csr(crow, col, val, n_rows, self.n_in)
        if self.path == "dense":
            xd = x.to_dense()
            mask = _csr(crow, col, torch.ones_like(val), n_rows, self.n_in).to_dense()
            out = self.forward_dense(xd, batch)
            return ((out * mask - xd) ** 2).sum()
        h = self.hidden_sparse(x, batch)
        pred = self.decode_observed(h, x, col)
        return ((pred - val) ** 2).sum()


class _Trainer:
    """One fit's optimizer state and epoch step (the backend half of common.run_training)."""

    def __init__(self, model: "AutoRecTorch", csr, rank: int = 0, world: int = 1, ddp: nn.Module | None = None):
        self.m = model
        self.cfg = model.config
        self.csr = csr
        self.n_rows, self.n_in = csr.shape
        self.row_nnz = np.diff(csr.indptr).astype(np.int64)
        self.rank, self.world = rank, world
        self.net = model.net
        self.forward = ddp if ddp is not None else model.net
        self.opt = self._optimizer()
        self.record = bool(self.cfg.extra.get("record_batch_losses", False))

    # ------------------------------------------------------------------ optimizer
    def _optimizer(self) -> torch.optim.Optimizer:
        cfg, params = self.cfg, list(self.net.parameters())
        wd = cfg.reg if cfg.reg_form == "wd" else 0.0
        if cfg.optimizer == "adam":
            fused = {"fused": True} if cfg.extra.get("fused_optimizer") else {}
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd, **fused)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, weight_decay=wd,
                                   momentum=float(cfg.extra.get("sgd_momentum", 0.0)))
        if cfg.optimizer == "rprop":
            return torch.optim.Rprop(params, lr=cfg.lr)
        if cfg.optimizer == "lbfgs":
            return torch.optim.LBFGS(params, lr=cfg.lr, max_iter=int(cfg.extra.get("lbfgs_max_iter", 20)),
                                     history_size=int(cfg.extra.get("lbfgs_history", 100)),
                                     line_search_fn=cfg.extra.get("lbfgs_line_search"))
        raise ConfigError(f"optimizer={cfg.optimizer!r} unknown")  # pragma: no cover

    def optimizer_state(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.opt.state_dict(), buf)
        return buf.getvalue()

    def load_optimizer_state(self, state: bytes) -> None:
        sd = torch.load(io.BytesIO(state), map_location=self.m.device, weights_only=True)
        self.opt.load_state_dict(sd)

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.m.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.m.set_weights(weights)

    # ------------------------------------------------------------------ objective
    def _tensors(self, rows: np.ndarray):
        indptr, _, cols, vals = common.batch_entries(self.csr, rows)
        d = self.m.device
        return (torch.from_numpy(indptr).to(d), torch.from_numpy(cols).to(d), torch.from_numpy(vals).to(d),
                int(len(rows)))

    def _reg_term(self, frac: float, full_batch: bool) -> torch.Tensor | None:
        cfg = self.cfg
        if cfg.reg == 0:
            return None
        if cfg.reg_form == "paper":
            sq = sum((layer.weight ** 2).sum() for layer in self.net.layers)
            return (0.5 * cfg.reg * frac) * sq
        if full_batch:  # coupled weight decay for optimizers without weight_decay: every parameter
            sq = sum((p ** 2).sum() for p in self.net.parameters())
            return (0.5 * cfg.reg * frac) * sq
        return None  # in the optimizer

    def _batch_loss(self, rows: np.ndarray, mult: float, frac: float, full_batch: bool):
        """(objective tensor, sse tensor, local nnz, local rows) of this rank's share of ``rows``."""
        local = shard(rows, self.rank, self.world) if self.world > 1 else rows
        crow, col, val, n = self._tensors(local)
        sse = self.forward(crow, col, val, n, len(rows), self.rank, self.world)
        loss = sse * (mult * self.world)  # gradients are averaged over ranks by DDP
        reg = self._reg_term(frac, full_batch)
        if reg is not None:
            loss = loss + reg
        return loss, sse, int(len(val)), n

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        lr = common.lr_at(cfg, epoch)
        for g in self.opt.param_groups:
            g["lr"] = lr
        torch.manual_seed(common.epoch_seed(cfg.seed, epoch))
        self.net.train()
        stats = common.EpochStats(cfg.loss, self.n_in)
        batch_losses: list[float] = []
        order = common.epoch_batches(self.n_rows, cfg, epoch)
        if common.is_full_batch(cfg):
            self._full_batch_step(epoch, order, stats, batch_losses)
        else:
            recycle = self.net.kernel == "native" and self.net.path == "sparse"
            if recycle:
                from autorec.models.torch import native
            for bi, rows in enumerate(order):
                nnz = int(self.row_nnz[rows].sum())
                mult = common.loss_multiplier(cfg.loss, len(rows), self.n_in, nnz)
                frac = common.paper_reg_fraction(len(rows), self.n_rows)
                if recycle:  # last step's wide gradients become this step's output buffers
                    native.recycle_grads(self.net)
                self.opt.zero_grad(set_to_none=True)
                loss, sse, lnnz, lrows = self._batch_loss(rows, mult, frac, False)
                loss.backward()
                loss_v, sse_v = torch.stack([loss.detach(), sse.detach()]).tolist()
                common.check_finite(loss_v, epoch=epoch, batch=bi, config=cfg)
                self.opt.step()
                stats.add(sse_v, lnnz, lrows)
                stats.steps += 1
                batch_losses.append(loss_v)
        out = self._reduce(stats).result()
        if self.record:
            out["batch_losses"] = batch_losses
        return out

    def _full_batch_step(self, epoch: int, chunks: list[np.ndarray], stats: common.EpochStats,
                         batch_losses: list[float]) -> None:
        cfg = self.cfg
        nnz_all = int(self.row_nnz.sum())
        mult = common.loss_multiplier(cfg.loss, self.n_rows, self.n_in, nnz_all)
        seed = common.epoch_seed(cfg.seed, epoch)
        first = {}

        def closure() -> torch.Tensor:
            torch.manual_seed(seed)  # the same dropout masks at every evaluation of this step
            self.opt.zero_grad(set_to_none=False)
            total, sse_total, nnz, rows_n = 0.0, 0.0, 0, 0
            for ci, rows in enumerate(chunks):
                frac = common.paper_reg_fraction(len(rows), self.n_rows)
                loss, sse, lnnz, lrows = self._batch_loss(rows, mult, frac, True)
                loss.backward()
                lv, sv = torch.stack([loss.detach(), sse.detach()]).tolist()
                common.check_finite(lv, epoch=epoch, batch=ci, config=cfg)
                total += lv
                sse_total += sv
                nnz += lnnz
                rows_n += lrows
            if not first:
                first.update(sse=sse_total, nnz=nnz, rows=rows_n, loss=total)
            if self.world > 1:  # the objective of the whole batch (the gradients are already reduced)
                t = torch.tensor([total], dtype=torch.float64, device=self.m.device)  # nccl: on the GPU
                torch.distributed.all_reduce(t)
                total = float(t.item()) / self.world
            return torch.tensor(total, dtype=torch.float64)

        if cfg.optimizer == "lbfgs":
            self.opt.step(closure)
        else:
            closure()
            self.opt.step()
        stats.add(first["sse"], first["nnz"], first["rows"])
        stats.steps += 1
        batch_losses.append(first["loss"])

    def _reduce(self, stats: common.EpochStats) -> common.EpochStats:
        if self.world == 1:
            return stats
        t = torch.tensor([stats.sse, stats.nnz, stats.rows], dtype=torch.float64, device=self.m.device)
        torch.distributed.all_reduce(t)
        sse, nnz, rows = t.tolist()
        return common.EpochStats(stats.form, stats.n_in, sse, int(nnz), int(rows), stats.steps)


class AutoRecTorch(common.AutoRecBase):
    """AutoRec (Sedhain et al. 2015) in PyTorch; configuration :class:`~autorec.config.AutoRecConfig`.

    ``AutoRecTorch(config)`` or ``AutoRecTorch(dict)`` or ``AutoRecTorch(hidden=(500,), ...)``.
    """

    backend = "torch"

    def __init__(self, config: "AutoRecConfig | dict | None" = None, **params: Any):
        if params:
            base = common.resolve_config(config).to_dict()
            config = {**base, **params}
        self.config = common.resolve_config(config)
        unknown = sorted(set(self.config.extra) - set(KNOWN_EXTRA))
        if unknown:
            raise ConfigError(f"unknown torch backend knob(s) in extra: {unknown}; known: {list(KNOWN_EXTRA)}")
        if len(self.config.devices) > 1:
            raise ConfigError(f"devices={list(self.config.devices)}: one AutoRecTorch trains on one device; "
                              f"for data-parallel training use autorec.models.torch.fit_distributed")
        self.device = torch_device(self.config)
        self._init_state()

    def __repr__(self) -> str:
        return f"AutoRecTorch({common.config_summary(self.config)}, device={self.device})"

    # ------------------------------------------------------------------ network
    def _build(self, n_in: int) -> None:
        cfg = self.config
        sizes = common.layer_sizes(cfg, n_in)
        torch.manual_seed(cfg.seed)
        from autorec.models.torch.native import resolve_kernel
        kernel = resolve_kernel(cfg.extra.get("sparse_kernel"), self.device.type)
        self.net = AutoRecNet(sizes, common.layer_activations(cfg), cfg.dropout, cfg.path, kernel=kernel).to(self.device)
        init = common.initial_weights(cfg, sizes)
        if init is not None:
            self._assign(init)

    def _assign(self, w: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for k, layer in enumerate(self.net.layers):
                layer.weight.copy_(torch.from_numpy(w[f"W{k}"]).to(self.device))
                layer.bias.copy_(torch.from_numpy(w[f"b{k}"]).to(self.device))

    def get_weights(self) -> dict[str, np.ndarray]:
        """``W0, b0, W1, b1, ...`` as float32 numpy copies (the layout contract of autorec.config)."""
        self._need_net("get_weights")
        out = {}
        for k, layer in enumerate(self.net.layers):
            out[f"W{k}"] = layer.weight.detach().cpu().numpy().copy()
            out[f"b{k}"] = layer.bias.detach().cpu().numpy().copy()
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
        return self._fit(train, valid, progress=progress, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every, resume=resume, initial_weights=initial_weights)

    def _fit(self, train, valid, *, progress=None, checkpoint=None, checkpoint_every=1, resume=None,
             initial_weights=None, rank: int = 0, world: int = 1, wrap=None, valid_part=None) -> FitInfo:
        cfg = self.config
        self.device = torch_device(cfg) if world == 1 else self.device
        env.set_threads(cfg.threads)
        self._start_fit(train, valid, initial_weights)
        ddp = wrap(self.net) if wrap is not None else None
        trainer = _Trainer(self, self._csr, rank=rank, world=world, ddp=ddp)
        valid_fn = None
        if valid is not None and len(valid):
            if world == 1:
                valid_fn = lambda: common.validation_rmse(self, train, valid, cfg.cold_start)  # noqa: E731
            else:
                def valid_fn():
                    sse, n = common.validation_sums(self, train, valid, cfg.cold_start, valid_part)
                    t = torch.tensor([sse, n], dtype=torch.float64, device=self.device)
                    torch.distributed.all_reduce(t)
                    sse_all, n_all = t.tolist()
                    return math.sqrt(sse_all / n_all) if n_all > 0 else float("nan")
        info = common.run_training(trainer, cfg, backend=self.backend, valid_fn=valid_fn, progress=progress,
                                   checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume)
        info.extra.update({**self._fit_extra(world), "device": str(self.device)})
        self.net.eval()
        self.fit_info = info
        return info

    # ------------------------------------------------------------------ prediction
    def _predict_rows(self) -> int:
        n = self.config.extra.get("predict_batch_rows")
        if n:
            return max(int(n), 1)
        # ~16 MB of output per group: a dense (rows, n_in) output on the dense path; the sparse
        # path builds no dense output row, only (rows, hidden) activations
        width = self.net.n_in if self.config.path == "dense" else max(self.net.sizes[1:-1])
        return max(1, min(4096, (1 << 22) // max(width, 1)))

    def _input_batch(self, rows: np.ndarray):
        indptr, _, cols, vals = common.batch_entries(self._csr, rows)
        d = self.device
        return _csr(torch.from_numpy(indptr).to(d), torch.from_numpy(cols).to(d), torch.from_numpy(vals).to(d),
                    len(rows), self.net.n_in)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Raw reconstructions for (user, item) pairs (no cold-start fill, no clipping: see
        :func:`autorec.metrics.predict_pairs`).  Pairs are grouped by input row; each needed row is
        reconstructed once, in bounded-memory groups; on the sparse path only the needed outputs
        are evaluated."""
        rows, cols, n = self._pairs(users, items)
        out = np.empty(n, dtype=np.float32)
        sparse = self.config.path == "sparse"
        max_pairs = 1 << 14 if sparse else 1 << 20
        self.net.eval()
        with torch.no_grad():
            for g in common.group_pairs(rows, cols, max_rows=self._predict_rows(), max_pairs=max_pairs):
                x = self._input_batch(g.rows)
                local = torch.from_numpy(g.local).to(self.device)
                col = torch.from_numpy(g.cols).to(self.device)
                if sparse:
                    vals = self.net.decode_pairs(self.net.hidden_sparse(x), local, col)
                else:
                    vals = self.net.forward_dense(x.to_dense())[local, col]
                out[g.index] = vals.cpu().numpy()
        return out

    def reconstruct(self, rows: np.ndarray | None = None, batch_size: int = 256
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_indices, outputs)`` with ``outputs`` the dense ``(len(row_indices), n_in)``
        reconstruction of those rows of the train matrix (items for I-AutoRec, users for
        U-AutoRec), ``batch_size`` rows at a time (bounded memory)."""
        rows = self._reconstruct_rows(rows, batch_size)
        self.net.eval()
        for s in range(0, len(rows), int(batch_size)):
            part = rows[s:s + int(batch_size)]
            with torch.no_grad():
                x = self._input_batch(part)
                if self.config.path == "sparse":
                    last = self.net.layers[-1]
                    h = self.net.hidden_sparse(x)
                    outp = _ACT[self.net.activations[-1]](torch.addmm(last.bias, h, last.weight.t()))
                else:
                    outp = self.net.forward_dense(x.to_dense())
            yield part, outp.cpu().numpy()

    @classmethod
    def load(cls, path: "str | os.PathLike", devices: tuple[str, ...] | None = None) -> "AutoRecTorch":
        """A model saved by :meth:`save` (optionally placed on other ``devices``), in eval mode."""
        model = super().load(path, devices)
        model.net.eval()
        return model
