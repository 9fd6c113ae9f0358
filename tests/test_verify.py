"""verify: per dataset, the best AutoRec vs the best MF (chosen on validation RMSE), paired over
splits, Holm-corrected across datasets; the sentence in both directions; exit 0 / 1 / 2; the
verdict files."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from autorec.errors import DataError
from benchmarks import verify
from benchmarks.cli import main as cli
from benchmarks.record import RunRecord
from tests.record_factory import make_run, write_runs

SPLITS = [("random:test_ratio=0.1", s) for s in range(5)] + [(f"canonical:u{k}", 0) for k in range(1, 6)]


def series(model, base, *, family=None, params=None, seed=0, noise=0.004, splits=SPLITS, valid_offset=0.01,
           dataset="ml-100k", backend="numpy", refit_shift=None, **kw) -> list[RunRecord]:  # fmt: skip
    """One configuration's runs: test RMSE ``base`` + seeded noise on each split instance."""
    errors = np.random.default_rng(seed).normal(0, noise, len(splits))
    return [
        make_run(dataset=dataset, split=spec, seed=s, model=model, backend=backend, family=family, params=params,
                 test_rmse=float(base + e), valid_rmse=float(base + valid_offset + e),
                 refit_rmse=None if refit_shift is None else float(base + e + refit_shift), **kw)
        for (spec, s), e in zip(splits, errors)
    ]  # fmt: skip


def pvalue(result: Any) -> float:
    """The p-value of a scipy test result."""
    return float(result.pvalue)


