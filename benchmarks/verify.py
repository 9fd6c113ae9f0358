"""The verdict: does the best AutoRec beat the best matrix factorisation?  Per dataset, paired on the
same splits, Holm-corrected across datasets.

For every dataset with successful records (or the one asked for):

1. **Selection on validation.**  The best AutoRec configuration (family ``autorec``: any name,
   backend, devices, parameters) and the best MF configuration (family ``mf``: every matrix
   factorisation, als, biased-mf, d2l-mf, surprise-svd(pp), the Bayesian ones included) are the
   ones with the lowest mean **validation** RMSE.  Test ratings take no part in the choice.  It reads
   only split instances (spec and seed) where both families ran (:func:`pairable`), and scores every
   candidate on the instances all candidates share (:func:`choose`), so that no configuration is ranked
   on splits the comparison never uses.  Configurations run on fewer than ``min_pairs`` split instances
   (e.g. a 3-seed ablation) are passed over when any has that many.
   ``select="test"`` chooses by mean test RMSE instead (optimistic; labelled so).
2. **Pairing.**  The two are paired on the split instances (spec and seed) both ran on, which must
   have the same split SHA-256 (the same train / validation / test ratings); at least ``min_pairs``.
3. **Statistics** of the paired differences AutoRec - MF (negative: AutoRec better): mean with its 95%
   t-interval, the paired t-test (two-sided), the Wilcoxon signed-rank test, and the Nadeau-Bengio
   corrected resampled t-test (resampled splits share training data, which makes the plain paired
   t-test optimistic).  They are computed on the selection-time test RMSE (trained on train,
   early-stopped on validation) by default; when both sides were also refitted on train +
   validation (``RunRecord.refit``), the refit comparison is computed as well, and
   ``compare="refit"`` makes it the one the decision and the sentence use.
4. **Holm correction** of the paired t-test p-values across every dataset of the raw folder that
   could be decided (asking for one dataset does not change the family of tests), then the decision
   per dataset: AutoRec is better when its mean difference is negative with Holm-adjusted
   p < ``alpha``; the best MF is better when positive with Holm-adjusted p < ``alpha``; otherwise
   neither is shown better.  A sentence says who wins, by how much and with what p-value.

Exit status (:func:`exit_code`): 0 only when AutoRec is significantly better on every dataset
verified, 2 when any of them could not be decided (too few pairs, a missing side, mismatched
splits), 1 otherwise.  Each dataset's verdict is written to ``<out>/verdicts/<dataset>.json``: a
pure function of the raw records (no timestamp).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autorec.atomic import atomic_write
from autorec.errors import AutoRecBenchError
from autorec.jsonio import canonical_json, dumps
from benchmarks.report.inputs import RawRun, check_splits, load_raw
from benchmarks.report.tables import MIN_REPLICATES, config_key, describe, mean, slug, split_group

SELECTIONS = ("valid", "test")
#: what the secondary tests mean (said once, by ``verify`` and by the report)
TESTS_TEXT = (
    "The decision rests on the paired t-test (Holm-adjusted). The Wilcoxon signed-rank test is shown beside it "
    "(with 5 pairs its two-sided p cannot go below 0.0625), and the Nadeau-Bengio corrected resampled t-test: the "
    "pairs share training data (resampled splits / folds), which makes the plain paired t-test optimistic."
)
COMPARISONS = ("selection", "refit")
VERDICTS = "verdicts"


class VerifyError(AutoRecBenchError):
    """verify cannot decide: results missing, too few pairs, splits that do not match."""


# =============================================================================== statistics
@dataclass(frozen=True)
class PairedStats:
    """Statistics of the paired differences AutoRec - MF over ``n_pairs`` split instances."""

    n_pairs: int
    autorec_mean: float
    mf_mean: float
    mean_diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    t_statistic: float | None
    t_pvalue: float
    wilcoxon_statistic: float | None
    wilcoxon_pvalue: float | None
    nb_t: float | None = None
    nb_pvalue: float | None = None
    test_fraction: float | None = None
    note: str = ""


def paired_stats(a: Sequence[float], b: Sequence[float], *, test_fraction: float | None = None) -> PairedStats:
    """Statistics of ``a - b`` (``test_fraction``: the test share of the ratings, for Nadeau-Bengio)."""
    from scipy import stats

    n = len(a)
    d = [x - y for x, y in zip(a, b)]
    m = math.fsum(d) / n
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in d) / (n - 1)) if n > 1 else float("nan")
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    notes = []
    if sd == 0:
        t_stat, t_p = None, (1.0 if m == 0 else 0.0)
        notes.append("all differences are identical (zero variance): the t-test p is set to 0 (1 when they are 0)")
    else:
        t = stats.ttest_rel(a, b)
        t_stat, t_p = float(t.statistic), float(t.pvalue)
    if all(x == 0 for x in d):
        w_stat = w_p = None
        notes.append("every difference is zero: the signed-rank test is undefined")
    else:
        w: Any = stats.wilcoxon(a, b)
        w_stat, w_p = float(w.statistic), float(w.pvalue)
    nb_t = nb_p = None
    if test_fraction is not None and sd > 0 and 0 < test_fraction < 1:
        # Nadeau & Bengio (2003): var * (1/n + n_test/n_train) for resampled train/test splits
        nb_t = m / math.sqrt((1.0 / n + test_fraction / (1.0 - test_fraction)) * sd**2)
        nb_p = float(2 * stats.t.sf(abs(nb_t), n - 1))
    return PairedStats(
        n,
        math.fsum(a) / n,
        math.fsum(b) / n,
        m,
        sd,
        m - half,
        m + half,
        t_stat,
        t_p,
        w_stat,
        w_p,
        nb_t,
        nb_p,
        test_fraction,
        "; ".join(notes),
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given."""
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


