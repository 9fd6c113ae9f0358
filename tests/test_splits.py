"""Splits on small hand-built / synthetic ratings: every kind, validation carving, leak rejection,
spec parsing, the content hash (pinned), storage and reuse."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autorec import splits as S
from autorec.data.ratings import Ratings
from autorec.errors import DataError, SplitError
from autorec.interactions import Interactions
from autorec.splits import SplitSpec, check_split, make_split, split_hash


def toy(n_users=40, n_items=60, n=900, seed=0, name="toy", timestamps=True, dup=0) -> Ratings:
    """Unique (user, item) pairs (plus ``dup`` repeated pairs), raw ids that are not the indices."""
    rng = np.random.default_rng(seed)
    pairs = rng.choice(n_users * n_items, n, replace=False)
    if dup:
        pairs = np.concatenate([pairs, pairs[:dup]])
    u = (pairs // n_items).astype(np.int32)
    i = (pairs % n_items).astype(np.int32)
    r = rng.integers(1, 6, len(pairs)).astype(np.float32)
    ts = rng.integers(0, 30, len(pairs)).astype(np.int64) if timestamps else None
    return Ratings(
        name,
        u,
        i,
        r,
        np.arange(n_users, dtype=np.int64) * 7 + 3,
        np.arange(n_items, dtype=np.int64) * 11 + 5,
        (1.0, 5.0),
        ts,
    )


def path_of(d: S.SplitData) -> Path:
    """Where a stored split lives (every split from the store has a path)."""
    assert d.path is not None
    return d.path


@pytest.fixture
def ratings() -> Ratings:
    return toy()


def assert_partition(sp, n):
    allidx = np.concatenate([sp.train, sp.valid, sp.test])
    assert len(allidx) == n
    assert np.array_equal(np.sort(allidx), np.arange(n))
    for part in (sp.train, sp.valid, sp.test):
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)  # sorted, no repeats


# --- SplitSpec -------------------------------------------------------------------------------

SPEC_TEXTS = [
    ("random", "random:test_ratio=0.1"),
    ("random:test_ratio=0.2", "random:test_ratio=0.2"),
    (" random : test_ratio = 0.25 ", "random:test_ratio=0.25"),
    ("d2l-random:test_ratio=0.1", "d2l-random:test_ratio=0.1"),
    ("d2l-random", "d2l-random:test_ratio=0.1"),
    ("seq-aware", "seq-aware"),
    ("canonical:u1", "canonical:u1"),
    ("canonical:fold=ub", "canonical:ub"),
    ("kfold", "kfold:k=5,fold=0"),
    ("kfold:fold=2,k=3", "kfold:k=3,fold=2"),
    ("files:TRAIN.csv,TEST.csv", "files:TRAIN.csv,TEST.csv"),
    ("files:test=b.csv,train=a.csv", "files:a.csv,b.csv"),
    ("files:dir/a.csv,test=b.csv", "files:dir/a.csv,b.csv"),
]


@pytest.mark.parametrize("text,canon", SPEC_TEXTS)
def test_spec_parse_and_canonical_str(text, canon):
    spec = SplitSpec.parse(text)
    assert str(spec) == canon
    again = SplitSpec.parse(str(spec))
    assert again == spec and hash(again) == hash(spec)
    assert SplitSpec.parse(spec) is spec


@pytest.mark.parametrize("text,canon", SPEC_TEXTS)
def test_spec_travels_as_data(text, canon):
    """``to_dict`` is plain JSON; ``from_dict`` gives back the same spec without going through text."""
    spec = SplitSpec.parse(text)
    wire = json.loads(json.dumps(spec.to_dict()))
    assert wire == {"kind": spec.kind, "args": spec.args}
    back = SplitSpec.from_dict(wire)
    assert back == spec and str(back) == canon and back.hash_text() == spec.hash_text()


@pytest.mark.parametrize(
    "value,needle",
    [
        ({"kind": "random"}, "a split spec as data is"),
        ({"kind": "random", "args": [], "x": 1}, "a split spec as data is"),
        ("random", "a split spec as data is"),
        ({"kind": "kfold", "args": {"k": 3, "fold": 7}}, "fold must be in 0..2"),  # checked again
        ({"kind": "holdout", "args": {}}, "unknown split kind"),
    ],
)
def test_spec_from_dict_errors(value, needle):
    with pytest.raises(SplitError, match=needle):
        SplitSpec.from_dict(value)


def test_spec_args_are_typed_and_filled():
    assert SplitSpec.parse("kfold:k=4").args == {"k": 4, "fold": 0}
    assert SplitSpec.parse("random").args == {"test_ratio": 0.1}
    assert SplitSpec("random", {"test_ratio": "0.3"}) == SplitSpec.parse("random:test_ratio=0.3")
    assert SplitSpec.parse("canonical:u3").args == {"fold": "u3"}
    assert SplitSpec.parse("files:a.csv,b.csv").args == {"train": "a.csv", "test": "b.csv"}
    assert len({SplitSpec.parse("random"), SplitSpec.parse("random:test_ratio=0.1")}) == 1


@pytest.mark.parametrize(
    "text,needle",
    [
        ("holdout", "valid kinds: random, d2l-random, seq-aware, canonical, kfold, files"),
        ("random:ratio=0.2", "valid arguments: test_ratio"),
        ("random:0.2", "not NAME=VALUE"),
        ("random:test_ratio=abc", "not a number"),
        ("random:test_ratio=0", "strictly between 0 and 1"),
        ("random:test_ratio=1.5", "strictly between 0 and 1"),
        ("random:test_ratio=nan", "strictly between 0 and 1"),
        ("random:test_ratio=0.1,test_ratio=0.2", "given twice"),
        ("random:", "nothing after ':'"),
        ("seq-aware:x=1", "valid arguments: none"),
        ("kfold:k=1", "at least 2"),
        ("kfold:k=3,fold=3", "fold must be in 0..2"),
        ("kfold:k=2.5", "not an integer"),
        ("canonical", "needs 'fold'"),
        ("canonical:u6", "valid folds: u1, u2, u3, u4, u5, ua, ub"),
        ("canonical:u1,u2", "too many"),
        ("files:only.csv", "needs 'test'"),
        ("files:a.csv,b.csv,c.csv", "too many"),
    ],
)
def test_spec_errors_name_the_valid_choices(text, needle):
    with pytest.raises(SplitError) as exc:
        SplitSpec.parse(text)
    assert needle in str(exc.value)


def test_spec_rejects_non_string():
    with pytest.raises(SplitError):
        SplitSpec.parse(0.1)  # pyright: ignore[reportArgumentType]
    with pytest.raises(SplitError, match="unknown split kind"):
        SplitSpec("nope")


# --- random ----------------------------------------------------------------------------------


def test_random_exact_sizes_and_draw(ratings):
    sp = make_split(ratings, "random:test_ratio=0.2", seed=3)
    n = len(ratings)
    assert sp.sizes == {"train": 684, "valid": 36, "test": 180}  # 900*0.2, round(0.05*720)
    expected_test = np.sort(np.random.default_rng(3).permutation(n)[:180])
    assert np.array_equal(sp.test, expected_test)
    assert_partition(sp, n)
    pool = np.setdiff1d(np.arange(n), expected_test)
    perm = np.random.default_rng([3, 1]).permutation(len(pool))
    assert np.array_equal(sp.valid, np.sort(pool[perm[:36]]))
    assert sp.dataset == "toy" and sp.seed == 3 and sp.valid_ratio == 0.05
    assert str(sp.spec) == "random:test_ratio=0.2"


def test_random_deterministic_and_seed_dependent(ratings):
    a = make_split(ratings, "random", seed=0)
    b = make_split(ratings, "random", seed=0)
    c = make_split(ratings, "random", seed=1)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.valid, b.valid)
    assert a.sha256 == b.sha256
    assert not np.array_equal(a.test, c.test)
    assert a.sha256 != c.sha256
    assert a.sizes == c.sizes == {"train": 770, "valid": 40, "test": 90}


def test_valid_ratio_zero_and_bad_values(ratings):
    sp = make_split(ratings, "random", seed=0, valid_ratio=0.0)
    assert sp.sizes == {"train": 810, "valid": 0, "test": 90}
    assert make_split(ratings, "random", seed=0, valid_ratio=0.5).sizes["valid"] == 405
    for bad in (-0.1, 1.0, float("nan"), "x"):
        with pytest.raises(SplitError, match="valid_ratio"):
            make_split(ratings, "random", valid_ratio=bad)  # pyright: ignore[reportArgumentType]
    for bad in (-1, 2**32, 1.5, True, "0"):
        with pytest.raises(SplitError, match="seed"):
            make_split(ratings, "random", seed=bad)  # pyright: ignore[reportArgumentType]


def test_validation_never_touches_test(ratings):
    """The test part of a split depends on (spec, seed) only, never on valid_ratio."""
    base = make_split(ratings, "random", seed=5, valid_ratio=0.0)
    for v in (0.05, 0.2, 0.6):
        sp = make_split(ratings, "random", seed=5, valid_ratio=v)
        assert np.array_equal(sp.test, base.test)
        assert np.array_equal(np.sort(np.concatenate([sp.train, sp.valid])), base.train)


# --- d2l-random ------------------------------------------------------------------------------


def d2l_split_random(data: pd.DataFrame, test_ratio: float):
    """The D2L book's ``split_data_ml100k(..., split_mode='random')``, verbatim in substance."""
    mask = [True if x == 1 else False for x in np.random.uniform(0, 1, (len(data))) < 1 - test_ratio]
    neg_mask = [not x for x in mask]
    return data[mask], data[neg_mask]


