"""The MovieLens data layer: registry, resolution/download, parsers and the synthetic generator.

Framework-free (numpy, scipy, pandas, stdlib).  Typical use::

    from autorec import data
    ratings = data.load("ml-100k")                 # data dir, $AUTOREC_DATA_DIR, cache, download
    ratings = data.load("ml-1m", offline=True)     # never touches the network
    fake = data.generate_like("ml-1m", fraction=0.01)
"""

from __future__ import annotations

from autorec.data.download import (
    ENV_CACHE_DIR, ENV_DATA_DIR, ENV_DATA_URL, Location, base_url, cache_dir, download, extract_archive,
    find_local, locate, resolve, verify_archive,
)
from autorec.data.parsers import from_arrays, load_file, normalize_format, read_ratings
from autorec.data.ratings import Ratings
from autorec.data.registry import CITATION, DATASETS, DEFAULT_BASE_URL, FORMATS, DatasetSpec, get, names
from autorec.data.synthetic import SHAPES, generate, generate_like
from autorec.errors import ChecksumError, DataError

__all__ = [
    "Ratings", "DatasetSpec", "DATASETS", "FORMATS", "CITATION", "DEFAULT_BASE_URL", "get", "info", "names",
    "Location", "cache_dir", "base_url", "find_local", "resolve", "locate", "download", "verify_archive",
    "extract_archive", "ENV_DATA_DIR", "ENV_CACHE_DIR", "ENV_DATA_URL",
    "load", "load_file", "read_ratings", "from_arrays", "normalize_format",
    "SHAPES", "generate", "generate_like", "DataError", "ChecksumError",
]

#: the registry entry of a dataset (same as :func:`get`)
info = get


def check_counts(ratings: Ratings, spec: DatasetSpec, where) -> None:
    """:class:`DataError` unless ``ratings`` has the registered users / items / ratings counts."""
    got = (ratings.n_users, ratings.n_items, len(ratings))
    if got != spec.expected:
        labels = ("users", "items", "ratings")
        diff = ", ".join(f"{g} {lab} (expected {e})" for g, e, lab in zip(got, spec.expected, labels) if g != e)
        raise DataError(f"{where}: has {diff}; {spec.name} has {spec.n_users} users, {spec.n_items} rated items "
                        f"and {spec.n_ratings} ratings. The folder is incomplete, modified or another release: "
                        f"re-extract {spec.archive} (or pass validate=False to load it anyway)")


def load(name, data_dir=None, *, offline: bool = False, download: bool = True, validate: bool = True,
         progress: bool = True) -> Ratings:
    """The ratings of a registered dataset, found by :func:`locate` (downloaded if needed and allowed).

    With ``validate`` the counts must match the registry (else :class:`DataError` with both numbers).
    ``meta`` records the source file, the folder and the resolution step that found it.
    """
    spec = get(name)
    loc = resolve(spec, data_dir, offline=offline, download=download, progress=progress)
    path = loc.path / spec.ratings_file
    ratings = load_file(path, spec.fmt, name=spec.name, scale=spec.rating_scale, step=spec.step)
    if validate:
        check_counts(ratings, spec, path)
    ratings.meta.update(dataset=spec.name, folder=str(loc.path), resolved_by=loc.step, validated=bool(validate))
    return ratings
