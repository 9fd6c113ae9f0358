"""Finding a dataset on disk, and downloading + verifying + extracting it when it is not there.

Resolution order (:func:`resolve` / :func:`locate`):

1. an explicit ``data_dir``;
2. ``$AUTOREC_DATA_DIR``;
3. the cache, ``autorec.cache.cache_dir("datasets")`` (``$AUTOREC_CACHE_DIR/datasets``, else
   ``$XDG_CACHE_HOME/autorec-bench/datasets``, else ``~/.cache/autorec-bench/datasets``): an
   extracted folder, or a verified archive left there;
4. a download of the official archive into the cache (never when ``offline``).

A data dir holds a dataset if it has ``<dir>/<name>/`` (e.g. ``ml-100k/``), ``<dir>/<archive
folder>/`` (e.g. ``ml-10M100K/``) or is itself the dataset's folder, with the ratings file inside.

A download streams to a temporary file in the cache folder, checks its size and every registered
checksum and only then renames it into place; extraction goes to a temporary folder (members that
would escape it -- absolute paths, ``..``, links -- are refused) that is renamed into place at the
end; a folder already there is kept only when it is complete (:func:`~autorec.data.copy_problem`),
so extracting again repairs a truncated copy.  Whatever fails, nothing that looks like a valid
archive or dataset folder is left behind.
The base URL is ``$AUTOREC_DATA_URL`` or the ``base_url`` argument (tests serve archives locally).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from autorec.cache import ENV_CACHE_DIR, cache_dir
from autorec.data.integrity import copy_problem
from autorec.data.registry import DEFAULT_BASE_URL, DatasetSpec, get
from autorec.errors import ChecksumError, DataError

__all__ = [
    "ENV_DATA_DIR",
    "ENV_DATA_URL",
    "Location",
    "base_url",
    "find_local",
    "resolve",
    "locate",
    "download",
    "verify_archive",
    "extract_archive",
]

ENV_DATA_DIR = "AUTOREC_DATA_DIR"
ENV_DATA_URL = "AUTOREC_DATA_URL"
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Location:
    """Where a dataset was found: its folder, and the resolution step that found it
    (``data-dir``, ``$AUTOREC_DATA_DIR``, ``cache``, ``cache-archive`` or ``download``)."""

    path: Path
    step: str
    root: Path


def base_url(override: str | None = None) -> str:
    return override or os.environ.get(ENV_DATA_URL) or DEFAULT_BASE_URL


def _match(root: Path, spec: DatasetSpec) -> Path | None:
    for cand in (root / spec.name, root / spec.folder, root):
        if (cand / spec.ratings_file).is_file():
            return cand
    return None


def _roots(data_dir) -> list[tuple[str, Path]]:
    roots: list[tuple[str, Path]] = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        if not d.is_dir():
            raise DataError(f"data dir {d} does not exist or is not a folder (from --data-dir / data_dir)")
        roots.append(("data-dir", d))
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        d = Path(env).expanduser()
        if not d.is_dir():
            raise DataError(f"${ENV_DATA_DIR}={env} does not exist or is not a folder; fix or unset it")
        roots.append((f"${ENV_DATA_DIR}", d))
    roots.append(("cache", cache_dir("datasets")))
    return roots


def find_local(name, data_dir=None) -> Location | None:
    """The first extracted copy of ``name`` along the resolution order, or None.  Never downloads,
    never extracts and never parses the ratings (counts are checked on load)."""
    spec = get(name)
    for step, root in _roots(data_dir):
        found = _match(root, spec)
        if found is not None:
            return Location(found, step, root)
    return None


def _folders(spec: DatasetSpec) -> str:
    return f"{spec.name}/" if spec.name == spec.folder else f"{spec.name}/ or {spec.folder}/"


def _not_local(spec: DatasetSpec, roots, why: str, url: str) -> DataError:
    looked = "; ".join(f"{step} {root}" for step, root in roots)
    return DataError(
        f"{spec.name} is not available locally (looked for {_folders(spec)} holding "
        f"{spec.ratings_file} in: {looked}) and {why}. Fix: download it on a connected machine "
        f"(autorec-bench datasets --download {spec.name}, or fetch {url}) and put the extracted "
        f"{spec.folder}/ folder into a data dir (--data-dir or ${ENV_DATA_DIR})"
    )


def resolve(
    name,
    data_dir=None,
    *,
    offline: bool = False,
    download: bool = True,
    progress: bool = True,
    base_url: str | None = None,
) -> Location:
    """:func:`locate`, also saying which step found the dataset."""
    spec = get(name)
    roots = _roots(data_dir)
    for step, root in roots:
        found = _match(root, spec)
        if found is not None:
            return Location(found, step, root)
    cache = cache_dir("datasets")
    archive = cache / spec.archive
    cached_problem = None
    if archive.is_file():
        # a verified archive from an earlier run (or put there by hand): extract it, no network
        try:
            verify_archive(archive, spec)
        except ChecksumError:
            _remove(archive)
        else:
            try:
                return Location(_extract_cached(archive, spec, cache), "cache-archive", cache)
            except DataError as exc:  # removed: a download replaces it
                cached_problem = str(exc)
    url = _url(spec, base_url)
    if offline:
        why = "offline mode forbids downloading it"
        raise _not_local(
            spec, roots, f"{why} (the cached archive was refused: {cached_problem})" if cached_problem else why, url
        )
    if not download:
        raise _not_local(spec, roots, "downloading is disabled (download=False)", url)
    return Location(_download(spec, cache, base=base_url, progress=progress), "download", cache)


def locate(
    name,
    data_dir=None,
    *,
    offline: bool = False,
    download: bool = True,
    progress: bool = True,
    base_url: str | None = None,
) -> Path:
    """The folder holding the extracted files of dataset ``name`` (see the module doc for the order)."""
    return resolve(name, data_dir, offline=offline, download=download, progress=progress, base_url=base_url).path


def download(name, dest=None, *, base_url: str | None = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download, verify and extract dataset ``name`` into ``dest`` (default: the cache); returns the
    extracted folder ``<dest>/<name>``.  A complete extracted copy already there is kept (no
    network), an existing verified archive is reused, and an incomplete copy is replaced."""
    spec = get(name)
    dest = Path(dest).expanduser() if dest is not None else cache_dir("datasets")
    if copy_problem(spec, dest / spec.name) is None:
        return dest / spec.name
    return _download(spec, dest, base=base_url, progress=progress, timeout=timeout)


