"""``autorec-bench datasets``: the listing, where each dataset is found, --download, --offline."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.request

import pytest

from autorec import data
from autorec.data import registry
from benchmarks.cli import main

from test_data_download import make_zip, put, server, toy  # noqa: F401  (server is a fixture)


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var in ("AUTOREC_DATA_DIR", "AUTOREC_DATA_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_listing(env, capsys, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    put(env / "d", toy())
    put(data.cache_dir(), toy("ml-latest-small"))
    assert main(["datasets", "--data-dir", str(env / "d"), "--offline"]) == 0
    out = capsys.readouterr().out
    for spec in data.DATASETS.values():
        assert f"\n{spec.name}  " in out
        assert f"{spec.n_ratings:,} ratings, {spec.n_users:,} users, {spec.n_items:,} rated items" in out
    assert f"local: {env / 'd' / 'ml-100k'} (found via data-dir)" in out
    assert f"local: {data.cache_dir() / 'ml-latest-small'} (found via cache)" in out
    assert "not local (downloads 5.9 MB from https://files.grouplens.org/datasets/movielens/ml-1m.zip)" in out
    assert "not local (downloads from https://files.grouplens.org/datasets/movielens/ml-10m.zip; archive size " \
           "not published)" in out
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
    assert f"ml-100k: 6 ratings, 3 users, 4 items verified at {data.cache_dir() / 'ml-100k'} (via download)" in out
    assert f"local: {data.cache_dir() / 'ml-100k'} (found via cache)" in out
    assert hits == ["/ml-100k.zip"]


def test_datasets_imports_no_framework(env):
    code = ("import sys; from benchmarks.cli import main; rc = main(['datasets', '--offline']); "
            "assert rc == 0; bad = [m for m in ('torch', 'mxnet') if m in sys.modules]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
