"""AutoRec in PyTorch (:class:`AutoRecTorch`); data-parallel fits through
:meth:`AutoRecTorch.fit_parallel` (:mod:`.ddp`)."""

from autorec.models.autorec.torch.model import AutoRecTorch

__all__ = ["AutoRecTorch"]
