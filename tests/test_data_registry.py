"""The dataset registry: every entry's fields, lookups and unknown names."""

from __future__ import annotations

import dataclasses
import re

import pytest

from autorec import data
from autorec.data.registry import DATASETS, DEFAULT_BASE_URL, FORMATS, DatasetSpec, get, names
from autorec.errors import DataError

EXPECTED = {
    # name: (folder, ratings file, fmt, scale, step, users, items, ratings, checksums, size)
    "ml-100k": (
        "ml-100k",
        "u.data",
        "tab",
        (1.0, 5.0),
        1.0,
        943,
        1682,
        100_000,
        {"md5": "0e33842e24a9c977be4e0107933c0723", "sha1": "cd4dcac4241c8a4ad7badc7ca635da8a69dddb83"},
        4_924_029,
    ),
    "ml-1m": (
        "ml-1m",
        "ratings.dat",
        "::",
        (1.0, 5.0),
        1.0,
        6040,
        3706,
        1_000_209,
        {"md5": "c4d9eecfca2ab87c1945afe126590906"},
        5_917_549,
    ),
    "ml-10m": (
        "ml-10M100K",
        "ratings.dat",
        "::",
        (0.5, 5.0),
        0.5,
        69_878,
        10_677,
        10_000_054,
        {"md5": "ce571fd55effeba0271552578f2648bd"},
        None,
    ),
    "ml-20m": (
        "ml-20m",
        "ratings.csv",
        "csv",
        (0.5, 5.0),
        0.5,
        138_493,
        26_744,
        20_000_263,
        {"md5": "cd245b17a1ae2cc31bb14903e1204af3"},
        198_702_078,
    ),
    "ml-25m": (
        "ml-25m",
        "ratings.csv",
        "csv",
        (0.5, 5.0),
        0.5,
        162_541,
        59_047,
        25_000_095,
        {"md5": "6b51fb2759a8657d3bfcbfc42b592ada"},
        261_978_986,
    ),
    "ml-latest-small": ("ml-latest-small", "ratings.csv", "csv", (0.5, 5.0), 0.5, 610, 9724, 100_836, {}, None),
}


def test_names():
    assert names() == list(EXPECTED)
    assert set(DATASETS) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_entry_fields(name):
    folder, rfile, fmt, scale, step, nu, ni, nr, sums, size = EXPECTED[name]
    s = get(name)
    assert isinstance(s, DatasetSpec) and s.name == name
    assert s.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
    assert s.archive == f"{name}.zip"
    assert s.folder == folder and s.ratings_file == rfile and s.fmt == fmt and s.fmt in FORMATS
    assert s.rating_scale == s.scale == scale and s.step == step and s.half_stars == (step == 0.5)
    assert (s.n_users, s.n_items, s.n_ratings) == s.expected == (nu, ni, nr)
    assert dict(s.checksums) == sums
    for alg, digest in s.checksums:
        assert alg in ("md5", "sha1") and re.fullmatch(r"[0-9a-f]+", digest)
        assert len(digest) == {"md5": 32, "sha1": 40}[alg] and s.checksum(alg) == digest
    assert s.archive_size == size
    assert s.size_mb == (None if size is None else size / 1e6)
    assert s.license
    if name in ("ml-100k", "ml-1m", "ml-10m"):
        assert "not be redistributed" in s.license and not s.redistributable
    else:
        assert s.redistributable
    if not sums:
        assert "no checksum" in s.checksum_note and "counts" in s.checksum_note
    # frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_users = 1  # type: ignore[misc]


def test_url_override_and_aliases():
    s = get("ml-1m")
    assert s.url_for("http://127.0.0.1:8000/mirror") == "http://127.0.0.1:8000/mirror/ml-1m.zip"
    assert s.url_for("http://127.0.0.1:8000/mirror/") == "http://127.0.0.1:8000/mirror/ml-1m.zip"
    assert s.url_for(None) == DEFAULT_BASE_URL + "ml-1m.zip"
    assert get("ml-10M100K") is get("ml-10m")
    assert get(" ml-100k ") is get("ml-100k")
    assert get(s) is s
    assert data.info("ml-100k").rating_scale == (1.0, 5.0)  # the name autorec.splits looks up


def test_unknown_name_lists_known():
    with pytest.raises(
        DataError,
        match="unknown dataset 'ml-2m'; known datasets: ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-latest-small",
    ):
        get("ml-2m")
    with pytest.raises(DataError, match="unknown dataset 'netflix'"):
        data.load("netflix", offline=True)
