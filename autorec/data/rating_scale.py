"""Rating scales: the range (and step) a dataset's ratings sit on, and where it comes from.

Every prediction is clipped to the scale, so a wrong scale changes every model's numbers.  It is
therefore never guessed from the minimum and maximum:

- a registered dataset has its registered scale and step (a declared scale must agree with it);
- a custom dataset (a ``files:`` split, or any name the registry does not know) takes the scale it
  declares (``rating_scale=(1, 5)`` on the loading functions, ``--rating-scale 1,5`` on the CLI;
  :meth:`RatingScale.parse` reads both forms);
- an undeclared custom scale is accepted only when the observed ratings use *every* level of a
  regular grid (1, 2, 3, 4, 5; or 0.5, 1, ..., 5), and then with a warning; otherwise it is refused.
  A gap is refused because a typo sits on the grid too: ratings 1..5 plus one ``7`` leave 6 unused.

Values off the scale are reported by the loaders with the file and line they come from.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from autorec.errors import ConfigError, DataError

__all__ = ["RatingScale", "scale_for"]

_FORM = "LOW,HIGH or LOW,HIGH,STEP (e.g. 1,5 or 0.5,5,0.5)"
_DECLARE = (
    "declare it (rating_scale=(LOW, HIGH) in Python, --rating-scale LOW,HIGH on the command line): a rating "
    "off the declared scale is then reported with its file and line"
)


@dataclass(frozen=True)
class RatingScale:
    """Ratings lie in ``[low, high]``; with a ``step``, on ``low, low + step, ..., high``."""

    low: float
    high: float
    step: float | None = None

    def __post_init__(self) -> None:
        lo, hi, step = self.low, self.high, self.step
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(f"rating scale {lo:g},{hi:g}: needs finite LOW < HIGH ({_FORM})")
        if step is not None:
            n = (hi - lo) / step if step > 0 and math.isfinite(step) else float("nan")
            if not (math.isfinite(n) and abs(n - round(n)) < 1e-6):
                raise ConfigError(f"rating scale {lo:g},{hi:g},{step:g}: STEP must be positive and divide HIGH - LOW")

    @classmethod
    def parse(cls, value: Any) -> RatingScale:
        """A scale from the CLI text ``"1,5"`` / ``"0.5,5,0.5"``, a tuple ``(1, 5)`` / ``(0.5, 5, 0.5)``
        or a :class:`RatingScale`; :class:`ConfigError` naming the value and the accepted form."""
        if isinstance(value, RatingScale):
            return value
        parts = value.split(",") if isinstance(value, str) else value
        try:
            nums = [float(p) for p in parts]
        except (TypeError, ValueError):
            raise ConfigError(f"rating scale {value!r} is not {_FORM}") from None
        if len(nums) not in (2, 3):
            raise ConfigError(f"rating scale {value!r} is not {_FORM}")
        return cls(nums[0], nums[1], nums[2] if len(nums) == 3 else None)

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.low, self.high)

    def __str__(self) -> str:
        text = f"{self.low:g}..{self.high:g}"
        return text if self.step is None else f"{text} in steps of {self.step:g}"


def scale_for(name: str, declared: Any = None, values: np.ndarray | None = None) -> tuple[RatingScale, str]:
    """The scale of dataset ``name`` (given the ``declared`` one, if any, and its ratings
    ``values``, if known) and its source: ``registered``, ``declared`` or ``observed`` (see the module
    doc).  A declared scale contradicting a registered one is a :class:`ConfigError`.  The values are
    not checked against the scale here: the loaders do that, naming file and line."""
    from autorec.data.registry import DATASETS

    registered = DATASETS.get(name)
    mine = RatingScale.parse(declared) if declared is not None else None
    if registered is not None:
        known = RatingScale(*registered.rating_scale, step=registered.step)
        if mine is not None and (mine.bounds != known.bounds or mine.step not in (None, known.step)):
            raise ConfigError(
                f"{name} is a registered dataset with rating scale {known}; the declared scale {mine} "
                "contradicts it: drop the declared scale, or give your data another name"
            )
        return known, "registered"
    if mine is not None:
        return mine, "declared"
    if values is None:
        raise DataError(f"{name}: not a registered dataset, and no rating scale declared: {_DECLARE}")
    observed = _complete_grid(np.unique(np.asarray(values, dtype=np.float64)))
    if isinstance(observed, str):
        raise DataError(f"{name}: no rating scale declared, and {observed}, so none can be assumed; {_DECLARE}")
    warnings.warn(
        f"{name}: no rating scale declared; its ratings use every level of {observed}, which is taken as the "
        "scale (predictions are clipped to it): declare it (rating_scale / --rating-scale) to make this explicit",
        UserWarning,
        stacklevel=2,
    )
    return observed, "observed"


def _complete_grid(levels: np.ndarray) -> RatingScale | str:
    """The grid ``levels`` fill completely (every step from the lowest to the highest used), else
    a text saying why they do not."""
    shown = ", ".join(f"{v:g}" for v in levels[:12]) + (", ..." if len(levels) > 12 else "")
    if len(levels) < 2:
        return f"every rating is {shown}"
    step = float(np.min(np.diff(levels)))
    pos = (levels - levels[0]) / step
    if not np.allclose(pos, np.round(pos), atol=1e-4):
        return f"the ratings ({shown}) do not sit on a common step"
    used = np.round(pos).astype(np.int64)
    if used[-1] + 1 != len(levels):
        after = np.flatnonzero(np.diff(used) > 1)  # a level is unused just after each of these
        gaps = ", ".join(f"{levels[0] + (used[j] + 1) * step:g}" for j in after[:5])
        gaps += ", ..." if len(after) > 5 else ""
        return (
            f"the ratings ({shown}) leave level(s) {gaps} of their step {step:g} unused "
            "(a typo or an outlier sits on the step too)"
        )
    return RatingScale(float(levels[0]), float(levels[-1]), step)