# =============================================================================== the verdict
@dataclass(frozen=True)
class Side:
    """The configuration chosen for one family."""

    name: str
    model: str
    backend: str
    devices: tuple[str, ...]
    params: dict[str, Any]
    cold_start_policy: str
    n_runs: int
    valid_rmse_mean: float | None
    test_rmse_mean: float | None
    selected_by: str


@dataclass(frozen=True)
class Pair:
    """One split instance both sides ran on, with their test RMSEs and raw files."""

    split: str
    seed: int
    split_sha256: str | None
    autorec_test_rmse: float
    mf_test_rmse: float
    autorec_refit_test_rmse: float | None
    mf_refit_test_rmse: float | None
    autorec_file: str
    mf_file: str


@dataclass(frozen=True)
class Verdict:
    """One dataset's verdict (written as ``verdicts/<dataset>.json``); ``error`` set when it could
    not be decided, then ``exit_code`` is 2 and the statistics are absent."""

    dataset: str
    select: str
    compare: str
    alpha: float
    min_pairs: int
    split_group: str | None
    selection: str
    autorec: Side | None = None
    mf: Side | None = None
    pairs: tuple[Pair, ...] = ()
    stats: PairedStats | None = None  # selection-time test RMSE
    refit_stats: PairedStats | None = None  # refit test RMSE, when both sides were refitted
    holm_pvalue: float | None = None
    holm_family: tuple[str, ...] = ()
    winner: str = ""  # "autorec" | "mf" | "" (neither significantly better; or an error)
    exit_code: int = 2
    sentence: str = ""
    notes: tuple[str, ...] = ()
    error: str | None = None

    @property
    def decisive(self) -> PairedStats | None:
        """The statistics the decision uses (``compare``)."""
        return self.refit_stats if self.compare == "refit" else self.stats


def _score(runs: list[RawRun], select: str) -> float | None:
    vals = [getattr(r.rec.metrics, "valid_rmse" if select == "valid" else "test_rmse") for r in runs]
    if any(v is None or not math.isfinite(v) for v in vals):
        return None
    return math.fsum(vals) / len(vals)


def _instance(run: RawRun) -> tuple[str, int]:
    return (run.rec.split.spec, run.rec.split.seed)


def pairable(runs: list[RawRun]) -> list[RawRun]:
    """The AutoRec and MF runs on split instances where both families have a run: the only ones a
    comparison can use, so the only ones the choice reads (a configuration's extra seeds, which no
    configuration of the other family ran, do not rank it)."""
    fams: dict[tuple[str, int], set[str]] = defaultdict(set)
    for r in runs:
        fams[_instance(r)].add(r.rec.family)
    return [r for r in runs if r.rec.family in ("autorec", "mf") and {"autorec", "mf"} <= fams[_instance(r)]]


