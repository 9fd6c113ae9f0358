"""What the tuner tests share: an iterative test model that can be slowed down or made to refuse a
configuration, tiny data, a study spec, and a ``files:`` split of the data for the command."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import optuna

from autorec.errors import ConfigError
from autorec.models import registry
from autorec.models.config import nonnegative, param
from baselines.simple import BiasOnly, BiasOnlyConfig
from benchmarks.tuning import StudySpec
from benchmarks.tuning.study import kind, sqlite_url, storage
from tests.synthetic_parts import learnable

LOGU = {"dist": "loguniform", "low": 0.1, "high": 100.0}


def tiny():
    return learnable(n_users=80, n_items=50, density=0.35, seed=1)


# ------------------------------------------------------------------------------------------ test models
@dataclass(frozen=True)
class SlowBiasConfig(BiasOnlyConfig):
    pause: float = nonnegative(0.0, "seconds slept per sweep (a trial long enough to be killed)")
    refuse_above: float | None = param(None, doc="reg_user above this is a configuration error")

    def check(self) -> None:
        if self.refuse_above is not None and self.reg_user > self.refuse_above:
            raise ConfigError(f"reg_user={self.reg_user} refused above {self.refuse_above} by this test")


class _Paused:
    def __init__(self, inner, pause: float) -> None:
        self.inner, self.pause = inner, pause

    def train_epoch(self, epoch: int) -> dict:
        time.sleep(self.pause)
        return self.inner.train_epoch(epoch)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class SlowBias(BiasOnly):
    """The bias model, iterative, with a fixed number of sweeps (no convergence stop) and an
    optional pause per sweep."""

    name = "slow-bias"
    Config = SlowBiasConfig
    SPACE = {"reg_user": LOGU, "reg_item": LOGU, "epochs": 14, "tol": 0.0}

    def make_trainer(self, train, valid):
        return _Paused(super().make_trainer(train, valid), cast(SlowBiasConfig, self.config).pause)


SLOW = "tests.tuning_helpers:SlowBias"


def spec_for(tmp_path: Path, model: str = SLOW, *, name: str = "s", space=None, **over) -> StudySpec:
    ref = registry.get(model)
    kw = dict(
        name=name,
        storage=sqlite_url(tmp_path / f"{name}.db"),
        data={"dataset": "tiny", "split": "random:test_ratio=0.1", "seed": 0, "valid_ratio": 0.1},
        model=ref.name,
        backend=ref.backend,
        model_version=ref.load().version,
        space=ref.space() if space is None else space,
    )
    return StudySpec(**{**kw, **over})


def counted(spec: StudySpec) -> list[tuple[str, dict, float | None]]:
    """(kind, params, value) of the trials that count, in position order."""
    study = optuna.load_study(study_name=spec.name, storage=storage(spec.storage))
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    return [(kind(t), t.params, t.value) for t in trials if kind(t) in ("complete", "pruned", "failed")]


def write_parts(folder: Path, data) -> str:
    """The ``files:`` split of the data (train + valid as train, test as test): a --split value (its
    rating scale: ``--rating-scale 1,5``)."""
    paths = []
    for name, parts in (("train.csv", (data.train, data.valid)), ("test.csv", (data.test,))):
        rows = ["user,item,rating"] + [
            f"{u},{i},{r:g}" for p in parts for u, i, r in zip(p.users, p.items, p.ratings, strict=True)
        ]
        (folder / name).write_text("\n".join(rows) + "\n")
        paths.append(str(folder / name))
    return "files:" + ",".join(paths)


def cli_env(tmp_path: Path) -> dict:
    return {**os.environ, "AUTOREC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def study_of(results: Path) -> optuna.Study:
    """The one study a command wrote under ``results``."""
    dbs = list((results / "tuning" / "tiny").glob("*.db"))
    if len(dbs) != 1:
        raise ValueError(f"{len(dbs)} studies under {results}")
    return optuna.load_study(study_name=dbs[0].stem, storage=storage(sqlite_url(dbs[0])))
