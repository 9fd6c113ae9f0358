"""The datasets a run names, where their data comes from, and the one way a run gets its split.

A run names a registered dataset (``ml-100k``, ...), synthetic data (``synthetic:NU,NI,NR[,SEED]``
through :func:`autorec.data.synthetic.generate`, or ``synthetic:SHAPE@FRACTION[,SEED]`` through
``generate_like``, e.g. ``synthetic:ml-1m@0.01``: never downloaded, the name determines the
content), or, with a ``files:TRAIN.csv,TEST.csv`` split, any name for the ratings the two files
hold.  :func:`load_data` is used by the parent (to materialise the split once and hash it) and by
the worker (to load the same split and verify its hash) alike.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autorec import data, splits
from autorec.cache import cache_dir
from autorec.data import synthetic
from autorec.data.rating_scale import RatingScale
from autorec.errors import ConfigError, DataError

_SYN_COUNTS = re.compile(r"^synthetic:(\d+),(\d+),(\d+)(?:,(\d+))?$")
_SYN_LIKE = re.compile(r"^synthetic:([A-Za-z0-9_.-]+)@([0-9.eE+-]+)(?:,(\d+))?$")


def shared_data_dir() -> str | None:
    """The data folder a benchmark command uses when none is given: ``None`` when
    ``AUTOREC_DATA_DIR`` is set (the data layer reads it itself), else ``../shared/data`` beside the
    checkout when it exists, else ``None`` (the cache)."""
    if os.environ.get("AUTOREC_DATA_DIR"):
        return None
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


class DataUnavailable(DataError):
    """A dataset has no local copy and may not be downloaded (offline)."""


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as a run names it: ``name`` is the canonical text (what records hold);
    ``synthetic`` the generator's arguments (``("counts", nu, ni, nr, seed)`` or
    ``("like", shape, fraction, seed)``), ``None`` for real data."""

    name: str
    synthetic: tuple | None = None


@dataclass(frozen=True)
class DataSource:
    """Where a run's data comes from: execution settings, not part of its identity (the content
    hashes are).  ``rating_scale`` declares the scale of a custom (``files:``) dataset."""

    data_dir: str | None = None
    offline: bool = False
    cache_dir: str | None = None
    rating_scale: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Availability:
    """Whether a dataset is at hand: ``local`` (and ``where``), else the URL a run would download
    it from (``download_url``), else neither (offline: ``where`` says why and what to do)."""

    local: bool
    where: str
    download_url: str | None = None


def check_rating_scale(scale: Any) -> tuple[float, ...] | None:
    """A declared rating scale as ``(low, high)`` or ``(low, high, step)`` (from ``"1,5"``, a list
    or a tuple); :class:`ConfigError` naming the value otherwise."""

    if scale is None:
        return None
    rs = RatingScale.parse(scale)
    return (rs.low, rs.high) if rs.step is None else (rs.low, rs.high, rs.step)