@pytest.mark.parametrize("seed,ratio", [(0, 0.1), (7, 0.25)])
def test_d2l_random_matches_d2l(ratings, seed, ratio):
    df = pd.DataFrame(
        {
            "user_id": ratings.user_ids[ratings.users],
            "item_id": ratings.item_ids[ratings.items],
            "rating": ratings.ratings,
            "timestamp": ratings.timestamps,
        }
    )
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        train_df, test_df = d2l_split_random(df, ratio)
    finally:
        np.random.set_state(state)
    sp = make_split(ratings, f"d2l-random:test_ratio={ratio}", seed=seed, valid_ratio=0.0)
    assert np.array_equal(sp.test, test_df.index.to_numpy())
    assert np.array_equal(sp.train, train_df.index.to_numpy())
    with_valid = make_split(ratings, f"d2l-random:test_ratio={ratio}", seed=seed)
    assert np.array_equal(with_valid.test, sp.test)
    assert_partition(with_valid, len(ratings))


def test_d2l_random_does_not_touch_global_rng(ratings):
    np.random.seed(123)
    expected = np.random.uniform()
    np.random.seed(123)
    make_split(ratings, "d2l-random", seed=9)
    assert np.random.uniform() == expected


# --- seq-aware -------------------------------------------------------------------------------


