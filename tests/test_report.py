"""report: a pure function of the raw files (byte-identical reruns, order-independent), the tables,
the paper-style tables with published numbers, failed runs listed, split-hash refusal."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from benchmarks import harness, report
from benchmarks.cli import main as cli
from test_harness_helpers import TESTS, TOY, make_record, tree_digest, write_record


def _corpus() -> list[dict]:
    recs = []
    for seed in range(3):
        for model, backend, params, base in [
            ("i-autorec", "torch", {"based": "item", "hidden": [500], "path": "dense"}, 0.86),
            ("i-autorec", "mxnet", {"based": "item", "hidden": [500], "path": "dense"}, 0.861),
            ("u-autorec", "torch", {"based": "user", "hidden": [500], "path": "sparse"}, 0.89),
            ("als", "numpy", {"factors": 64}, 0.90),
            ("bias-only", "numpy", {}, 0.94),
        ]:
            recs.append(make_record(model=model, backend=backend, params=params, seed=seed,
                                    test_rmse=base + 0.003 * seed))
        for h, rm in [(10, 0.95), (100, 0.88), (500, 0.86)]:
            recs.append(make_record(model="i-autorec", backend="torch", seed=seed, dataset="ml-1m",
                                    params={"based": "item", "hidden": [h], "path": "sparse",
                                            "hidden_activation": "sigmoid", "output_activation": "identity"},
                                    test_rmse=rm + 0.001 * seed, cold_start="constant:3"))
        for act, rm in [("identity", 0.90), ("relu", 0.87)]:
            recs.append(make_record(model="i-autorec", backend="torch", seed=seed, dataset="ml-1m",
                                    params={"based": "item", "hidden": [500], "path": "sparse",
                                            "hidden_activation": act, "output_activation": "identity"},
                                    test_rmse=rm + 0.001 * seed, cold_start="constant:3"))
    for fold in range(1, 6):
        recs.append(make_record(split=f"canonical:u{fold}", model="als", params={"factors": 64}, test_rmse=0.91))
    recs.append(make_record(split="d2l-random:test_ratio=0.1", model="i-autorec", backend="mxnet",
                            params={"based": "item", "hidden": [500]}, test_rmse=0.905))
    recs.append(make_record(split="d2l-random:test_ratio=0.1", model="i-autorec", backend="torch",
                            params={"based": "item", "hidden": [500]}, test_rmse=0.909))
    recs.append(make_record(model="biased-mf", seed=7, status="failed"))
    return recs


@pytest.fixture
def raw(tmp_path) -> Path:
    d = tmp_path / "raw"
    for rec in _corpus():
        write_record(d, rec)
    return d


def test_report_is_a_pure_function_of_the_raw_files(raw, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    report.build_report(raw, a)
    report.build_report(raw, b)
    assert tree_digest(a) == tree_digest(b)  # byte-identical, plots included
    # the same files written in another order (and at other times) into another folder
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    files = sorted(raw.iterdir())
    random.Random(5).shuffle(files)
    for k, f in enumerate(files):
        shutil.copy(f, shuffled / f.name)
        os.utime(shuffled / f.name, (1_000_000 + 7 * k, 1_000_000 + 7 * k))
    report.build_report(shuffled, c)
    assert tree_digest(c) == tree_digest(a)
    # rerunning over an existing output folder changes nothing
    report.build_report(raw, a)
    assert tree_digest(a) == tree_digest(b)


def test_tables_content(raw, tmp_path):
    out = tmp_path / "res"
    files = report.build_report(raw, out)
    md = (out / "README.md").read_text()
    assert "### ml-100k — random:test_ratio=0.1" in md and "### ml-100k — canonical:u1-u5" in md
    # I-AutoRec torch: 0.860, 0.863, 0.866 -> mean 0.8630, t-interval 4.303 * 0.003 / sqrt(3) = 0.0075
    assert "| I-AutoRec | torch | dense | cpu |  | 0.8630 ± 0.0075 |" in md
    assert "| als | numpy | — | cpu |  | 0.9100 ± 0.0000 |" in md  # 5 canonical folds, one table
    assert "Test CPU" in md and "2.13.0" in md  # environment taken from the raw files
    # paper-style: measured next to published, clearly labelled
    assert "0.831 (published)" in md and "I-AutoRec" in md
    assert "### Hidden units" in md and "| [10] | 0.9510" in md
    assert "| relu | identity | 0.8710" in md
    # D2L table with the framework gap
    assert "## D2L reproduction" in md and "| 0.0040 |" in md
    # failures listed, never averaged
    assert "## Failed runs" in md and "TrainingDivergedError" in md
    assert "biased-mf | numpy | — | cpu |  |" not in md
    names = {f.name for f in files}
    assert {"README.md", "runs.csv", "failed.csv", "paper_i_vs_u.csv", "hidden_units.csv", "activations.csv",
            "d2l.csv", "rmse_vs_hidden.png"} <= names
    assert any(n.startswith("epochs_") and n.endswith(".png") for n in names)
    assert any(n.startswith("time_") for n in names)
    csv = (out / "table_ml-100k_random-test-ratio-0-1.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,split_group,model,registry_name,backend")
    assert len(csv) == 1 + 5
    assert (out / "plots" / "rmse_vs_hidden.png").read_bytes()[:4] == b"\x89PNG"


def test_stale_outputs_are_removed(raw, tmp_path):
    out = tmp_path / "res"
    report.build_report(raw, out, plots=False)
    assert (out / "failed.csv").exists()
    for f in raw.glob("*biased-mf*"):
        f.unlink()
    report.build_report(raw, out, plots=False)
    assert not (out / "failed.csv").exists()


def test_wrong_split_sha_is_refused(raw, tmp_path, capsys):
    victim = sorted(raw.glob("*als-numpy*_s1_*.json"))[0]
    rec = json.loads(victim.read_text())
    rec["split_sha256"] = "0" * 64
    victim.write_text(json.dumps(rec))
    with pytest.raises(report.SplitMismatchError, match=victim.name):
        report.build_report(raw, tmp_path / "res")
    assert cli(["report", "--raw", str(raw), "--out", str(tmp_path / "res2")]) == 2
    assert victim.name in capsys.readouterr().err
    assert not (tmp_path / "res2" / "README.md").exists()


def test_recomputed_split_refuses_a_lone_wrong_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    raw = tmp_path / "raw"
    run = harness.plan_run(dataset="synthetic:100,60,1500", split="random", seed=0, model=TOY)
    path = harness.execute(run, raw).path
    report.build_report(raw, tmp_path / "ok", recompute=True, plots=False)  # matches its recomputed split
    rec = json.loads(path.read_text())
    rec["split_sha256"] = "f" * 64
    path.write_text(json.dumps(rec))
    report.build_report(raw, tmp_path / "consistent", plots=False)  # alone, it is consistent with itself ...
    with pytest.raises(report.SplitMismatchError, match=path.name):  # ... but not with its split
        report.build_report(raw, tmp_path / "bad", recompute=True, plots=False)


def test_split_groups_and_t_interval():
    assert report.split_group("canonical:u3") == "canonical:u1-u5"
    assert report.split_group("canonical:ua") == "canonical:ua"
    assert report.split_group("kfold:k=5,fold=2") == "kfold:k=5"
    assert report.split_group("random:test_ratio=0.1") == "random:test_ratio=0.1"
    mean, half = report.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(half - 4.302652729911275 * 1.0 / 3 ** 0.5) < 1e-9
    assert report.t_interval([5.0]) == (5.0, None)


def test_empty_raw_folder(tmp_path):
    report.build_report(tmp_path / "nothing", tmp_path / "res")
    md = (tmp_path / "res" / "README.md").read_text()
    assert "0 raw result files" in md and "No verdict yet" in md


def test_hidden_units_and_depth_tables_share_one_family(tmp_path):
    """Single-layer widths and stacked layers with otherwise equal params: the hidden-units table
    keeps the single-layer rows, the depth table the stacks next to one layer of their first width."""
    d = tmp_path / "raw"
    base = {"based": "item", "path": "sparse", "hidden_activation": "sigmoid", "output_activation": "identity"}
    for seed in range(2):
        for hidden, rm in [([100], 0.90), ([500], 0.88), ([500, 250, 500], 0.92)]:
            write_record(d, make_record(model="i-autorec", backend="torch", seed=seed,
                                        params={**base, "hidden": hidden}, test_rmse=rm + 0.001 * seed))
    report.build_report(d, tmp_path / "out", plots=False)
    md = (tmp_path / "out" / "README.md").read_text()
    hid = md.split("### Hidden units")[1].split("###")[0]
    deep = md.split("### Depth")[1].split("##")[0]
    assert "| [100] |" in hid and "| [500] |" in hid and "[500,250,500]" not in hid
    assert "| [500,250,500] | 0.9205" in deep and "| [500] |" in deep and "| [100] |" not in deep
    assert (tmp_path / "out" / "depth.csv").is_file()


def test_paper_table_prefers_configurations_with_enough_splits(tmp_path):
    """The I- vs U-AutoRec table's 'best configuration' is chosen among those run on at least
    MIN_REPLICATES splits: a 3-seed ablation with a better validation RMSE does not displace the
    5-seed tuned configuration."""
    d = tmp_path / "raw"
    for seed in range(report.MIN_REPLICATES):
        write_record(d, make_record(model="i-autorec", backend="torch", seed=seed,
                                    params={"based": "item", "hidden": [500]}, test_rmse=0.88, valid_rmse=0.89))
    for seed in range(3):
        write_record(d, make_record(model="i-autorec", backend="torch", seed=seed,
                                    params={"based": "item", "hidden": [400]}, test_rmse=0.86, valid_rmse=0.87))
    rows = report.aggregate(report.load_records(d).ok)
    best = report.paper_rows(rows)
    assert len(best) == 1 and best[0]["row"].n == report.MIN_REPLICATES
    assert best[0]["row"].records[0]["params"]["hidden"] == [500]
