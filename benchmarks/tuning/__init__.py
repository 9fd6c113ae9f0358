"""Hyper-parameter tuning on Optuna, on the VALIDATION part only, with the same budget for every model.

One study per (dataset, split spec, split seed, validation share, model, backend), stored in an RDB:
by default SQLite at ``results/tuning/<dataset>/<study>.db``; ``--storage URL`` names another one
(e.g. a PostgreSQL database several machines share).  The study *is* the trial log: every trial's
parameters, per-epoch validation RMSE, outcome, time and worker are in it.

- **Sampler**: seeded TPE (:class:`~benchmarks.tuning.study.PositionSeededTPE`; 10 random trials
  first), its stream reseeded per trial from (search seed, the trial's position in the budget), so
  that a study killed and resumed ends with exactly the trials of one run in one go.
- **Pruner**: :class:`optuna.pruners.MedianPruner` (after 5 completed trials, from epoch 10): a
  trial whose best validation RMSE so far is worse than the median of the completed trials' at that
  epoch is stopped (the per-epoch RMSE comes from the model's ``progress`` callback).  Chosen over
  Hyperband because its decision depends only on the completed trials, which a resumed study
  reproduces; Hyperband assigns brackets by hashing the storage's trial number, which an interrupted
  trial shifts.  The warm-up spares slow starters (a low learning rate that ends best).  In a
  space with variants (AutoRec's rprop / lbfgs / adam) a trial is compared only with the completed
  trials of its own variant (:class:`~benchmarks.tuning.study.PerVariantMedianPruner`): pooled,
  minibatch Adam's fast curves cut every strong-lambda full-batch Rprop trial by epoch 14.  A study
  keeps the pruning it was created with (the committed studies: pooled); ``--pruner`` chooses for a
  new one, ``--no-prune`` turns pruning off.
- **Spaces** live beside their models (``registry.get(name, backend).space()``, the class's
  ``SPACE``); :mod:`benchmarks.tuning.space` is the format and its translation to ``suggest_*``.
- **Test part**: never read.  :func:`~benchmarks.tuning.tuner.tune` is handed the train and
  validation parts only; the chosen configuration is evaluated on test afterwards, by running it
  through the harness (a spec referencing the written config file), never inside the tuner.
- **Stopping and resuming**: kill the tuner at any moment (SIGKILL included) and rerun the same
  command: completed trials are kept and count, the trial that was running is marked failed and its
  parameters are re-enqueued once, and the sampler never proposes a configuration already tried.

**Several workers on one study** (run the same command on several processes or machines against one
storage, or let ``autorec-bench tune --executor dask --address A --workers N`` start N of them per
study as Dask tasks: docs/cluster.md; each worker takes the next trial while fewer than the budget
count or run):

- *Sequential* (one worker at a time, on any machine, stopped and resumed any number of times):
  the result equals a single uninterrupted run with the same search seed, trial for trial.
- *Parallel* (several workers at once): the budget holds (a race may add at most one trial per extra
  worker), every trial is recorded and no configuration is tried twice, but the result is not the
  single-machine one: TPE conditions each draw on the trials finished so far and on the running ones
  (constant liar), and which trials those are depends on timing; the median pruner likewise compares
  against the trials completed so far.  A finite space searched exhaustively gives the same trials
  either way.  SQLite suits workers on one machine; use a server RDB across machines.  A worker on
  another machine that dies is detected by Optuna's heartbeat (60 s interval, failed after 300 s of
  silence); a dead worker on this machine is detected at once by its process id.
"""

from benchmarks.tuning.study import StudySpec
from benchmarks.tuning.tuner import TuneResult, describe, result_of, tune

__all__ = ["StudySpec", "TuneResult", "describe", "result_of", "tune"]