def _url(spec: DatasetSpec, base: str | None) -> str:
    return spec.url_for(base_url(base))


def _download(spec: DatasetSpec, dest: Path, *, base: str | None, progress: bool, timeout: float = 60.0) -> Path:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the dataset folder {dest}: {exc}; set ${ENV_CACHE_DIR} to a writable folder"
        ) from None
    archive = dest / spec.archive
    _remove_stale_temps(dest, spec)
    if archive.is_file():
        try:
            verify_archive(archive, spec)
            return _extract_cached(archive, spec, dest)
        except DataError:  # a ChecksumError too
            _remove(archive)  # not this dataset's complete archive: fetch it again
    url = _url(spec, base)
    _fetch(url, archive, spec, progress=progress, timeout=timeout)
    return _extract_cached(archive, spec, dest, downloaded_from=url)


#: a partial download or extraction folder older than this was left by a killed process
STALE_TEMP_S = 3600.0


def _remove_stale_temps(dest: Path, spec: DatasetSpec) -> None:
    """Remove what a killed download or extraction of ``spec`` left in ``dest`` (``.ARCHIVE.*.part``,
    ``.NAME.extract-*``, ``.NAME.stale-*``); an interrupted one cleans up after itself, a SIGKILLed one
    cannot.  Only files untouched for :data:`STALE_TEMP_S`: a live download keeps writing its own."""
    now = time.time()
    patterns = (f".{spec.archive}.*.part", f".{spec.name}.extract-*", f".{spec.name}.stale-*")
    for pattern in patterns:
        for path in dest.glob(pattern):
            try:
                if now - path.stat().st_mtime > STALE_TEMP_S:
                    _remove(path)
            except OSError:
                pass


def _extract_cached(archive: Path, spec: DatasetSpec, dest: Path, downloaded_from: str | None = None) -> Path:
    """:func:`extract_archive` of an archive in the cache, checked for the registered number of
    ratings; an archive that cannot be extracted or does not hold the registered copy is removed
    from the cache, so that a download replaces it (an archive with published checksums passed
    them, so this is mostly ml-latest-small's, which has none, or one put there by hand).  One just
    ``downloaded_from`` a URL is another release: downloading again would not help."""
    try:
        target = extract_archive(archive, spec, dest)
    except DataError as exc:
        if not archive.exists():
            raise  # removed already, and the message says so
        _remove(archive)
        raise DataError(f"{exc} (the archive was removed from the cache: download it again)") from None
    problem = copy_problem(spec, target)
    if problem is not None:
        _remove(archive)
        if downloaded_from is not None:
            raise DataError(
                f"{downloaded_from}: the downloaded {spec.ratings_file} does not match the registered "
                f"{spec.title} ({problem}): GroupLens may have re-released it. Fix: put a copy of the "
                f"registered release into a data dir (--data-dir or ${ENV_DATA_DIR})"
            )
        raise DataError(
            f"{archive}: its {spec.ratings_file} does not match the registry ({problem}); the archive was "
            f"removed from the cache: download it again (autorec-bench datasets --download {spec.name})"
        )
    return target


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _hashers(spec: DatasetSpec) -> dict:
    return {alg: hashlib.new(alg) for alg, _ in spec.checksums}