def choose(runs: list[RawRun], family: str, select: str, min_runs: int) -> tuple[list[RawRun], list[RawRun], int]:
    """The best configuration of ``family`` (lowest mean ``select`` RMSE): its runs, the runs its
    score was computed on, and how many configurations were passed over for having fewer than
    ``min_runs`` runs.  Every candidate is scored on the same split instances (those all of them ran
    on): a mean over other seeds or folds is another number, and would rank configurations on the
    luck of their splits.  :class:`VerifyError` when the candidates share fewer than ``min_runs``."""
    what = "AutoRec" if family == "autorec" else "matrix-factorisation"
    configs: dict[tuple, list[RawRun]] = defaultdict(list)
    for r in runs:
        if r.rec.family == family:
            configs[config_key(r)].append(r)
    enough = [k for k, v in configs.items() if len(v) >= min_runs]
    candidates = enough or list(configs)
    shared = set.intersection(*({_instance(r) for r in configs[k]} for k in candidates)) if candidates else set()
    if len(enough) > 1 and len(shared) < min_runs:
        kinds = sorted({split_group(r.rec.split.spec) for k in enough for r in configs[k]})
        each = "; ".join(
            f"{describe(configs[k][0])} {canonical_json(configs[k][0].rec.identity.params)}: "
            f"seeds {sorted({r.rec.split.seed for r in configs[k]})}"
            for k in enough[:4]
        )
        raise VerifyError(
            f"the {len(enough)} {what} configurations with >= {min_runs} split instances share only "
            f"{len(shared)} of them (split(s) {', '.join(kinds)}): configurations are chosen on the same splits; "
            f"run them on the same seeds / folds, or verify one split with --split ({each}"
            + ("; ..." if len(enough) > 4 else "")
            + ")"
        )
    scoring = {k: [r for r in configs[k] if _instance(r) in shared] or configs[k] for k in candidates}
    scored = [
        (sc, describe(v[0]), canonical_json(k), k) for k, v in scoring.items() if (sc := _score(v, select)) is not None
    ]
    best = min(scored, key=lambda t: t[:3], default=None)  # the candidates are scored on the same instances
    if best is None:
        unscored = sorted({describe(v[0]) for v in scoring.values() if _score(v, select) is None})
        why = (
            f"{len(unscored)} configuration(s) have runs without one ({', '.join(unscored[:3])}"
            + (", ..." if len(unscored) > 3 else "")
            + "; a run with valid_ratio = 0 has no validation part)"
            if unscored
            else "run the sweep first (e.g. `autorec-bench sweep benchmarks/specs/ml100k.toml`)"
        )
        raise VerifyError(f"no {what} results with a {select} RMSE; {why}")
    passed_over = len(configs) - len(enough) if enough else 0
    return configs[best[3]], scoring[best[3]], passed_over


def _side(runs: list[RawRun], select: str) -> Side:
    i = runs[0].rec.identity
    return Side(
        describe(runs[0]),
        i.model,
        i.backend,
        i.devices,
        {k: v for k, v in i.params.items() if k != "seed"},
        i.cold_start_policy,
        len(runs),
        _score(runs, "valid"),
        _score(runs, "test"),
        f"mean {select} RMSE",
    )


def _selection_text(select: str) -> str:
    if select == "valid":
        return (
            "best = lowest mean VALIDATION RMSE over the split instances every candidate ran on (the validation "
            "part is carved out of each train part; test ratings take no part in the choice), then compared on "
            "test RMSE over the splits both ran on."
        )
    return (
        "best = lowest mean TEST RMSE (optimistic: the winner is picked on the numbers being compared; use "
        "select=valid for an unbiased choice)."
    )


def _pairs(arun: list[RawRun], mrun: list[RawRun]) -> list[Pair]:
    a_by = {_instance(r): r for r in arun}
    m_by = {_instance(r): r for r in mrun}
    out = []
    for key in sorted(set(a_by) & set(m_by)):
        a, m = a_by[key], m_by[key]
        if a.rec.split.sha256 != m.rec.split.sha256:
            raise VerifyError(
                f"split {key[0]} seed {key[1]}: {a.file} and {m.file} record different split SHA-256 "
                "values; they were not trained on the same split"
            )
        assert a.rec.metrics and m.rec.metrics  # ok records carry metrics (inputs.load_raw)
        out.append(
            Pair(
                key[0],
                key[1],
                a.rec.split.sha256,
                a.rec.metrics.test_rmse,
                m.rec.metrics.test_rmse,
                a.rec.refit.test_rmse if a.rec.refit else None,
                m.rec.refit.test_rmse if m.rec.refit else None,
                a.file,
                m.file,
            )
        )
    return out


def _test_fraction(runs: list[RawRun]) -> float | None:
    return mean(s.n_test / max(1, s.n_train + s.n_valid + s.n_test) for r in runs if (s := r.rec.sizes))