def test_autorec_clearly_better_on_every_dataset_exits_0(tmp_path, capsys):
    raw = tmp_path / "raw"
    for ds in ("ml-100k", "ml-1m"):
        write_runs(raw, series("i-autorec", 0.870, backend="torch", params={"based": "item"}, seed=1, dataset=ds))
        write_runs(raw, series("u-autorec", 0.900, backend="torch", params={"based": "user"}, seed=2, dataset=ds))
        write_runs(raw, series("als", 0.905, params={"factors": 64}, seed=3, dataset=ds))
        write_runs(raw, series("biased-mf", 0.900, params={"factors": 100}, seed=4, dataset=ds))
        write_runs(raw, series("bias-only", 0.800, seed=5, dataset=ds))  # not an MF: never chosen
    assert cli(["verify", "--raw", str(raw), "--out", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    assert "== ml-100k" in out and "== ml-1m" in out and "exit status 0" in out
    files = sorted(p.name for p in (tmp_path / "res" / "verdicts").iterdir())
    assert files == ["ml-100k.json", "ml-1m.json"]
    v = json.loads((tmp_path / "res" / "verdicts" / "ml-100k.json").read_text())
    assert v["exit_code"] == 0 and v["winner"] == "autorec"
    assert v["autorec"]["model"] == "i-autorec" and v["mf"]["model"] == "biased-mf"
    assert v["holm_family"] == ["ml-100k", "ml-1m"]
    st = v["stats"]
    assert st["n_pairs"] == 10 and st["mean_diff"] < -0.02 and st["ci_low"] < st["mean_diff"] < st["ci_high"] < 0
    # the same numbers as scipy on the pairs; Holm over two datasets
    a = [p["autorec_test_rmse"] for p in v["pairs"]]
    b = [p["mf_test_rmse"] for p in v["pairs"]]
    assert st["t_pvalue"] == pytest.approx(pvalue(stats.ttest_rel(a, b)))
    assert st["wilcoxon_pvalue"] == pytest.approx(pvalue(stats.wilcoxon(a, b)))
    _, results = verify.verify(raw, write=False)
    ps = [r.stats.t_pvalue for r in results if r.stats]
    assert [r.holm_pvalue for r in results] == pytest.approx(verify.holm(ps))
    assert v["sentence"].startswith("On ml-100k, I-AutoRec (torch) beats biased-mf (numpy) by 0.0")
    assert "AutoRec is significantly better" in v["sentence"] and "selection-time test RMSE" in v["sentence"]


def test_mf_better_says_so_and_exits_1(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_runs(raw, series("i-autorec", 0.895, backend="torch", params={"based": "item"}, seed=1, label="I-AutoRec"))
    write_runs(raw, series("biased-mf", 0.910, seed=2))
    write_runs(raw, series("bayesian-svdpp", 0.883, backend="myfm", seed=3, label="tuned Bayesian SVD++"))
    code, (v,) = verify.verify(raw, "ml-100k", out_dir=tmp_path / "res")
    assert code == 1 and v.winner == "mf" and v.mf and v.mf.model == "bayesian-svdpp"
    assert v.stats and v.stats.mean_diff > 0
    assert v.sentence.startswith(
        f"On ml-100k, tuned Bayesian SVD++ (myfm) beats I-AutoRec (torch) by {v.stats.mean_diff:.4f}"
    )
    assert "The best MF is significantly better" in v.sentence and "AutoRec is not better" in v.sentence
    assert cli(["verify", "--dataset", "ml-100k", "--raw", str(raw), "--out", str(tmp_path / "r2")]) == 1
    assert "tuned Bayesian SVD++ (myfm) beats" in capsys.readouterr().out


def test_indistinguishable_exits_1_and_names_no_winner(tmp_path):
    raw = tmp_path / "raw"
    write_runs(raw, series("i-autorec", 0.900, params={"based": "item"}, seed=1, noise=0.01))
    write_runs(raw, series("als", 0.900, seed=3, noise=0.01))
    code, (v,) = verify.verify(raw, out_dir=tmp_path / "res")
    assert code == 1 and v.winner == "" and v.holm_pvalue is not None and v.holm_pvalue > 0.05
    assert "not significantly" in v.sentence and "Neither is shown better" in v.sentence


def _paired(raw, dataset, d):
    """Five pairs whose differences AutoRec - MF are exactly ``d``."""
    splits = SPLITS[:5]
    for (spec, s), x in zip(splits, d):
        write_runs(raw, [make_run(dataset=dataset, split=spec, seed=s, model="i-autorec", test_rmse=0.9 + x),
                         make_run(dataset=dataset, split=spec, seed=s, model="als", test_rmse=0.9)])  # fmt: skip


def test_holm_correction_across_datasets_decides(tmp_path):
    d1 = [-0.010, -0.020, -0.004, -0.001, -0.015]
    d2 = [-0.010, -0.020, -0.005, -0.002, -0.015]
    p1, p2 = pvalue(stats.ttest_1samp(d1, 0)), pvalue(stats.ttest_1samp(d2, 0))
    assert p2 < p1 < 0.05 and 2 * p2 > 0.05  # each alone significant, not both after Holm
    raw = tmp_path / "raw"
    _paired(raw, "ml-100k", d1)
    alone_code, (alone,) = verify.verify(raw, write=False)
    assert alone_code == 0 and alone.holm_pvalue == pytest.approx(p1)
    _paired(raw, "ml-latest-small", d2)
    code, results = verify.verify(raw, write=False)
    assert code == 1 and [r.winner for r in results] == ["", ""]
    assert [r.holm_pvalue for r in results] == pytest.approx([max(p1, 2 * p2), 2 * p2], rel=1e-9)
    # asking for one dataset keeps the family of tests
    code, (one,) = verify.verify(raw, "ml-100k", write=False)
    assert code == 1 and one.holm_family == ("ml-100k", "ml-latest-small")


def test_holm_numbers():
    assert verify.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert verify.holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])
    assert verify.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert verify.holm([]) == []


def test_selection_uses_validation_not_test(tmp_path):
    raw = tmp_path / "raw"
    # A: best on test but worse on validation; B: best on validation
    write_runs(raw, series("i-autorec", 0.860, params={"based": "item", "lr": 0.01}, seed=1, valid_offset=0.05))
    write_runs(raw, series("i-autorec", 0.880, params={"based": "item", "lr": 0.001}, seed=2, valid_offset=0.0))
    write_runs(raw, series("als", 0.900, seed=3))
    _, (v,) = verify.verify(raw, out_dir=tmp_path / "res")
    assert v.autorec and v.autorec.params["lr"] == 0.001 and "VALIDATION" in v.selection
    _, (v,) = verify.verify(raw, out_dir=tmp_path / "res", select="test")
    assert v.autorec and v.autorec.params["lr"] == 0.01 and "optimistic" in v.selection


def test_refit_comparison_shown_and_selectable(tmp_path):
    raw = tmp_path / "raw"
    write_runs(raw, series("i-autorec", 0.880, params={"based": "item"}, seed=1, refit_shift=-0.004))
    write_runs(raw, series("als", 0.900, seed=3, refit_shift=-0.030))  # refit helps MF far more
    _, (v,) = verify.verify(raw, write=False)
    assert v.compare == "selection" and v.winner == "autorec" and v.refit_stats is not None
    d = [a - b for p in v.pairs if (a := p.autorec_refit_test_rmse) is not None and (b := p.mf_refit_test_rmse)]
    assert len(d) == 10 and v.refit_stats.mean_diff == pytest.approx(float(np.mean(d)))
    assert any(n.startswith("The refit (train + validation) comparison") for n in v.notes)
    _, (r,) = verify.verify(raw, write=False, compare="refit")
    assert r.decisive is r.refit_stats and r.winner == "mf" and "refit test RMSE" in r.sentence
    # without refit results, compare=refit cannot decide
    plain = tmp_path / "plain"
    write_runs(plain, series("i-autorec", 0.880, params={"based": "item"}, seed=1))
    write_runs(plain, series("als", 0.900, seed=3))
    code, (e,) = verify.verify(plain, write=False, compare="refit")
    assert code == 2 and e.error and "refitted" in e.error


def test_errors_exit_2(tmp_path, capsys):
    raw = tmp_path / "raw"
    four = SPLITS[:4]
    write_runs(raw, series("i-autorec", 0.85, params={"based": "item"}, splits=four))
    write_runs(raw, series("als", 0.95, splits=four))
    code, (v,) = verify.verify(raw, out_dir=tmp_path / "res")
    assert code == 2 and v.error and "only 4 split instance(s)" in v.error
    assert json.loads((tmp_path / "res" / "verdicts" / "ml-100k.json").read_text())["exit_code"] == 2
    assert cli(["verify", "--raw", str(raw), "--out", str(tmp_path / "res")]) == 2
    assert "needs >= 5" in capsys.readouterr().err
    # a missing side, a missing dataset, an empty folder
    only = tmp_path / "only"
    write_runs(only, series("i-autorec", 0.85, params={"based": "item"}))
    code, (v,) = verify.verify(only, write=False)
    assert code == 2 and v.error and "no matrix-factorisation results" in v.error
    novalid = tmp_path / "novalid"
    write_runs(novalid, series("i-autorec", 0.85, params={"based": "item"}))
    als = series("als", 0.95)
    als[3] = dataclasses.replace(als[3], metrics=dataclasses.replace(als[3].metrics, valid_rmse=None))
    write_runs(novalid, als)
    code, (v,) = verify.verify(novalid, write=False)
    assert code == 2 and v.error and "1 configuration(s) have runs without one (als (numpy)" in v.error
    code, (v,) = verify.verify(only, "ml-1m", write=False)
    assert code == 2 and v.error and "no successful results for dataset 'ml-1m'" in v.error
    (tmp_path / "empty").mkdir()
    assert verify.verify(tmp_path / "empty", write=False) == (2, [])
    with pytest.raises(DataError, match="raw folder .*none does not exist"):
        verify.verify(tmp_path / "none", write=False)  # a mistyped --raw is no empty folder
    # one undecidable dataset makes the whole answer undecided
    write_runs(only, series("als", 0.95))
    write_runs(only, series("i-autorec", 0.85, params={"based": "item"}, dataset="ml-1m", splits=four))
    code, results = verify.verify(only, write=False)
    assert code == 2 and [r.exit_code for r in results] == [0, 2]
    assert results[0].holm_family == ("ml-100k",)


def test_mismatched_split_hash_is_refused_naming_the_file(tmp_path):
    raw = tmp_path / "raw"
    write_runs(raw, series("i-autorec", 0.85, params={"based": "item"}))
    mf = series("als", 0.95)
    mf[2] = make_run(split=SPLITS[2][0], seed=SPLITS[2][1], model="als", test_rmse=0.95, split_sha256="1" * 64)
    (victim, *_) = write_runs(raw, mf[2:3])
    write_runs(raw, mf[:2] + mf[3:])
    code, (v,) = verify.verify(raw, write=False)
    assert code == 2 and v.error and victim.name in v.error and "does not match" in v.error


def test_paired_stats_numbers():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 2.4, 3.6, 4.4, 5.5]
    st = verify.paired_stats(a, b, test_fraction=0.1)
    d = np.array([-0.5, -0.4, -0.6, -0.4, -0.5])
    half = 2.7764451051977987 * d.std(ddof=1) / math.sqrt(5)
    assert st.mean_diff == pytest.approx(-0.48) and st.sd_diff == pytest.approx(d.std(ddof=1))
    assert (st.ci_low, st.ci_high) == pytest.approx((-0.48 - half, -0.48 + half))
    t = -0.48 / (d.std(ddof=1) / math.sqrt(5))
    assert st.t_statistic == pytest.approx(t) and st.t_pvalue == pytest.approx(2 * stats.t.sf(abs(t), 4))
    assert st.wilcoxon_pvalue == pytest.approx(0.0625)  # the smallest two-sided p with 5 pairs
    nb = -0.48 / math.sqrt((1 / 5 + 0.1 / 0.9) * d.var(ddof=1))
    assert st.nb_t == pytest.approx(nb) and st.nb_pvalue == pytest.approx(2 * stats.t.sf(abs(nb), 4))
    same = verify.paired_stats([1.0, 2.0], [1.0, 2.0])
    assert same.t_pvalue == 1.0 and same.wilcoxon_pvalue is None and same.nb_pvalue is None


