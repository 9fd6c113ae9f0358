"""Parsers: every format (tab, '::', csv with either header), half stars, indexing, and every error
(missing file/folder, truncated/malformed lines, non-numeric fields, off-scale / off-step ratings,
duplicate pairs), each naming the file and the line."""

from __future__ import annotations

import re

import numpy as np
import pytest

from autorec.data import from_arrays, load_file, normalize_format, read_ratings
from autorec.data.ratings import Ratings
from autorec.errors import DataError

ROWS = [
    (196, 242, 3, 881250949),
    (186, 302, 3, 891717742),
    (22, 377, 1, 878887116),
    (196, 51, 2, 880606923),
    (7, 242, 5, 886397596),
]


def write(path, text):
    path.write_text(text)
    return path


def tab_text(rows=ROWS):
    return "".join("\t".join(str(x) for x in r) + "\n" for r in rows)


def colon_text(rows=ROWS):
    return "".join("::".join(str(x) for x in r) + "\n" for r in rows)


# ------------------------------------------------------------------ formats
def test_format_names():
    assert normalize_format("tab") == normalize_format("TSV") == "tab"
    assert normalize_format("::") == normalize_format("dat") == "::"
    assert normalize_format("csv") == "csv"
    with pytest.raises(DataError, match="unknown ratings format 'json'"):
        normalize_format("json")


def test_tab(tmp_path):
    u, i, r, ts = read_ratings(write(tmp_path / "u.data", tab_text()), "tab")
    assert u.dtype == np.int64 and i.dtype == np.int64 and r.dtype == np.float32 and ts.dtype == np.int64
    assert u.tolist() == [196, 186, 22, 196, 7]
    assert i.tolist() == [242, 302, 377, 51, 242]
    assert r.tolist() == [3, 3, 1, 2, 5]
    assert ts.tolist() == [r_[3] for r_ in ROWS]


def test_tab_three_fields_has_no_timestamps(tmp_path):
    p = write(tmp_path / "x.tsv", "1\t2\t3\n2\t2\t4\n")
    u, i, r, ts = read_ratings(p, "tab")
    assert ts is None and u.tolist() == [1, 2] and r.tolist() == [3.0, 4.0]


def test_colons(tmp_path):
    u, i, r, ts = read_ratings(write(tmp_path / "ratings.dat", colon_text()), "::")
    assert u.tolist() == [196, 186, 22, 196, 7] and i.tolist() == [242, 302, 377, 51, 242]
    assert r.tolist() == [3, 3, 1, 2, 5] and ts.tolist()[0] == 881250949


def test_colons_half_stars_crlf_and_blank_lines(tmp_path):
    p = tmp_path / "ratings.dat"
    p.write_bytes(b"1::122::5::838985046\r\n1::185::4.5::838983525\r\n\r\n2::122::0.5::838983421\r\n")
    r = load_file(p, "::", name="ml-10m", scale=(0.5, 5.0), step=0.5)
    assert r.ratings.tolist() == [5.0, 4.5, 0.5]
    assert r.timestamps is not None
    assert r.n_users == 2 and r.n_items == 2 and r.timestamps.tolist()[1] == 838983525


def test_csv_movielens_header(tmp_path):
    p = write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n6,1,0.5,845553522\n",
    )
    u, i, r, ts = read_ratings(p, "csv")
    assert u.tolist() == [1, 1, 6] and i.tolist() == [1, 3, 1] and r.tolist() == [4.0, 4.5, 0.5]
    assert ts.tolist() == [964982703, 964981247, 845553522]


def test_csv_user_header_extra_columns_and_order(tmp_path):
    p = write(tmp_path / "mine.csv", 'rating,comment,item,user\n4,great,10,1\n2.5,"meh, really",11,1\n3,,10,2\n')
    u, i, r, ts = read_ratings(p, "csv")
    assert ts is None
    assert u.tolist() == [1, 1, 2] and i.tolist() == [10, 11, 10] and r.tolist() == [4.0, 2.5, 3.0]
    p2 = write(tmp_path / "ts.csv", "user,item,rating,timestamp,extra\n5,6,1,100,x\n")
    assert read_ratings(p2, "csv")[3].tolist() == [100]


