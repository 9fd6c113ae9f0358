"""The one-time upgrade of schema-1 scale records (``autorec-bench/scale/1``) into run records.

``python -m benchmarks.scale --upgrade-v1 DIR`` rewrites each schema-1 file of ``DIR`` in place as
the :class:`~benchmarks.record.RunRecord` a run of that row writes today, carrying the same measured
numbers: the identity is the row's as :func:`~benchmarks.scale.records.plan_for` resolves it now
(so the runner finds the row finished), after checking that the row's recorded model configuration
is the one it resolves to; every fact goes where a new record keeps it (see
:mod:`benchmarks.scale.records`).  ``scale["converted_from"]`` (schema version, the original commit
and time) says that the record is a conversion, not a new measurement.  What a schema-1 file does
not hold stays empty (the parent's wall time, the rating scale, the memory after imports).  Files
already in schema 2 are left alone, so running it twice changes nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autorec import env as hostenv
from autorec.errors import DataError
from benchmarks import record
from benchmarks.harness import store
from benchmarks.record import Conditions, ErrorInfo, FitSummary, Memory, Metrics, RunRecord, Sizes, Timing
from benchmarks.scale.records import plan_for, refusal_message, section
from benchmarks.scale.spec import Row

V1 = "autorec-bench/scale/1"
OUTCOME = {"ok": "measured", "estimate": "estimate", "refused": "refused", "failed": "failed"}
#: schema-1 facts of a measured row kept as they are in the scale section
KEPT = (
    "timing_mode", "extrapolation", "seconds_per_epoch", "checkpoint", "n_train_timed", "ratings_per_second",
    "flops_per_epoch", "flop_formula", "achieved_gflops", "matmul_fraction", "optimizer_updates_per_epoch",
    "flop_bound_seconds", "n_params", "steps_per_epoch", "peak_rss_bytes", "peak_rss_source",
    "peak_rss_bytes_process", "traffic_bytes_per_epoch", "bandwidth", "bandwidth_bound_seconds", "profile",
    "matmul", "matmul_after", "stages", "torch_threads", "env_flags", "quiet_wait",
)  # fmt: skip
#: the scope of a profile recorded as a bare list of operators (the first schema-1 rows)
OLD_PROFILE_SCOPE = "one fit on a row subset, setup included"


def _check(where: str, ok: bool, what: str) -> None:
    if not ok:
        raise DataError(f"{where}: {what}; not converted")


def convert(doc: dict[str, Any], where: str = "record") -> RunRecord:
    """The run record of a schema-1 scale record ``doc`` (:class:`DataError` when its facts do not
    agree with each other or with the row's configuration today)."""
    _check(where, doc.get("schema") == V1, f"schema {doc.get('schema')!r} is not {V1!r}")
    row = Row.from_dict(doc["row"])
    _check(where, row.row_id == doc["row_id"], f"row_id {doc['row_id']} is not its row's ({row.row_id})")
    plan = plan_for(row)
    kind = OUTCOME[doc["status"]]
    est, limit = doc["estimate"], int(doc["limit_bytes"])
    origin = {"schema_version": 1, "git_commit": doc.get("git_commit"), "created_at": doc.get("created_at")}
    common = {"git_commit": doc.get("git_commit"), "created_at": doc.get("created_at") or ""}
    if kind in ("estimate", "refused"):
        _check(where, doc["needs_bytes"] == est["total_bytes"], "needs_bytes differs from its estimate")
        s = section(row, est, limit, kind, reason=doc["reason"], converted_from=origin)
        if kind == "estimate":
            return plan.record("ok", scale=s, **common)
        error = ErrorInfo(type="MemoryBudgetError", message=refusal_message(row.row_id, est["total_bytes"], limit))
        return plan.record("failed", scale=s, error=error, **common)
    _check(where, kind == "measured", f"status {doc['status']!r} cannot be converted")
    config = {k: v for k, v in doc["config"].items() if k != "threads"}
    _check(where, config == plan.identity.params, "its recorded model configuration is not the row's today")
    _check(where, doc["matmul_gflops"] == doc["matmul"]["gflops"], "matmul_gflops differs from its matmul probe")
    s = section(row, est, limit, "measured", **{k: doc[k] for k in KEPT if k in doc}, converted_from=origin)
    if isinstance(s.get("profile"), list):
        s["profile"] = {"scope": OLD_PROFILE_SCOPE, "ops": s["profile"]}
    ev = doc.get("evaluation")
    if ev is not None:
        s["evaluation"] = {"n": ev["n"], "on": ev["on"]}
    secs, losses = doc["epoch_seconds"], doc["train_loss"]
    history = tuple({"epoch": i + 1, "train_loss": x, "seconds": t} for i, (x, t) in enumerate(zip(losses, secs)))
    own = float(doc.get("torch_threads") or doc.get("threads") or 1)
    before, after = tuple(doc["load_avg_before"] or ()), tuple(doc["load_avg_after"] or ())
    peak_mb = doc["peak_rss_bytes_self"] / 1048576.0
    return plan.record(
        "ok",
        scale=s,
        metrics=Metrics(test_rmse=ev["test_rmse"], test_mae=ev["test_mae"]) if ev else None,
        fit=FitSummary(
            best_epoch=None,
            weights_epoch=len(history),
            epochs_run=len(history),
            history=history,
            extra={"resumed_from_epoch": doc["resumed_from_epoch"]},
        ),
        sizes=Sizes(
            n_users=row.n_users,
            n_items=row.n_items,
            n_train=doc["n_train"],
            n_valid=doc["n_valid"],
            n_test=doc["n_test"],
            n_cold_start=ev["n_cold_start"] if ev else 0,
        ),
        timing=Timing(
            load=round(sum(doc["stages"][k]["seconds"] for k in ("generate", "split", "parts")), 3),
            fit=doc["fit_wall_seconds"],
            per_epoch=doc["seconds_per_epoch_measured"],
            fit_per_epoch=doc["fit_wall_seconds"] / len(secs),
            predict=ev["seconds"] if ev else None,
            worker=doc["wall_seconds"],
        ),
        memory=Memory(
            peak_rss=peak_mb,
            self_peak_rss=peak_mb,
            measured="VmHWM of the row's worker at its end (schema 1: peak_rss_bytes_self)",
        ),
        conditions=Conditions(
            threads=int(doc["threads"]),
            thread_policy=f"{doc['threads']} as given" if row.threads else f"all {doc['threads']} usable cores",
            cpu_count=doc["environment"].get("cpu_count"),
            load_before=before,
            load_after=after,
            contended=hostenv.contended(before, after, own),
        ),
        environment=doc["environment"],
        **common,
    )


def upgrade_v1(raw_dir: str | os.PathLike) -> list[Path]:
    """Convert every schema-1 scale file of ``raw_dir`` in place (each written atomically, after
    all of them converted without error); the paths rewritten."""
    todo = []
    for path in store.raw_files(raw_dir):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is not readable JSON ({exc})") from None
        if isinstance(doc, dict) and doc.get("schema") == V1:
            todo.append((path, convert(doc, str(path))))
    for path, rec in todo:
        record.write(path, rec)
    return [p for p, _ in todo]
