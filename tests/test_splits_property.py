"""Property tests: for random small datasets and seeds, every split kind partitions the ratings
(disjoint parts covering each rating exactly once; kfold's test folds cover each rating once), and
the split and its hash are identical when computed in a separate Python process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
# the interpreter running the tests (``.venv/bin/python -m pytest``: the project's .venv python)
PYTHON = sys.executable

# Runs in this process (exec) and in the child process (-c): builds the Ratings from plain lists
# and computes every requested split.
SPLIT_CODE = r"""
import json, sys
import numpy as np
from autorec.data.ratings import Ratings
from autorec.errors import SplitError
from autorec.splits import make_split

def compute(case):
    raw_u = np.asarray(case["users"], dtype=np.int64)
    raw_i = np.asarray(case["items"], dtype=np.int64)
    uids, u = np.unique(raw_u, return_inverse=True)
    iids, i = np.unique(raw_i, return_inverse=True)
    r = Ratings(case["name"], u.astype(np.int32), i.astype(np.int32),
                np.asarray(case["ratings"], dtype=np.float32), uids, iids, (1.0, 5.0),
                np.asarray(case["timestamps"], dtype=np.int64))
    out = []
    for spec in case["specs"]:
        try:
            sp = make_split(r, spec, seed=case["seed"], valid_ratio=case["valid_ratio"])
        except SplitError as exc:
            out.append({"error": str(exc)})
            continue
        out.append({"train": sp.train.tolist(), "valid": sp.valid.tolist(), "test": sp.test.tolist(),
                    "sha256": sp.sha256, "spec": str(sp.spec)})
    return out

if __name__ == "__main__":
    print(json.dumps(compute(json.loads(sys.stdin.read()))))
"""

_ns: dict = {"__name__": "split_property_code"}
exec(compile(SPLIT_CODE, "<split-property-code>", "exec"), _ns)
compute = _ns["compute"]


@st.composite
def cases(draw, min_ratings=1, max_ratings=60):
    n_users = draw(st.integers(1 if min_ratings < 4 else 2, 9))
    n_items = draw(st.integers(1 if min_ratings < 4 else 2, 9))
    cells = draw(
        st.lists(
            st.integers(0, n_users * n_items - 1),
            min_size=min(min_ratings, n_users * n_items),
            max_size=min(max_ratings, n_users * n_items),
            unique=True,
        )
    )
    n = len(cells)
    user_ids = draw(st.lists(st.integers(-(10**12), 10**12), min_size=n_users, max_size=n_users, unique=True))
    item_ids = draw(st.lists(st.integers(0, 10**6), min_size=n_items, max_size=n_items, unique=True))
    k = draw(st.integers(2, 5))
    return {
        "name": draw(st.sampled_from(["prop", "ml-prop", "x"])),
        "users": [user_ids[c // n_items] for c in cells],
        "items": [item_ids[c % n_items] for c in cells],
        "ratings": draw(st.lists(st.sampled_from([1.0, 2.0, 3.5, 4.0, 5.0]), min_size=n, max_size=n)),
        "timestamps": draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)),  # many ties
        "seed": draw(st.integers(0, 2**32 - 1)),
        "valid_ratio": draw(st.sampled_from([0.0, 0.05, 0.2, 0.5])),
        "specs": [
            f"random:test_ratio={draw(st.sampled_from([0.1, 0.25, 0.5]))}",
            f"d2l-random:test_ratio={draw(st.sampled_from([0.1, 0.3]))}",
            "seq-aware",
        ]
        + [f"kfold:k={k},fold={f}" for f in range(k)],
    }


def _check_case(case, results):
    n = len(case["ratings"])
    kfold_tests = []
    for spec, res in zip(case["specs"], results):
        if "error" in res:
            # the only acceptable refusal on unique-pair data: a part would be empty
            assert "empty" in res["error"] or "folds need at least" in res["error"], res["error"]
            if spec.startswith("kfold"):
                kfold_tests.append(None)
            continue
        parts = [np.asarray(res[p], dtype=np.int64) for p in ("train", "valid", "test")]
        allidx = np.concatenate(parts)
        assert len(allidx) == n, spec
        assert np.array_equal(np.sort(allidx), np.arange(n)), spec
        assert len(parts[0]) > 0 and len(parts[2]) > 0
        assert len(parts[1]) == round(case["valid_ratio"] * (len(parts[0]) + len(parts[1])))
        if spec.startswith("random"):
            ratio = float(spec.split("=")[1])
            assert len(parts[2]) == round(ratio * n)
        if spec.startswith("kfold"):
            kfold_tests.append(parts[2])
    if kfold_tests and all(t is not None for t in kfold_tests):
        allt = np.concatenate(kfold_tests)
        assert np.array_equal(np.sort(allt), np.arange(n))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_every_kind_partitions_the_ratings(case):
    _check_case(case, compute(case))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(min_ratings=10, max_ratings=40))
def test_split_and_hash_identical_in_another_process(case):
    here = compute(case)
    _check_case(case, here)
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [PYTHON, "-c", SPLIT_CODE],
        input=json.dumps(case),
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    there = json.loads(proc.stdout)
    assert there == here


def test_failed_split_is_a_split_error():
    """Sanity of the property's error branch: a 1-rating dataset refuses every kind clearly."""
    case = {
        "name": "one",
        "users": [1],
        "items": [2],
        "ratings": [4.0],
        "timestamps": [0],
        "seed": 0,
        "valid_ratio": 0.0,
        "specs": ["random:test_ratio=0.5", "seq-aware", "kfold:k=2,fold=0"],
    }
    res = compute(case)
    assert all("error" in r for r in res)