def d2l_seq_aware(users, items, ratings, times):
    """D2L's seq-aware loop: per user, keep the candidate unless a strictly later timestamp comes."""
    test_items = {}
    for row, (u, _item, _rating, t) in enumerate(zip(users, items, ratings, times)):
        if u not in test_items or test_items[u][-1] < t:
            test_items[u] = (row, t)
    return np.sort([row for row, _ in test_items.values()])


def test_seq_aware_matches_d2l_with_ties():
    r = toy(n_users=30, n_items=40, n=500, seed=4)
    # timestamps in 0..29 over ~17 ratings a user: plenty of ties at the latest timestamp
    latest = {}
    assert r.timestamps is not None
    for u, t in zip(r.users, r.timestamps):
        latest[u] = max(latest.get(u, -1), t)
    n_ties = sum(((r.users == u) & (r.timestamps == t)).sum() > 1 for u, t in latest.items())
    assert n_ties > 0
    sp = make_split(r, "seq-aware", seed=0)
    assert np.array_equal(sp.test, d2l_seq_aware(r.users, r.items, r.ratings, r.timestamps))
    assert len(sp.test) == r.n_users
    assert np.array_equal(np.sort(r.users[sp.test]), np.arange(r.n_users))
    assert_partition(sp, len(r))
    # the test part does not depend on the seed; validation does
    other = make_split(r, "seq-aware", seed=1)
    assert np.array_equal(other.test, sp.test) and not np.array_equal(other.valid, sp.valid)


