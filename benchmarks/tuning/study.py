"""One Optuna study: its storage, its definition, what each of its trials counts as, the recovery of
trials a killed worker left behind, and the sampler that makes a resumed study exact.

**Trial kinds** (:func:`kind`).  ``complete``, ``pruned`` and ``failed`` (the model refused the
configuration or diverged: user attribute ``error``) count toward the budget.  ``duplicate``
(the sampler proposed a configuration the study already holds: user attribute ``duplicate_of``;
nothing was fitted) and ``interrupted`` (the worker was killed or stopped mid-trial) do not; an
interrupted trial's parameters are re-enqueued once (:func:`recover`), and a retry that is
interrupted in turn counts as ``failed``.

**Exact resumption** (:class:`PositionSeededTPE`).  A trial's random stream is seeded from the
study's search seed and the trial's *position*: the number of earlier trials that count or will
count (neither duplicate nor interrupted), plus the number of duplicates already drawn at that
position.  A worker killed at position k and rerun therefore draws, for every later position, with
the same seed from the same history (TPE and the median pruner only read complete and pruned
trials, in trial-number order, which an interruption does not reorder) as a run that was never
killed: the same parameters, the same pruning decisions.

**Pruning per variant** (:class:`PerVariantMedianPruner`).  In a space with variants (``one_of``:
AutoRec's Rprop / L-BFGS / Adam), a trial is compared only with the completed trials of its own
variant.  The variants' learning curves are not comparable epoch for epoch: full-batch Rprop with a
strong lambda improves slowly and ends good (the paper's ML-1M configuration, lambda 300, reaches
0.835 around epoch 120), while minibatch Adam is near its best within a few epochs; pooled, the
median of Adam's curves pruned every strong-lambda Rprop trial of the ML-1M study at epochs 10-14.
A study keeps the pruning it was created with (:func:`settle`): the studies committed before this
rule (pooled) resume pooled, new ones prune per variant.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import optuna
import psutil
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from autorec import env
from autorec.errors import ConfigError
from autorec.jsonio import to_plain
from benchmarks.tuning import space as spaces

FORMAT = "autorec-bench-study/1"
#: a retry of an interrupted trial that is interrupted too counts as failed
MAX_ATTEMPTS = 2
#: seconds between a running trial's heartbeats in the storage, and the silence after which a trial
#: of another machine is taken for dead (a trial of a dead process on this machine: at once)
HEARTBEAT_S = 60
GRACE_S = 300
#: TPE draws at random for its first trials (Optuna's default)
N_STARTUP = 10
#: median pruning: only once 5 trials completed, and from a trial's 10th epoch on (before that a slow
#: starter, e.g. a low learning rate that ends best, looks worse than it is)
PRUNE_STARTUP = 5
PRUNE_FROM_EPOCH = 10

COUNTED = ("complete", "pruned", "failed")


@dataclass(frozen=True)
class StudySpec:
    """Everything a study is: where it lives, what it scores, what it searches.  All but ``name`` and
    ``storage`` form its :meth:`definition`, fixed when the study is created and checked on every
    resume, so that no study ever mixes trials of two different searches."""

    name: str
    storage: str  # an SQLAlchemy URL: sqlite:///results/tuning/ml-100k/als....db, postgresql://...
    data: dict[str, Any]  # dataset, split, seed, valid_ratio, split_sha256
    model: str
    backend: str
    model_version: int
    space: dict[str, Any]
    fixed: dict[str, Any] = field(default_factory=dict)
    seed: int = 0  # the model's seed in every trial (the split seed)
    cold_start: str = "global-mean"
    search_seed: int = 0
    prune: bool = True
    #: median pruning within each ``one_of`` variant (True) or over all trials (False); None: the
    #: study's own setting when it exists, else True (:func:`settle`).  No effect without variants.
    per_variant: bool | None = None

    def pruner_mode(self) -> str | None:
        """``per-variant`` or ``pooled`` where pruning is on in a space with variants, else None (the
        mode changes nothing there)."""
        if not self.prune or not spaces.parts(self.space)[1]:
            return None
        if self.per_variant is None:
            raise ValueError(f"study {self.name!r}: settle() the pruning before using the spec")
        return "per-variant" if self.per_variant else "pooled"

    def pruning(self) -> dict[str, Any] | None:
        """The pruner's definition (None: no pruning); ``per_variant`` only where it prunes per variant."""
        if not self.prune:
            return None
        out: dict[str, Any] = {"name": "median", "n_startup_trials": PRUNE_STARTUP, "n_warmup_steps": PRUNE_FROM_EPOCH}
        if self.pruner_mode() == "per-variant":
            out["per_variant"] = True
        return out

    def pruning_text(self) -> str:
        """``median pruning (after 5 trials, from epoch 10[, per variant | pooled over the variants])``
        or ``no pruning``."""
        if not self.prune:
            return "no pruning"
        mode = {"per-variant": ", per variant", "pooled": ", pooled over the variants", None: ""}[self.pruner_mode()]
        return f"median pruning (after {PRUNE_STARTUP} trials, from epoch {PRUNE_FROM_EPOCH}{mode})"

    def definition(self) -> dict[str, Any]:
        return to_plain(
            {
                "format": FORMAT,
                "data": self.data,
                "model": self.model,
                "backend": self.backend,
                "model_version": self.model_version,
                "space": self.space,
                "fixed": self.fixed,
                "seed": self.seed,
                "cold_start": self.cold_start,
                "sampler": {"name": "tpe", "seed": self.search_seed, "n_startup_trials": N_STARTUP},
                "pruner": self.pruning(),
            }
        )


