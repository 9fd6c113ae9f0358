"""The verdict section of results/README.md: one row per dataset, the sentences, the notes.

The verdicts come from :func:`benchmarks.verify.verdicts` (the one implementation of the statistics
and the decision); this module only renders them.  (``benchmarks.verify`` imports this package's
inputs and tables, so it is imported here as a module and used at call time.)
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks import verify
from benchmarks.report.tables import csv_text, md_table, num, pval

HEADER = [
    "dataset",
    "AutoRec (best by validation)",
    "best MF (by validation)",
    "pairs",
    "AutoRec",
    "MF",
    "AutoRec − MF (95% CI)",
    "paired t p",
    "Holm p",
    "Wilcoxon p",
    "Nadeau-Bengio p",
    "verdict",
]
CSV_HEADER = [
    "dataset",
    "autorec",
    "mf",
    "n_pairs",
    "compared_on",
    "autorec_mean",
    "mf_mean",
    "mean_diff",
    "ci_low",
    "ci_high",
    "t_pvalue",
    "holm_pvalue",
    "wilcoxon_pvalue",
    "nb_pvalue",
    "winner",
    "exit_code",
    "error",
]
OUTCOME = {"autorec": "**AutoRec better**", "mf": "**MF better**", "": "neither shown better"}


def _cells(v: verify.Verdict) -> list[str]:
    st = v.decisive
    if v.error or st is None or v.autorec is None or v.mf is None:
        return [v.dataset, v.autorec.name if v.autorec else "—", v.mf.name if v.mf else "—"] + ["—"] * 8 + ["undecided"]
    return [
        v.dataset,
        v.autorec.name,
        v.mf.name,
        str(st.n_pairs),
        num(st.autorec_mean),
        num(st.mf_mean),
        f"{st.mean_diff:+.4f} [{st.ci_low:+.4f}, {st.ci_high:+.4f}]",
        pval(st.t_pvalue),
        pval(v.holm_pvalue),
        pval(st.wilcoxon_pvalue),
        pval(st.nb_pvalue),
        OUTCOME[v.winner],
    ]


def _csv(v: verify.Verdict) -> list[object]:
    st = v.decisive
    if st is None:
        return (
            [v.dataset, v.autorec.name if v.autorec else None, v.mf.name if v.mf else None]
            + [None] * 11
            + ["", v.exit_code, v.error]
        )
    return [
        v.dataset,
        v.autorec.name if v.autorec else None,
        v.mf.name if v.mf else None,
        st.n_pairs,
        v.compare,
        st.autorec_mean,
        st.mf_mean,
        st.mean_diff,
        st.ci_low,
        st.ci_high,
        st.t_pvalue,
        v.holm_pvalue,
        st.wilcoxon_pvalue,
        st.nb_pvalue,
        v.winner,
        v.exit_code,
        v.error,
    ]


def render(results: Sequence[verify.Verdict]) -> tuple[list[str], str | None]:
    """The markdown of the verdict section (before its plot) and its CSV (``None`` without results)."""
    if not results:
        return ["No results yet: run a sweep (e.g. `autorec-bench sweep benchmarks/specs/ml100k.toml`)."], None
    code = verify.exit_code(results)
    md = [
        "Does the best AutoRec beat the best matrix factorisation (every MF family, Bayesian included)? Per dataset, "
        "both sides are chosen by mean **validation** RMSE and compared on the same splits (paired); p-values are "
        "Holm-corrected across datasets. The same as `autorec-bench verify` (exit status "
        f"{code} on these records: 0 only when AutoRec is significantly better on every dataset).",
        "",
    ]
    md += md_table(HEADER, [_cells(v) for v in results]) + [""]
    md += [f"- {v.sentence}" for v in results] + [""]
    notes = [(v.dataset, n) for v in results for n in v.notes]
    if notes:
        md += ["Notes:", ""] + [f"- {ds}: {n}" for ds, n in notes] + [""]
    md += [f"Selection rule: {results[0].selection} {verify.TESTS_TEXT}", ""]
    return md, csv_text(CSV_HEADER, [_csv(v) for v in results])
