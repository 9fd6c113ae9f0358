"""verify: best AutoRec vs best MF (chosen on validation RMSE), paired over splits; exit 0 / 1 / 2;
verdict.json, and the report includes it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import report, verify
from benchmarks.cli import main as cli
from test_harness_helpers import make_record, write_record

SPLITS = [("random:test_ratio=0.1", s) for s in range(5)] + [(f"canonical:u{k}", 0) for k in range(1, 6)]


def _write(raw, model, backend, family, base, *, params=None, noise=0.004, seed=0, valid_offset=0.01,
           splits=SPLITS):
    rng = np.random.default_rng(seed)
    for (spec, s), e in zip(splits, rng.normal(0, noise, len(splits))):
        write_record(raw, make_record(split=spec, seed=s, model=model, backend=backend, family=family,
                                      params=params or {}, test_rmse=float(base + e),
                                      valid_rmse=float(base + valid_offset + e)))


def test_autorec_clearly_better_exits_0(tmp_path, capsys):
    raw = tmp_path / "raw"
    _write(raw, "i-autorec", "torch", "autorec", 0.870, params={"based": "item"}, seed=1)
    _write(raw, "u-autorec", "torch", "autorec", 0.900, params={"based": "user"}, seed=2)
    _write(raw, "als", "numpy", "mf", 0.905, params={"factors": 64}, seed=3)
    _write(raw, "biased-mf", "numpy", "mf", 0.900, params={"factors": 100}, seed=4)
    _write(raw, "bias-only", "numpy", "baseline", 0.940, seed=5)  # not an MF: never chosen
    code = cli(["verify", "--dataset", "ml-100k", "--raw", str(raw), "--out", str(tmp_path / "res")])
    assert code == 0
    out = capsys.readouterr().out
    assert "AutoRec is better" in out
    v = json.loads((tmp_path / "res" / "verdict.json").read_text())
    assert v["exit_code"] == 0 and v["autorec_better"] is True
    assert v["autorec"]["model"] == "i-autorec" and v["mf"]["model"] == "biased-mf"
    st = v["stats"]
    assert st["n_pairs"] == 10 and st["mean_diff"] < -0.02 and st["t_pvalue"] < 1e-4
    assert st["ci_low"] < st["mean_diff"] < st["ci_high"] < 0
    assert st["wilcoxon_pvalue"] < 0.01 and "nb_corrected_pvalue" in st
    # the same numbers as scipy on the pairs
    from scipy import stats as ss
    a = [p["autorec_test_rmse"] for p in v["pairs"]]
    b = [p["mf_test_rmse"] for p in v["pairs"]]
    assert st["t_pvalue"] == pytest.approx(ss.ttest_rel(a, b).pvalue)
    assert st["wilcoxon_pvalue"] == pytest.approx(ss.wilcoxon(a, b).pvalue)
    assert len(v["inputs"]) == 50
    # report puts the verdict into README.md
    report.build_report(raw, tmp_path / "res", plots=False)
    md = (tmp_path / "res" / "README.md").read_text()
    assert "AutoRec is better than the best tuned MF" in md and "Stale" not in md
    # a changed raw file makes the verdict stale
    f = sorted(raw.glob("*i-autorec*"))[0]
    rec = json.loads(f.read_text())
    rec["metrics"]["test_rmse"] += 0.001
    f.write_text(json.dumps(rec))
    report.build_report(raw, tmp_path / "res", plots=False)
    assert "Stale" in (tmp_path / "res" / "README.md").read_text()


def test_not_better_exits_1(tmp_path, capsys):
    raw = tmp_path / "raw"
    _write(raw, "i-autorec", "torch", "autorec", 0.900, params={"based": "item"}, seed=1)
    _write(raw, "als", "numpy", "mf", 0.880, seed=3)
    assert verify.verify(raw, "ml-100k", out_dir=tmp_path / "res")[0] == 1
    # indistinguishable: same mean, noise only
    raw2 = tmp_path / "raw2"
    _write(raw2, "i-autorec", "torch", "autorec", 0.900, params={"based": "item"}, seed=1, noise=0.01)
    _write(raw2, "als", "numpy", "mf", 0.900, seed=3, noise=0.01)
    code, v = verify.verify(raw2, "ml-100k", out_dir=tmp_path / "res2")
    assert code == 1 and v["stats"]["t_pvalue"] > 0.05
    assert cli(["verify", "--raw", str(raw), "--out", str(tmp_path / "res3")]) == 1
    assert "NOT better" in capsys.readouterr().out


def test_selection_uses_validation_not_test(tmp_path):
    raw = tmp_path / "raw"
    # variant A: best on test but worse on validation; variant B: best on validation
    _write(raw, "i-autorec", "torch", "autorec", 0.860, params={"based": "item", "lr": 0.01}, seed=1,
           valid_offset=0.05)
    _write(raw, "i-autorec", "torch", "autorec", 0.880, params={"based": "item", "lr": 0.001}, seed=2,
           valid_offset=0.0)
    _write(raw, "als", "numpy", "mf", 0.900, seed=3)
    _, v = verify.verify(raw, "ml-100k", out_dir=tmp_path / "res")
    assert v["autorec"]["params"]["lr"] == 0.001 and "VALIDATION" in v["selection"]
    _, v = verify.verify(raw, "ml-100k", out_dir=tmp_path / "res", select="test")
    assert v["autorec"]["params"]["lr"] == 0.01 and "optimistic" in v["selection"]


def test_errors_exit_2(tmp_path, capsys):
    raw = tmp_path / "raw"
    four = SPLITS[:4]
    _write(raw, "i-autorec", "torch", "autorec", 0.85, params={"based": "item"}, splits=four)
    _write(raw, "als", "numpy", "mf", 0.95, splits=four)
    code, v = verify.verify(raw, "ml-100k", out_dir=tmp_path / "res")
    assert code == 2 and "only 4 split instance(s)" in v["error"]
    assert json.loads((tmp_path / "res" / "verdict.json").read_text())["exit_code"] == 2
    assert cli(["verify", "--raw", str(raw), "--out", str(tmp_path / "res")]) == 2
    assert "needs >= 5" in capsys.readouterr().err
    # missing side / missing dataset
    only = tmp_path / "only"
    _write(only, "i-autorec", "torch", "autorec", 0.85, params={"based": "item"})
    assert verify.verify(only, "ml-100k", out_dir=tmp_path / "r2")[0] == 2
    assert verify.verify(only, "ml-1m", out_dir=tmp_path / "r3")[0] == 2
    assert verify.verify(tmp_path / "none", "ml-100k", out_dir=tmp_path / "r4")[0] == 2
    # pairs on different splits (hash) are refused
    bad = tmp_path / "bad"
    _write(bad, "i-autorec", "torch", "autorec", 0.85, params={"based": "item"})
    _write(bad, "als", "numpy", "mf", 0.95)
    f = sorted(bad.glob("*als*"))[0]
    rec = json.loads(f.read_text())
    rec["split_sha256"] = "1" * 64
    f.write_text(json.dumps(rec))
    code, v = verify.verify(bad, "ml-100k", out_dir=tmp_path / "r5")
    assert code == 2 and f.name in v["error"]


def test_paired_stats_numbers():
    st = verify.paired_stats([1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 2.4, 3.6, 4.4, 5.5], test_fraction=0.1)
    d = np.array([-0.5, -0.4, -0.6, -0.4, -0.5])
    assert st["mean_diff"] == pytest.approx(d.mean())
    half = 2.7764451051977987 * d.std(ddof=1) / np.sqrt(5)
    assert st["ci_low"] == pytest.approx(d.mean() - half) and st["ci_high"] == pytest.approx(d.mean() + half)
    assert st["wilcoxon_pvalue"] == pytest.approx(0.0625)
    same = verify.paired_stats([1.0, 2.0], [1.0, 2.0])
    assert same["t_pvalue"] == 1.0 and same["wilcoxon_pvalue"] is None


def test_configurations_with_too_few_splits_are_passed_over(tmp_path):
    """A 3-seed ablation with a better validation RMSE cannot be paired 5 times: the choice skips it
    (and says so) instead of failing on it."""
    raw = tmp_path / "raw"
    _write(raw, "i-autorec", "torch", "autorec", 0.870, params={"based": "item", "hidden": [500]}, seed=1)
    _write(raw, "i-autorec", "torch", "autorec", 0.850, params={"based": "item", "hidden": [400]}, seed=2,
           splits=SPLITS[:3])
    _write(raw, "als", "numpy", "mf", 0.905, seed=3)
    code, v = verify.verify(raw, "ml-100k", out_dir=tmp_path / "res")
    assert code == 0 and v["autorec"]["params"]["hidden"] == [500] and v["stats"]["n_pairs"] == 10
    assert any("fewer than 5 split instances: 1 AutoRec and 0 MF" in n for n in v["notes"])
