"""Scale rows as run records: one :class:`~benchmarks.record.RunRecord` per row, its ``scale``
section holding what only the scale runner measures.

A row's identity is an ordinary run's (:func:`plan_for`): the synthetic dataset it generates
(``synthetic:ml-1m@1,0``; no content hashes: the name determines the data, and the parent never
generates it), the split spec, seed and validation share, ``i-autorec`` / ``u-autorec`` on torch
with the row's resolved parameters.  Its record is ``<raw>/<row_id>.json``.  A ``dense-full`` row
has the identity of the ``dense`` row of its shape (the same training, formulated on the whole
matrix; it is only ever estimated), so rows are told apart by ``row_id``, never by ``run_id``.

The ``scale`` section always holds ``row_id``, ``row`` (the spec row), ``outcome``, ``estimate``
(the memory estimate the decision used) and ``limit_bytes``.  ``outcome`` is

- ``measured`` (status ok): timed epochs, with the FLOP model, GFLOP/s, bounds, per-stage RSS,
  probes and profile (:mod:`benchmarks.scale.job`);
- ``estimate`` (status ok): a ``dense-full`` row that fits, not run (``reason``);
- ``refused`` (status failed): the row does not fit the memory budget (``reason``; the error
  says "does not fit: needs N GB");
- ``failed`` (status failed): the worker failed or crashed (the error says how).

Measured, estimate-only and refused rows are finished (:func:`finished`); a failed one is run again.
Where a fact has a place in the record it lives there, not in the section: the epochs' seconds and
losses in ``fit.history``, test RMSE / MAE in ``metrics``, the part sizes in ``sizes``, the median
epoch in ``timing.per_epoch``, the load averages in ``conditions``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autorec import env as hostenv
from autorec.errors import DataError
from autorec.scale import format_bytes
from autorec.splits import SplitSpec
from benchmarks.harness import store
from benchmarks.harness.plan import RunPlan, resolve_model
from benchmarks.record import DataRef, ErrorInfo, RunIdentity, RunRecord, SplitRef
from benchmarks.scale.spec import Row

REPO = Path(__file__).resolve().parents[2]
OUTCOMES = ("measured", "estimate", "refused", "failed")
COLD_START = "global-mean"
#: the matmul rates before and after a row further apart than this mark it contended
MATMUL_APART = 0.75


def plan_for(row: Row, timeout_s: float | None = None) -> RunPlan:
    """The :class:`RunPlan` of a row: its identity and record metadata (model resolved and
    validated through the registry)."""
    m = resolve_model(row.model_name, "torch", row.params(), seed=row.seed, cold_start=COLD_START, devices=("cpu",))
    spec = SplitSpec.parse(row.split)
    identity = RunIdentity(
        data=DataRef(row.dataset),
        split=SplitRef(
            spec=str(spec), kind=spec.kind, args=dict(spec.args), seed=row.seed, valid_ratio=row.valid_ratio
        ),
        model=m.name,
        backend=m.backend,
        model_version=m.version,
        devices=("cpu",),
        params=m.params,
        cold_start_policy=COLD_START,
    )
    return RunPlan(
        identity=identity,
        family=m.family,
        display_name=m.display_name,
        launcher=m.launcher,
        split_spec=spec.to_dict(),
        label=row.row_id,
        sweep="scale",
        variant=row.tag or None,
        timeout_s=timeout_s,
    )


def record_path(raw_dir: str | os.PathLike, row: Row) -> Path:
    return Path(raw_dir) / f"{row.row_id}.json"


def section(row: Row, estimate: dict[str, Any], limit: int, outcome: str, **facts: Any) -> dict[str, Any]:
    """A ``scale`` section: the row, its outcome, the memory estimate and limit, and ``facts``."""
    assert outcome in OUTCOMES, outcome
    return {
        "row_id": row.row_id,
        "row": row.to_dict(),
        "outcome": outcome,
        "estimate": estimate,
        "limit_bytes": int(limit),
        **facts,
    }


def refusal_message(row_id: str, needs: int, limit: int) -> str:
    return f"{row_id} does not fit: needs {format_bytes(needs)} (limit {format_bytes(limit)}; --max-memory)"


ESTIMATE_ONLY = (
    "the seed (D2L) formulation densifies the whole train and test matrices; it fits this budget, and its "
    "per-epoch compute equals the dense row's (same FLOPs), so it is not run separately"
)


def decided_record(plan: RunPlan, row: Row, estimate: dict[str, Any], limit: int) -> RunRecord | None:
    """The record of a row decided from its estimate alone, without a worker: a ``dense-full`` row
    (estimate-only when it fits, refused otherwise) or a row over the budget (refused); ``None``
    when the row is to be measured."""
    needs = int(estimate["total_bytes"])
    if row.path != "dense-full" and needs <= limit:
        return None
    commit = hostenv.git_commit(str(REPO))
    if needs <= limit:
        return plan.record(
            "ok", scale=section(row, estimate, limit, "estimate", reason=ESTIMATE_ONLY), git_commit=commit
        )
    why = (
        "the seed (D2L) formulation densifies the whole matrix"
        if row.path == "dense-full"
        else "estimated before generating the data"
    )
    error = ErrorInfo(type="MemoryBudgetError", message=refusal_message(row.row_id, needs, limit))
    return plan.record(
        "failed", scale=section(row, estimate, limit, "refused", reason=why), error=error, git_commit=commit
    )


# ====================================================================== reading
def load_records(raw_dir: str | os.PathLike) -> list[RunRecord]:
    """Every record of a scale raw folder (file-name order).  A folder still holding schema-1 scale
    files is refused with the command that upgrades it."""
    old = [p.name for p in store.raw_files(raw_dir) if _is_v1(p)]
    if old:
        raise DataError(
            f"{raw_dir} holds {len(old)} scale record(s) of schema 1 ({', '.join(old[:3])}, ...); convert them "
            f"once with `python -m benchmarks.scale --upgrade-v1 {raw_dir}`"
        )
    return store.load(raw_dir)


def _is_v1(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("schema") == "autorec-bench/scale/1"
    except (OSError, ValueError, AttributeError):
        return False


def scale_of(rec: RunRecord) -> dict[str, Any]:
    """The record's scale section (:class:`DataError` for a record of an ordinary run)."""
    if rec.scale is None:
        raise DataError(f"record {rec.run_id[:16]} ({rec.display_name}) is not a scale record")
    return rec.scale


