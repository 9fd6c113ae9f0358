"""The parameters of the D2L chapter's MF, shared by its PyTorch and MXNet implementations
(framework-free, so that importing it imports neither framework)."""

from __future__ import annotations

from baselines._common import Param, nonnegative, positive
from baselines.simple import _cold_start_param

D2L_PARAMS = {
    "factors": positive(int, 30, "latent dimension (D2L: 30)"),
    "lr": positive(float, 0.002, "Adam learning rate (D2L: 0.002)"),
    "wd": nonnegative(float, 1e-5, "Adam coupled weight decay (D2L: 1e-5)"),
    "epochs": positive(int, 20, "epochs (D2L: 20)"),
    "batch_size": positive(int, 512, "ratings per batch (D2L: 512)"),
    "init_std": positive(float, 0.01, "std of mx.init.Normal for every embedding (D2L: 0.01)"),
    "patience": positive(int, None, "early stopping on validation RMSE; None = D2L (train all epochs, "
                                    "keep the last weights)", nullable=True),
    "seed": Param(0, int, ">= 0", lambda v: v >= 0),
    "devices": Param(("cpu",), "devices", doc="devices / contexts"),
    "threads": positive(int, None, "intra-op threads set at fit (None = leave as is)", nullable=True),
    "cold_start": _cold_start_param(),
}


def d2l_describe(backend: str) -> str:
    return ("D2L chapter MF: embeddings P, Q, user/item bias (no global mean), N(0, init_std) init, "
            "L2Loss averaged per batch, MXNet Adam with coupled wd" + (" (re-implemented in torch)"
                                                                     if backend == "torch" else ""))