def sqlite_url(path: str | os.PathLike) -> str:
    """An SQLite URL for ``path``: relative to the working folder when the file lies below it (the
    committed studies and config headers then name no machine's paths), absolute otherwise."""
    p = Path(path).absolute()
    try:
        return f"sqlite:///{p.relative_to(Path.cwd())}"
    except ValueError:
        return f"sqlite:///{p}"


def storage(url: str) -> optuna.storages.RDBStorage:
    """The study's RDB storage (the folder of an SQLite file is created; several workers may share
    it: SQLite waits up to 2 minutes for a lock, and workers that create a new database's tables at
    the same moment retry)."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine: dict[str, Any] = {"connect_args": {"timeout": 120}}
    else:
        engine = {"pool_pre_ping": True}
    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat arguments
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
                )
        except sqlalchemy.exc.DBAPIError:  # locked, or a table / version row another worker just created
            attempt += 1
            if attempt == 5:
                raise
            time.sleep(0.5 * attempt)  # workers creating the same new database's tables at once


def settle(spec: StudySpec, store: optuna.storages.BaseStorage) -> StudySpec:
    """``spec`` with ``per_variant`` decided: as given, else as the stored study was created (a study
    made before per-variant pruning existed has no ``per_variant`` key: pooled), else True."""
    if spec.per_variant is not None:
        return spec
    stored = None
    try:
        stored = store.get_study_user_attrs(store.get_study_id_from_name(spec.name)).get("definition")
    except KeyError:  # no such study yet
        pass
    pruner = stored.get("pruner") if isinstance(stored, Mapping) else None
    per = True if stored is None else bool(isinstance(pruner, Mapping) and pruner.get("per_variant"))
    return replace(spec, per_variant=per)


def open_study(spec: StudySpec, store: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study in ``store``, or load it after checking that it was created with the same
    definition (``spec`` passed through :func:`settle`)."""
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if spec.prune:
        pruner = PerVariantMedianPruner() if spec.pruner_mode() == "per-variant" else _median()
    study = optuna.create_study(
        storage=store,
        study_name=spec.name,
        direction="minimize",
        load_if_exists=True,
        sampler=PositionSeededTPE(spec.search_seed, stamp=store),
        pruner=pruner,
    )
    want = spec.definition()
    have = study.user_attrs.get("definition")
    if have is None:
        study.set_user_attr("definition", want)
    elif have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        detail = "; ".join(f"{k}: study {have.get(k)!r}, now {want.get(k)!r}" for k in diff)
        raise ConfigError(
            f"study {spec.name!r} in {spec.storage} was created for another search ({detail}); "
            "rerun with its settings, or name a new study (--study) or storage (--storage)"
        )
    return study


# ---------------------------------------------------------------------------------------- pruning
def _median() -> optuna.pruners.MedianPruner:
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP, n_warmup_steps=PRUNE_FROM_EPOCH)


class _SameVariant:
    """The part of a study Optuna's median pruner reads (``get_trials``, ``direction``), restricted
    to the trials of one variant."""

    def __init__(self, study: optuna.Study, variant: Any) -> None:
        self._study, self._variant = study, variant
        self.direction = study.direction

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if t.params.get(spaces.ONE_OF) == self._variant]


class PerVariantMedianPruner(optuna.pruners.BasePruner):
    """Optuna's median pruner (after 5 completed trials, from epoch 10) applied within the trial's
    ``one_of`` variant: the startup count and the median are those of the completed trials of the
    same variant.  A trial without a variant is compared with every trial (plain median pruning)."""

    def __init__(self) -> None:
        self._median = _median()

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if spaces.ONE_OF not in trial.params:
            return self._median.prune(study, trial)
        view = _SameVariant(study, trial.params[spaces.ONE_OF])
        return self._median.prune(cast(optuna.Study, view), trial)


# ---------------------------------------------------------------------------------------- trial kinds
def kind(trial: FrozenTrial) -> str:
    """``complete``, ``pruned``, ``failed``, ``duplicate``, ``interrupted``, ``running`` or ``waiting``."""
    if trial.state != TrialState.FAIL:
        return trial.state.name.lower()
    attrs = trial.user_attrs
    if "error" in attrs:
        return "failed"
    if "duplicate_of" in attrs:
        return "duplicate"
    return "failed" if int(attrs.get("attempt", 1)) >= MAX_ATTEMPTS else "interrupted"


