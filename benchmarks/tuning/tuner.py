"""The search: trials of one study fitted on the train part and scored on the validation part, one
at a time, until the budget is reached; then the summary the config file is written from.

A trial builds its model through the registry (``registry.get(model, backend).build(params)``),
fits it on ``train`` with ``valid`` for early stopping, reports every epoch's validation RMSE to the
pruner, and is scored by the validation RMSE of the fitted model's own ``predict`` (cold-start
policy and clipping).  :func:`tune` is given the train and validation parts only: it cannot read
the test part.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autorec.errors import AutoRecBenchError, ConfigError
from autorec.interactions import Interactions
from autorec.models import registry
from benchmarks.tuning import space as spaces
from benchmarks.tuning.study import (
    COUNTED,
    StudySpec,
    budget_used,
    kind,
    open_study,
    recover,
    settle,
    storage,
)

#: the study stops when the sampler proposes only configurations it already holds this many times in a row
MAX_REDRAWS = 100


class TrialEnded(Exception):
    """A trial that ended without a score: a duplicate (nothing fitted) or a model error; the reason
    is stored on the trial (``duplicate_of`` / ``error``)."""


@dataclass(frozen=True)
class TuneResult:
    """A study's outcome, read back from its storage (every worker's trials)."""

    spec: StudySpec
    budget: int  # the trials asked for, capped at the number of configurations of a finite space
    space_size: int | None  # None: infinitely many configurations
    counts: dict[str, int]  # trials per kind (see benchmarks.tuning.study.kind)
    best_number: int
    best_value: float
    best_params: dict[str, Any]  # fixed + searched: what the config file's [params] holds
    weights_epoch: int | None  # the epoch whose weights the best trial's model ended with
    epochs_run: int | None

    @property
    def trials(self) -> int:
        """Trials that count toward the budget."""
        return sum(self.counts.get(k, 0) for k in COUNTED)


def tune(
    spec: StudySpec,
    train: Interactions,
    valid: Interactions,
    *,
    trials: int,
    log: Callable[[str], None] | None = None,
) -> TuneResult:
    """Run ``spec``'s study until ``trials`` trials count (resuming whatever the storage holds:
    interrupted trials retried, completed ones kept), then summarise it.  A finite space with at
    most ``trials`` configurations is searched exhaustively, each configuration once."""
    budget = _budget(spec, trials)
    if valid is None or len(valid) == 0:
        raise ConfigError("tuning needs a non-empty validation part (valid_ratio > 0)")
    ref = registry.get(spec.model, spec.backend)
    size = spaces.size(spec.space)
    objective = _objective(spec, ref, train, valid)
    say = log or (lambda line: None)
    t0 = time.perf_counter()
    streak = 0
    ran: list[FrozenTrial] = []  # the trials this worker ran, in order
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the progress lines are ours to print
    try:
        store = storage(spec.storage)
        spec = settle(spec, store)
        study = open_study(spec, store)
        if size is not None and size <= trials:
            for params in spaces.grid(spec.space):
                study.enqueue_trial(params, skip_if_exists=True)
        while True:
            for number in recover(study, store, spec):
                say(f"trial #{number} was interrupted: its parameters are enqueued again")
            if budget_used(study) >= budget:
                break
            study.optimize(objective, n_trials=1, catch=(TrialEnded,), callbacks=[lambda _s, t: ran.append(t)])
            streak = streak + 1 if kind(ran[-1]) == "duplicate" else 0
            say(trial_line(study, ran[-1], budget, time.perf_counter() - t0))
            if streak >= MAX_REDRAWS:
                say(f"stopped: {streak} draws in a row repeated configurations already tried")
                break
    finally:
        optuna.logging.set_verbosity(verbosity)
    return summarize(study, spec, budget)


def check_budget(spec: StudySpec, trials: int, *, workers: int = 1) -> None:
    """:class:`ConfigError` when ``spec``'s study already holds more finished trials counting toward
    the budget than ``trials`` asks for: its best is the best of all of them, which a command asking
    for fewer would not reproduce.  ``workers`` tuner workers sharing a study may each start the last
    trial at once, so a study of theirs may end up to ``workers - 1`` trials over; that is not refused."""
    budget = _budget(spec, trials)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        store = storage(spec.storage)
        study = open_study(settle(spec, store), store)
        held = sum(kind(t) in COUNTED for t in study.get_trials(deepcopy=False))
    finally:
        optuna.logging.set_verbosity(verbosity)
    if held > budget + max(0, int(workers) - 1):
        raise ConfigError(
            f"study {spec.name!r} already holds {held} counted trials, more than the {budget} asked for "
            f"(trials={trials}); its best trial comes from all {held}: ask for trials={held} (--trials {held}) "
            "to use it, or give another study name (--study) for a study of this budget"
        )


def _budget(spec: StudySpec, trials: int) -> int:
    """The trials asked for, capped at the number of configurations of a finite space."""
    if not isinstance(trials, int) or isinstance(trials, bool) or trials <= 0:
        raise ConfigError(f"trials={trials!r} must be a positive integer")
    size = spaces.size(spec.space)
    return trials if size is None else min(trials, size)


def result_of(spec: StudySpec, *, trials: int) -> TuneResult:
    """The outcome of ``spec``'s study as its storage holds it now, e.g. once tuner workers on other
    machines (:func:`tune` each) ran it; nothing is fitted here."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        store = storage(spec.storage)
        spec = settle(spec, store)
        return summarize(open_study(spec, store), spec, _budget(spec, trials))
    finally:
        optuna.logging.set_verbosity(verbosity)


