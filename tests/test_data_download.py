"""Resolution (data dir, $AUTOREC_DATA_DIR, cache, download), offline mode, and the download path
against a local http.server: good, corrupt, truncated and path-escaping archives."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib
import io
import os
import socket
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from autorec import data
from autorec.cache import cache_dir
from autorec.errors import ChecksumError, DataError

ROWS = [(1, 10, 5, 100), (1, 20, 3, 101), (2, 10, 4, 102), (2, 30, 1, 103), (3, 40, 2, 104), (3, 10, 5, 105)]
U_DATA = "".join("\t".join(map(str, r)) + "\n" for r in ROWS)
R_DAT = "".join("::".join(map(str, r)) + "\n" for r in ROWS)
R_CSV = "userId,movieId,rating,timestamp\n" + "".join(",".join(map(str, r)) + "\n" for r in ROWS)


def datasets_cache() -> Path:
    """Where downloaded datasets live (under ``$AUTOREC_CACHE_DIR``, set by the ``env`` fixture)."""
    return cache_dir("datasets")


def toy(name="ml-100k", **kw) -> data.DatasetSpec:
    """A registered spec with the toy's counts (3 users, 4 items, 6 ratings, timestamps 100..105)."""
    return dataclasses.replace(data.get(name), n_users=3, n_items=4, n_ratings=6, **{"timestamps": None, **kw})


def put(root: Path, spec: data.DatasetSpec, folder: str | None = None) -> Path:
    """Write the toy ratings file of ``spec`` into ``root/folder``."""
    d = root / (spec.name if folder is None else folder) if folder != "" else root
    d.mkdir(parents=True, exist_ok=True)
    text = {"tab": U_DATA, "::": R_DAT, "csv": R_CSV}[spec.fmt]
    (d / spec.ratings_file).write_text(text)
    return d


def make_zip(spec: data.DatasetSpec, extra: dict | None = None, *, folder: str | None = None) -> bytes:
    buf = io.BytesIO()
    text = {"tab": U_DATA, "::": R_DAT, "csv": R_CSV}[spec.fmt]
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{folder or spec.folder}/", "")
        zf.writestr(f"{folder or spec.folder}/{spec.ratings_file}", text)
        zf.writestr(f"{folder or spec.folder}/README", "toy\n")
        for name, payload in (extra or {}).items():
            if isinstance(payload, zipfile.ZipInfo):
                zf.writestr(payload, "target")
            else:
                zf.writestr(name, payload)
    return buf.getvalue()