def test_seq_aware_tie_goes_to_first_in_file_order():
    u = np.array([0, 0, 0, 1, 1], np.int32)
    i = np.array([0, 1, 2, 0, 1], np.int32)
    ts = np.array([5, 9, 9, 3, 1], np.int64)
    r = Ratings("ties", u, i, np.ones(5, np.float32), np.array([10, 20]), np.array([1, 2, 3]), (1.0, 5.0), ts)
    sp = make_split(r, "seq-aware", valid_ratio=0.0)
    assert sp.test.tolist() == [1, 3]
    assert sp.train.tolist() == [0, 2, 4]


def test_seq_aware_needs_timestamps():
    with pytest.raises(SplitError, match="needs timestamps"):
        make_split(toy(timestamps=False), "seq-aware")


# --- kfold -----------------------------------------------------------------------------------


def test_kfold_partitions_every_rating_once(ratings):
    n = len(ratings)
    tests = []
    for fold in range(4):
        sp = make_split(ratings, f"kfold:k=4,fold={fold}", seed=2)
        assert sp.sizes["test"] == 225
        assert_partition(sp, n)
        tests.append(sp.test)
    allt = np.concatenate(tests)
    assert np.array_equal(np.sort(allt), np.arange(n))
    perm = np.random.default_rng(2).permutation(n)
    assert np.array_equal(tests[1], np.sort(np.array_split(perm, 4)[1]))
    # uneven: 900 into 7 folds -> sizes 129 x 4, 128 x 3
    sizes = [make_split(ratings, f"kfold:k=7,fold={f}").sizes["test"] for f in range(7)]
    assert sizes == [129] * 4 + [128] * 3
    assert not np.array_equal(make_split(ratings, "kfold", seed=0).test, make_split(ratings, "kfold", seed=1).test)


def test_kfold_more_folds_than_ratings():
    r = toy(n_users=3, n_items=3, n=4)
    with pytest.raises(SplitError, match="k=5 folds need at least 5"):
        make_split(r, "kfold:k=5,fold=0")


# --- leak rejection and checks ---------------------------------------------------------------


def test_repeated_pairs_leak_is_rejected():
    r = toy(n=300, dup=300)  # every pair rated twice
    with pytest.raises(SplitError, match=r"test \(user, item\) pair\(s\) also occur in train") as exc:
        make_split(r, "random:test_ratio=0.2", seed=0)
    n_leak = int(str(exc.value).split()[0])
    assert 0 < n_leak <= 120


def test_check_split_rejections(ratings):
    n = len(ratings)
    ok = (np.arange(0, 800), np.arange(800, 850), np.arange(850, 900))
    check_split(n, *ok, ratings)
    with pytest.raises(SplitError, match="in both train and test"):
        check_split(n, np.arange(0, 800), np.arange(800, 850), np.arange(799, 900))
    with pytest.raises(SplitError, match="outside 0..899"):
        check_split(n, np.arange(0, 800), np.arange(800, 850), np.arange(850, 901))
    with pytest.raises(SplitError, match="test part of the split is empty"):
        check_split(n, np.arange(0, 800), np.arange(800, 850), np.array([], np.int64))
    with pytest.raises(SplitError, match="train part of the split is empty"):
        check_split(n, np.array([], np.int64), np.arange(800, 850), np.arange(850, 900))
    with pytest.raises(SplitError, match="twice"):
        check_split(n, np.array([0, 0, 1]), np.array([], np.int64), np.array([2]))
    with pytest.raises(SplitError, match="index array"):
        check_split(n, np.array([0.5]), np.array([], np.int64), np.array([2]))