def _objective(spec: StudySpec, ref: registry.ModelRef, train: Interactions, valid: Interactions):
    def objective(trial: optuna.Trial) -> float:
        sampled = spaces.suggest(trial, spec.space)
        twin = _twin(trial)
        if twin is not None:
            trial.set_user_attr("duplicate_of", twin)
            raise TrialEnded(f"duplicate of trial #{twin}")
        t0 = time.perf_counter()
        try:
            model = ref.build({**spec.fixed, **sampled, "seed": spec.seed, "cold_start": spec.cold_start})
            # a trial keeps the validation score only: one-shot models skip scoring the train part
            info = model.fit(train, valid, progress=_pruning(trial, t0), score_train=False)
            scores = model.evaluate(valid)
            if not math.isfinite(scores["rmse"]):
                raise FloatingPointError(f"validation RMSE is {scores['rmse']}")
        except (AutoRecBenchError, FloatingPointError) as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            raise TrialEnded(str(exc)) from exc
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        trial.set_user_attr("valid_mae", scores["mae"])
        trial.set_user_attr("weights_epoch", info.weights_epoch)
        trial.set_user_attr("epochs_run", info.epochs_run)
        return float(scores["rmse"])

    return objective


def _pruning(trial: optuna.Trial, t0: float):
    """The fit's ``progress(epoch, epochs, record)``: the epoch's validation RMSE goes to the pruner
    (asked before the last epoch only: stopping after it would save nothing and lose the score)."""

    def progress(epoch: int, epochs: int, record: dict) -> None:
        value = record.get("valid_rmse")
        if value is None or not math.isfinite(value):
            return
        trial.report(float(value), epoch)
        if epoch < epochs and trial.should_prune():
            trial.set_user_attr("epochs_run", epoch)
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            raise optuna.TrialPruned(f"epoch {epoch}: validation RMSE {value:.5f}")

    return progress


def _twin(trial: optuna.Trial) -> int | None:
    """An earlier (or concurrently running) trial with the same parameters, if any."""
    for t in trial.study.get_trials(deepcopy=False):
        if (
            t.number != trial.number
            and t.state != TrialState.WAITING
            and kind(t) not in ("duplicate", "interrupted")
            and t.params == trial.params
        ):
            return t.number
    return None


# ---------------------------------------------------------------------------------------- reports
def _best(trials: list[FrozenTrial]) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return min(done, key=lambda t: (t.value, t.number)) if done else None


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def trial_line(study: optuna.Study, trial: FrozenTrial, budget: int, elapsed: float) -> str:
    """One progress line: position in the budget, trial number, outcome, best so far, times, params."""
    trials = study.get_trials(deepcopy=False)
    attrs = trial.user_attrs
    k = kind(trial)
    if k == "complete":
        outcome = f"valid RMSE {trial.value:.5f} (epoch {attrs.get('weights_epoch')} of {attrs.get('epochs_run')})"
    elif k == "pruned":
        outcome = f"pruned at epoch {attrs.get('epochs_run')}"
    elif k == "duplicate":
        outcome = f"duplicate of #{attrs.get('duplicate_of')}: drawn again"
    else:
        outcome = f"{k}: {attrs.get('error', 'interrupted')}"
    best = _best(trials)
    best_text = f"best {best.value:.5f} (#{best.number})" if best is not None else "best -"
    seconds = attrs.get("seconds")
    took = f"{seconds:.1f} s" if isinstance(seconds, float) else "-"
    done = sum(kind(t) in COUNTED for t in trials)
    return (
        f"[{done:>3}/{budget}] #{trial.number:<3} {outcome} | {best_text} | {took}, elapsed "
        f"{_clock(elapsed)} | {_params_text(trial.params)}"
    )


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def summarize(study: optuna.Study, spec: StudySpec, budget: int) -> TuneResult:
    """The study's outcome; :class:`AutoRecBenchError` when no trial completed."""
    trials = study.get_trials(deepcopy=False)
    counts = dict(Counter(kind(t) for t in trials))
    best = _best(trials)
    if best is None or best.value is None:
        errors = [t.user_attrs["error"] for t in trials if "error" in t.user_attrs]
        raise AutoRecBenchError(
            f"study {spec.name!r}: no trial completed ({counts}); first error: {errors[0] if errors else None}"
        )
    return TuneResult(
        spec=spec,
        budget=budget,
        space_size=spaces.size(spec.space),
        counts=counts,
        best_number=best.number,
        best_value=float(best.value),
        best_params={**spec.fixed, **spaces.decode(spec.space, best.params)},
        weights_epoch=best.user_attrs.get("weights_epoch"),
        epochs_run=best.user_attrs.get("epochs_run"),
    )


def describe(result: TuneResult) -> str:
    """The summary line of a study."""
    c = result.counts
    spec = result.spec
    parts = [f"{c.get(k, 0)} {k}" for k in COUNTED]
    extra = [f"{c[k]} {k}" for k in ("interrupted", "duplicate", "running", "waiting") if c.get(k)]
    space = "" if result.space_size is None else f"; the space has {result.space_size} configuration(s)"
    return (
        f"{spec.model} ({spec.backend}) on {spec.data['dataset']} {spec.data['split']} seed {spec.data['seed']}: "
        f"{result.trials}/{result.budget} trials ({', '.join(parts)}"
        f"{'; not counted: ' + ', '.join(extra) if extra else ''}){space}; best trial #{result.best_number}: "
        f"validation RMSE {result.best_value:.5f} (epoch {result.weights_epoch} of {result.epochs_run}); "
        f"params {_params_text(result.best_params)}"
    )
