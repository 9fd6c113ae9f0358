"""The MovieLens data layer: registry, resolution/download, parsers, integrity checks, rating
scales and the synthetic generator.

Framework-free (numpy, scipy, pandas, stdlib).  Typical use::

    from autorec import data
    ratings = data.load("ml-100k")                 # data dir, $AUTOREC_DATA_DIR, cache, download
    ratings = data.load("ml-1m", offline=True)     # never touches the network
    fake = data.generate_like("ml-1m", fraction=0.01)

Downloaded datasets live under ``autorec.cache.cache_dir("datasets")``.
"""

from __future__ import annotations

from autorec.data.download import (
    ENV_DATA_DIR,
    ENV_DATA_URL,
    Location,
    base_url,
    download,
    extract_archive,
    find_local,
    locate,
    resolve,
    verify_archive,
)
from autorec.data.indexing import from_arrays
from autorec.data.integrity import check_counts, check_timestamps, copy_problem, count_rows, fix_hint
from autorec.data.parsers import load_file, normalize_format, read_ratings
from autorec.data.rating_scale import RatingScale, scale_for
from autorec.data.ratings import Ratings
from autorec.data.registry import CITATION, DATASETS, DEFAULT_BASE_URL, FORMATS, DatasetSpec, get, names
from autorec.data.synthetic import SHAPES, generate, generate_like
from autorec.errors import ChecksumError, DataError

__all__ = [
    "Ratings",
    "DatasetSpec",
    "DATASETS",
    "FORMATS",
    "CITATION",
    "DEFAULT_BASE_URL",
    "get",
    "info",
    "names",
    "Location",
    "base_url",
    "find_local",
    "resolve",
    "locate",
    "download",
    "verify_archive",
    "extract_archive",
    "ENV_DATA_DIR",
    "ENV_DATA_URL",
    "load",
    "load_copy",
    "load_file",
    "read_ratings",
    "from_arrays",
    "normalize_format",
    "RatingScale",
    "scale_for",
    "count_rows",
    "copy_problem",
    "check_counts",
    "check_timestamps",
    "fix_hint",
    "SHAPES",
    "generate",
    "generate_like",
    "DataError",
    "ChecksumError",
]

#: the registry entry of a dataset (same as :func:`get`)
info = get


def load(
    name, data_dir=None, *, offline: bool = False, download: bool = True, validate: bool = True, progress: bool = True
) -> Ratings:
    """The ratings of a registered dataset, found by :func:`resolve` (downloaded if needed and
    allowed), read by :func:`load_copy`."""
    spec = get(name)
    loc = resolve(spec, data_dir, offline=offline, download=download, progress=progress)
    return load_copy(spec, loc, validate=validate)


def load_copy(name, loc: Location, *, validate: bool = True) -> Ratings:
    """The ratings of the copy of dataset ``name`` at ``loc``, on the registered scale and step.

    With ``validate`` the counts must match the registry (else :class:`DataError` naming both numbers
    and the fix).  ``meta`` records the source file, the folder and the resolution step that found it.
    """
    spec = get(name)
    path = loc.path / spec.ratings_file
    ratings = load_file(path, spec.fmt, name=spec.name, scale=spec.rating_scale, step=spec.step)
    if validate:
        check_counts(ratings, spec, path, loc.step)
        check_timestamps(ratings, spec, path, loc.step)
    ratings.meta.update(dataset=spec.name, folder=str(loc.path), resolved_by=loc.step, validated=bool(validate))
    return ratings