def position(trials: Iterable[FrozenTrial], number: int) -> tuple[int, int]:
    """``(position, duplicates)`` of trial ``number``: how many earlier trials count (or will: running
    and waiting ones), and how many duplicates were drawn since the last of them."""
    index = duplicates = 0
    for t in sorted((t for t in trials if t.number < number), key=lambda t: t.number):
        k = kind(t)
        if k == "duplicate":
            duplicates += 1
        elif k != "interrupted":
            index, duplicates = index + 1, 0
    return index, duplicates


def budget_used(study: optuna.Study) -> int:
    """Trials that count toward the budget, finished or still running (another worker's)."""
    return sum(kind(t) in COUNTED + ("running",) for t in study.get_trials(deepcopy=False))


class PositionSeededTPE(optuna.samplers.BaseSampler):
    """Optuna's TPE, with a fresh random stream per trial seeded from (search seed, the trial's
    :func:`position`, duplicates drawn there): see the module docstring."""

    def __init__(self, seed: int, stamp: optuna.storages.BaseStorage | None = None) -> None:
        self.seed = int(seed)
        self._tpe = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=N_STARTUP)
        self._stamp = stamp

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self._stamp is not None:  # the first code to run once Optuna created the trial: who runs it
            stamp_worker(self._stamp, study.study_name, trial.number)
        pos, dups = position(study.get_trials(deepcopy=False), trial.number)
        seed = int(np.random.SeedSequence([self.seed, pos, dups]).generate_state(1)[0])
        self._tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=N_STARTUP)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._tpe.after_trial(study, trial, state, values)


# ---------------------------------------------------------------------------------------- workers
def worker_identity() -> dict[str, Any]:
    """Who runs a trial (stored on it): host, process id and the process's start time (wall clock,
    and in clock ticks since boot where ``/proc`` gives them)."""
    pid = os.getpid()
    stat = env.proc_stat(pid)
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "started": psutil.Process(pid).create_time(),
        "start_ticks": None if stat is None else stat[2],
    }


def stamp_worker(store: optuna.storages.BaseStorage, study_name: str, number: int) -> None:
    """Record this process as the runner of trial ``number`` (user attribute ``worker``): a rerun
    then knows at once whether the trial's process is gone (:func:`recover`), rather than waiting
    out the grace period for a trial created but never stamped."""
    trial_id = store.get_trial_id_from_study_id_trial_number(store.get_study_id_from_name(study_name), number)
    store.set_trial_user_attr(trial_id, "worker", worker_identity())


#: seconds two wall-clock start times of one process may differ by (psutil adds the boot time, which
#: moves when NTP adjusts the clock, to the start in ticks at every call)
START_SLACK_S = 2.0


def _dead(trial: FrozenTrial) -> bool:
    """A running trial whose process is known to be gone: on this host and not alive, or without a
    worker record (killed between its creation and its first write) for longer than the grace period."""
    worker = trial.user_attrs.get("worker")
    if not isinstance(worker, Mapping):
        start = trial.datetime_start
        return start is not None and time.time() - start.timestamp() > GRACE_S
    if worker.get("host") != socket.gethostname():
        return False  # another machine's: Optuna's heartbeat check fails it once it falls silent
    pid, ticks = int(worker["pid"]), worker.get("start_ticks")
    if ticks is not None and os.path.isdir("/proc"):  # exact: the start in ticks never moves
        return not env.process_alive(pid, ticks)
    try:  # a trial stored before start_ticks, or no /proc
        return abs(psutil.Process(pid).create_time() - float(worker["started"])) > START_SLACK_S
    except psutil.NoSuchProcess:  # zombies included
        return True
    except psutil.AccessDenied:  # another user's live process
        return False


def recover(study: optuna.Study, store: optuna.storages.BaseStorage, spec: StudySpec) -> list[int]:
    """Mark the running trials of dead workers failed, then re-enqueue (once) the parameters of
    every interrupted trial that was wholly sampled and is not yet retried.  Returns the numbers of
    the trials re-enqueued."""
    study_id = store.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _dead(t):
            try:
                store.set_trial_state_values(
                    store.get_trial_id_from_study_id_trial_number(study_id, t.number), state=TrialState.FAIL
                )
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker got there first
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    out = []
    for t in trials:
        if kind(t) != "interrupted" or t.number in retried:
            continue
        try:
            spaces.decode(spec.space, t.params)
        except ValueError:
            continue  # stopped while being sampled: its position simply draws again
        attempt = int(t.user_attrs.get("attempt", 1)) + 1
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "attempt": attempt})
        out.append(t.number)
    return out