def parse_dataset(text: Any) -> DatasetRef:
    """``ml-100k`` (any name), ``synthetic:NU,NI,NR[,SEED]`` or ``synthetic:SHAPE@F[,SEED]``."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"dataset must be a non-empty name, got {text!r}")
    text = text.strip()
    if not text.startswith("synthetic"):
        return DatasetRef(text)
    m = _SYN_COUNTS.match(text)
    if m:
        nu, ni, nr = (int(m.group(k)) for k in (1, 2, 3))
        if min(nu, ni, nr) <= 0:
            raise ConfigError(f"dataset {text!r}: users, items and ratings must be > 0")
        seed = int(m.group(4) or 0)
        return DatasetRef(f"synthetic:{nu},{ni},{nr},{seed}", ("counts", nu, ni, nr, seed))
    m = _SYN_LIKE.match(text)
    if m:
        try:
            fraction = float(m.group(2))
        except ValueError:
            raise ConfigError(f"dataset {text!r}: fraction {m.group(2)!r} is not a number") from None
        if not 0 < fraction <= 1:
            raise ConfigError(f"dataset {text!r}: fraction must be in (0, 1]")
        seed = int(m.group(3) or 0)
        return DatasetRef(f"synthetic:{m.group(1)}@{fraction:g},{seed}", ("like", m.group(1), fraction, seed))
    raise ConfigError(
        f"dataset {text!r}: write synthetic data as 'synthetic:NU,NI,NR[,SEED]' (e.g. synthetic:200,100,4000) "
        "or 'synthetic:SHAPE@FRACTION[,SEED]' (e.g. synthetic:ml-1m@0.01)"
    )


def check_dataset(ref: DatasetRef, split_kind: str) -> None:
    """:class:`DataError` for a name that is neither registered nor synthetic, unless the split
    reads its own files (``files:`` names the ratings it builds freely)."""

    if split_kind == "files":
        if ref.synthetic is not None:
            raise ConfigError(f"dataset {ref.name!r} is synthetic; a files: split brings its own ratings")
        return
    if ref.synthetic is None:
        data.get(ref.name)  # DataError naming the known datasets
    elif split_kind == "canonical":
        raise ConfigError(f"split 'canonical' needs ML-100K's published files; {ref.name} is synthetic")


def availability(ref: DatasetRef, source: DataSource) -> Availability:
    """Where the data of a dataset is, without loading or downloading it: a local copy counts only
    when it is complete (:func:`autorec.data.copy_problem`).  A name the registry does not know has
    no copy to find (a ``files:`` split brings its own ratings)."""

    if ref.synthetic is not None:
        return Availability(True, "synthetic (generated)")
    try:
        spec = data.get(ref.name)
    except DataError as exc:
        return Availability(False, str(exc))
    found = data.find_local(ref.name, source.data_dir)
    if found is not None:
        problem = data.copy_problem(spec, found.path)
        if problem is None:
            return Availability(True, f"{found.path} ({found.step})")
        return Availability(False, f"{ref.name} at {found.path} is {problem}. Fix: {data.fix_hint(spec, found.step)}")
    if source.offline:
        return Availability(
            False,
            f"{ref.name} is not available locally and --offline forbids downloading it; pass --data-dir "
            f"(or set AUTOREC_DATA_DIR) to a folder holding {spec.folder}/, or fetch it with "
            f"`autorec-bench datasets --download {ref.name}`",
        )
    url = spec.url_for(data.base_url())
    return Availability(False, f"not local: a run downloads {url} into {cache_dir('datasets')}", url)


def synthetic_ratings(ref: DatasetRef):
    """The :class:`~autorec.data.Ratings` of a synthetic dataset (named ``ref.name``)."""

    assert ref.synthetic is not None
    kind, *args = ref.synthetic
    if kind == "counts":
        nu, ni, nr, seed = args
        return synthetic.generate(nu, ni, nr, seed=seed, name=ref.name)
    shape, fraction, seed = args
    return synthetic.generate_like(shape, seed=seed, fraction=fraction, name=ref.name)


def load_data(
    ref: DatasetRef, spec, *, seed: int, valid_ratio: float, source: DataSource, expect_sha256: str | None = None
):
    """The :class:`~autorec.splits.SplitData` of a run: loaded (or generated), split by the parsed
    ``spec`` (a :class:`~autorec.splits.SplitSpec`) and stored once under the cache; with
    ``expect_sha256``, a split whose content hash differs is refused."""

    if ref.synthetic is not None:
        return splits.cached_split(
            synthetic_ratings(ref),
            spec,
            seed=seed,
            valid_ratio=valid_ratio,
            cache_dir=source.cache_dir,
            expect_sha256=expect_sha256,
        )
    return splits.load_split(
        ref.name,
        spec,
        seed=seed,
        valid_ratio=valid_ratio,
        data_dir=source.data_dir,
        offline=source.offline,
        cache_dir=source.cache_dir,
        rating_scale=source.rating_scale,
        expect_sha256=expect_sha256,
    )