def test_empty_parts_are_errors():
    r = toy(n_users=2, n_items=2, n=3)
    with pytest.raises(SplitError, match="empty test part"):
        make_split(r, "random:test_ratio=0.1")  # round(0.3) = 0
    one = Ratings(
        "one",
        np.array([0], np.int32),
        np.array([0], np.int32),
        np.array([4], np.float32),
        np.array([1]),
        np.array([1]),
        (1.0, 5.0),
        np.array([0]),
    )
    with pytest.raises(SplitError, match="empty train part"):
        make_split(one, "seq-aware")
    empty = Ratings(
        "empty",
        np.zeros(0, np.int32),
        np.zeros(0, np.int32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        (1.0, 5.0),
    )
    with pytest.raises(SplitError, match="no ratings"):
        make_split(empty, "random")


# --- Split.data ------------------------------------------------------------------------------


def test_split_data_parts_share_the_index_space(ratings):
    sp = make_split(ratings, "random", seed=0)
    d = sp.data(ratings)
    assert d.ratings is ratings and d.split is sp and d.path is None
    for part, idx in ((d.train, sp.train), (d.valid, sp.valid), (d.test, sp.test)):
        assert isinstance(part, Interactions)
        assert (part.n_users, part.n_items, part.rating_scale) == (40, 60, (1.0, 5.0))
        assert part.users.dtype == np.int32 and part.items.dtype == np.int32
        assert part.ratings.dtype == np.float32
        assert np.array_equal(part.users, ratings.users[idx])
        assert np.array_equal(part.ratings, ratings.ratings[idx])
    assert len(d.train) + len(d.valid) + len(d.test) == len(ratings)
    cold = d.cold_start()
    known_u, known_i = d.train.known_users(), d.train.known_items()
    assert cold["pairs"] == int((~(known_u[d.test.users] & known_i[d.test.items])).sum())
    assert cold["test_users"] == len(np.unique(d.test.users))


def test_cold_start_counts_known_case():
    # users 0,1 ; items 0,1,2.  train: (0,0) (0,1); test: (1,0) cold user, (0,2) cold item
    u = np.array([0, 0, 1, 0], np.int32)
    i = np.array([0, 1, 0, 2], np.int32)
    r = Ratings("cold", u, i, np.array([1, 2, 3, 4], np.float32), np.array([5, 6]), np.array([7, 8, 9]), (1.0, 5.0))
    sp = S.Split(
        "cold",
        SplitSpec.parse("random"),
        0,
        0.0,
        np.array([0, 1]),
        np.zeros(0, np.int64),
        np.array([2, 3]),
        split_hash(r, [0, 1], [], [2, 3], spec="random"),
    )
    assert sp.data(r).cold_start() == {"pairs": 2, "users": 1, "items": 1, "test_users": 2, "test_items": 2}


def test_split_data_refuses_other_ratings(ratings):
    sp = make_split(ratings, "random", seed=0)
    with pytest.raises(SplitError, match="applied to ratings of 'other'"):
        sp.data(toy(name="other"))
    changed = toy()
    changed.ratings[int(sp.test[0])] = 1.0 if changed.ratings[int(sp.test[0])] != 1.0 else 2.0
    with pytest.raises(SplitError, match="does not match these ratings"):
        sp.data(changed)


# --- hash ------------------------------------------------------------------------------------


def tiny() -> Ratings:
    """A hand-built dataset: 3 users (raw 10, 20, 30), 3 items (raw 100, 200, 300), 6 ratings."""
    return Ratings(
        "tiny",
        np.array([0, 0, 1, 1, 2, 2], np.int32),
        np.array([0, 1, 1, 2, 0, 2], np.int32),
        np.array([5, 3, 4, 1, 2, 4.5], np.float32),
        np.array([10, 20, 30], np.int64),
        np.array([100, 200, 300], np.int64),
        (1.0, 5.0),
        np.arange(6, dtype=np.int64),
    )


def reference_hash(r: Ratings, parts, spec_text: str) -> str:
    """The documented encoding, written out independently of the implementation."""
    out = b"autorec-bench/split/v1\n"
    for tag, text in ((b"dataset", r.name), (b"spec", spec_text)):
        b = text.encode()
        out += tag + b"\0" + struct.pack("<Q", len(b)) + b
    for tag, idx in zip((b"train", b"valid", b"test"), parts):
        out += tag + b"\0" + struct.pack("<Q", len(idx))
        out += b"".join(struct.pack("<q", int(r.user_ids[r.users[k]])) for k in idx)
        out += b"".join(struct.pack("<q", int(r.item_ids[r.items[k]])) for k in idx)
        out += b"".join(struct.pack("<f", float(r.ratings[k])) for k in idx)
    return hashlib.sha256(out).hexdigest()


# Pinned: a change of this value means the hash encoding changed, which changes the hash of every
# stored and published split.  Bump the encoding's version tag instead of editing this silently.
TINY_HASH = "fd9a5b5c33259770d7e7b0f8cd30407ebb3be3975fa6379ccde73852a26d4eae"


def test_hash_is_pinned_for_a_hand_built_split():
    r = tiny()
    parts = ([0, 2, 5], [1], [3, 4])
    got = split_hash(r, *parts, spec="random:test_ratio=0.3")
    assert got == reference_hash(r, parts, "random:test_ratio=0.3")
    assert got == TINY_HASH


def test_hash_distinguishes_content_name_and_spec():
    r = tiny()
    base = split_hash(r, [0, 2, 5], [1], [3, 4], spec="random")
    assert split_hash(r, [0, 2, 5], [1], [3, 4], spec="random:test_ratio=0.1") == base
    assert split_hash(r, [0, 2, 5], [3], [1, 4], spec="random") != base  # different parts
    assert split_hash(r, [0, 1, 2, 5], [], [3, 4], spec="random") != base  # valid moved to train
    assert split_hash(r, [0, 2, 5], [1], [3, 4], spec="kfold") != base  # spec
    other = Ratings("tiny2", r.users, r.items, r.ratings, r.user_ids, r.item_ids, (1.0, 5.0))
    assert split_hash(other, [0, 2, 5], [1], [3, 4], spec="random") != base  # dataset name
    bumped = Ratings("tiny", r.users, r.items, r.ratings + np.float32(0.5), r.user_ids, r.item_ids, (1.0, 5.0))
    assert split_hash(bumped, [0, 2, 5], [1], [3, 4], spec="random") != base  # ratings
    # the raw ids are hashed, not the indices: relabelling the index space keeps the hash
    perm_u = np.array([2, 0, 1])
    relabel = Ratings(
        "tiny",
        perm_u[r.users].astype(np.int32),
        r.items,
        r.ratings,
        r.user_ids[np.argsort(perm_u)],
        r.item_ids,
        (1.0, 5.0),
    )
    assert split_hash(relabel, [0, 2, 5], [1], [3, 4], spec="random") == base


def test_files_spec_hash_ignores_folders():
    a = SplitSpec.parse("files:/x/train.csv,/x/test.csv")
    b = SplitSpec.parse("files:other/train.csv,test.csv")
    assert a != b and a.hash_text() == b.hash_text() == "files:train.csv,test.csv"


def test_ratings_hash_sees_every_column():
    r = tiny()
    h = S.ratings_hash(r)
    assert h == S.ratings_hash(tiny())
    no_ts = Ratings("tiny", r.users, r.items, r.ratings, r.user_ids, r.item_ids, (1.0, 5.0))
    assert S.ratings_hash(no_ts) != h
    assert r.timestamps is not None
    moved = Ratings("tiny", r.users, r.items, r.ratings, r.user_ids, r.item_ids, (1.0, 5.0), r.timestamps + 1)
    assert S.ratings_hash(moved) != h


# --- files (mapping onto a loaded Ratings) ---------------------------------------------------


def write_csv(path: Path, r: Ratings, idx, extra=True, rating_delta=0.0):
    df = pd.DataFrame(
        {"user": r.user_ids[r.users[idx]], "item": r.item_ids[r.items[idx]], "rating": r.ratings[idx] + rating_delta}
    )
    if extra:
        df["timestamp"] = 0
        df = df[["timestamp", "rating", "item", "user"]]  # column order does not matter
    df.to_csv(path, index=False)
    return str(path)


def test_files_split_maps_rows(ratings, tmp_path):
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(ratings))
    test_idx, train_idx = perm[:100], perm[100:700]  # 200 ratings in neither file
    tr, te = write_csv(tmp_path / "tr.csv", ratings, train_idx), write_csv(tmp_path / "te.csv", ratings, test_idx)
    spec = f"files:{tr},{te}"
    sp = make_split(ratings, spec, seed=0)
    assert np.array_equal(sp.test, np.sort(test_idx))
    assert np.array_equal(np.sort(np.concatenate([sp.train, sp.valid])), np.sort(train_idx))
    assert sp.sizes == {"train": 570, "valid": 30, "test": 100}


