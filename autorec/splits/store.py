"""The split store: every split is materialised once, written as ``.npz`` under the cache
(``autorec.cache.cache_dir("splits")`` unless a folder is given) and, on reuse, re-checked and
verified against its hash.  :func:`load_split` is the entry point the harness and the CLI use;
:func:`cached_split` is its storage half, for ratings already in memory (synthetic data).

A stored split is keyed by dataset, the ratings' content hash, spec, seed, validation share and the
content of the split's source files (``canonical``'s ``uN.base``/``uN.test``, ``files``' CSVs), so
an edited file is a different split, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from autorec.atomic import atomic_write
from autorec.cache import cache_dir as _cache_dir
from autorec.data.ratings import Ratings
from autorec.errors import SplitError
from autorec.splits import strategies
from autorec.splits.checks import check_split
from autorec.splits.files import ratings_from_files
from autorec.splits.hashing import file_sha256, ratings_hash, split_hash
from autorec.splits.spec import SplitSpec, check_seed, check_valid_ratio
from autorec.splits.split import Split, SplitData

__all__ = ["load_split", "cached_split", "cache_path"]

_STORE_FORMAT = 1  # version of the .npz layout / cache key


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _source_files(spec: SplitSpec, source_dir: Path | None) -> dict:
    if spec.kind == "canonical" and source_dir is not None:
        fold = spec.args["fold"]
        paths = [source_dir / f"{fold}.base", source_dir / f"{fold}.test"]
    elif spec.kind == "files":
        paths = [Path(spec.args["train"]), Path(spec.args["test"])]
    else:
        return {}
    return {f"{k}:{p.name}": (file_sha256(p) if p.is_file() else None) for k, p in zip(("train", "test"), paths)}


def _store_key(dataset: str, rhash: str, spec: SplitSpec, seed: int, valid_ratio: float, sources: dict) -> str:
    doc = {
        "format": _STORE_FORMAT,
        "dataset": dataset,
        "ratings_sha256": rhash,
        "spec": str(spec),
        "seed": seed,
        "valid_ratio": repr(float(valid_ratio)),
        "sources": sources,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | os.PathLike, dataset: str, spec: SplitSpec, seed: int, key: str) -> Path:
    """Where the split with store key ``key`` lives under ``cache_dir``."""
    return Path(cache_dir) / f"{_safe(dataset)}-{_safe(spec.kind)}-seed{seed}-{key[:20]}.npz"


def _write(path: Path, split: Split, meta: dict) -> None:
    try:
        atomic_write(
            path,
            lambda fh: np.savez(
                fh,
                train=split.train,
                valid=split.valid,
                test=split.test,
                meta=np.array(json.dumps(meta, sort_keys=True)),
            ),
        )
    except OSError as exc:
        raise SplitError(
            f"cannot store the split in {path.parent} ({exc.strerror or exc}); pass a writable "
            "--cache-dir (or set $AUTOREC_CACHE_DIR)"
        ) from None


def _read(path: Path, ratings: Ratings, spec: SplitSpec, seed: int, valid_ratio: float, key: str) -> Split:
    fix = f"delete {path} to rebuild it"
    try:
        with np.load(path, allow_pickle=False) as z:
            train, valid, test = (np.asarray(z[n], dtype=np.int64) for n in ("train", "valid", "test"))
            meta = json.loads(str(z["meta"][()]))
    except Exception as exc:  # truncated / not an npz / missing arrays
        raise SplitError(f"stored split {path} is unreadable ({type(exc).__name__}: {exc}); {fix}") from None
    if meta.get("key") != key or meta.get("n_ratings") != len(ratings):
        raise SplitError(f"stored split {path} was made for other data or settings; {fix}")
    try:
        check_split(len(ratings), train, valid, test, ratings)
    except SplitError as exc:
        raise SplitError(f"stored split {path} is invalid ({exc}); {fix}") from None
    digest = split_hash(ratings, train, valid, test, spec=spec)
    if digest != meta.get("sha256"):
        raise SplitError(
            f"stored split {path} fails its hash check (content {digest[:16]}..., recorded "
            f"{str(meta.get('sha256'))[:16]}...): it is corrupt; {fix}"
        )
    return Split(
        dataset=ratings.name,
        spec=spec,
        seed=seed,
        valid_ratio=valid_ratio,
        train=train,
        valid=valid,
        test=test,
        sha256=digest,
    )


def load_split(
    dataset: str,
    spec: str | SplitSpec,
    *,
    seed: int = 0,
    valid_ratio: float = 0.05,
    data_dir: str | os.PathLike | None = None,
    offline: bool = False,
    cache_dir: str | os.PathLike | None = None,
    rating_scale: Any = None,
    expect_sha256: str | None = None,
) -> SplitData:
    """THE entry point: the ratings of ``dataset`` split by ``spec``, materialised once and stored.

    The ratings come from :func:`autorec.data.load` (for ``files``, from the two CSVs, on
    ``rating_scale`` when the dataset is not registered: see :func:`ratings_from_files`).  The
    split is stored under ``cache_dir`` (see the module doc); a stored split is reused only after
    its indices are re-checked and its content hash verified; a mismatch raises
    :class:`SplitError` naming the file.  ``expect_sha256`` (the hash the parent process recorded)
    refuses a split whose content differs, naming both hashes.
    """
    spec = SplitSpec.parse(spec)
    seed = check_seed(seed)
    valid_ratio = check_valid_ratio(valid_ratio)
    source_dir = None
    if spec.kind == "files":
        ratings = ratings_from_files(dataset, spec.args["train"], spec.args["test"], rating_scale=rating_scale)
    else:
        from autorec import data

        if rating_scale is not None:
            data.scale_for(data.get(dataset).name, rating_scale)  # refused unless it agrees with the registry
        ratings = data.load(dataset, data_dir, offline=offline)
        if spec.kind == "canonical" and ratings.name == "ml-100k":
            source_dir = data.locate(dataset, data_dir, offline=offline)
    return cached_split(
        ratings,
        spec,
        seed=seed,
        valid_ratio=valid_ratio,
        source_dir=source_dir,
        cache_dir=cache_dir,
        expect_sha256=expect_sha256,
    )


def cached_split(
    ratings: Ratings,
    spec: str | SplitSpec,
    *,
    seed: int = 0,
    valid_ratio: float = 0.05,
    source_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    expect_sha256: str | None = None,
) -> SplitData:
    """:func:`~autorec.splits.make_split` of ratings already loaded, stored under ``cache_dir`` and
    reused (the storage half of :func:`load_split`; ``expect_sha256`` as there)."""
    spec = SplitSpec.parse(spec)
    seed = check_seed(seed)
    valid_ratio = check_valid_ratio(valid_ratio)
    source = None if source_dir is None else Path(source_dir)
    rhash = ratings_hash(ratings)
    key = _store_key(ratings.name, rhash, spec, seed, valid_ratio, _source_files(spec, source))
    path = cache_path(_cache_dir("splits") if cache_dir is None else cache_dir, ratings.name, spec, seed, key)
    if path.is_file():
        split = _read(path, ratings, spec, seed, valid_ratio, key)
    else:
        split = strategies.make_split(ratings, spec, seed=seed, valid_ratio=valid_ratio, source_dir=source)
        meta = {
            "format": _STORE_FORMAT,
            "key": key,
            "dataset": ratings.name,
            "spec": str(spec),
            "seed": seed,
            "valid_ratio": valid_ratio,
            "n_ratings": len(ratings),
            "ratings_sha256": rhash,
            "sha256": split.sha256,
            "sizes": split.sizes,
        }
        _write(path, split, meta)
    if expect_sha256 is not None and split.sha256 != expect_sha256:
        raise SplitError(
            f"split {spec} (seed {seed}, valid_ratio {valid_ratio:g}) of {ratings.name!r} has content hash "
            f"{split.sha256}, but {expect_sha256} was expected: the data or the split's files changed since "
            "the run was planned; plan it again"
        )
    return split.data(ratings, path=path, ratings_sha256=rhash)
