"""AutoRec (Sedhain et al., WWW 2015), packaged by role: :mod:`.config` (the one configuration),
:mod:`.semantics` and :mod:`.rows` (framework-free), :mod:`.base` (the model contract), and the
backends :mod:`.torch` and :mod:`.mxnet` (imported only when used)."""

from autorec.models.autorec.config import AutoRecConfig

__all__ = ["AutoRecConfig"]
