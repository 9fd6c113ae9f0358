"""The one cache-folder lookup: downloads, stored splits, compiled kernels, scale checkpoints and
tuning studies all live under one root.

``$AUTOREC_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/autorec-bench``, else
``~/.cache/autorec-bench``.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE_DIR = "AUTOREC_CACHE_DIR"


def cache_root() -> Path:
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autorec-bench"


def cache_dir(kind: str) -> Path:
    """``cache_root() / kind`` (``datasets``, ``splits``, ``kernels``, ``scale-checkpoints``, ...);
    not created here."""
    return cache_root() / kind
