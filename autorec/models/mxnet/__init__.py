"""AutoRec in MXNet Gluon (``AutoRecMXNet``); see :mod:`autorec.models.mxnet.model`.

mxnet is optional: importing this package without it raises
:class:`~autorec.errors.MissingDependencyError` naming ``pip install .[mxnet]``.
"""

import sys as _sys

from autorec.errors import MissingDependencyError

# importing mxnet resets torch's intra-op thread count to 1: put back the count torch had
_torch = _sys.modules.get("torch")
_torch_threads = _torch.get_num_threads() if _torch is not None else None
try:
    import mxnet as _mx  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised only where mxnet is absent
    raise MissingDependencyError(
        f"the MXNet AutoRec backend needs the optional package 'mxnet', which is not importable "
        f"({_exc}); install it with `pip install .[mxnet]` (mxnet 1.9.1, numpy < 1.24), or use the "
        f"PyTorch backend (autorec.models.torch.AutoRecTorch)") from None

if _torch is not None and _torch_threads is not None:
    _torch.set_num_threads(_torch_threads)

from autorec.models.mxnet.model import AutoRecBlock, AutoRecMXNet, mx_contexts  # noqa: E402

__all__ = ["AutoRecMXNet", "AutoRecBlock", "mx_contexts"]