def test_files_split_rejections(ratings, tmp_path):
    te = write_csv(tmp_path / "te.csv", ratings, np.arange(0, 50))
    with pytest.raises(SplitError, match="overlap: 10 rating"):
        make_split(ratings, f"files:{write_csv(tmp_path / 'a.csv', ratings, np.arange(40, 300))},{te}")
    with pytest.raises(SplitError, match="rate differently"):
        make_split(
            ratings, f"files:{write_csv(tmp_path / 'b.csv', ratings, np.arange(60, 300), rating_delta=0.5)},{te}"
        )
    (tmp_path / "c.csv").write_text("user,item,rating\n3,5,4\n\n\n99999,5,3\n")  # blank lines count as lines
    with pytest.raises(SplitError, match=r"1 row\(s\) of .*c.csv have no rating .*line 5, user 99999"):
        make_split(ratings, f"files:{tmp_path / 'c.csv'},{te}")
    dup = np.r_[np.arange(60, 300), 61]
    with pytest.raises(SplitError, match=r"1 rating\(s\) appear more than once in .*d.csv \(first repeat: line 242,"):
        make_split(ratings, f"files:{write_csv(tmp_path / 'd.csv', ratings, dup)},{te}")
    with pytest.raises(DataError, match="does not exist"):
        make_split(ratings, f"files:{tmp_path / 'missing.csv'},{te}")


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "is empty"),
        ("user,item\n1,2\n", "lacks column(s) rating"),
        ("user,item,rating\n", "header but no ratings"),
        ("user,item,rating\n1,2,3\nx,2,3\n", "line 3: user 'x' is not an integer id"),
        ("user,item,rating\n1,2.5,3\n", "line 2: item '2.5' is not an integer id"),
        ("user,item,rating\n1,2,3\n1,3,\n", "line 3: rating '' is not a finite number"),
        ("user,item,rating\n1,2,inf\n", "line 2: rating 'inf' is not a finite number"),
        # a field more than the header: refused, never read shifted by a column
        ("user,item,rating\n9,2,2,1\n8,3,3,2\n", "line 2: malformed line: expected 3 fields as in the header, found 4"),
        ("user,item,rating\n9,2,2\n8,3\n", "line 3: truncated line: expected 3 fields as in the header, found 2"),
        ("user,item,rating\n1,2\x00,3\n", "line 2: a NUL byte"),
        # a quoted field after a space is one field, as pandas reads it: the real problem is named
        ('user,item,rating,note\n1,2,3, "a, b"\nx,2,3,c\n', "line 3: user 'x' is not an integer id"),
        ("user,item,rating\n1,2,3\r4,5,3\n", "line 2: a carriage return (CR) that ends no line"),
    ],
)
def test_read_split_csv_errors(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError) as exc:
        S.read_split_csv(p)
    assert needle in str(exc.value) and "bad.csv" in str(exc.value)