def row_of(rec: RunRecord) -> Row:
    return Row.from_dict(scale_of(rec)["row"])


def outcome(rec: RunRecord) -> str:
    return str(scale_of(rec)["outcome"])


def finished(rec: RunRecord, run_id: str) -> bool:
    """True when ``rec`` is the finished record of run ``run_id``: measured, estimate-only or
    refused (a failure is run again)."""
    return rec.scale is not None and rec.run_id == run_id and outcome(rec) != "failed"


def contended(rec: RunRecord) -> bool:
    """True when the machine was visibly busy during the row: the load averages say so
    (:func:`autorec.env.contended`, recorded in ``conditions``), or the matmul rate measured after
    the run and the one before it are more than 25% apart (a busy start or a busy end)."""
    if rec.conditions is not None and rec.conditions.contended:
        return True
    s = scale_of(rec)
    before = float((s.get("matmul") or {}).get("gflops") or 0.0)
    after = float((s.get("matmul_after") or {}).get("gflops") or 0.0)
    return before > 0 and after > 0 and min(before, after) < MATMUL_APART * max(before, after)


def epoch_seconds(rec: RunRecord) -> list[float]:
    return [float(h["seconds"]) for h in rec.fit.history] if rec.fit else []


def train_losses(rec: RunRecord) -> list[float]:
    return [float(h["train_loss"]) for h in rec.fit.history] if rec.fit else []


def n_train(rec: RunRecord) -> int:
    """The training ratings: counted in the worker, else (rows decided from the estimate) estimated."""
    if rec.sizes is not None:
        return rec.sizes.n_train
    return int(scale_of(rec)["estimate"]["workload"]["nnz"])


def peak_rss_bytes(rec: RunRecord) -> int | None:
    """The measured pipeline's peak RSS (VmHWM after evaluation, before the after-run probes);
    for a failed row, the worker's whole peak if known."""
    peak = scale_of(rec).get("peak_rss_bytes")
    if peak is None and rec.memory.peak_rss is not None:
        return int(rec.memory.peak_rss * 1048576)
    return peak