def test_csv_bom_and_case(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufeffUser_ID,Item_ID,Rating\n1,2,3\n".encode("utf-8"))
    u, i, r, _ = read_ratings(p, "csv")
    assert (u.tolist(), i.tolist(), r.tolist()) == ([1], [2], [3.0])


def test_load_file_indexes_contiguously(tmp_path):
    r = load_file(write(tmp_path / "u.data", tab_text()), "tab", name="toy", scale=(1, 5), step=1)
    assert isinstance(r, Ratings) and r.name == "toy"
    assert r.users.dtype == np.int32 and r.items.dtype == np.int32 and r.ratings.dtype == np.float32
    assert r.user_ids.tolist() == [7, 22, 186, 196] and r.item_ids.tolist() == [51, 242, 302, 377]
    assert r.user_ids[r.users].tolist() == [196, 186, 22, 196, 7]
    assert r.item_ids[r.items].tolist() == [242, 302, 377, 51, 242]
    assert r.rating_scale == (1.0, 5.0) and r.meta["format"] == "tab"
    for arr in (r.users, r.items, r.ratings, r.user_ids, r.item_ids, r.timestamps):
        assert arr is not None and arr.dtype != object


def test_from_arrays_sparse_and_huge_ids():
    big = np.array([10**12, 5, 10**12, 7], dtype=np.int64)
    r = from_arrays("x", big, np.array([3, 3, 4, 3]), np.array([1, 2, 3, 4], dtype=np.float64), scale=(1, 5))
    assert r.user_ids.tolist() == [5, 7, 10**12] and r.users.tolist() == [2, 0, 2, 1]
    assert r.users.dtype == np.int32 and r.ratings.dtype == np.float32 and r.timestamps is None
    neg = from_arrays(
        "x", np.array([-3, 2]), np.array([0, 0]), np.array([1.0, 1.0]), scale=(1, 5), timestamps=np.array([5, 6])
    )
    assert neg.timestamps is not None
    assert neg.user_ids.tolist() == [-3, 2] and neg.timestamps.dtype == np.int64
    floats = from_arrays("x", np.array([1.0, 2.0]), np.array([3.0, 3.0]), np.array([1, 2]), scale=(1, 5))
    assert floats.user_ids.dtype == np.int64


def test_from_arrays_errors():
    with pytest.raises(DataError, match="differ in length"):
        from_arrays("x", [1, 2], [1], [3, 3], scale=(1, 5))
    with pytest.raises(DataError, match="no ratings"):
        from_arrays("x", [], [], [], scale=(1, 5))
    with pytest.raises(DataError, match="x: row 0: user id 1.5 is not a whole number"):
        from_arrays("x", np.array([1.5, 2]), [1, 1], [3, 3], scale=(1, 5))
    # values a 64-bit integer cannot hold are refused, never wrapped around to other ids
    with pytest.raises(DataError, match=r"x: row 1: user id 1e\+30 is out of the 64-bit integer range"):
        from_arrays("x", [1.0, 1e30], [1, 1], [3, 3], scale=(1, 5))
    with pytest.raises(DataError, match="x: row 0: item id 18446744073709551615 is out of the 64-bit"):
        from_arrays("x", [1, 2], np.array([2**64 - 1, 1], dtype=np.uint64), [3, 3], scale=(1, 5))
    with pytest.raises(DataError, match="x: row 0: timestamp nan is not a whole number"):
        from_arrays("x", [1, 2], [1, 1], [3, 3], scale=(1, 5), timestamps=[np.nan, 1.0])
    with pytest.raises(DataError, match="ratings must be real numbers"):
        from_arrays("x", [1, 2], [1, 1], np.array([3, 3], dtype=complex), scale=(1, 5))
    with pytest.raises(DataError, match=r"x: row 1: rating 6 is off the scale 1..5"):
        from_arrays("x", [1, 2], [1, 1], [3, 6], scale=(1, 5))
    with pytest.raises(DataError, match=r"x: row 0: rating nan is not a finite number"):
        from_arrays("x", [1, 2], [1, 1], [np.nan, 3], scale=(1, 5))
    with pytest.raises(DataError, match=r"x: row 1: rating 3.5 is not on the scale's steps of 1"):
        from_arrays("x", [1, 2], [1, 1], [3, 3.5], step=1, scale=(1, 5))
    # within the tolerances a rating is the level it stands for: exactly on the step and the scale
    near = from_arrays("x", [1, 2, 3, 4], [1, 1, 1, 1], [4.99999, 3.00005, 1 - 1e-7, 2.5], step=0.5, scale=(1, 5))
    assert near.ratings.tolist() == [5.0, 3.0, 1.0, 2.5] and near.ratings.dtype == np.float32
    assert from_arrays("x", [1, 2], [1, 1], [5 + 5e-7, 2.25], scale=(1, 5)).ratings.tolist() == [5.0, 2.25]
    with pytest.raises(DataError, match=r"x: rows 0 and 2: duplicate rating of user 1 for item 9"):
        from_arrays("x", [1, 2, 1], [9, 9, 9], [3, 3, 4], scale=(1, 5))
    with pytest.raises(DataError, match="low < high"):
        from_arrays("x", [1], [1], [3], scale=(5, 1))
    with pytest.raises(DataError, match="timestamps differ in length"):
        from_arrays("x", [1], [1], [3], scale=(1, 5), timestamps=[1, 2])


# ------------------------------------------------------------------ errors with file and line
def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'nope.data'}: ratings file not found")):
        read_ratings(tmp_path / "nope.data", "tab")
    with pytest.raises(DataError, match="its folder .* does not exist either"):
        read_ratings(tmp_path / "nodir" / "u.data", "tab")
    with pytest.raises(DataError, match="is a folder"):
        read_ratings(tmp_path, "tab")