def test_read_split_csv_values(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_text("user, item, rating, ts\n1, 20, 3.5, 9\n-4,30000000000,5,1\n")
    u, i, r = S.read_split_csv(p)
    assert u.tolist() == [1, -4] and u.dtype == np.int64
    assert i.tolist() == [20, 30000000000] and i.dtype == np.int64
    assert r.tolist() == [3.5, 5.0] and r.dtype == np.float32


# --- canonical refusals that need no files ---------------------------------------------------


def test_canonical_only_for_ml100k(ratings, tmp_path):
    with pytest.raises(SplitError, match="only for ml-100k"):
        make_split(ratings, "canonical:u1", source_dir=tmp_path)
    ml = toy(name="ml-100k")
    with pytest.raises(SplitError, match="needs the ml-100k folder"):
        make_split(ml, "canonical:u1")
    with pytest.raises(SplitError, match="u2.base is missing"):
        make_split(ml, "canonical:u2", source_dir=tmp_path)


# --- storage ---------------------------------------------------------------------------------


def test_store_and_reuse(ratings, tmp_path):
    d1 = S.cached_split(ratings, "random", seed=4, cache_dir=tmp_path)
    assert d1.path is not None and d1.path.is_file() and d1.path.parent == tmp_path
    assert d1.path.suffix == ".npz" and "toy-random-seed4-" in d1.path.name
    assert [p.name for p in tmp_path.iterdir()] == [d1.path.name]  # no temp file left behind
    with np.load(d1.path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"][()]))
        assert np.array_equal(z["test"], d1.split.test)
    assert meta["sha256"] == d1.split.sha256 and meta["spec"] == "random:test_ratio=0.1"
    assert meta["sizes"] == d1.split.sizes and meta["ratings_sha256"] == S.ratings_hash(ratings)

    stored = path_of(d1).stat()
    d2 = S.cached_split(ratings, "random:test_ratio=0.1", seed=4, cache_dir=tmp_path)
    assert d2.path == d1.path
    now = path_of(d2).stat()  # reused, not written again
    assert (now.st_ino, now.st_mtime_ns) == (stored.st_ino, stored.st_mtime_ns)
    assert d2.split.sha256 == d1.split.sha256
    for a in ("train", "valid", "test"):
        assert np.array_equal(getattr(d2.split, a), getattr(d1.split, a))
    # every key component gives its own file
    others = [
        S.cached_split(ratings, "random", seed=5, cache_dir=tmp_path),
        S.cached_split(ratings, "random", seed=4, valid_ratio=0.1, cache_dir=tmp_path),
        S.cached_split(ratings, "random:test_ratio=0.2", seed=4, cache_dir=tmp_path),
        S.cached_split(toy(name="toy2"), "random", seed=4, cache_dir=tmp_path),
        S.cached_split(toy(seed=1), "random", seed=4, cache_dir=tmp_path),
    ]
    assert len({d1.path, *(o.path for o in others)}) == 6


def test_stored_split_is_verified(ratings, tmp_path):
    d = S.cached_split(ratings, "kfold:k=3,fold=1", seed=0, cache_dir=tmp_path)
    path = path_of(d)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    # swap one test rating with a train rating: the indices stay valid, the content hash does not
    arrays["test"] = np.sort(np.r_[arrays["test"][1:], arrays["train"][0]])
    arrays["train"] = np.sort(np.r_[arrays["train"][1:], d.split.test[0]])
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(SplitError, match="fails its hash check.*delete .* to rebuild"):
        S.cached_split(ratings, "kfold:k=3,fold=1", seed=0, cache_dir=tmp_path)
    path.write_bytes(b"not an npz")
    with pytest.raises(SplitError, match="unreadable"):
        S.cached_split(ratings, "kfold:k=3,fold=1", seed=0, cache_dir=tmp_path)
    path.unlink()
    again = S.cached_split(ratings, "kfold:k=3,fold=1", seed=0, cache_dir=tmp_path)
    assert again.split.sha256 == d.split.sha256


def test_stored_split_with_overlapping_parts_is_refused(ratings, tmp_path):
    path = path_of(S.cached_split(ratings, "random", seed=0, cache_dir=tmp_path))
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["valid"] = np.sort(np.r_[arrays["valid"], arrays["test"][0]])
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(SplitError, match="is invalid .*in both valid and test"):
        S.cached_split(ratings, "random", seed=0, cache_dir=tmp_path)


def test_default_cache_dir(monkeypatch, tmp_path):
    """Without a cache_dir, splits go to the ``splits`` folder of the one cache root."""
    monkeypatch.delenv("AUTOREC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert path_of(S.cached_split(toy(), "random")).parent == tmp_path / "x" / "autorec-bench" / "splits"
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "c"))
    assert path_of(S.cached_split(toy(), "random")).parent == tmp_path / "c" / "splits"


def test_split_data_carries_both_content_hashes(ratings, tmp_path):
    d = S.cached_split(ratings, "random", seed=2, cache_dir=tmp_path)
    assert d.ratings_sha256 == S.ratings_hash(ratings)
    assert d.split.sha256 == make_split(ratings, "random", seed=2).sha256
    assert make_split(ratings, "random", seed=2).data(ratings).ratings_sha256 == S.ratings_hash(ratings)


def test_expected_hash_is_verified(ratings, tmp_path):
    """The parent records the split hash; the worker's split must have that content."""
    d = S.cached_split(ratings, "kfold", seed=1, cache_dir=tmp_path)
    again = S.cached_split(ratings, "kfold", seed=1, cache_dir=tmp_path, expect_sha256=d.split.sha256)
    assert again.split.sha256 == d.split.sha256
    changed = toy()
    changed.ratings[0] = 1.0 if changed.ratings[0] != 1.0 else 2.0
    other = make_split(changed, "kfold", seed=1).sha256
    with pytest.raises(SplitError) as exc:
        S.cached_split(changed, "kfold", seed=1, cache_dir=tmp_path, expect_sha256=d.split.sha256)
    assert f"has content hash {other}, but {d.split.sha256} was expected" in str(exc.value)