def test_configurations_with_too_few_splits_are_passed_over(tmp_path):
    """A 3-seed ablation with a better validation RMSE cannot be paired 5 times: the choice skips it
    (and says so) instead of failing on it."""
    raw = tmp_path / "raw"
    write_runs(raw, series("i-autorec", 0.870, params={"based": "item", "hidden": [500]}, seed=1))
    write_runs(raw, series("i-autorec", 0.850, params={"based": "item", "hidden": [400]}, seed=2, splits=SPLITS[:3]))
    write_runs(raw, series("als", 0.905, seed=3))
    code, (v,) = verify.verify(raw, write=False)
    assert code == 0 and v.autorec and v.autorec.params["hidden"] == [500] and v.stats and v.stats.n_pairs == 10
    assert any("fewer than 5 split instances that both families ran: 1 AutoRec and 0 MF" in n for n in v.notes)


def test_configurations_are_chosen_on_the_splits_all_of_them_ran_on(tmp_path):
    """MF config B is worse than A by validation on every split the comparison uses; B also ran 5 more
    seeds (which nobody else ran) with a lower validation RMSE.  Those seeds must not make B the best MF:
    the choice, and so the verdict, was flipped by them."""
    raw = tmp_path / "raw"
    five = [("random:test_ratio=0.1", s) for s in range(5)]
    extra = [("random:test_ratio=0.1", s) for s in range(5, 10)]
    write_runs(raw, series("i-autorec", 0.870, params={"based": "item"}, seed=1, splits=five))
    a, b = {"factors": 10}, {"factors": 45}
    write_runs(raw, series("als", 0.880, params=a, noise=0, splits=five, valid_offset=0.010))
    write_runs(raw, series("als", 0.860, params=b, noise=0, splits=five, valid_offset=0.032))
    write_runs(raw, series("als", 0.860, params=b, noise=0, splits=extra, valid_offset=-0.03))
    code, (v,) = verify.verify(raw, write=False)
    assert v.mf and v.mf.params == a and v.mf.n_runs == 5 and v.mf.valid_rmse_mean == pytest.approx(0.890)
    assert code == 0 and v.winner == "autorec" and v.stats and v.stats.n_pairs == 5
    # AutoRec on the extra seeds too: still chosen on the seeds every MF candidate ran (A's five)
    write_runs(raw, series("i-autorec", 0.870, params={"based": "item"}, seed=5, splits=extra))
    code, (v,) = verify.verify(raw, write=False)
    assert v.mf and v.mf.params == a and code == 0 and v.stats and v.stats.n_pairs == 5
    # a third candidate on the extra seeds only: the candidates share no split, and choosing between
    # them would compare means over different splits
    write_runs(raw, series("als", 0.870, params={"factors": 20}, noise=0, splits=extra))
    code, (v,) = verify.verify(raw, write=False)
    assert (
        code == 2
        and v.error
        and v.error.startswith(
            "the 3 matrix-factorisation configurations with >= 5 split instances share only 0 of them "
            "(split(s) random:test_ratio=0.1): configurations are chosen on the same splits"
        )
    )


