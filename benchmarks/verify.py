"""Does the best AutoRec beat the best tuned matrix factorisation?  A paired test on the same splits.

:func:`verify` reads the raw files of one dataset and:

1. chooses the best AutoRec configuration (family ``autorec``: any name, backend, device set and
   parameters) and the best MF configuration, among those run on at least ``min_pairs`` split
   instances (a configuration run on fewer, e.g. a 3-seed ablation, can never be paired enough;
   only when none has that many are all considered, so the error names the shortfall), (family ``mf``: als, biased-mf, d2l-mf,
   surprise-svd, surprise-svdpp), **by the lowest mean validation RMSE** (``select="valid"``,
   the default).  The validation part is carved out of each train part; the test part never takes
   part in the choice, so the comparison is not biased by picking winners on the numbers being
   compared.  ``select="test"`` picks by mean test RMSE instead (optimistic for both; offered for
   comparison with papers that do so, and labelled so in the verdict);
2. pairs the two on the split instances (split spec and seed) both ran on, requiring the same
   ``split_sha256`` (the same train/valid/test ratings), at least ``min_pairs`` (5) pairs;
3. reports the mean test-RMSE difference (AutoRec - MF; negative = AutoRec better) with its 95%
   t-interval, the paired t-test (``scipy.stats.ttest_rel``, two-sided), the Wilcoxon signed-rank
   test (``scipy.stats.wilcoxon``, two-sided; with 5 pairs its smallest possible p is 0.0625, so it
   alone can never reach 0.05 there) and, for information, the Nadeau-Bengio corrected resampled
   t-test (random resampled splits share training data, which makes the plain paired t-test
   optimistic);
4. exits 0 when AutoRec is better (mean difference < 0) with paired t-test p < ``alpha``, 1 when it
   is not, 2 on an error (no results, too few pairs, mismatched splits), and writes the verdict to
   ``results/verdict.json`` (no timestamp: a pure function of the raw files; it lists the raw
   files it read with their SHA-256 so ``report`` can tell a stale verdict).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from autorec.errors import AutoRecBenchError
from benchmarks import harness, report

SELECTIONS = ("valid", "test")


class VerifyError(AutoRecBenchError):
    """verify cannot decide: results missing, too few pairs, splits that do not match."""


def _describe(recs: list[dict]) -> str:
    r = recs[0]
    name = report._name(r)
    p = r.get("params", {})
    bits = [f"{name} ({r['backend']}"]
    if p.get("path"):
        bits.append(f", {p['path']}")
    if (r.get("devices") or ["cpu"]) != ["cpu"]:
        bits.append(f", {','.join(r['devices'])}")
    bits.append(")")
    return "".join(bits)


def _score(recs: list[dict], select: str) -> float | None:
    key = "valid_rmse" if select == "valid" else "test_rmse"
    vals = [r["metrics"].get(key) for r in recs]
    if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in vals):
        return None
    return math.fsum(vals) / len(vals)


def choose(records: list[dict], family: str, select: str, min_runs: int = 1
           ) -> tuple[tuple, list[dict], float, int]:
    """(variant key, its runs, its mean score, how many variants were passed over for having fewer
    than ``min_runs`` runs)."""
    variants: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if (r.get("family") or "") == family:
            variants[report.variant_key(r)].append(r)
    enough = {k: v for k, v in variants.items() if len(v) >= min_runs}
    passed_over = len(variants) - len(enough) if enough else 0
    scored = []
    for key, recs in (enough or variants).items():
        s = _score(recs, select)
        if s is not None:
            scored.append((s, _describe(recs), harness._canonical_json(list(key)), key, recs))
    if not scored:
        what = "AutoRec" if family == "autorec" else "matrix-factorisation"
        raise VerifyError(f"no {what} results with a {select} RMSE on this dataset; run the sweep first "
                          "(e.g. `autorec-bench sweep benchmarks/specs/ml100k.toml`)")
    scored.sort(key=lambda t: (t[0], t[1], t[2]))
    s, _, _, key, recs = scored[0]
    return key, recs, s, passed_over


def paired_stats(a: list[float], b: list[float], *, test_fraction: float | None = None) -> dict:
    """Statistics of the paired differences ``a - b``."""
    from scipy import stats
    n = len(a)
    d = [x - y for x, y in zip(a, b)]
    mean = math.fsum(d) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else float("nan")
    tcrit = float(stats.t.ppf(0.975, n - 1))
    half = tcrit * sd / math.sqrt(n)
    out: dict[str, Any] = {"n_pairs": n, "mean_diff": mean, "sd_diff": sd, "ci_low": mean - half,
                           "ci_high": mean + half, "autorec_test_mean": math.fsum(a) / n,
                           "mf_test_mean": math.fsum(b) / n}
    if sd == 0:
        out["t_statistic"] = None
        out["t_pvalue"] = 1.0 if mean == 0 else 0.0
        out["t_note"] = "all differences are identical (zero variance): p set to 0 (or 1 when they are 0)"
    else:
        t = stats.ttest_rel(a, b)
        out["t_statistic"], out["t_pvalue"] = float(t.statistic), float(t.pvalue)
    if all(x == 0 for x in d):
        out["wilcoxon_statistic"], out["wilcoxon_pvalue"] = None, None
        out["wilcoxon_note"] = "every difference is zero: the signed-rank test is undefined"
    else:
        w = stats.wilcoxon(a, b)
        out["wilcoxon_statistic"], out["wilcoxon_pvalue"] = float(w.statistic), float(w.pvalue)
    if test_fraction is not None and sd > 0 and 0 < test_fraction < 1:
        # Nadeau & Bengio (2003): var * (1/n + n_test/n_train) for resampled train/test splits
        corr = 1.0 / n + test_fraction / (1.0 - test_fraction)
        t_c = mean / math.sqrt(corr * sd ** 2)
        out["nb_corrected_t"] = t_c
        out["nb_corrected_pvalue"] = float(2 * stats.t.sf(abs(t_c), n - 1))
    return out


def verify(raw_dir=harness.DEFAULT_RAW, dataset: str = "ml-100k", *, out_dir="results", select: str = "valid",
           split: str | None = None, min_pairs: int = report.MIN_REPLICATES, alpha: float = 0.05,
           write: bool = True) -> tuple[int, dict]:
    """Returns (exit code, verdict).  Writes ``out_dir/verdict.json`` when ``write``."""
    verdict: dict[str, Any] = {"dataset": dataset, "select": select, "alpha": alpha, "min_pairs": min_pairs,
                               "split_group": split, "selection": _selection_text(select)}
    try:
        if select not in SELECTIONS:
            raise VerifyError(f"select={select!r} must be one of {list(SELECTIONS)}")
        raw = report.load_records(raw_dir)
        recs = [r for r in raw.ok if r["dataset"] == dataset]
        if split is not None:
            recs = [r for r in recs if report.split_group(r["split"]["spec"]) == split or r["split"]["spec"] == split]
        verdict["inputs"] = {r["_file"]: raw.files[r["_file"]] for r in sorted(recs, key=lambda r: r["_file"])}
        if not recs:
            groups = sorted({r["dataset"] for r in raw.ok})
            raise VerifyError(f"no successful results for dataset {dataset!r}"
                              + (f" and split {split!r}" if split else "") + f" in {raw_dir}"
                              + (f" (datasets there: {groups})" if groups else ""))
        report.check_splits(recs)
        akey, arecs, ascore, a_over = choose(recs, "autorec", select, min_pairs)
        mkey, mrecs, mscore, m_over = choose(recs, "mf", select, min_pairs)
        a_by = {(r["split"]["spec"], r["seed"]): r for r in arecs}
        m_by = {(r["split"]["spec"], r["seed"]): r for r in mrecs}
        common = sorted(set(a_by) & set(m_by))
        for k in common:
            if a_by[k]["split_sha256"] != m_by[k]["split_sha256"]:
                raise VerifyError(f"split {k[0]} seed {k[1]}: {a_by[k]['_file']} and {m_by[k]['_file']} record "
                                  "different split_sha256 values; they were not trained on the same split")
        verdict["autorec"] = _side(arecs, akey, select)
        verdict["mf"] = _side(mrecs, mkey, select)
        verdict["pairs"] = [{"split": k[0], "seed": k[1], "autorec_test_rmse": a_by[k]["metrics"]["test_rmse"],
                             "mf_test_rmse": m_by[k]["metrics"]["test_rmse"], "autorec_file": a_by[k]["_file"],
                             "mf_file": m_by[k]["_file"]} for k in common]
        if len(common) < min_pairs:
            raise VerifyError(f"only {len(common)} split instance(s) have both {verdict['autorec']['name']} and "
                              f"{verdict['mf']['name']}; a paired comparison needs >= {min_pairs} (run more seeds "
                              "or folds)")
        fracs = {a_by[k]["n_test"] / max(1, a_by[k]["n_test"] + a_by[k]["n_train"] + a_by[k]["n_valid"])
                 for k in common}
        frac = sum(fracs) / len(fracs)
        st = paired_stats([a_by[k]["metrics"]["test_rmse"] for k in common],
                          [m_by[k]["metrics"]["test_rmse"] for k in common], test_fraction=frac)
        verdict["stats"] = st
        better = st["mean_diff"] < 0 and st["t_pvalue"] < alpha
        code = 0 if better else 1
        verdict["autorec_better"] = bool(better)
        verdict["exit_code"] = code
        verdict["sentence"] = _sentence(verdict, st, better, alpha)
        notes = []
        if st.get("wilcoxon_pvalue") is not None and st["n_pairs"] <= 5:
            notes.append(f"With {st['n_pairs']} pairs the two-sided Wilcoxon signed-rank test cannot go below "
                         f"p = {2 / 2 ** st['n_pairs']:.4f}; the decision rests on the paired t-test.")
        if "nb_corrected_pvalue" in st:
            notes.append(f"The pairs share training data (resampled splits / folds), which makes the plain paired "
                         f"t-test optimistic; the Nadeau-Bengio corrected resampled t-test gives p = "
                         f"{st['nb_corrected_pvalue']:.3g} (test share {frac:.3f}).")
        if a_over or m_over:
            notes.append(f"Passed over in the choice for having fewer than {min_pairs} split instances: "
                         f"{a_over} AutoRec and {m_over} MF configuration(s).")
        verdict["notes"] = notes
    except AutoRecBenchError as exc:
        code = 2
        verdict["exit_code"] = 2
        verdict["error"] = str(exc)
        verdict["sentence"] = f"verify could not decide on {dataset}: {exc}"
    if write:
        harness.atomic_write_json(Path(out_dir) / "verdict.json", verdict)
    return code, verdict


def _side(recs: list[dict], key: tuple, select: str) -> dict:
    r = recs[0]
    return {"name": _describe(recs), "model": r["model"], "backend": r["backend"], "devices": r.get("devices"),
            "params": {k: v for k, v in r.get("params", {}).items() if k != "seed"},
            "cold_start_policy": r.get("cold_start_policy"), "n_runs": len(recs),
            "valid_rmse_mean": _score(recs, "valid"), "test_rmse_mean": _score(recs, "test"),
            "selected_by": f"mean {select} RMSE"}


def _selection_text(select: str) -> str:
    if select == "valid":
        return ("best = lowest mean VALIDATION RMSE over each configuration's runs (the validation part is "
                "carved out of each train part; test ratings take no part in the choice), then compared on "
                "test RMSE over the splits both ran on.")
    return ("best = lowest mean TEST RMSE (optimistic: the winner is picked on the numbers being compared; "
            "use select=valid for an unbiased choice).")


def _sentence(v: dict, st: dict, better: bool, alpha: float) -> str:
    a, m = v["autorec"]["name"], v["mf"]["name"]
    head = (f"On {v['dataset']}, over {st['n_pairs']} paired splits, {a} has mean test RMSE "
            f"{st['autorec_test_mean']:.4f} vs {m} {st['mf_test_mean']:.4f}: difference {st['mean_diff']:+.4f} "
            f"(95% CI [{st['ci_low']:+.4f}, {st['ci_high']:+.4f}]), paired t-test p = {st['t_pvalue']:.3g}"
            + (f", Wilcoxon p = {st['wilcoxon_pvalue']:.3g}" if st.get("wilcoxon_pvalue") is not None else "") + ". ")
    if better:
        return head + f"AutoRec is better than the best tuned MF (p < {alpha:g})."
    if st["mean_diff"] < 0:
        return head + f"AutoRec is ahead on average, but not significantly (p >= {alpha:g}): not shown better."
    return head + "AutoRec is NOT better than the best tuned MF" + (
        f" (MF is significantly better, p < {alpha:g})." if st["t_pvalue"] < alpha else ".")
