"""The run record: its committed JSON schema is the one generated from the dataclasses, a record
round-trips through write / read unchanged, committed raw files validate against the schema, and
damaged files are refused naming the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autorec.errors import DataError
from benchmarks import record
from benchmarks.harness import store
from tests.record_factory import make_run as make_record

REPO = Path(__file__).resolve().parents[1]


def test_committed_schema_is_the_generated_one():
    committed = json.loads(record.SCHEMA_FILE.read_text())
    assert committed == record.json_schema(), "run `python -m benchmarks.record` and commit the schema"


def test_round_trip_is_exact(tmp_path):
    rec = make_record()
    path = record.write(tmp_path / "r.json", rec)
    assert record.read(path) == rec
    # the file is plain, sorted JSON: writing the read record again gives the same bytes
    again = record.write(tmp_path / "r2.json", record.read(path))
    assert again.read_bytes() == path.read_bytes()


def test_committed_raw_files_validate_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(record.SCHEMA_FILE.read_text())
    files = store.raw_files(REPO / "results" / "raw") + store.raw_files(REPO / "results" / "raw" / "scale")
    if not files:
        pytest.skip("no committed raw results")
    for path in files:
        jsonschema.validate(json.loads(path.read_text()), schema)
        assert record.read(path).schema_version == record.SCHEMA_VERSION


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: json.dumps({**d, "schema_version": 1}), "schema_version 1"),
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "identity"}), "lacks field 'identity'"),
        (lambda d: json.dumps({**d, "surprise": 1}), "unknown field"),
        (lambda d: json.dumps({**d, "identity": {**d["identity"], "seed_of_doubt": 3}}), "unknown field"),
        (lambda d: json.dumps({**d, "metrics": {**d["metrics"], "test_rmse": "low"}}), "must be a number"),
        # numbers no run can produce: a diverged fit fails, it records no metrics
        (lambda d: json.dumps({**d, "metrics": {**d["metrics"], "test_rmse": float("nan")}}), "test_rmse = nan"),
        (lambda d: json.dumps({**d, "metrics": {**d["metrics"], "valid_rmse": -5}}), "valid_rmse = -5"),
        (
            lambda d: json.dumps({**d, "identity": {**d["identity"], "params": {"lr": 9}}}),
            "does not match its identity",
        ),
    ],
)
def test_damaged_records_are_refused_naming_the_file(tmp_path, damage, message):
    good = record.write(tmp_path / "good.json", make_record())
    bad = tmp_path / "bad.json"
    bad.write_text(damage(json.loads(good.read_text())))
    with pytest.raises(DataError, match=message) as err:
        record.read(bad)
    assert str(bad) in str(err.value)


def test_a_record_that_would_not_read_back_is_refused_at_write(tmp_path):
    rec = make_record()
    bad = type(rec)(**{**rec.__dict__, "metrics": record.Metrics(float("nan"), 0.7)})
    with pytest.raises(ValueError, match="metrics.test_rmse is null"):
        record.write(tmp_path / "r.json", bad)
    assert not (tmp_path / "r.json").exists()
    # optional numbers that are not finite become null (JSON has no NaN) and read back as None
    ok = type(rec)(**{**rec.__dict__, "metrics": record.Metrics(0.9, 0.7, float("nan"))})
    assert record.read(record.write(tmp_path / "r.json", ok)).metrics.valid_rmse is None
