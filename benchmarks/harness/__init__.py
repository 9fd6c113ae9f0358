"""The harness: plan a run (validate everything, resolve its content identity), execute it in a
fresh worker process, store its record.

=================  ==========================================================================
module             job
=================  ==========================================================================
``data``           dataset names (registered, synthetic, ``files:``), availability, the split
``plan``           :func:`plan_run` -> :class:`RunPlan`: every check before any training
``launch``         :func:`execute` -> :class:`Outcome`: worker process, claim, record; executors
``batch``          :func:`run_batch`: the pending runs of a sweep, progress bar and ETA, a tally
``worker``         ``python -m benchmarks.harness.worker JOB.json``: fit, evaluate, refit
``store``          the raw folder: paths, :func:`load`, :func:`is_finished`, claims
=================  ==========================================================================
"""

from benchmarks.harness.batch import failures, run_batch
from benchmarks.harness.data import (
    DatasetRef,
    DataSource,
    DataUnavailable,
    availability,
    load_data,
    parse_dataset,
    shared_data_dir,
)
from benchmarks.harness.launch import Executor, Interrupted, LocalExecutor, Outcome, Tally, execute, terminate_active
from benchmarks.harness.plan import PlanError, RunPlan, plan_run
from benchmarks.harness.store import (
    DEFAULT_RAW,
    check_writable,
    clean_stale_temp,
    is_finished,
    load,
    path_for,
    raw_files,
    read_if_valid,
)

__all__ = [
    "DEFAULT_RAW",
    "DataSource",
    "DataUnavailable",
    "DatasetRef",
    "Executor",
    "Interrupted",
    "LocalExecutor",
    "Outcome",
    "PlanError",
    "RunPlan",
    "Tally",
    "availability",
    "check_writable",
    "clean_stale_temp",
    "execute",
    "failures",
    "is_finished",
    "load",
    "load_data",
    "parse_dataset",
    "path_for",
    "plan_run",
    "shared_data_dir",
    "raw_files",
    "read_if_valid",
    "run_batch",
    "terminate_active",
]
