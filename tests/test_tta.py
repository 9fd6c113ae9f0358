"""The time-to-accuracy table (``benchmarks.tta``) is a pure function of its raw files: time to best
is the sum of the epochs up to the best validation epoch, paths are ranked by it, failures listed."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks import tta
from benchmarks.record import FitSummary
from tests.record_factory import make_run, write_runs


def _run(label, seconds, best, test_rmse, **kw):
    rec = make_run(dataset="ml-1m", model="i-autorec", backend="torch", label=label, test_rmse=test_rmse, **kw)
    hist = tuple({"epoch": e, "seconds": s, "valid_rmse": 0.9} for e, s in enumerate(seconds, start=1))
    return dataclasses.replace(rec, fit=FitSummary(best, best, len(hist), hist))


def test_time_to_best_sums_the_epochs_up_to_the_best_one(tmp_path):
    write_runs(
        tmp_path,
        [
            _run("dense", [3.0, 3.0, 3.0, 3.0], best=2, test_rmse=0.85, params={"path": "dense"}),
            _run("sparse", [1.0, 1.0, 1.0, 1.0, 1.0], best=4, test_rmse=0.851, params={"path": "sparse"}),
            make_run(dataset="ml-1m", model="i-autorec", label="broken", status="failed", params={"x": 1}),
        ],
    )
    rows = {r["label"]: r for r in tta.rows(tmp_path)}
    assert rows["dense"]["time_to_best"] == pytest.approx(6.0) and rows["dense"]["epochs_run"] == 4
    assert rows["sparse"]["time_to_best"] == pytest.approx(4.0)
    assert "error" in rows["broken"]
    text = tta.render(tta.rows(tmp_path), str(tmp_path))
    body = text.split("|---|")[-1]
    assert body.index("| sparse |") < body.index("| dense |")  # fastest first
    assert "| dense | 1 | 4 (2) | 3.00 | 6.0 | 1.50x |" in text
    assert "- broken (" in text and "): loss is nan at epoch 2" in text
    assert text.count("## ") == 1  # dense and sparse differ only by path: one configuration


def test_each_configuration_gets_its_own_table(tmp_path):
    write_runs(
        tmp_path,
        [
            _run("a", [1.0], best=1, test_rmse=0.85, params={"path": "dense", "optimizer": "adam", "reg": 0.1}),
            _run("b", [1.0], best=1, test_rmse=0.85, params={"path": "dense", "optimizer": "rprop", "reg": 300.0}),
        ],
    )
    text = tta.render(tta.rows(tmp_path), str(tmp_path))
    assert "## adam (reg 0.1)" in text and "## rprop (reg 300)" in text


def test_a_missing_raw_folder_is_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tta.main(["--raw", str(tmp_path / "none"), "--out", str(tmp_path / "t.md")])
    assert "make bench-tta" in capsys.readouterr().err
