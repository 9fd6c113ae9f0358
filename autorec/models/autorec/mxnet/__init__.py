"""AutoRec in MXNet Gluon (:class:`AutoRecMXNet`); see :mod:`.model`.

mxnet is optional: importing this package without it raises
:class:`~autorec.errors.MissingDependencyError` naming ``pip install .[mxnet]``.  Importing mxnet
resets torch's intra-op thread count to 1, so the count torch had is put back.
"""

import sys as _sys

from autorec.errors import MissingDependencyError

_torch = _sys.modules.get("torch")
_torch_threads = _torch.get_num_threads() if _torch is not None else None
try:
    import mxnet as _mx  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised only where mxnet is absent
    raise MissingDependencyError(
        f"the MXNet AutoRec backend needs the optional package 'mxnet', which is not importable ({_exc}); "
        f"install it with `pip install .[mxnet]` (mxnet 1.9.1, numpy < 1.24), or use the PyTorch backend"
    ) from None

if _torch is not None and _torch_threads is not None:
    _torch.set_num_threads(_torch_threads)

from autorec.models.autorec.mxnet.model import AutoRecMXNet  # noqa: E402

__all__ = ["AutoRecMXNet"]