def sums(blob: bytes) -> tuple[tuple[str, str], ...]:
    return (("md5", hashlib.md5(blob).hexdigest()), ("sha1", hashlib.sha1(blob).hexdigest()))


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No data dir, no URL override; the cache in tmp."""
    for var in ("AUTOREC_DATA_DIR", "AUTOREC_DATA_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a URL or a socket connection fails the test."""
    calls = []

    def refuse(*a, **k):
        calls.append(a)
        raise AssertionError("network used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return calls


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 (port 0) serving ``www/``; under ``/cut/`` it announces the
    full length but sends only half of the file and hangs up."""
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

        def do_GET(self):
            hits.append(self.path)
            if self.path.startswith("/cut/"):
                blob = (root / self.path[len("/cut/") :]).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob[: len(blob) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------ the cache location
def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert datasets_cache() == tmp_path / "c" / "datasets"
    monkeypatch.delenv("AUTOREC_CACHE_DIR")
    assert datasets_cache() == tmp_path / "x" / "autorec-bench" / "datasets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets_cache() == tmp_path / "home" / ".cache" / "autorec-bench" / "datasets"


def test_base_url_order(monkeypatch):
    monkeypatch.delenv("AUTOREC_DATA_URL", raising=False)
    assert data.base_url() == data.DEFAULT_BASE_URL
    monkeypatch.setenv("AUTOREC_DATA_URL", "http://mirror/x/")
    assert data.base_url() == "http://mirror/x/"
    assert data.base_url("http://other/") == "http://other/"


# ------------------------------------------------------------------ resolution steps
def test_data_dir_layouts(env, no_network):
    s = toy()
    d = env / "d1"
    put(d, s)  # <dir>/<name>/
    loc = data.resolve(s, d)
    assert (loc.path, loc.step, loc.root) == (d / "ml-100k", "data-dir", d)
    assert data.locate(s, d) == d / "ml-100k"
    s10 = toy("ml-10m")
    put(env / "d2", s10, "ml-10M100K")  # <dir>/<archive folder>/
    assert data.locate(s10, env / "d2") == env / "d2" / "ml-10M100K"
    itself = put(env / "d3" / "whatever", s, "")  # the dataset folder itself
    assert data.locate(s, itself) == itself
    r = data.load(s, itself, offline=True)
    assert (r.n_users, r.n_items, len(r)) == (3, 4, 6) and r.meta["resolved_by"] == "data-dir"
    assert not no_network


def test_env_data_dir_then_cache_then_precedence(env, monkeypatch, no_network):
    s = toy()
    empty = env / "empty"
    empty.mkdir()
    put(datasets_cache(), s)
    assert data.resolve(s, empty).step == "cache"  # explicit dir lacks it: falls through
    put(env / "envdir", s)
    monkeypatch.setenv("AUTOREC_DATA_DIR", str(env / "envdir"))
    loc = data.resolve(s, empty)
    assert loc.step == "$AUTOREC_DATA_DIR" and loc.path == env / "envdir" / "ml-100k"
    put(env / "explicit", s)
    assert data.resolve(s, env / "explicit").step == "data-dir"  # explicit beats env beats cache
    found = data.find_local(s, env / "explicit")
    assert found is not None and found.step == "data-dir"
    assert data.load(s, offline=True).meta["resolved_by"] == "$AUTOREC_DATA_DIR"
    assert not no_network


def test_missing_dirs_are_errors(env, monkeypatch):
    with pytest.raises(DataError, match=f"data dir {env / 'nope'} does not exist"):
        data.locate("ml-100k", env / "nope", offline=True)
    monkeypatch.setenv("AUTOREC_DATA_DIR", str(env / "gone"))
    with pytest.raises(DataError, match=r"\$AUTOREC_DATA_DIR=.*gone does not exist"):
        data.locate("ml-100k", offline=True)


def test_offline_never_opens_a_socket(env, no_network):
    with pytest.raises(DataError) as exc:
        data.load("ml-1m", offline=True)
    msg = str(exc.value)
    assert "ml-1m is not available locally" in msg and "offline mode forbids downloading" in msg
    assert str(datasets_cache()) in msg and "autorec-bench datasets --download ml-1m" in msg
    with pytest.raises(DataError, match="downloading is disabled"):
        data.locate("ml-10m", download=False)
    assert data.find_local("ml-25m") is None
    assert not no_network


def test_counts_are_validated_on_load(env, no_network):
    s = toy()
    put(env / "d", s)
    real = data.get("ml-100k")  # expects 943 / 1682 / 100000
    with pytest.raises(DataError) as exc:
        data.load(real, env / "d", offline=True)
    msg = str(exc.value)
    assert "3 users (expected 943)" in msg and "4 items (expected 1682)" in msg and "6 ratings (expected 100000)" in msg
    assert "Fix: point --data-dir at a complete copy" in msg and "validate=False" not in msg
    r = data.load(real, env / "d", offline=True, validate=False)
    assert len(r) == 6 and r.meta["validated"] is False
    wrong_scale = dataclasses.replace(s, rating_scale=(1.0, 4.0))
    with pytest.raises(DataError, match="u.data, line 1: rating 5 is off the scale 1..4"):
        data.load(wrong_scale, env / "d", offline=True)


def test_typo_in_a_registered_dataset_names_file_and_line(env, no_network):
    """Issue 12: a typo ``7`` in a 1-5 u.data is an error naming the file and the line."""
    d = put(env / "d", toy())
    lines = (d / "u.data").read_text().splitlines(True)
    lines[2] = "2\t10\t7\t102\n"
    (d / "u.data").write_text("".join(lines))
    with pytest.raises(DataError) as exc:
        data.load(toy(), env / "d", offline=True)
    assert (
        str(exc.value) == f"{d / 'u.data'}, line 3: rating 7 is off the scale 1..5; check the rating scale or the file"
    )


def test_a_timestamp_cut_short_names_its_line(env, no_network):
    """A last line cut inside its timestamp parses and keeps the counts; the release's time range
    catches it."""
    d = put(env / "d", toy(timestamps=(100, 105)))
    assert data.load(toy(timestamps=(100, 105)), env / "d", offline=True).timestamps.tolist() == list(range(100, 106))
    (d / "u.data").write_text(U_DATA[:-2] + "\n")  # 105 -> 10
    with pytest.raises(DataError, match=r"u.data, line 6: timestamp 10 is outside ml-100k's 100..105 .*Fix: point"):
        data.load(toy(timestamps=(100, 105)), env / "d", offline=True)
    assert len(data.load(toy(timestamps=(100, 105)), env / "d", offline=True, validate=False)) == 6


def test_truncated_u_data_names_a_fix_the_user_can_apply(env, monkeypatch, no_network):
    """Issue 12: a truncated u.data suggested ``validate=False``, which the CLI does not offer."""
    folder = env / "d" / "ml-100k"
    folder.mkdir(parents=True)
    k = np.arange(90_000)
    (folder / "u.data").write_text("".join(f"{k % 943 + 1}\t{k // 943 + 1}\t{k % 5 + 1}\t0\n" for k in k))
    with pytest.raises(DataError) as exc:
        data.load("ml-100k", env / "d", offline=True)
    msg = str(exc.value)
    assert msg.startswith(f"{folder / 'u.data'}: truncated: 90,000 of 100,000 ratings;")
    assert (
        "Fix: point --data-dir at a complete copy (or re-extract ml-100k.zip there), or drop --data-dir "
        "and run `autorec-bench datasets --download ml-100k`"
    ) in msg
    assert "validate=False" not in msg
    monkeypatch.setenv("AUTOREC_DATA_DIR", str(env / "d"))
    with pytest.raises(
        DataError,
        match=r"Fix: put a complete copy in \$AUTOREC_DATA_DIR .* or unset "
        r"\$AUTOREC_DATA_DIR and run `autorec-bench datasets --download ml-100k`",
    ):
        data.load("ml-100k", offline=True)
    assert not no_network


@pytest.mark.parametrize(
    "text,fmt,rows",
    [
        ("", "tab", 0),
        ("1\t2\t3\n", "tab", 1),
        ("1\t2\t3", "tab", 1),  # no final newline
        ("\n1\t2\t3\n\n  \r\n4\t5\t6\r\n\n", "tab", 2),  # blank and whitespace-only lines
        ("user,item,rating\n1,2,3\n1,3,4", "csv", 2),  # the header is not a rating
        ("user,item,rating\n", "csv", 0),
    ],
)
def test_count_rows(tmp_path, text, fmt, rows):
    p = tmp_path / "r"
    p.write_bytes(text.encode())
    assert data.count_rows(p, fmt) == rows


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 5, 9, 14, 16, 17])
def test_count_rows_across_blocks(tmp_path, offset):
    """Files over the 4 MiB read block: lines, blank lines and whitespace straddle the block edges."""
    p = tmp_path / "u.data"
    p.write_text("\n" * offset + "1\t10\t5\n\n   \n22\t3\t4\n" * 300_000 + "9\t9\t1")
    assert data.count_rows(p, "tab") == 600_001


def test_download_keeps_a_complete_copy_without_network(env, no_network):
    s = toy()
    put(datasets_cache(), s)
    assert data.download(s) == datasets_cache() / "ml-100k"
    assert not no_network


def test_cached_archive_is_extracted_without_network(env, no_network):
    blob = make_zip(data.get("ml-100k"))
    s = toy(checksums=sums(blob), archive_size=len(blob))
    cache = datasets_cache()
    cache.mkdir(parents=True)
    (cache / s.archive).write_bytes(blob)
    loc = data.resolve(s, offline=True)
    assert loc.step == "cache-archive" and loc.path == cache / "ml-100k"
    assert data.resolve(s, offline=True).step == "cache"
    # a corrupt cached archive is removed, not trusted
    (cache / "ml-1m.zip").write_bytes(b"garbage")
    with pytest.raises(DataError, match="offline mode forbids"):
        data.locate("ml-1m", offline=True)
    assert not (cache / "ml-1m.zip").exists()
    assert not no_network


# ------------------------------------------------------------------ the download path
def test_download_good(env, server, monkeypatch, capfd):
    root, url, hits = server
    blob = make_zip(data.get("ml-100k"))
    (root / "ml-100k.zip").write_bytes(blob)
    s = toy(checksums=sums(blob), archive_size=len(blob))
    monkeypatch.setenv("AUTOREC_DATA_URL", url)
    r = data.load(s)
    assert (r.n_users, r.n_items, len(r)) == (3, 4, 6) and r.meta["resolved_by"] == "download"
    assert r.user_ids.tolist() == [1, 2, 3] and r.item_ids.tolist() == [10, 20, 30, 40]
    assert hits == ["/ml-100k.zip"]
    assert "downloading ml-100k.zip" in capfd.readouterr().err
    cache = datasets_cache()
    assert leftovers(cache) == ["ml-100k", "ml-100k.zip"]  # no .part, no .extract- folders
    assert (cache / "ml-100k" / "README").read_text() == "toy\n"
    # the second time it comes from the cache, without a request
    assert data.load(s, progress=False).meta["resolved_by"] == "cache" and len(hits) == 1


def test_download_function_base_url_and_stale_folder(env, server, capfd):
    root, url, hits = server
    blob = make_zip(data.get("ml-1m"))
    (root / "ml-1m.zip").write_bytes(blob)
    s = toy("ml-1m", checksums=sums(blob)[:1], archive_size=len(blob))
    dest = env / "dest"
    (dest / "ml-1m").mkdir(parents=True)
    (dest / "ml-1m" / "partial.txt").write_text("left over")  # a stale folder without ratings.dat
    got = data.download(s, dest, base_url=url, progress=False)
    assert got == dest / "ml-1m" and (got / "ratings.dat").is_file() and not (got / "partial.txt").exists()
    assert capfd.readouterr().err == ""
    assert leftovers(dest) == ["ml-1m", "ml-1m.zip"]
    r = data.load(s, dest, offline=True)
    assert r.timestamps is not None and r.timestamps.tolist() == [100, 101, 102, 103, 104, 105]


def test_download_corrupt_checksum(env, server):
    root, url, _ = server
    good = make_zip(data.get("ml-100k"))
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    (root / "ml-100k.zip").write_bytes(bytes(bad))
    s = toy(checksums=sums(good), archive_size=len(good))
    with pytest.raises(
        ChecksumError, match=r"md5 [0-9a-f]{32} does not match the published md5 " + hashlib.md5(good).hexdigest()
    ):
        data.locate(s, base_url=url, progress=False)
    assert leftovers(datasets_cache()) == []  # nothing that looks valid is left behind
    # a wrong size is caught too
    s2 = toy(checksums=sums(bytes(bad)), archive_size=len(good) + 1)
    with pytest.raises(ChecksumError, match=f"{len(good)} bytes, but ml-100k.zip has {len(good) + 1} bytes"):
        data.locate(s2, base_url=url, progress=False)
    assert leftovers(datasets_cache()) == []


def test_download_truncated(env, server):
    root, url, _ = server
    blob = make_zip(data.get("ml-100k"))
    (root / "ml-100k.zip").write_bytes(blob)
    s = toy(checksums=sums(blob), archive_size=len(blob))
    with pytest.raises(DataError, match=r"download of http:\S+/cut/ml-100k.zip (is truncated|broke off)") as exc:
        data.locate(s, base_url=url + "cut/", progress=False)
    assert not isinstance(exc.value, ChecksumError)
    assert leftovers(datasets_cache()) == []


def test_download_http_error(env, server):
    _, url, _ = server
    with pytest.raises(DataError, match=r"could not download http://127\.0\.0\.1:\d+/ml-25m\.zip: HTTP 404"):
        data.locate("ml-25m", base_url=url, progress=False)
    assert not any(p.suffix == ".part" for p in datasets_cache().iterdir())


def test_download_bad_url(env):
    with pytest.raises(DataError, match=r"could not download http://127\.0\.0\.1:9/a b/ml-25m\.zip"):
        data.locate("ml-25m", base_url="http://127.0.0.1:9/a b/", progress=False)


def _link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o120777 << 16
    return info


@pytest.mark.parametrize(
    "member,problem",
    [
        ("../evil.txt", "escapes the target folder"),
        ("ml-100k/../../evil.txt", "escapes the target folder"),
        ("/tmp/evil-absolute.txt", "absolute path"),
        ("C:/evil.txt", "absolute path"),
        (_link("ml-100k/link"), "symbolic link"),
    ],
)
def test_download_rejects_escaping_members(env, server, member, problem):
    root, url, _ = server
    name = member.filename if isinstance(member, zipfile.ZipInfo) else member
    blob = make_zip(data.get("ml-100k"), {name: member if isinstance(member, zipfile.ZipInfo) else "pwned"})
    (root / "ml-100k.zip").write_bytes(blob)
    s = toy(checksums=sums(blob), archive_size=len(blob))
    with pytest.raises(DataError, match=problem):
        data.locate(s, base_url=url, progress=False)
    cache = datasets_cache()
    assert not (cache / "ml-100k").exists()
    assert not any(p.name.startswith(".ml-100k.extract-") for p in cache.iterdir())
    assert not (env / "evil.txt").exists() and not (cache.parent / "evil.txt").exists()
    assert not Path("/tmp/evil-absolute.txt").exists()


def test_download_not_a_zip_without_checksum(env, server):
    root, url, _ = server
    (root / "ml-latest-small.zip").write_bytes(b"<html>not a zip</html>")
    s = toy("ml-latest-small")
    assert s.checksums == ()
    with pytest.raises(DataError, match="not a valid zip archive"):
        data.locate(s, base_url=url, progress=False)
    assert leftovers(datasets_cache()) == []


def test_download_archive_without_the_folder(env, server):
    root, url, _ = server
    blob = make_zip(data.get("ml-latest-small"), folder="something-else")
    (root / "ml-latest-small.zip").write_bytes(blob)
    with pytest.raises(DataError, match="holds no ml-latest-small/ratings.csv"):
        data.locate(toy("ml-latest-small"), base_url=url, progress=False)
    assert not (datasets_cache() / "ml-latest-small").exists()


def test_download_latest_small_csv_end_to_end(env, server, monkeypatch):
    root, url, _ = server
    (root / "ml-latest-small.zip").write_bytes(make_zip(data.get("ml-latest-small")))
    monkeypatch.setenv("AUTOREC_DATA_URL", url)
    r = data.load(toy("ml-latest-small"), progress=False)
    assert r.meta["resolved_by"] == "download"
    assert r.rating_scale == (0.5, 5.0) and np.array_equal(r.ratings, [5, 3, 4, 1, 2, 5])


def test_a_cached_archive_with_an_incomplete_copy_is_replaced(env, server, capfd):
    """ml-latest-small has no published checksum, so a cached archive is only known bad by its
    counts: it is removed and downloaded again, not extracted again and again."""
    root, url, hits = server
    s = toy("ml-latest-small")
    cache = datasets_cache()
    cache.mkdir(parents=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # 4 of the 6 ratings
        zf.writestr(f"{s.folder}/{s.ratings_file}", "".join(R_CSV.splitlines(keepends=True)[:5]))
    (cache / s.archive).write_bytes(buf.getvalue())
    with pytest.raises(DataError, match=r"cached archive was refused: .*truncated: 4 of 6 ratings.*removed from"):
        data.resolve(s, offline=True)
    assert not (cache / s.archive).exists()
    # the extracted incomplete copy is still there; --download replaces it from the server
    (cache / s.archive).write_bytes(buf.getvalue())
    (root / s.archive).write_bytes(make_zip(data.get("ml-latest-small")))
    got = data.download(s, base_url=url, progress=False)
    assert hits == ["/ml-latest-small.zip"]
    assert len(data.load(s, got, offline=True)) == 6


def test_what_a_killed_download_left_is_removed_once_stale(env, server):
    root, url, _ = server
    blob = make_zip(data.get("ml-100k"))
    (root / "ml-100k.zip").write_bytes(blob)
    s = toy(checksums=sums(blob), archive_size=len(blob))
    cache = datasets_cache()
    cache.mkdir(parents=True)
    old_part, new_part = cache / ".ml-100k.zip.abc.part", cache / ".ml-100k.zip.def.part"
    old_dir = cache / ".ml-100k.extract-xyz"
    for p in (old_part, new_part):
        p.write_bytes(b"partial")
    old_dir.mkdir()
    (old_dir / "u.data").write_text("1\t2\t3\n")
    hour_ago = time.time() - 2 * importlib.import_module("autorec.data.download").STALE_TEMP_S
    for p in (old_part, old_dir):
        os.utime(p, (hour_ago, hour_ago))
    data.download(s, base_url=url, progress=False)
    assert not old_part.exists() and not old_dir.exists()
    assert new_part.exists()  # may be a live download's: kept


def test_a_downloaded_archive_of_another_release_says_so(env, server):
    """ml-latest-small has no checksum: a re-released archive is only known by its counts, and
    downloading it again would not help."""
    root, url, _ = server
    s = dataclasses.replace(toy("ml-latest-small"), n_ratings=5)
    (root / s.archive).write_bytes(make_zip(data.get("ml-latest-small")))  # 6 ratings
    with pytest.raises(DataError, match=r"the downloaded ratings.csv does not match the registered .*re-released"):
        data.download(s, base_url=url, progress=False)
    assert not (datasets_cache() / s.archive).exists()