def _undecided(dataset: str, runs: list[RawRun], base: Verdict) -> Verdict:
    """The verdict of one dataset before the Holm correction (statistics, no decision yet); with
    ``error`` set, and as much as was found (e.g. the AutoRec side), when it cannot be decided."""
    v = base
    try:
        if not runs:
            where = f" and split {base.split_group!r}" if base.split_group else ""
            raise VerifyError(f"no successful results for dataset {dataset!r}{where}")
        check_splits(runs)
        if not all(any(r.rec.family == fam for r in runs) for fam in ("autorec", "mf")):
            for fam in ("autorec", "mf"):  # the AutoRec side when it is there, then the error naming the missing one
                v = replace(v, **{fam: _side(choose(runs, fam, base.select, base.min_pairs)[1], base.select)})
        both = pairable(runs)
        if not both:
            ran = {
                fam: ", ".join(sorted({split_group(r.rec.split.spec) for r in runs if r.rec.family == fam}))
                for fam in ("autorec", "mf")
            }
            raise VerifyError(
                f"no split instance has both an AutoRec and an MF run (AutoRec ran on {ran['autorec']}, MF on "
                f"{ran['mf']}): run both on the same splits"
            )
        arun, a_sel, a_over = choose(both, "autorec", base.select, base.min_pairs)
        v = replace(v, autorec=_side(a_sel, base.select))
        mrun, m_sel, m_over = choose(both, "mf", base.select, base.min_pairs)
        v = replace(v, mf=_side(m_sel, base.select))
        v = replace(v, pairs=tuple(_pairs(arun, mrun)))
        if len(v.pairs) < base.min_pairs:
            raise VerifyError(
                f"only {len(v.pairs)} split instance(s) have both {v.autorec and v.autorec.name} and "
                f"{v.mf and v.mf.name}; a paired comparison needs >= {base.min_pairs} (run more seeds or folds)"
            )
        v = _with_stats(v, _test_fraction(arun))
    except AutoRecBenchError as exc:
        return replace(v, error=str(exc), sentence=f"verify could not decide on {dataset}: {exc}")
    if a_over or m_over:
        v = replace(v, notes=v.notes + (
            f"Passed over in the choice for having fewer than {base.min_pairs} split instances that both families "
            "ran: "
            f"{a_over} AutoRec and {m_over} MF configuration(s).",
        ))  # fmt: skip
    return v


def _with_stats(v: Verdict, test_fraction: float | None) -> Verdict:
    """``v`` with the statistics of its pairs (selection-time, and refit when both sides have it)."""
    pairs = v.pairs
    st = paired_stats(
        [p.autorec_test_rmse for p in pairs], [p.mf_test_rmse for p in pairs], test_fraction=test_fraction
    )
    refit = None
    if all(p.autorec_refit_test_rmse is not None and p.mf_refit_test_rmse is not None for p in pairs):
        refit = paired_stats(
            [float(p.autorec_refit_test_rmse or 0) for p in pairs],
            [float(p.mf_refit_test_rmse or 0) for p in pairs],
            test_fraction=test_fraction,
        )
    elif v.compare == "refit":
        raise VerifyError("compare=refit, but not every paired run of both sides was refitted on train + validation")
    return replace(v, stats=st, refit_stats=refit, notes=(st.note,) if st.note else ())


def _decide(v: Verdict, holm_p: float, family: tuple[str, ...]) -> Verdict:
    st = v.decisive
    assert st is not None and v.autorec and v.mf
    significant = holm_p < v.alpha
    winner = ("autorec" if st.mean_diff < 0 else "mf" if st.mean_diff > 0 else "") if significant else ""
    basis = "refit test RMSE" if v.compare == "refit" else "selection-time test RMSE"
    a, m, d = v.autorec.name, v.mf.name, st.mean_diff
    lead = f"{a} and {m} tie" if d == 0 else f"{a} beats {m}" if d < 0 else f"{m} beats {a}"
    if d != 0:
        lead += f" by {abs(d):.4f}" if significant else f" by {abs(d):.4f}, not significantly"
    numbers = (
        f"mean {basis} over {st.n_pairs} paired splits: AutoRec {st.autorec_mean:.4f}, MF {st.mf_mean:.4f}; "
        f"AutoRec - MF {d:+.4f}, 95% CI [{st.ci_low:+.4f}, {st.ci_high:+.4f}]; paired t-test p = {st.t_pvalue:.3g}, "
        f"Holm-adjusted p = {holm_p:.3g} over {len(family)} dataset(s)"
    )
    tail = {
        "autorec": f"AutoRec is significantly better (p < {v.alpha:g}).",
        "mf": f"The best MF is significantly better (p < {v.alpha:g}): AutoRec is not better.",
        "": f"Neither is shown better (Holm-adjusted p >= {v.alpha:g}).",
    }[winner]
    notes = list(v.notes)
    other = v.stats if v.compare == "refit" else v.refit_stats
    if other is not None:
        what = "selection-time" if v.compare == "refit" else "refit (train + validation)"
        notes.append(
            f"The {what} comparison: {other.autorec_mean:.4f} vs {other.mf_mean:.4f}, AutoRec - MF "
            f"{other.mean_diff:+.4f}, 95% CI [{other.ci_low:+.4f}, {other.ci_high:+.4f}], paired t-test "
            f"p = {other.t_pvalue:.3g} (not Holm-adjusted)."
        )
    return replace(
        v,
        holm_pvalue=holm_p,
        holm_family=family,
        winner=winner,
        exit_code=0 if winner == "autorec" else 1,
        sentence=f"On {v.dataset}, {lead} ({numbers}). {tail}",
        notes=tuple(notes),
    )


