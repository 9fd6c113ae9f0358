"""The one device-string grammar.

A device is ``cpu``, ``cuda`` or ``gpu``, optionally with an index written ``:N`` (torch's
spelling) or ``(N)`` (MXNet's): ``cpu(0)``, ``cuda:1``, ``gpu(1)``; ``cuda`` and ``gpu`` name the
same kind of device.  A device list is a list of those, or one string with the
devices separated by commas outside parentheses (``"cpu(0),cpu(1)"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from autorec.errors import ConfigError

_DEVICE = re.compile(r"^(cpu|cuda|gpu)(?::(\d+)|\((\d+)\))?$")


def parse_device(dev: str) -> tuple[str, int | None]:
    """``"cpu"``, ``"cpu(0)"`` -> ``("cpu", None|0)``; ``"cuda:1"``, ``"gpu(1)"``, ``"gpu"`` ->
    ``("gpu", 1|None)``.  :class:`ConfigError` for anything else."""
    m = _DEVICE.match(str(dev).strip())
    if not m:
        raise ConfigError(f"device {dev!r} is not a device string (cpu, cpu(0), cuda:0, gpu(1), ...)")
    kind = "cpu" if m.group(1) == "cpu" else "gpu"
    idx = m.group(2) if m.group(2) is not None else m.group(3)
    return kind, (int(idx) if idx is not None else None)


def is_device(dev: Any) -> bool:
    try:
        parse_device(dev)
    except ConfigError:
        return False
    return True


def split_devices(value: str | Iterable[str] | None) -> list[str]:
    """A device list from a string (``"cpu(0),cpu(1)"``, ``"cuda:0,cuda:1"``) or an iterable;
    ``None`` or empty -> ``["cpu"]``.  Every entry is checked."""
    if value is None:
        return ["cpu"]
    if isinstance(value, str):
        items = [v.strip() for v in re.split(r",(?![^()]*\))", value) if v.strip()]
    else:
        items = [str(v).strip() for v in value]
    items = items or ["cpu"]
    for d in items:
        parse_device(d)
    return items
