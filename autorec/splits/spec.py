"""The split grammar: :class:`SplitSpec` (``kind`` plus typed arguments, written ``kind:a=1,b=2``),
and the checks of the two settings every split takes besides its spec (seed, validation share).

A spec is parsed once (:meth:`SplitSpec.parse`) and then travels as data: :meth:`SplitSpec.to_dict`
/ :meth:`SplitSpec.from_dict` carry it between processes without going back through text.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autorec.errors import SplitError

__all__ = ["KINDS", "CANONICAL_FOLDS", "SplitSpec", "check_seed", "check_valid_ratio"]

CANONICAL_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")

# kind -> {arg: (type, default)}; a default of _REQUIRED means the argument must be given.
_REQUIRED = object()
KINDS: dict[str, dict[str, tuple[type, Any]]] = {
    "random": {"test_ratio": (float, 0.1)},
    "d2l-random": {"test_ratio": (float, 0.1)},
    "seq-aware": {},
    "canonical": {"fold": (str, _REQUIRED)},
    "kfold": {"k": (int, 5), "fold": (int, 0)},
    "files": {"train": (str, _REQUIRED), "test": (str, _REQUIRED)},
}
# kinds whose arguments are written positionally: ``canonical:u1``, ``files:A.csv,B.csv``
_POSITIONAL = {"canonical": ("fold",), "files": ("train", "test")}

_USAGE = {
    "random": "random:test_ratio=0.1",
    "d2l-random": "d2l-random:test_ratio=0.1",
    "seq-aware": "seq-aware",
    "canonical": "canonical:u1 (one of " + ", ".join(CANONICAL_FOLDS) + ")",
    "kfold": "kfold:k=5,fold=0",
    "files": "files:TRAIN.csv,TEST.csv",
}


def _kinds_text() -> str:
    return ", ".join(KINDS)


@dataclass(frozen=True)
class SplitSpec:
    """A split kind and its arguments; every argument is filled in (defaults included), so
    ``str(spec)`` is canonical and ``SplitSpec.parse(str(spec)) == spec``."""

    kind: str
    args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SplitError(f"unknown split kind {self.kind!r}; valid kinds: {_kinds_text()}")
        table = KINDS[self.kind]
        args = dict(self.args or {})
        unknown = sorted(set(args) - set(table))
        if unknown:
            valid = ", ".join(table) or "none"
            raise SplitError(
                f"split {self.kind!r}: unknown argument(s) {', '.join(unknown)}; "
                f"valid arguments: {valid} (e.g. {_USAGE[self.kind]})"
            )
        resolved: dict[str, Any] = {}
        for name, (typ, default) in table.items():
            if name not in args:
                if default is _REQUIRED:
                    raise SplitError(f"split {self.kind!r} needs {name!r}: write {_USAGE[self.kind]}")
                resolved[name] = default
                continue
            resolved[name] = _convert(self.kind, name, typ, args[name])
        _check_args(self.kind, resolved)
        object.__setattr__(self, "args", resolved)

    def __hash__(self) -> int:
        return hash(str(self))

    @classmethod
    def parse(cls, text: str | SplitSpec) -> SplitSpec:
        """``"random"``, ``"random:test_ratio=0.2"``, ``"d2l-random:test_ratio=0.1"``,
        ``"seq-aware"``, ``"canonical:u1"``, ``"kfold:k=5,fold=0"``, ``"files:TRAIN.csv,TEST.csv"``."""
        if isinstance(text, SplitSpec):
            return text
        if not isinstance(text, str):
            raise SplitError(f"a split spec must be a string like 'random:test_ratio=0.1', got {text!r}")
        kind, sep, rest = text.strip().partition(":")
        kind = kind.strip()
        if kind not in KINDS:
            raise SplitError(f"unknown split kind {kind!r} in {text!r}; valid kinds: {_kinds_text()}")
        tokens = [t.strip() for t in rest.split(",")] if sep and rest.strip() else []
        if sep and not tokens:
            raise SplitError(f"split spec {text!r}: nothing after ':'; write {_USAGE[kind]}")
        return cls(kind, _parse_args(text, kind, tokens))

    def __str__(self) -> str:
        if not self.args:
            return self.kind
        if self.kind in _POSITIONAL:
            body = ",".join(str(self.args[n]) for n in _POSITIONAL[self.kind])
        else:
            body = ",".join(f"{n}={_fmt(self.args[n])}" for n in KINDS[self.kind])
        return f"{self.kind}:{body}"

    def hash_text(self) -> str:
        """The spec as it enters :func:`~autorec.splits.split_hash`: ``str(self)``, except that
        ``files`` paths are reduced to their base names, so the hash does not depend on where the
        files live."""
        if self.kind == "files":
            return "files:" + ",".join(os.path.basename(self.args[n]) for n in ("train", "test"))
        return str(self)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., "args": {...}}`` (plain JSON values): the spec as data, for a worker."""
        return {"kind": self.kind, "args": dict(self.args)}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> SplitSpec:
        """The inverse of :meth:`to_dict`; the arguments are checked again (the dict may come from
        a file or another process)."""
        if not isinstance(value, dict) or set(value) != {"kind", "args"} or not isinstance(value["args"], dict):
            raise SplitError(f"a split spec as data is {{'kind': KIND, 'args': {{...}}}}, got {value!r}")
        return cls(value["kind"], value["args"])


