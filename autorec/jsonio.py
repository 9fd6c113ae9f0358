"""The one set of JSON helpers: plain JSON values from what the code holds, and the canonical text
that ids are hashed from."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any


def to_plain(value: Any) -> Any:
    """Plain JSON: dataclasses as dicts, tuples as lists, numpy scalars/arrays as Python values,
    paths as text; a non-finite float becomes ``None`` (JSON has no NaN)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    tolist = getattr(value, "tolist", None)
    if type(value).__module__ == "numpy" and callable(tolist):
        return to_plain(tolist())
    return str(value)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, no NaN: the text hashed into ids."""
    return json.dumps(to_plain(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> str:
    """Readable, stable JSON for files (sorted keys, one-space indent, trailing newline)."""
    return json.dumps(to_plain(value), indent=1, sort_keys=True, allow_nan=False) + "\n"