def verdicts(
    runs: Sequence[RawRun],
    datasets: Sequence[str] | None = None,
    *,
    select: str = "valid",
    compare: str = "selection",
    split: str | None = None,
    min_pairs: int = MIN_REPLICATES,
    alpha: float = 0.05,
) -> list[Verdict]:
    """The verdict of each dataset in ``datasets`` (default: every dataset with successful runs),
    Holm-corrected across every dataset of ``runs`` that could be decided."""
    if select not in SELECTIONS:
        raise VerifyError(f"select={select!r} must be one of {list(SELECTIONS)}")
    if compare not in COMPARISONS:
        raise VerifyError(f"compare={compare!r} must be one of {list(COMPARISONS)}")
    if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 1.0):
        raise VerifyError(f"alpha={alpha!r} must be a significance level between 0 and 1 (e.g. 0.05)")
    if isinstance(min_pairs, bool) or not isinstance(min_pairs, int) or min_pairs < 2:
        raise VerifyError(f"min_pairs={min_pairs!r} must be an integer of at least 2 (a paired test needs two pairs)")
    by_dataset: dict[str, list[RawRun]] = defaultdict(list)
    for r in runs:
        if r.rec.ok and (split is None or split in (r.rec.split.spec, split_group(r.rec.split.spec))):
            by_dataset[r.rec.dataset].append(r)
    out: dict[str, Verdict] = {}
    for ds in sorted(set(by_dataset) | set(datasets or ())):
        base = Verdict(ds, select, compare, alpha, min_pairs, split, _selection_text(select))
        out[ds] = _undecided(ds, by_dataset.get(ds, []), base)
    decided = sorted(ds for ds, v in out.items() if v.error is None)
    adjusted = holm([_p(out[ds]) for ds in decided])
    for ds, p in zip(decided, adjusted):
        out[ds] = _decide(out[ds], p, tuple(decided))
    wanted = sorted(datasets) if datasets else sorted(out)
    return [out[ds] for ds in wanted]


def _p(v: Verdict) -> float:
    st = v.decisive
    assert st is not None, "a decided verdict has its statistics"
    return st.t_pvalue


def exit_code(results: Sequence[Verdict]) -> int:
    """0 when AutoRec is significantly better on every dataset, 2 when any could not be decided
    (or there is none), 1 otherwise."""
    if not results or any(v.error for v in results):
        return 2
    return 0 if all(v.winner == "autorec" for v in results) else 1


def verify(
    raw_dir: str | os.PathLike,
    dataset: str | None = None,
    *,
    out_dir: str | os.PathLike = "results",
    write: bool = True,
    **options: Any,
) -> tuple[int, list[Verdict]]:
    """Verdicts of ``dataset`` (default: every dataset of ``raw_dir``) and the exit status; writes
    ``out_dir/verdicts/<dataset>.json`` for each when ``write`` (with every dataset verified, files
    of datasets no longer there are removed)."""
    results = verdicts(load_raw(raw_dir).ok, [dataset] if dataset else None, **options)
    if write:
        folder = Path(out_dir) / VERDICTS
        names = {f"{slug(v.dataset)}.json" for v in results}
        for v in results:
            text = dumps(v).encode("utf-8")
            atomic_write(folder / f"{slug(v.dataset)}.json", lambda fh, text=text: fh.write(text))
        if dataset is None and options.get("split") is None:  # a filtered verify speaks for its part only
            for stale in sorted(folder.glob("*.json")):
                if stale.name not in names:
                    stale.unlink()
    return exit_code(results), results
