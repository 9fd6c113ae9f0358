"""``python -m autorec.models.autorec.torch.ddp train``: AutoRec data-parallel under a torchrun one
starts oneself, on one node or several (``--nnodes 2`` with c10d rendezvous; see docs/cluster.md).

:func:`~autorec.models.autorec.torch.ddp.fit_parallel` launches its own single-node torchrun from
a job folder; here every rank instead loads the stored split itself (on its own host, from the
dataset or the split cache), checks that its split hash is rank 0's (every node must hold the same
copy of the data), and trains as a rank of :func:`~autorec.models.autorec.torch.ddp.run_rank`:
the same ranks, batches and all-reduces as ``fit_parallel``.  Into ``--out`` (on each host) every
rank writes ``weights_rank{r}.npz``; rank 0 writes the model (``model.npz``), ``fit_info.json`` and
``metrics.json`` (test RMSE and MAE, the split hash, the world size).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autorec.atomic import atomic_write
from autorec.errors import ConfigError, DataError
from autorec.models.autorec.torch.ddp import MODEL, Parts, RankModel, run_rank

HELP = "one rank of a torchrun started by hand (one node or several): a stored split in, a model out"
METRICS = "metrics.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="dataset name (a files: split names its own ratings)")
    p.add_argument("--split", default="random", metavar="KIND[:ARGS]", help="split spec (default random)")
    p.add_argument("--seed", type=int, default=0, help="split seed, also the model's seed (default 0)")
    p.add_argument("--valid-ratio", type=float, default=0.05, help="validation share of train (default 0.05)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="a model parameter")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads of each rank (default: all cores)")
    p.add_argument("--out", required=True, help="folder for the model, fit info, metrics and this host's weights")
    p.add_argument("--data-dir", default=None, help="folder holding the datasets")
    p.add_argument("--rating-scale", default=None, metavar="LOW,HIGH[,STEP]", help="scale of a files: dataset")


def train(args: argparse.Namespace) -> None:
    """This process's rank of ``train`` (see the module docstring)."""
    import torch.distributed as dist

    from autorec.env import default_threads
    from autorec.models.config import parse_assignments
    from autorec.splits import load_split

    params = parse_assignments(args.sets)
    if "seed" in params:
        raise ConfigError("--set seed: the model's seed is the run's --seed")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data: list[Any] = []

    def parts() -> Parts:
        d = load_split(
            args.dataset,
            args.split,
            seed=args.seed,
            valid_ratio=args.valid_ratio,
            data_dir=args.data_dir,
            rating_scale=args.rating_scale,
        )
        first = [d.split.sha256]
        dist.broadcast_object_list(first, src=0)
        if first[0] != d.split.sha256:
            raise DataError(
                f"this node's split of {args.dataset} {args.split} seed {args.seed} has hash {d.split.sha256}, "
                f"rank 0's {first[0]}: every node must hold the same copy of the data"
            )
        data.append(d)
        return d.train, d.valid

    def finish(model: RankModel) -> None:
        d = data[0]
        test = model.evaluate(d.test)
        metrics = {
            "test_rmse": test["rmse"],
            "test_mae": test["mae"],
            "split_sha256": d.split.sha256,
            "world_size": model.world,
        }
        text = json.dumps(metrics, indent=1).encode()
        atomic_write(out / METRICS, lambda fh: fh.write(text))
        print(f"test RMSE {test['rmse']:.4f}, MAE {test['mae']:.4f} ({model.world} ranks); wrote {out / MODEL}")

    threads = args.threads or params.get("threads") or default_threads()
    run_rank(out, {**params, "seed": args.seed}, int(threads), parts, finish=finish)