def test_no_split_with_both_families_is_named(tmp_path):
    raw = tmp_path / "raw"
    write_runs(raw, series("i-autorec", 0.870, params={"based": "item"}, seed=1, splits=SPLITS[:5]))
    write_runs(raw, series("als", 0.905, seed=3, splits=SPLITS[5:]))
    code, (v,) = verify.verify(raw, write=False)
    assert code == 2 and v.error == (
        "no split instance has both an AutoRec and an MF run (AutoRec ran on random:test_ratio=0.1, MF on "
        "canonical:u1-u5): run both on the same splits"
    )


def test_verdict_files_are_a_pure_function_and_stale_ones_go(tmp_path):
    raw = tmp_path / "raw"
    write_runs(raw, series("i-autorec", 0.870, params={"based": "item"}, seed=1))
    write_runs(raw, series("als", 0.905, seed=3))
    out = tmp_path / "res"
    (out / "verdicts").mkdir(parents=True)
    (out / "verdicts" / "gone-dataset.json").write_text("{}")
    verify.verify(raw, out_dir=out)
    first = (out / "verdicts" / "ml-100k.json").read_bytes()
    verify.verify(raw, out_dir=out)
    assert (out / "verdicts" / "ml-100k.json").read_bytes() == first
    assert sorted(p.name for p in (out / "verdicts").iterdir()) == ["ml-100k.json"]