def _parse_args(text: str, kind: str, tokens: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` tokens, or positional values for the kinds in ``_POSITIONAL``."""
    args: dict[str, str] = {}
    positional = list(_POSITIONAL.get(kind, ()))
    free = list(positional)
    for tok in tokens:
        if not tok:
            raise SplitError(f"split spec {text!r}: empty argument; write {_USAGE[kind]}")
        name, eq, value = tok.partition("=")
        name = name.strip()
        if eq and (not positional or name in positional):
            if name in args:
                raise SplitError(f"split spec {text!r}: argument {name!r} given twice")
            args[name] = value.strip()
            if name in free:
                free.remove(name)
        elif positional:
            if not free:
                raise SplitError(f"split spec {text!r}: too many arguments; write {_USAGE[kind]}")
            args[free.pop(0)] = tok
        else:
            raise SplitError(
                f"split spec {text!r}: argument {tok!r} is not NAME=VALUE; "
                f"valid arguments of {kind!r}: {', '.join(KINDS[kind]) or 'none'} (e.g. {_USAGE[kind]})"
            )
    return args


def _fmt(v: Any) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _convert(kind: str, name: str, typ: type, value: Any) -> Any:
    if typ is float:
        if isinstance(value, bool):
            raise SplitError(f"split {kind!r}: {name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SplitError(f"split {kind!r}: {name}={value!r} is not a number") from None
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise SplitError(f"split {kind!r}: {name} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SplitError(f"split {kind!r}: {name}={value!r} is not an integer") from None
    value = str(value).strip()
    if not value:
        raise SplitError(f"split {kind!r}: {name} is empty; write {_USAGE[kind]}")
    return value


def _check_args(kind: str, a: dict) -> None:
    if "test_ratio" in a:
        r = a["test_ratio"]
        if not (math.isfinite(r) and 0.0 < r < 1.0):
            raise SplitError(f"split {kind!r}: test_ratio must be strictly between 0 and 1, got {r!r}")
    if kind == "kfold":
        if a["k"] < 2:
            raise SplitError(f"split 'kfold': k must be at least 2, got {a['k']}")
        if not 0 <= a["fold"] < a["k"]:
            raise SplitError(f"split 'kfold': fold must be in 0..{a['k'] - 1} for k={a['k']}, got {a['fold']}")
    if kind == "canonical" and a["fold"] not in CANONICAL_FOLDS:
        raise SplitError(f"split 'canonical': unknown fold {a['fold']!r}; valid folds: {', '.join(CANONICAL_FOLDS)}")
    if kind == "files":
        for n in ("train", "test"):
            if "," in a[n]:
                raise SplitError(f"split 'files': path {a[n]!r} contains ',' (the argument separator); rename the file")


def check_seed(seed: Any) -> int:
    """The split seed as an int in 0..2**32-1 (what numpy's generators accept), else :class:`SplitError`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise SplitError(f"split seed must be an integer in 0..2**32-1, got {seed!r}")
    return int(seed)


def check_valid_ratio(v: Any) -> float:
    """The validation share of the train part as a float in [0, 1), else :class:`SplitError`."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise SplitError(f"valid_ratio must be a number in [0, 1), got {v!r}") from None
    if not (math.isfinite(v) and 0.0 <= v < 1.0):
        raise SplitError(f"valid_ratio must be in [0, 1), got {v!r}")
    return v
