"""``autorec-bench datasets``: the registered datasets, where each is available, and ``--download``.

A local copy is listed as available only when it is complete (its rating count matches the
registry); an incomplete one is listed with what is wrong and the fix.  ``--download`` puts a
verified, complete copy into the cache, replacing an incomplete cached one.
"""

from __future__ import annotations

import sys

HELP = "list the registered MovieLens datasets and where they are available (or download one)"


def add_arguments(p) -> None:
    p.add_argument(
        "--data-dir",
        metavar="D",
        default=None,
        help="a folder holding extracted datasets (looked up first; then $AUTOREC_DATA_DIR, the cache)",
    )
    p.add_argument("--offline", action="store_true", help="never touch the network")
    p.add_argument(
        "--download",
        metavar="NAME",
        action="append",
        default=[],
        help="download, verify, extract and load-check NAME into the cache, replacing an incomplete cached "
        "copy (repeatable; 'all' for all)",
    )
    p.add_argument("--no-progress", action="store_true", help="no download progress line on stderr")


def _where(spec, data_dir, base) -> str:
    from autorec import data
    from autorec.cache import cache_dir

    loc = data.find_local(spec, data_dir)
    if loc is not None:
        problem = data.copy_problem(spec, loc.path)
        if problem is None:
            return f"local: {loc.path} (found via {loc.step})"
        return (
            f"incomplete, not usable: {loc.path} (found via {loc.step}): {problem}. "
            f"Fix: {data.fix_hint(spec, loc.step)}"
        )
    archive = cache_dir("datasets") / spec.archive
    if archive.is_file():
        return f"archive in cache: {archive} (extracted on first load)"
    url = spec.url_for(data.base_url(base))
    if spec.size_mb is None:
        return f"not local (downloads from {url}; archive size not published)"
    return f"not local (downloads {spec.size_mb:.1f} MB from {url})"


def run(args) -> int:
    from autorec import data
    from autorec.cache import cache_dir
    from autorec.errors import DataError

    wanted = []
    for name in args.download:
        wanted.extend(data.names() if name == "all" else [data.get(name).name])
    if wanted and args.offline:
        raise DataError("--download and --offline contradict each other: drop --offline to download")
    for name in wanted:
        folder = data.download(name, progress=not args.no_progress)
        ratings = data.load_copy(name, data.Location(folder, "cache", folder.parent))
        print(
            f"{name}: {len(ratings):,} ratings, {ratings.n_users:,} users, {ratings.n_items:,} items "
            f"verified at {folder}"
        )
    if wanted:
        print()
    print(f"datasets (cache: {cache_dir('datasets')})")
    for spec in data.DATASETS.values():
        lo, hi = spec.rating_scale
        scale = f"{lo:g}-{hi:g}" + (" (half stars)" if spec.half_stars else "")
        sums = [alg for alg, _ in spec.checksums] + ["size"] * (spec.archive_size is not None)
        print(f"\n{spec.name}  {spec.title}")
        print(
            f"  {spec.n_ratings:,} ratings, {spec.n_users:,} users, {spec.n_items:,} rated items; "
            f"scale {scale}; {spec.ratings_file} ({spec.fmt})"
        )
        print(f"  license: {spec.license}")
        note = f" ({spec.checksum_note})" if spec.checksum_note else ""
        print(f"  verified by: {' + '.join([*sums, 'counts'])}{note}")
        print(f"  {_where(spec, args.data_dir, None)}")
    print(f"\ncite: {data.CITATION}")
    sys.stdout.flush()
    return 0