@pytest.mark.parametrize(
    "fmt,text,line,problem",
    [
        ("tab", "1\t2\t3\t4\n1\t3\t4\n", 2, "truncated line: expected 4 fields, found 3"),
        ("tab", "1\t2\t3\t4\n1\t3\t4\t5\t6\n", 2, "malformed line: expected 4 fields, found 5"),
        ("tab", "1\t2\t3\t4\n\n2\t3\t4\t5\n2\t4", 4, "truncated line: expected 4 fields, found 2"),
        ("tab", "1\t2\t3\t4\n1\tx\t4\t5\n", 2, "item 'x' is not an integer"),
        ("tab", "1\t2\t3\t4\n1\t2.5\t4\t5\n", 2, "item '2.5' is not an integer"),
        ("tab", "1\t2\tfour\t4\n", 1, "rating 'four' is not a number"),
        ("tab", "1\t2\t3\tnoon\n", 1, "timestamp 'noon' is not an integer"),
        ("tab", "1 2 3 4\n", 1, "expected 3 or 4 tab-separated fields"),
        ("::", "1::2::3::4\n1::2::3\n", 2, "truncated line: expected 4 fields, found 3"),
        ("::", "1::2::3::4\n1::b::3::4\n", 2, "item 'b' is not an integer"),
        ("::", "1::2::3::4\n1::2::3::4::5\n", 2, "malformed line: expected 4 fields, found 5"),
        ("csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2\n", 3, "truncated line: expected 4 fields, found 2"),
        ("csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,3,4,5\n", 3, "malformed line: expected 4 fields"),
        ("csv", "user,item,rating\n1,2,3\nu7,2,3\n", 3, "user 'u7' is not an integer"),
        ("csv", "user,item,rating\n1,2,3\n2,2,x\n", 3, "rating 'x' is not a number"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, fmt, text, line, problem):
    p = write(tmp_path / "bad.txt", text)
    with pytest.raises(DataError) as exc:
        read_ratings(p, fmt)
    msg = str(exc.value)
    assert msg.startswith(f"{p}, line {line}: "), msg
    assert problem in msg, msg


@pytest.mark.parametrize(
    "fmt,data,line,problem",
    [
        # pandas would end a field at a NUL (user "2\0" read as 2, a zero-filled timestamp cut short)
        ("tab", b"1\t2\t3\t100\n2\x005\t3\t4\t101\n", 2, "a NUL byte (the file is damaged"),
        ("tab", b"1\t2\t3\t100\n2\t5\t3\t1\x00\x00\n", 2, "a NUL byte"),
        ("csv", b"user,item,rating\n1,2,3\n\x00\x00\x00\x00\x00\n", 3, "a NUL byte"),
        # a CR that ends no line: pandas would start a new row there (one line read as two ratings)
        ("tab", b"1\t2\t3\n4\t5\t3\r6\t7\t4\n", 2, "a carriage return (CR) that ends no line"),
        ("csv", b"user,item,rating\n1,2,3\n2\r,3,4\n", 3, "a carriage return (CR) that ends no line"),
        ("csv", b"user,item,rating\r1,2,3\r2,3,4\r", 1, "old Mac line endings"),
        ("::", b"1::2::3::4\r\r\n", 1, "a carriage return (CR) that ends no line"),
        ("tab", "1\t2\t3\n".encode("utf-16"), 1, "the file is UTF-16 encoded; save it as UTF-8"),
        # beyond 64-bit integers: refused, never wrapped around (pandas reads up to 2**64 - 1 as uint64)
        ("tab", b"1\t2\t3\t100\n99999999999999999999\t2\t3\t5\n", 2, "is out of the 64-bit integer range"),
        ("::", b"1::2::3::4\n-9223372036854775809::2::3::5\n", 2, "is out of the 64-bit integer range"),
        # (pandas 2 reads these as uint64, which is then refused; pandas 3 refuses them itself)
        (
            "tab",
            b"1\t2\t3\t18446744073709551615\n2\t2\t3\t5\n",
            1,
            ("timestamp ", "is out of the 64-bit integer range"),
        ),
        (
            "csv",
            b"user,item,rating\n1,2,3\n2,18446744073709551615,3\n",
            3,
            ("item ", "is out of the 64-bit integer range"),
        ),
    ],
)
def test_bytes_and_numbers_the_fast_parser_would_misread(tmp_path, fmt, data, line, problem):
    p = tmp_path / "bad.txt"
    p.write_bytes(data)
    with pytest.raises(DataError) as exc:
        read_ratings(p, fmt)
    msg = str(exc.value)
    assert msg.startswith(f"{p}, line {line}: "), msg
    assert all(part in msg for part in ((problem,) if isinstance(problem, str) else problem)), msg


def test_line_breaks_that_are_fine(tmp_path, monkeypatch):
    import autorec.data.parsers as parsers

    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(b"user,item,rating\r\n1,2,3\r\n2,3,4\r")  # CR LF, and a last line ended by CR
    assert read_ratings(crlf, "csv")[0].tolist() == [1, 2]
    # a CR LF pair split between two read blocks is a pair; a lone CR in a later block names its line
    monkeypatch.setattr(parsers, "_SCAN_BLOCK", 7)
    rows = b"".join(b"%d\t%d\t3\r\n" % (u, u + 1) for u in range(1, 30))
    p = tmp_path / "blocks.data"
    p.write_bytes(rows)
    assert read_ratings(p, "tab")[0].tolist() == list(range(1, 30))
    for cut in range(len(rows) - 1):
        if rows[cut : cut + 1] == b"\r":
            bad = rows[:cut] + b"\r0" + rows[cut + 1 :]  # this line's CR no longer ends it
            p.write_bytes(bad)
            line = rows[:cut].count(b"\n") + 1
            with pytest.raises(DataError, match=f"line {line}: a carriage return"):
                parsers.scan_bytes(p)


def test_empty_files_and_headers(tmp_path):
    with pytest.raises(DataError, match="no ratings \\(the file is empty\\)"):
        read_ratings(write(tmp_path / "e.data", ""), "tab")
    with pytest.raises(DataError, match="no ratings \\(the file is empty\\)"):
        read_ratings(write(tmp_path / "e.dat", "\n\n"), "::")
    with pytest.raises(DataError, match="line 1: empty"):
        read_ratings(write(tmp_path / "e.csv", ""), "csv")
    with pytest.raises(DataError, match="only a header row"):
        read_ratings(write(tmp_path / "h.csv", "user,item,rating\n"), "csv")
    with pytest.raises(DataError, match="line 1: has no header row"):
        read_ratings(write(tmp_path / "n.csv", "1,2,3\n"), "csv")
    with pytest.raises(DataError, match="names no item column"):
        read_ratings(write(tmp_path / "m.csv", "user,thing,rating\n1,2,3\n"), "csv")


def test_tab_inside_colon_file(tmp_path):
    with pytest.raises(DataError, match="line 1: expected 3 or 4 '::'-separated fields"):
        read_ratings(write(tmp_path / "u.data", tab_text()), "::")
    with pytest.raises(DataError, match="line 2: a tab inside a '::'-separated file"):
        read_ratings(write(tmp_path / "mixed.dat", "1::2::3::4\n1::2\t3::4::5\n"), "::")


def test_rating_errors_name_file_and_line(tmp_path):
    p = write(tmp_path / "r.dat", "1::2::3::4\n\n1::3::6::4\n2::3::7::4\n")
    with pytest.raises(
        DataError, match=re.escape(f"{p}, line 3: rating 6 is off the scale 1..5 (and 1 more such rating(s))")
    ):
        load_file(p, "::", name="ml-1m", scale=(1, 5), step=1)
    h = write(tmp_path / "h.csv", "userId,movieId,rating,timestamp\n1,2,3.5,4\n1,3,4.25,4\n")
    with pytest.raises(DataError, match=re.escape(f"{h}, line 3: rating 4.25 is not on the scale's steps of 0.5")):
        load_file(h, "csv", name="ml-latest-small", scale=(0.5, 5), step=0.5)
    w = write(tmp_path / "w.data", "1\t2\t3.5\t4\n")
    with pytest.raises(DataError, match="line 1: rating 3.5 is not on the scale's steps of 1"):
        load_file(w, "tab", name="ml-100k", scale=(1, 5), step=1)
    assert load_file(w, "tab", name="free", scale=(1, 5)).ratings.tolist() == [3.5]  # no step: any value
    n = write(tmp_path / "n.csv", "user,item,rating\n1,2,3\n1,3,nan\n")
    with pytest.raises(DataError, match=re.escape(f"{n}, line 3: rating nan is not a finite number")):
        read_ratings(n, "csv")


def test_duplicates_name_both_lines(tmp_path):
    p = write(tmp_path / "d.data", tab_text(ROWS + [(22, 377, 4, 1)]))
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{p}, lines 3 and 6: duplicate rating of user 22 for item 377 (1 duplicate (user, item) pair(s) in all)"
        ),
    ):
        load_file(p, "tab", name="x", scale=(1, 5), step=1)


def test_half_star_scale_roundtrip(tmp_path):
    vals = np.arange(0.5, 5.01, 0.5)
    lines = "".join(f"{k + 1},{k % 3 + 1},{v:.1f},{1000 + k}\n" for k, v in enumerate(vals))
    p = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n" + lines)
    r = load_file(p, "csv", name="half", scale=(0.5, 5.0), step=0.5)
    assert r.ratings.tolist() == vals.tolist()
    assert r.n_users == 10 and r.n_items == 3