def test_options_that_cannot_decide_are_refused(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_runs(raw, series("i-autorec", 0.870, params={"based": "item"}, seed=1))
    write_runs(raw, series("als", 0.905, seed=3))
    for options, problem in (
        ({"alpha": 2.0}, "alpha=2.0 must be a significance level"),
        ({"alpha": float("nan")}, "alpha=nan"),
        ({"min_pairs": 0}, "min_pairs=0 must be an integer of at least 2"),
        ({"min_pairs": 1}, "min_pairs=1"),
    ):
        with pytest.raises(verify.VerifyError, match=problem):
            verify.verify(raw, write=False, **options)
    assert cli(["verify", "--raw", str(raw), "--out", str(tmp_path / "res"), "--alpha", "2"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_verify_of_one_split_group_leaves_the_other_verdicts(tmp_path):
    raw = tmp_path / "raw"
    write_runs(raw, series("i-autorec", 0.870, params={"based": "item"}, seed=1))
    write_runs(raw, series("als", 0.905, seed=3))
    write_runs(raw, series("als", 0.905, seed=3, dataset="ml-1m"))
    write_runs(raw, series("i-autorec", 0.870, params={"based": "item"}, seed=1, dataset="ml-1m"))
    out = tmp_path / "res"
    verify.verify(raw, out_dir=out)
    before = sorted(p.name for p in (out / "verdicts").iterdir())
    assert before == ["ml-100k.json", "ml-1m.json"]
    verify.verify(raw, out_dir=out, split="kfold:k=5")  # no run of that group: nothing to decide
    assert sorted(p.name for p in (out / "verdicts").iterdir()) == before


def test_two_versions_of_one_run_are_refused_naming_both_files(tmp_path):
    raw = tmp_path / "raw"
    write_runs(raw, series("i-autorec", 0.870, params={"based": "item"}, seed=1))
    mf = series("als", 0.905, seed=3)
    write_runs(raw, mf)
    old = mf[1]
    ident = dataclasses.replace(old.identity, model_version=0)
    (stale,) = write_runs(raw, [dataclasses.replace(old, identity=ident, run_id=ident.run_id)])
    with pytest.raises(DataError) as exc:
        verify.verify(raw, write=False)
    assert stale.name in str(exc.value) and "(version 0)" in str(exc.value) and "(version 1)" in str(exc.value)