def _compare(spec: DatasetSpec, size: int, hashers: dict, what: str) -> None:
    if spec.archive_size is not None and size != spec.archive_size:
        raise ChecksumError(
            f"{what}: {size} bytes, but {spec.archive} has {spec.archive_size} bytes "
            "(truncated or not the official archive)"
        )
    for alg, expected in spec.checksums:
        got = hashers[alg].hexdigest()
        if got.lower() != expected.lower():
            raise ChecksumError(
                f"{what}: {alg} {got} does not match the published {alg} {expected} of "
                f"{spec.archive} (corrupt download or a different file)"
            )


def verify_archive(path, name) -> None:
    """Check a local archive's size and every registered checksum (:class:`ChecksumError` if off)."""
    spec = get(name)
    path = Path(path)
    hashers = _hashers(spec)
    size = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(_BLOCK)
            if not block:
                break
            size += len(block)
            for h in hashers.values():
                h.update(block)
    _compare(spec, size, hashers, str(path))


def _progress_bar(total: int | None, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        file=sys.stderr,
        leave=True,
        dynamic_ncols=True,
    )


def _fetch(url: str, archive: Path, spec: DatasetSpec, *, progress: bool, timeout: float) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.", suffix=".part")
    tmp = Path(tmp_name)
    bar = None
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise DataError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, http.client.InvalidURL, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(
                f"could not download {url}: {reason}; without network, put the extracted "
                f"{spec.folder}/ folder into a data dir (--data-dir or ${ENV_DATA_DIR})"
            ) from None
        with response, os.fdopen(fd, "wb") as out:
            fd = -1
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            bar = _progress_bar(length or spec.archive_size, f"downloading {spec.archive}", progress)
            hashers = _hashers(spec)
            size = 0
            try:
                while True:
                    block = response.read(_BLOCK)
                    if not block:
                        break
                    out.write(block)
                    size += len(block)
                    for h in hashers.values():
                        h.update(block)
                    if bar is not None:
                        bar.update(len(block))
            except (http.client.IncompleteRead, OSError) as exc:
                raise DataError(
                    f"download of {url} broke off after {size} bytes ({exc.__class__.__name__}); "
                    "the partial file was removed: try again"
                ) from None
            if length is not None and size != length:
                raise DataError(
                    f"download of {url} is truncated: {size} of {length} bytes; the partial file was removed: try again"
                )
            out.flush()
            os.fsync(out.fileno())
        _compare(spec, size, hashers, f"download of {url}")
        os.replace(tmp, archive)
    finally:
        if bar is not None:
            bar.close()
        if fd != -1:
            os.close(fd)
        if tmp.exists():
            tmp.unlink()


_DRIVE = re.compile(r"^[A-Za-z]:")


def _check_member(info: zipfile.ZipInfo, archive: Path) -> None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise DataError(f"{archive}: member {name!r} has an absolute path; refusing to extract this archive")
    if ".." in parts:
        raise DataError(
            f"{archive}: member {name!r} escapes the target folder ('..'); refusing to extract this archive"
        )
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DataError(f"{archive}: member {name!r} is a symbolic link; refusing to extract this archive")


def extract_archive(archive, name, dest=None) -> Path:
    """Extract a (verified) archive into ``<dest>/<name>`` through a temporary folder; returns it."""
    spec = get(name)
    archive = Path(archive)
    dest = Path(dest) if dest is not None else archive.parent
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / spec.name
    tmpdir = Path(tempfile.mkdtemp(dir=dest, prefix=f".{spec.name}.extract-"))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                for info in members:
                    _check_member(info, archive)
                root = tmpdir.resolve()
                for info in members:
                    out = (tmpdir / info.filename).resolve()
                    if out != root and root not in out.parents:  # belt and braces
                        raise DataError(f"{archive}: member {info.filename!r} escapes the target folder")
                    zf.extract(info, tmpdir)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            _remove(archive)
            raise DataError(f"{archive}: not a valid zip archive ({exc}); it was removed: download it again") from None
        src = _match(tmpdir, spec)
        if src is None:
            raise DataError(f"{archive}: holds no {spec.folder}/{spec.ratings_file}; not the {spec.name} archive")
        if _match(target, spec) == target and copy_problem(spec, target) is None:
            return target  # another process extracted it meanwhile: keep theirs
        if target.exists():
            # a stale, partial or truncated folder: move it aside, then replace it
            stale = Path(tempfile.mkdtemp(dir=dest, prefix=f".{spec.name}.stale-"))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(src, target)
        except OSError:
            if _match(target, spec) is None or copy_problem(spec, target) is not None:
                raise  # not another process finishing first
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return target
