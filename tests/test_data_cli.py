"""``autorec-bench datasets``: the listing, where each dataset is found, --download, --offline."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from autorec import data
from autorec.data import registry
from benchmarks.cli import main
from tests.test_data_download import datasets_cache, make_zip, put, server, toy  # noqa: F401  (server is a fixture)


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var in ("AUTOREC_DATA_DIR", "AUTOREC_DATA_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_listing(env, capsys, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    for name in ("ml-100k", "ml-latest-small"):  # the toy copies are complete for the toy counts
        monkeypatch.setitem(registry.DATASETS, name, toy(name))
    put(env / "d", toy())
    put(datasets_cache(), toy("ml-latest-small"))
    assert main(["datasets", "--data-dir", str(env / "d"), "--offline"]) == 0
    out = capsys.readouterr().out
    for spec in data.DATASETS.values():
        assert f"\n{spec.name}  " in out
        assert f"{spec.n_ratings:,} ratings, {spec.n_users:,} users, {spec.n_items:,} rated items" in out
    assert f"local: {env / 'd' / 'ml-100k'} (found via data-dir)" in out
    assert "incomplete" not in out
    assert f"local: {datasets_cache() / 'ml-latest-small'} (found via cache)" in out
    assert "not local (downloads 5.9 MB from https://files.grouplens.org/datasets/movielens/ml-1m.zip)" in out
    assert (
        "not local (downloads from https://files.grouplens.org/datasets/movielens/ml-10m.zip; archive size "
        "not published)" in out
    )
    assert "scale 0.5-5 (half stars)" in out and "scale 1-5;" in out
    assert "may not be redistributed" in out and "verified by: md5 + sha1 + size + counts" in out
    assert "verified by: counts (GroupLens publishes no checksum" in out
    assert "Harper and Joseph A. Konstan" in out


def test_listing_honours_url_override(env, capsys, monkeypatch):
    monkeypatch.setenv("AUTOREC_DATA_URL", "http://mirror.example/ml/")
    assert main(["datasets"]) == 0
    assert "downloads 198.7 MB from http://mirror.example/ml/ml-20m.zip" in capsys.readouterr().out


def test_download_offline_conflict(env, capsys):
    assert main(["datasets", "--offline", "--download", "ml-1m"]) == 2
    assert "--download and --offline contradict" in capsys.readouterr().err
    assert main(["datasets", "--download", "ml-2m"]) == 2
    assert "unknown dataset 'ml-2m'" in capsys.readouterr().err


def test_download_command(env, server, capsys, monkeypatch):  # noqa: F811
    root, url, hits = server
    blob = make_zip(data.get("ml-100k"))
    (root / "ml-100k.zip").write_bytes(blob)
    spec = toy(checksums=(("md5", hashlib.md5(blob).hexdigest()),), archive_size=len(blob))
    monkeypatch.setitem(registry.DATASETS, "ml-100k", spec)
    monkeypatch.setenv("AUTOREC_DATA_URL", url)
    assert main(["datasets", "--download", "ml-100k", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"ml-100k: 6 ratings, 3 users, 4 items verified at {datasets_cache() / 'ml-100k'}\n" in out
    assert f"local: {datasets_cache() / 'ml-100k'} (found via cache)" in out
    assert hits == ["/ml-100k.zip"]


def test_datasets_imports_no_framework(env):
    code = (
        "import sys; from benchmarks.cli import main; rc = main(['datasets', '--offline']); "
        "assert rc == 0; bad = [m for m in ('torch', 'mxnet') if m in sys.modules]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def write_u_data(folder, n_rows: int):
    """A u.data of ``n_rows`` distinct (user, item) pairs on the 1-5 scale (ML-100K has 100,000)."""
    folder.mkdir(parents=True, exist_ok=True)
    k = np.arange(n_rows)
    lines = [f"{u}\t{i}\t{r}\t881250949\n" for u, i, r in zip(k % 943 + 1, k // 943 + 1, k % 5 + 1)]
    (folder / "u.data").write_text("".join(lines))
    return folder


def test_listing_flags_a_truncated_copy(env, capsys):
    """Issue 12: a truncated ml-100k copy was listed as ``local:``; it is incomplete, with the fix."""
    write_u_data(env / "d" / "ml-100k", 90_000)
    assert main(["datasets", "--data-dir", str(env / "d"), "--offline"]) == 0
    out = capsys.readouterr().out
    assert f"local: {env / 'd' / 'ml-100k'}" not in out
    assert (
        f"incomplete, not usable: {env / 'd' / 'ml-100k'} (found via data-dir): truncated: 90,000 of "
        "100,000 ratings. Fix: point --data-dir at a complete copy"
    ) in out


def test_listing_names_another_releases_file(env, capsys):
    """A folder named for ml-20m holding ml-latest-small's ratings.csv (the same format, 100,836 ratings)
    is another dataset's file, not a truncated copy of ml-20m."""
    folder = env / "d" / "ml-20m"
    folder.mkdir(parents=True)
    n = data.get("ml-latest-small").n_ratings
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "1,1,4.0,964982703\n" * n)
    assert main(["datasets", "--data-dir", str(env / "d"), "--offline"]) == 0
    out = capsys.readouterr().out
    assert (
        f"{folder} (found via data-dir): another dataset's ratings file: its 100,836 ratings are "
        "ml-latest-small's count (ml-20m has 20,000,263)"
    ) in out
    assert "truncated" not in out


def test_download_repairs_a_truncated_cached_copy(env, server, capsys, monkeypatch):  # noqa: F811
    """A truncated copy in the cache: loading names the fix, and the fix (``--download``) works."""
    root, url, hits = server
    blob = make_zip(data.get("ml-100k"))
    (root / "ml-100k.zip").write_bytes(blob)
    spec = toy(checksums=(("md5", hashlib.md5(blob).hexdigest()),), archive_size=len(blob))
    monkeypatch.setitem(registry.DATASETS, "ml-100k", spec)
    monkeypatch.setenv("AUTOREC_DATA_URL", url)
    cached = put(datasets_cache(), spec)
    (cached / "u.data").write_text("".join((cached / "u.data").read_text().splitlines(True)[:4]))
    with pytest.raises(data.DataError) as exc:
        data.load("ml-100k", offline=True)
    msg = str(exc.value)
    assert "truncated: 4 of 6 ratings" in msg and "validate=False" not in msg
    assert "re-download it with `autorec-bench datasets --download ml-100k` (replaces the cached copy)" in msg
    assert main(["datasets", "--download", "ml-100k", "--no-progress"]) == 0
    assert f"ml-100k: 6 ratings, 3 users, 4 items verified at {cached}" in capsys.readouterr().out
    assert hits == ["/ml-100k.zip"] and len(data.load("ml-100k", offline=True)) == 6
