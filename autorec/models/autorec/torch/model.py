"""AutoRec in PyTorch (:class:`AutoRecTorch`): I-/U-AutoRec, deep stacks, dense and sparse training
paths (:mod:`.net`), opt-in native kernels (:mod:`.native`), one device per process and
data-parallel over several (:mod:`.ddp`).  The semantics are
:mod:`autorec.models.autorec.semantics`, shared with the MXNet backend.

Optimizers: Adam and SGD take one step per batch (coupled weight decay ``reg`` with
``reg_form="wd"``, as torch's ``weight_decay``); Rprop and L-BFGS take one step per epoch on the
full-batch gradient, accumulated over chunks of ``batch_size`` rows (neither torch optimizer has a
``weight_decay``: with ``reg_form="wd"`` the equivalent term ``reg/2 * sum ||p||^2`` over every
parameter is added to their objective).  Backend knobs in ``config.extra`` (all optional):
``sgd_momentum`` (0), ``lbfgs_max_iter`` (20), ``lbfgs_history`` (100), ``lbfgs_line_search``
(``None`` or ``"strong_wolfe"``), ``record_batch_losses`` (False: when True every history record
holds ``batch_losses``, the objective of each optimizer step), ``predict_batch_rows``,
``sparse_kernel`` (``"torch"``, ``"native"`` or ``"auto"``, see :mod:`.native`) and
``fused_optimizer`` (torch's single-kernel Adam, same algorithm) and ``fused_step`` (with the native
sparse kernels and Adam: the wide weights' Adam step fused into their gradient passes, same
algorithm, :class:`~autorec.models.autorec.torch.native.FusedAdam`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch
from torch.profiler import record_function

from autorec.devices import parse_device
from autorec.errors import ConfigError
from autorec.models.autorec.base import AutoRecBase
from autorec.models.autorec.config import AutoRecConfig
from autorec.models.autorec.rows import PairGroup, batch_entries, shard
from autorec.models.autorec.semantics import (
    EpochStats,
    epoch_batches,
    epoch_seed,
    layer_activations,
    loss_multiplier,
    lr_at,
)
from autorec.models.autorec.semantics import paper_reg_fraction as reg_fraction
from autorec.models.autorec.torch.native import KERNELS, Batch, CsrRows, FusedAdam, recycle_grads, resolve_kernel
from autorec.models.autorec.torch.net import AutoRecNet, csr_tensor


def torch_device(label: str, dev: str) -> torch.device:
    """The torch device of the device string ``dev``; :class:`ConfigError` if it does not exist here."""
    kind, idx = parse_device(dev)
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{label}: device {dev!r}: CUDA is not available in this torch build/machine "
            f"(torch {torch.__version__}); use devices=['cpu']"
        )
    idx = 0 if idx is None else idx
    n = torch.cuda.device_count()
    if idx >= n:
        raise ConfigError(f"{label}: device {dev!r} does not exist: {n} CUDA device(s) visible (cuda:0..cuda:{n - 1})")
    return torch.device(f"cuda:{idx}")


#: an optimizer state's tensor in its checkpoint skeleton: ``(_TENSOR, array name)``
_TENSOR, _SKELETON = "autorec-bench:tensor", "skeleton"


class TorchEpochs:
    """One fit's optimizer and epoch step (:class:`autorec.models.training.EpochTrainer`).

    Data-parallel (``world > 1``, see :mod:`.ddp`): every rank walks the same global batches, takes
    its ``shard`` of each and scales its share of the loss by the *global* batch's size and observed
    count times the world size, so DDP's gradient average is the single-device batch gradient."""

    def __init__(self, model: AutoRecTorch, rank: int = 0, world: int = 1, forward: Any = None) -> None:
        self.m = model
        self.cfg = model.config
        self.csr = model.train_matrix
        self.n_rows, self.n_in = model.n_rows, model.n_in
        self.row_nnz = np.diff(self.csr.indptr).astype(np.int64)
        self.rank, self.world = rank, world
        self.net: AutoRecNet = model.net
        self.forward = forward if forward is not None else model.net
        self.opt = self._optimizer()
        self.record = bool(self.cfg.extra.get("record_batch_losses", False))
        self.fused = self._fused_step()
        #: the train matrix's arrays for the fused step's batches (``Batch.gather``)
        self.csr_rows = CsrRows(self.csr) if self.fused is not None else None

    # ------------------------------------------------------------------ state
    def _optimizer(self) -> torch.optim.Optimizer:
        cfg, params = self.cfg, list(self.net.parameters())
        wd = cfg.reg if cfg.reg_form == "wd" else 0.0
        if cfg.optimizer == "adam":
            fused = True if cfg.extra.get("fused_optimizer") else None  # None: torch's default
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd, fused=fused)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=cfg.lr, weight_decay=wd, momentum=float(cfg.extra.get("sgd_momentum", 0.0))
            )
        if cfg.optimizer == "rprop":
            return torch.optim.Rprop(params, lr=cfg.lr)
        return torch.optim.LBFGS(
            params,
            lr=cfg.lr,
            max_iter=int(cfg.extra.get("lbfgs_max_iter", 20)),
            history_size=int(cfg.extra.get("lbfgs_history", 100)),
            line_search_fn=cfg.extra.get("lbfgs_line_search"),
        )

    def _fused_step(self) -> FusedAdam | None:
        """The fused wide-weight Adam passes when ``extra["fused_step"]`` asks for them (see
        :class:`~autorec.models.autorec.torch.native.FusedAdam`); :class:`ConfigError` naming what
        stands in the way when they cannot apply."""
        cfg = self.cfg
        if not cfg.extra.get("fused_step"):
            return None
        why = []
        if cfg.path != "sparse" or self.net.kernel != "native":
            why.append(
                f"path='sparse' with extra['sparse_kernel']='native' "
                f"(got path={cfg.path!r}, kernel {self.net.kernel!r})"
            )
        if cfg.optimizer != "adam":
            why.append(f"optimizer='adam' (got {cfg.optimizer!r})")
        if cfg.reg != 0 and cfg.reg_form != "wd":
            why.append(f"reg_form='wd' (got {cfg.reg_form!r}: its penalty is part of the loss)")
        if self.world > 1:
            why.append(f"one process (got {self.world})")
        if why:
            raise ConfigError(f"{self.m.label()}: extra['fused_step']=True needs " + "; ".join(why))
        return FusedAdam(self.net, self.opt)

    def state(self, copy: bool = True) -> dict[str, np.ndarray]:
        return self.m.get_weights(copy=copy)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.m.set_weights(state)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's state dict as arrays: every tensor in it (moments, step counters) a view
        of the optimizer's own memory on the CPU, written to the checkpoint as it is, and the rest
        (param groups, which tensor goes where) serialised by ``torch.save`` as ``skeleton``.
        Serialising the whole state dict first held a copy of every moment: 3.8 GB at the Netflix
        shape, on top of the fit."""
        arrays: dict[str, np.ndarray] = {}
        seen: dict[int, str] = {}  # a tensor met twice is one array, and one tensor again on load

        def strip(obj: Any) -> Any:
            if isinstance(obj, torch.Tensor):
                if id(obj) not in seen:
                    seen[id(obj)] = key = f"t{len(arrays)}"
                    arrays[key] = obj.detach().cpu().numpy()
                return (_TENSOR, seen[id(obj)])
            if isinstance(obj, dict):
                return {k: strip(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return type(obj)(strip(v) for v in obj)
            return obj

        buf = io.BytesIO()
        torch.save(strip(self.opt.state_dict()), buf)
        arrays[_SKELETON] = np.frombuffer(buf.getvalue(), dtype=np.uint8)
        return arrays

    def load_optimizer_state(self, state: bytes | dict[str, np.ndarray]) -> None:
        if isinstance(state, bytes):  # a checkpoint of format 2: the whole state dict serialised
            self.opt.load_state_dict(torch.load(io.BytesIO(state), map_location=self.m.device, weights_only=True))
            return
        skeleton = torch.load(io.BytesIO(bytes(np.asarray(state[_SKELETON]))), weights_only=True)
        tensors: dict[str, torch.Tensor] = {}

        def fill(obj: Any) -> Any:
            if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == _TENSOR:
                if obj[1] not in tensors:
                    a = np.require(state[obj[1]], requirements=["C", "W"])
                    tensors[obj[1]] = torch.from_numpy(a).to(self.m.device)
                return tensors[obj[1]]
            if isinstance(obj, dict):
                return {k: fill(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return type(obj)(fill(v) for v in obj)
            return obj

        self.opt.load_state_dict(fill(skeleton))

    # ------------------------------------------------------------------ objective
    def _tensors(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        indptr, _, cols, vals = batch_entries(self.csr, rows)
        d = self.m.device
        return (
            torch.from_numpy(indptr).to(d),
            torch.from_numpy(cols).to(d),
            torch.from_numpy(vals).to(d),
            int(len(rows)),
        )

    def _reg_term(self, frac: float, full_batch: bool) -> torch.Tensor | None:
        cfg = self.cfg
        if cfg.reg == 0:
            return None
        if cfg.reg_form == "paper":
            sq = sum(((layer.weight**2).sum() for layer in self.net.layers), torch.zeros((), device=self.m.device))
            return (0.5 * cfg.reg * frac) * sq
        if full_batch:  # coupled weight decay for optimizers without weight_decay: every parameter
            sq = sum(((p**2).sum() for p in self.net.parameters()), torch.zeros((), device=self.m.device))
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
        lr = lr_at(cfg, epoch)
        for g in self.opt.param_groups:
            g["lr"] = lr
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        self.net.train()
        stats = EpochStats(cfg.loss, self.n_in)
        batch_losses: list[float] = []
        order = epoch_batches(self.n_rows, cfg, epoch)
        if cfg.full_batch:
            self._full_batch_step(epoch, order, stats, batch_losses)
        else:
            recycle = self.net.kernel == "native" and self.net.path == "sparse"
            for bi, rows in enumerate(order):
                nnz = int(self.row_nnz[rows].sum())
                mult = loss_multiplier(cfg.loss, len(rows), self.n_in, nnz)
                if recycle:  # last step's wide gradients become this step's output buffers
                    recycle_grads(self.net)
                self.opt.zero_grad(set_to_none=True)
                if self.fused is not None and self.csr_rows is not None:  # wide weights: gradient + Adam
                    with record_function("native::batch"):
                        batch = Batch.gather(self.csr_rows, rows, csr_order=self.fused.csr_order)
                    lnnz, lrows = batch.nnz, batch.n_rows
                    loss_v, sse_v = self.fused.train_step(
                        batch, mult=mult, check=partial(self.m.check_batch_loss, epoch=epoch, batch=bi)
                    )
                else:
                    loss, sse, lnnz, lrows = self._batch_loss(rows, mult, reg_fraction(len(rows), self.n_rows), False)
                    loss.backward()
                    loss_v, sse_v = torch.stack([loss.detach(), sse.detach()]).tolist()
                    self.m.check_batch_loss(loss_v, epoch=epoch, batch=bi)
                self.opt.step()
                stats.add(sse_v, lnnz, lrows)
                stats.steps += 1
                batch_losses.append(loss_v)
        out: dict[str, Any] = {**self._reduce(stats).result(), "lr": lr}
        if self.record:
            out["batch_losses"] = batch_losses
        return out

    def _full_batch_step(
        self, epoch: int, chunks: list[np.ndarray], stats: EpochStats, batch_losses: list[float]
    ) -> None:
        cfg = self.cfg
        mult = loss_multiplier(cfg.loss, self.n_rows, self.n_in, int(self.row_nnz.sum()))
        seed = epoch_seed(cfg.seed, epoch)
        first: dict[str, float] = {}

        def closure() -> torch.Tensor:
            torch.manual_seed(seed)  # the same dropout masks at every evaluation of this step
            self.opt.zero_grad(set_to_none=False)
            total, sse_total, nnz, rows_n = 0.0, 0.0, 0, 0
            for ci, rows in enumerate(chunks):
                loss, sse, lnnz, lrows = self._batch_loss(rows, mult, reg_fraction(len(rows), self.n_rows), True)
                loss.backward()
                lv, sv = torch.stack([loss.detach(), sse.detach()]).tolist()
                self.m.check_batch_loss(lv, epoch=epoch, batch=ci)
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
            self.opt.step(closure)  # type: ignore[arg-type]
        else:
            closure()
            self.opt.step()
        stats.add(first["sse"], int(first["nnz"]), int(first["rows"]))
        stats.steps += 1
        batch_losses.append(first["loss"])

    def _reduce(self, stats: EpochStats) -> EpochStats:
        if self.world == 1:
            return stats
        t = torch.tensor([stats.sse, stats.nnz, stats.rows], dtype=torch.float64, device=self.m.device)
        torch.distributed.all_reduce(t)
        sse, nnz, rows = t.tolist()
        return EpochStats(stats.form, stats.n_in, sse, int(nnz), int(rows), stats.steps)


class AutoRecTorch(AutoRecBase):
    """AutoRec in PyTorch on one device; several devices train data-parallel, one process per
    device (:meth:`launcher` says ``ddp``; :meth:`fit_parallel`)."""

    backend = "torch"
    requires = (("torch", "torch"),)
    KNOWN_EXTRA: ClassVar[tuple[str, ...]] = (
        "sgd_momentum",
        "lbfgs_max_iter",
        "lbfgs_history",
        "lbfgs_line_search",
        "record_batch_losses",
        "predict_batch_rows",
        "sparse_kernel",
        "fused_optimizer",
        "fused_step",
    )
    net: AutoRecNet

    def __init__(self, config: AutoRecConfig | Mapping[str, Any] | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.device = torch_device(self.label(), self.config.devices[0])
        if len(self.config.devices) > 1:
            raise ConfigError(
                f"{self.label()}: devices={list(self.config.devices)}: one AutoRecTorch trains on one device; "
                f"several devices train data-parallel through AutoRecTorch.fit_parallel (launcher 'ddp')"
            )
        kernel = self.config.extra.get("sparse_kernel")
        if kernel is not None and kernel not in KERNELS:
            raise ConfigError(f"{self.label()}: extra['sparse_kernel']={kernel!r} is not one of {list(KERNELS)}")
        search = self.config.extra.get("lbfgs_line_search")
        if search not in (None, "strong_wolfe"):
            raise ConfigError(
                f"{self.label()}: extra['lbfgs_line_search']={search!r}: torch's L-BFGS offers 'strong_wolfe' only "
                "(or leave it out: a fixed step)"
            )

    @classmethod
    def launcher(cls, devices: tuple[str, ...] | list[str]) -> str:
        return "ddp" if len(devices) > 1 else "single"

    @classmethod
    def fit_parallel(cls, params: Mapping[str, Any], parts: Any, nproc: int | None = None, **options: Any):
        """Data-parallel fit in ``nproc`` torchrun processes (default: one per device); see
        :func:`autorec.models.autorec.torch.ddp.fit_parallel` for ``parts`` and ``options``."""
        from autorec.models.autorec.torch.ddp import fit_parallel

        return fit_parallel(params, parts, nproc, **options)

    # ------------------------------------------------------------------ network
    def _build(self, n_in: int) -> None:
        cfg = self.config
        sizes, init = self._initial(n_in)
        torch.manual_seed(cfg.seed)
        kernel = resolve_kernel(cfg.extra.get("sparse_kernel"), self.device.type)
        self.net = AutoRecNet(sizes, layer_activations(cfg), cfg.dropout, cfg.path, kernel=kernel).to(self.device)
        if init is not None:
            self._assign(init)

    def _assign(self, weights: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for k, layer in enumerate(self.net.layers):
                layer.weight.copy_(torch.from_numpy(weights[f"W{k}"]).to(self.device))
                layer.bias.copy_(torch.from_numpy(weights[f"b{k}"]).to(self.device))

    def get_weights(self, copy: bool = True) -> dict[str, np.ndarray]:
        """``W{k}``, ``b{k}`` of every layer; with ``copy=False`` views of the network's memory on
        the CPU (they change as it trains)."""
        self._need_net("get_weights")
        out = {}
        for k, layer in enumerate(self.net.layers):
            for name, p in ((f"W{k}", layer.weight), (f"b{k}", layer.bias)):
                a = p.detach().cpu().numpy()
                out[name] = a.copy() if copy else a
        return out

    def _trainer(self) -> TorchEpochs:
        return TorchEpochs(self)

    def _fit_extra(self) -> dict[str, Any]:
        extra = {**super()._fit_extra(), "world_size": 1, "device": str(self.device)}
        if self.config.path == "sparse":  # the kernels that ran ("auto" resolved)
            extra["sparse_kernel"] = self.net.kernel
        return extra

    # ------------------------------------------------------------------ prediction
    def _predict_width(self) -> int:
        # the sparse path builds no dense output row, only (rows, hidden) activations
        return self.n_in if self.config.path == "dense" else max(self.net.sizes[1:-1])

    def _input(self, rows: np.ndarray) -> torch.Tensor:
        indptr, _, cols, vals = batch_entries(self.train_matrix, rows)
        d = self.device
        crow, col, val = torch.from_numpy(indptr).to(d), torch.from_numpy(cols).to(d), torch.from_numpy(vals).to(d)
        return csr_tensor(crow, col, val, len(rows), self.n_in)

    def _estimate_group(self, group: PairGroup) -> np.ndarray:
        self.net.eval()
        with torch.no_grad():
            x = self._input(group.rows)
            local = torch.from_numpy(group.local).to(self.device)
            col = torch.from_numpy(group.cols).to(self.device)
            if self.config.path == "sparse":
                vals = self.net.decode_pairs(self.net.hidden_sparse(x), local, col)
            else:
                vals = self.net.forward_dense(x.to_dense())[local, col]
            return vals.cpu().numpy()

    def _reconstruct_batch(self, rows: np.ndarray) -> np.ndarray:
        self.net.eval()
        with torch.no_grad():
            x = self._input(rows)
            if self.config.path == "sparse":
                out = self.net.decode_all(self.net.hidden_sparse(x))
            else:
                out = self.net.forward_dense(x.to_dense())
            return out.cpu().numpy()
