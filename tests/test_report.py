"""report: a pure function of the raw records (byte-identical reruns, order-independent); the verdict
table first; the main table holds the tuned comparison only, each ablation its own section;
contended timings marked; paper and D2L tables; the plots read back; errors that name the file."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from csv import reader as csv_reader
from pathlib import Path

import numpy as np
import pytest

from autorec.errors import DataError
from autorec.splits import SplitSpec
from benchmarks.cli import main as cli
from benchmarks.harness.data import DataSource, load_data, parse_dataset
from benchmarks.report import build_report, paper, plots, sections, tables
from benchmarks.report.inputs import SplitMismatchError, load_raw
from tests.record_factory import make_run, write_runs

RANDOM = [("random:test_ratio=0.1", s) for s in range(5)]
CANONICAL = [(f"canonical:u{k}", 0) for k in range(1, 6)]
CURVE = [1.4, 1.05, 0.95, 0.92, 0.905, 0.9, 0.898, 0.899]


def _main_sweep() -> list:
    runs = []
    for k, (spec, seed) in enumerate(RANDOM + CANONICAL):
        e = 0.003 * (k % 5)
        common = {"split": spec, "seed": seed, "history": [v + e for v in CURVE], "sweep": "ml100k"}
        runs += [
            make_run(model="i-autorec", backend="torch", params={"based": "item", "hidden": [500], "path": "dense"},
                     test_rmse=0.860 + e, label="I-AutoRec (tuned)", fit_seconds=12.0, **common),
            make_run(model="i-autorec", backend="mxnet", params={"based": "item", "hidden": [500], "path": "dense"},
                     test_rmse=0.861 + e, label="I-AutoRec (tuned)", fit_seconds=14.0, **common),
            make_run(model="u-autorec", backend="torch", params={"based": "user", "hidden": [500], "path": "dense"},
                     test_rmse=0.890 + e, label="U-AutoRec (tuned)", fit_seconds=20.0, **common),
            make_run(model="als", params={"factors": 64}, test_rmse=0.900 + e, label="als (tuned)", fit_seconds=2.0,
                     contended=(seed == 4), **common),
            make_run(model="biased-mf", params={"factors": 100}, test_rmse=0.895 + e, label="biased-mf (tuned)",
                     fit_seconds=11.0, **common),
            make_run(model="bias-only", params={}, test_rmse=0.940 + e, label="bias-only (tuned)", fit_seconds=0.1,
                     **common),
        ]  # fmt: skip
    return runs


def _ablations() -> list:
    runs = []
    base = {"based": "item", "path": "sparse", "hidden_activation": "sigmoid", "output_activation": "identity"}
    for seed in range(3):
        for h, rm in [(10, 0.95), (100, 0.88), (500, 0.86)]:
            runs.append(make_run(model="i-autorec", backend="torch", seed=seed, sweep="hidden-units",
                                 params={**base, "hidden": [h]}, test_rmse=rm + 0.001 * seed))  # fmt: skip
        for act, rm in [("identity", 0.90), ("relu", 0.87)]:
            runs.append(make_run(model="i-autorec", backend="torch", seed=seed, sweep="activations",
                                 params={**base, "hidden": [500], "hidden_activation": act}, test_rmse=rm))  # fmt: skip
        runs.append(make_run(model="i-autorec", backend="torch", seed=seed, sweep="depth",
                             params={**base, "hidden": [500, 250, 500]}, test_rmse=0.92 + 0.001 * seed))  # fmt: skip
        for devices, s in [(("cpu",), 0.2), (("cpu", "cpu"), 0.3)]:
            runs.append(make_run(model="i-autorec", backend="torch", seed=seed, sweep="devices", devices=devices,
                                 params={"based": "item"}, test_rmse=0.915, per_epoch=s + 0.1 * (seed == 2),
                                 contended=(seed == 2)))  # fmt: skip
    return runs


def _others() -> list:
    d2l = [
        make_run(split="d2l-random:test_ratio=0.1", model="i-autorec", backend=b, params={"based": "item"},
                 test_rmse=rm, valid_ratio=0.0, sweep="d2l", label="D2L AutoRec")
        for b, rm in [("mxnet", 0.905), ("torch", 0.909)]
    ]  # fmt: skip
    paper_runs = [
        make_run(dataset="ml-1m", seed=s, model="i-autorec", backend="torch", params={"based": "item", "hidden": [500]},
                 test_rmse=0.84 + 0.001 * s, cold_start="constant:3", sweep="paper")
        for s in range(5)
    ]  # fmt: skip
    adhoc = [make_run(model="als", params={"factors": 3}, test_rmse=0.99, sweep=None)]
    failed = [make_run(model="biased-mf", seed=7, status="failed")]
    return d2l + paper_runs + adhoc + failed


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("raw")
    write_runs(d, _main_sweep() + _ablations() + _others())
    return d


@pytest.fixture(scope="module")
def report(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("res")
    build_report(raw, out)
    return out


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_report_is_a_pure_function_of_the_raw_files(raw, report, tmp_path):
    again = tmp_path / "again"
    build_report(raw, again)
    assert tree_digest(again) == tree_digest(report)  # byte-identical, plots included
    shuffled = tmp_path / "shuffled"  # the same files, copied in another order at other times
    shuffled.mkdir()
    files = sorted(raw.iterdir())
    random.Random(5).shuffle(files)
    for k, f in enumerate(files):
        shutil.copy(f, shuffled / f.name)
        os.utime(shuffled / f.name, (1_000_000 + 7 * k, 1_000_000 + 7 * k))
    build_report(shuffled, tmp_path / "c")
    assert tree_digest(tmp_path / "c") == tree_digest(report)
    build_report(raw, again)  # over an existing output folder: nothing changes
    assert tree_digest(again) == tree_digest(report)


def test_readme_opens_with_the_verdict_table(report):
    md = (report / "README.md").read_text()
    assert md.index("## Verdict") < md.index("## Environment") < md.index("## Main comparison")
    verdict = md.split("## Verdict")[1].split("## Environment")[0]
    # ml-100k: I-AutoRec torch (0.860 + e) beats biased-mf (0.895 + e) on every one of the 10 splits
    assert (
        "| ml-100k | I-AutoRec (tuned) (torch, dense) | biased-mf (tuned) (numpy) | 10 | 0.8660 | 0.9010 |" in verdict
    )
    assert "| -0.0350 [-0.0350, -0.0350] |" in verdict and "**AutoRec better**" in verdict
    assert "| ml-1m | I-AutoRec (torch) | — |" in verdict and "undecided" in verdict  # no MF on ml-1m
    assert "- On ml-100k, I-AutoRec (tuned) (torch, dense) beats biased-mf (tuned) (numpy) by 0.0350" in verdict
    assert "![the verdict per dataset](plots/verdict.png)" in verdict
    csv = (report / "verdict.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,autorec,mf,n_pairs") and len(csv) == 3


def test_main_table_is_the_tuned_comparison_only(report):
    md = (report / "README.md").read_text()
    main = md.split("## Main comparison")[1].split("## Paper comparison")[0]
    table = main.split("### ml-100k — random:test_ratio=0.1")[1].split("###")[0]
    # I-AutoRec torch over the 5 random seeds: 0.860 + 0.003 k, k = 0..4 -> mean 0.8660, CI 2.776 * 0.00474 / sqrt(5)
    assert "| I-AutoRec (tuned) | torch | dense | cpu |  | 0.8660 ± 0.0059 |" in table
    assert table.count("| I-AutoRec (tuned) |") == 2 and "hidden=" not in table and "relu" not in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 1 + 6
    assert "### ml-100k — canonical:u1-u5" in main and "### ml-1m — random:test_ratio=0.1" in main
    assert "![validation RMSE per epoch](plots/curves_ml-100k_random-test-ratio-0-1.png)" in main
    assert "![test RMSE vs fit seconds](plots/cost_ml-100k_random-test-ratio-0-1.png)" in main
    csv = (report / "table_ml-100k_random-test-ratio-0-1.csv").read_text().splitlines()
    assert csv[0] == ",".join(tables.CSV_HEADER) and len(csv) == 1 + 6


def test_contended_timings_are_marked_never_averaged_silently(report):
    md = (report / "README.md").read_text()
    table = md.split("### ml-100k — random:test_ratio=0.1")[1].split("###")[0]
    # als: seed 4 contended -> the timing means cover the 4 quiet runs and carry a dagger
    assert "| als (tuned) | numpy | — | cpu |  | 0.9060 ± 0.0059 | 0.7060 | 0.9160 | 2.00† | 0.5† |" in table
    assert tables.CONTENTION_NOTE in table
    rows = [r for r in (report / "table_ml-100k_random-test-ratio-0-1.csv").read_text().splitlines() if "als" in r]
    assert rows[0].endswith(",2.000000,0.500000,quiet,1,400.000000,8.000000,5")
    runs = list(csv_reader((report / "runs.csv").read_text().splitlines()))
    col, seed = runs[0].index("worker_start"), runs[0].index("seed")
    assert {(r[seed], r[col]) for r in runs[1:]} >= {("0", "fresh"), ("1", "forked")}
    assert {r[col] for r in runs[1:] if int(r[seed]) % 2} == {"forked"}
    devices = md.split("### Devices")[1].split("##")[0]
    # devices: seed 2 (per epoch 0.3 / 0.4, contended) left out of the means of 0.2 / 0.3
    assert "| 0.2† |" in devices and "| 0.3† |" in devices and "| 0.4" not in devices


def test_ablations_each_in_their_own_section(report):
    md = (report / "README.md").read_text()
    hidden = md.split("### Hidden units")[1].split("###")[0]
    assert "| I-AutoRec | torch | sparse | cpu | hidden=[10] | 0.9510 ± 0.0025 |" in hidden
    assert hidden.index("hidden=[10]") < hidden.index("hidden=[100]") < hidden.index("hidden=[500]")
    assert "![RMSE vs hidden units](plots/rmse_vs_hidden.png)" in hidden and "Fig. 2" in hidden
    acts = md.split("### Activation functions")[1].split("###")[0]
    assert "hidden_activation=identity | 0.9000" in acts and "hidden_activation=relu | 0.8700" in acts
    depth = md.split("### Depth")[1].split("###")[0]
    assert "| 0.9210 ± 0.0025 |" in depth
    devices = md.split("### Devices")[1].split("##")[0]
    assert "| cpu,cpu |" in devices
    for sweep in sections.ABLATIONS:
        assert (report / f"ablation_{tables.slug(sweep)}.csv").is_file()
    other = md.split("## Runs outside a sweep")[1].split("## Failed runs")[0]
    assert "| als | numpy | — | cpu |  | 0.9900 (n=1) |" in other


def test_paper_d2l_and_failed_sections(report):
    md = (report / "README.md").read_text()
    pap = md.split("## Paper comparison")[1].split("## D2L reproduction")[0]
    assert "| ml-1m | I-AutoRec | torch |  | 0.8420 ± 0.0020 | 5 | constant:3 | 0.831 (published) | +0.0110 |" in pap
    assert "| ml-1m | LLORMA | — |  | not run | — | — | 0.833 (published) | — |" in pap
    assert "| ml-100k | BiasedMF | numpy |" in pap and "| ml-100k | U-AutoRec | torch |" in pap
    d2l = md.split("## D2L reproduction")[1].split("## Ablations")[0]
    assert "| D2L AutoRec | dense / d2l-random:test_ratio=0.1 |" not in d2l  # no path param here
    assert "| D2L AutoRec | ml-100k / d2l-random:test_ratio=0.1 | 0.0040 |" in d2l
    failed = md.split("## Failed runs")[1].split("##")[0]
    assert "TrainingDivergedError" in failed and "Listed, never averaged" in failed
    assert "| biased-mf | numpy | — | cpu |  | 0.9" not in md.split("## Ablations")[0].split("### ml-100k — random")[1]
    assert (report / "failed.csv").is_file() and (report / "paper.csv").is_file() and (report / "d2l.csv").is_file()


def _png(path: Path) -> np.ndarray:
    from matplotlib import image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return image.imread(path)


def test_every_plot_reads_back_not_blank(report):
    names = [ln for ln in (report / ".report-files").read_text().split() if ln.endswith(".png")]
    assert sorted(names) == [
        "plots/cost_ml-100k_canonical-u1-u5.png",
        "plots/cost_ml-100k_random-test-ratio-0-1.png",
        "plots/curves_ml-100k_canonical-u1-u5.png",
        "plots/curves_ml-100k_random-test-ratio-0-1.png",
        "plots/rmse_vs_hidden.png",
        "plots/verdict.png",
    ]
    md = (report / "README.md").read_text()
    for name in names:
        img = _png(report / name)
        assert img.shape[0] >= 250 and img.shape[1] >= 400, name
        assert float(img[..., :3].std()) > 0.05, name  # not one flat colour
        assert f"]({name})" in md


def test_pareto_front():
    pts = [(1.0, 0.95), (2.0, 0.90), (3.0, 0.92), (10.0, 0.88), (0.5, 0.99), (20.0, 0.885)]
    assert plots.pareto(pts) == [4, 0, 1, 3]


def test_stale_outputs_are_removed(tmp_path):
    raw = tmp_path / "raw"
    write_runs(raw, [make_run(seed=s, test_rmse=0.9) for s in range(2)] + [make_run(model="x", status="failed")])
    out = tmp_path / "res"
    build_report(raw, out, plots=False)
    assert (out / "failed.csv").exists()
    for f in raw.glob("*.json"):
        if json.loads(f.read_text())["status"] == "failed":
            f.unlink()
    build_report(raw, out, plots=False)
    assert not (out / "failed.csv").exists() and (out / "README.md").exists()


def test_wrong_split_hash_is_refused_naming_the_file(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_runs(raw, [make_run(model=m, seed=1) for m in ("als", "biased-mf", "i-autorec")])
    (victim,) = write_runs(raw, [make_run(model="bias-only", seed=1, split_sha256="0" * 64)])
    with pytest.raises(SplitMismatchError, match=victim.name):
        build_report(raw, tmp_path / "res")
    assert cli(["report", "--raw", str(raw), "--out", str(tmp_path / "res2")]) == 2
    err = capsys.readouterr().err
    assert victim.name in err and "does not match the 3 other file(s)" in err and "Traceback" not in err
    assert not (tmp_path / "res2" / "README.md").exists()


def test_unreadable_file_is_named_not_a_traceback(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_runs(raw, [make_run()])
    (raw / "broken.json").write_text("{not json")
    assert cli(["report", "--raw", str(raw), "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert "broken.json is not valid JSON" in err and "Traceback" not in err
    assert cli(["verify", "--raw", str(raw), "--out", str(tmp_path / "res")]) == 2
    assert "broken.json" in capsys.readouterr().err


def test_recomputed_split_refuses_a_lone_wrong_file(tmp_path):
    dataset = "synthetic:100,60,1500"
    split = load_data(parse_dataset(dataset), SplitSpec.parse("random"), seed=0, valid_ratio=0.05,
                      source=DataSource(cache_dir=str(tmp_path / "cache")))  # fmt: skip
    raw = tmp_path / "raw"
    (good,) = write_runs(raw, [make_run(dataset=dataset, split="random", split_sha256=split.split.sha256)])
    build_report(raw, tmp_path / "ok", recompute=True, plots=False)  # matches its recomputed split
    good.unlink()
    (bad,) = write_runs(raw, [make_run(dataset=dataset, split="random", split_sha256="f" * 64)])
    build_report(raw, tmp_path / "consistent", plots=False)  # alone, it is consistent with itself ...
    with pytest.raises(SplitMismatchError, match=bad.name):  # ... but not with its split
        build_report(raw, tmp_path / "bad", recompute=True, plots=False)


def test_split_groups_and_t_interval():
    assert tables.split_group("canonical:u3") == "canonical:u1-u5"
    assert tables.split_group("canonical:ua") == "canonical:ua"
    assert tables.split_group("kfold:k=5,fold=2") == "kfold:k=5"
    assert tables.split_group("random:test_ratio=0.1") == "random:test_ratio=0.1"
    mean, half = tables.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302652729911275 / 3**0.5)
    assert tables.t_interval([5.0]) == (5.0, None)


def test_empty_raw_folder(tmp_path):
    (tmp_path / "nothing").mkdir()
    build_report(tmp_path / "nothing", tmp_path / "res")
    md = (tmp_path / "res" / "README.md").read_text()
    assert "0 raw result files" in md and "No results yet" in md
    # a folder that does not exist is a mistyped --raw, not an empty one: the report stays as it is
    with pytest.raises(DataError, match="raw folder .*typo does not exist"):
        build_report(tmp_path / "typo", tmp_path / "res")
    assert (tmp_path / "res" / "README.md").read_text() == md


def test_refit_column_when_runs_were_refitted(tmp_path):
    raw = tmp_path / "raw"
    write_runs(raw, [make_run(seed=s, test_rmse=0.90, refit_rmse=0.89 + 0.002 * s) for s in range(3)])
    build_report(raw, tmp_path / "res", plots=False)
    md = (tmp_path / "res" / "README.md").read_text()
    assert "| test RMSE (mean ± 95% CI) | refit test RMSE |" in md and "| 0.9000 ± 0.0000 | 0.8920 |" in md


def test_paper_table_prefers_configurations_with_enough_splits(tmp_path):
    """The paper table's 'best configuration' is chosen among those run on at least MIN_REPLICATES
    splits: a 3-seed configuration with a better validation RMSE does not displace the 5-seed one."""
    raw = tmp_path / "raw"
    write_runs(raw, [make_run(model="i-autorec", seed=s, params={"based": "item", "hidden": [500]}, test_rmse=0.88,
                              valid_rmse=0.89) for s in range(tables.MIN_REPLICATES)])  # fmt: skip
    write_runs(raw, [make_run(model="i-autorec", seed=s, params={"based": "item", "hidden": [400]}, test_rmse=0.86,
                              valid_rmse=0.87) for s in range(3)])  # fmt: skip
    (best,) = paper.paper_rows(tables.aggregate(load_raw(raw).ok))
    assert best.row is not None and best.row.n == tables.MIN_REPLICATES and best.row.params["hidden"] == [500]
