"""AutoRec in PyTorch (``AutoRecTorch``) and its data-parallel launcher (``fit_distributed``)."""

from autorec.models.torch.model import AutoRecNet, AutoRecTorch

__all__ = ["AutoRecTorch", "AutoRecNet", "fit_distributed"]


def fit_distributed(*args, **kwargs):
    """See :func:`autorec.models.torch.ddp.fit_distributed` (imported lazily)."""
    from autorec.models.torch.ddp import fit_distributed as _fit

    return _fit(*args, **kwargs)
