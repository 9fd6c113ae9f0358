"""Data-parallel AutoRec training: ``DistributedDataParallel`` over ``torchrun`` processes.

Design (how the data reaches the ranks): :func:`fit_distributed` writes a job folder holding
``job.json`` (the config, the world size, and either a split spec or nothing) and, when given
in-memory parts, ``data.npz`` (train / validation arrays); it then runs

    python -m torch.distributed.run --nnodes 1 --nproc-per-node N --master-addr 127.0.0.1
        --master-port P -m autorec.models.torch.ddp worker JOB_DIR

Every rank loads the whole train part (it is small: the inputs of every row must be at hand), and
each epoch walks the same global batch order (:func:`autorec.models.common.epoch_batches`); rank r
takes ``batching.shard(batch, r, world)`` of every global batch and scales its share of the loss by
the *global* batch's size and observed count times the world size, so DDP's gradient average is
exactly the single-device batch gradient (the effective batch equals the single-device one).  An
empty share (a last batch with fewer rows than ranks) still joins the all-reduce with a zero loss.
Validation pairs are sharded the same way; the squared-error sums and counts are all-reduced, so
every rank sees the same validation RMSE and takes the same early-stopping decision.  Backend:
gloo on CPU, nccl when ``config.devices`` names GPUs (rank r uses ``devices[local_rank]``).

Rank 0 writes the trained model (``model.npz``, the :meth:`AutoRecTorch.save` format) and
``fit_info.json``; every rank writes ``weights_rank{r}.npz`` (to check the replicas agree).  A
failing rank writes ``error_rank{r}.json``; the launcher re-raises it as the same error type.

Command line:
    python -m autorec.models.torch.ddp train --dataset ml-100k --split random --seed 0 \
        --data-dir DIR --nproc 2 --config '{"hidden": [500]}' --out model.npz
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from autorec import errors
from autorec.config import AutoRecConfig
from autorec.errors import AutoRecBenchError, ConfigError, DataError
from autorec.interactions import Interactions
from autorec.models import common
from autorec.models.base import FitInfo

JOB = "job.json"
DATA = "data.npz"
MODEL = "model.npz"
INFO = "fit_info.json"


# ====================================================================== launcher side
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _parts(data, valid) -> tuple[Interactions | None, Interactions | None, dict | None]:
    """(train, valid, spec): in-memory parts, or a split spec loaded by every rank."""
    if isinstance(data, dict):
        spec = dict(data)
        if "dataset" not in spec or "split" not in spec:
            raise ConfigError(f"fit_distributed: a split spec needs 'dataset' and 'split' (and optionally "
                              f"'seed', 'valid_ratio', 'data_dir'), got {sorted(spec)}")
        return None, None, spec
    if isinstance(data, Interactions):
        return data, valid, None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1], None
    if hasattr(data, "train") and hasattr(data, "valid"):  # autorec.splits.SplitData
        return data.train, data.valid if valid is None else valid, None
    raise ConfigError("fit_distributed: data must be train Interactions, a (train, valid) pair, a SplitData "
                      f"or a split spec dict, got {type(data).__name__}")


def _inter_arrays(prefix: str, part: Interactions) -> dict[str, np.ndarray]:
    return {f"{prefix}_users": np.asarray(part.users, np.int32), f"{prefix}_items": np.asarray(part.items, np.int32),
            f"{prefix}_ratings": np.asarray(part.ratings, np.float32),
            f"{prefix}_shape": np.array([part.n_users, part.n_items], np.int64),
            f"{prefix}_scale": np.array(part.rating_scale, np.float64)}


def _inter_from(z, prefix: str) -> Interactions | None:
    if f"{prefix}_users" not in z:
        return None
    nu, ni = (int(v) for v in z[f"{prefix}_shape"])
    lo, hi = (float(v) for v in z[f"{prefix}_scale"])
    return Interactions(users=z[f"{prefix}_users"], items=z[f"{prefix}_items"], ratings=z[f"{prefix}_ratings"],
                        n_users=nu, n_items=ni, rating_scale=(lo, hi))


def fit_distributed(config: "AutoRecConfig | dict", data, nproc: int | None = None, *,
                    valid: Interactions | None = None, workdir: "str | os.PathLike | None" = None,
                    timeout: float = 1800, threads_per_rank: int | None = None,
                    checkpoint: "str | os.PathLike | None" = None, checkpoint_every: int = 1,
                    resume: "str | os.PathLike | None" = None, quiet: bool = True):
    """Train AutoRec data-parallel in ``nproc`` torchrun processes; returns the trained
    :class:`~autorec.models.torch.AutoRecTorch` (rank 0's weights) with ``fit_info`` set.

    ``data``: train :class:`Interactions` (with ``valid=``), a ``(train, valid)`` pair, a
    :class:`~autorec.splits.SplitData`, or a split spec ``{"dataset", "split", "seed",
    "valid_ratio", "data_dir"}`` that every rank loads itself.  ``nproc`` defaults to
    ``len(config.devices)``.  ``workdir`` keeps the job folder (weights of every replica, logs);
    without it a temporary folder is used and removed.  ``checkpoint``: written by rank 0 (each
    ``checkpoint_every`` epochs); ``resume``: a checkpoint every rank continues from.
    ``fit_info.extra["replica_max_abs_diff"]`` is the largest difference between the replicas'
    parameters after training (0 when DDP kept them identical).
    """
    cfg = common.resolve_config(config)
    nproc = int(nproc if nproc is not None else len(cfg.devices))
    if nproc < 1:
        raise ConfigError(f"fit_distributed: nproc={nproc} must be >= 1")
    kinds = {common.parse_device(d)[0] for d in cfg.devices}
    if len(kinds) > 1:
        raise ConfigError(f"devices={list(cfg.devices)} mix cpu and gpu; use all cpu (gloo) or all gpu (nccl)")
    if "gpu" in kinds:
        if len(cfg.devices) < nproc:
            raise ConfigError(f"fit_distributed: nproc={nproc} ranks but only {len(cfg.devices)} GPU device(s) "
                              f"named in devices={list(cfg.devices)}")
        from autorec.models.torch.model import torch_device
        for k in range(nproc):
            torch_device(cfg, k)  # ConfigError before any work if a GPU does not exist
    train, valid_part, spec = _parts(data, valid)
    if spec is None:
        if not isinstance(train, Interactions) or len(train) == 0:
            raise DataError("fit_distributed: the train part is empty or not Interactions")
    own = workdir is None
    job_dir = Path(tempfile.mkdtemp(prefix="autorec-ddp-")) if own else Path(workdir)
    job_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*job_dir.glob("error_rank*.json"), *job_dir.glob("weights_rank*.npz"), job_dir / MODEL,
                  job_dir / INFO]:
        stale.unlink(missing_ok=True)
    try:
        threads = threads_per_rank or cfg.threads or max(1, (os.cpu_count() or 1) // nproc)
        job = {"config": cfg.to_dict(), "nproc": nproc, "spec": spec, "threads": int(threads),
               "checkpoint": os.path.abspath(checkpoint) if checkpoint is not None else None,
               "checkpoint_every": int(checkpoint_every),
               "resume": os.path.abspath(resume) if resume is not None else None}
        (job_dir / JOB).write_text(json.dumps(job, indent=1))
        if spec is None:
            arrays = _inter_arrays("train", train)
            if valid_part is not None and len(valid_part):
                arrays.update(_inter_arrays("valid", valid_part))
            common.atomic_savez(job_dir / DATA, arrays)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               "-m", "autorec.models.torch.ddp", "worker", str(job_dir)]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["OMP_NUM_THREADS"] = str(threads)
        with open(job_dir / "torchrun.log", "wb") as log:
            try:
                proc = subprocess.run(cmd, env=env, stdout=log if quiet else None, stderr=subprocess.STDOUT
                                      if quiet else None, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise AutoRecBenchError(f"fit_distributed: torchrun did not finish within {timeout:g} s "
                                        f"(log: {job_dir / 'torchrun.log'})") from None
        _raise_rank_errors(job_dir)
        if proc.returncode != 0 or not (job_dir / MODEL).is_file():
            tail = (job_dir / "torchrun.log").read_text(errors="replace")[-3000:]
            raise AutoRecBenchError(f"fit_distributed: torchrun exited with status {proc.returncode}; "
                                    f"log tail:\n{tail}")
        from autorec.models.torch.model import AutoRecTorch
        model = AutoRecTorch.load(job_dir / MODEL)
        info = json.loads((job_dir / INFO).read_text())
        model.fit_info = FitInfo(**info)
        return model
    finally:
        if own:
            shutil.rmtree(job_dir, ignore_errors=True)


def _raise_rank_errors(job_dir: Path) -> None:
    """Re-raise a rank's failure.  The suite's own errors (e.g. TrainingDivergedError) come first;
    among others the earliest written wins (later ones are usually peers losing the connection)."""
    found = []
    for f in job_dir.glob("error_rank*.json"):
        e = json.loads(f.read_text())
        cls = getattr(errors, e.get("type", ""), None)
        ours = isinstance(cls, type) and issubclass(cls, AutoRecBenchError)
        found.append((not ours, f.stat().st_mtime, e, cls if ours else AutoRecBenchError))
    if found:
        _, _, e, cls = min(found, key=lambda t: (t[0], t[1]))
        kind = "" if cls is not AutoRecBenchError or e.get("type") == "AutoRecBenchError" else f"{e.get('type')}: "
        raise cls(f"rank {e.get('rank')}: {kind}{e.get('message')}")


# ====================================================================== worker side
def _worker(job_dir: Path) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from autorec.models.torch.model import AutoRecTorch, torch_device

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    try:
        job = json.loads((job_dir / JOB).read_text())
        cfg = AutoRecConfig.from_dict(job["config"])
        gpu = common.parse_device(cfg.devices[0])[0] == "gpu"
        dev = cfg.devices[local_rank] if gpu else "cpu"
        rank_cfg = cfg.replace(devices=(dev,), threads=int(job["threads"]))
        device = torch_device(rank_cfg)
        if gpu:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if gpu else "gloo")
        spec = job.get("spec")
        if spec is not None:
            from autorec.splits import load_split
            sd = load_split(spec["dataset"], spec["split"], seed=int(spec.get("seed", 0)),
                            valid_ratio=float(spec.get("valid_ratio", 0.05)), data_dir=spec.get("data_dir"))
            train, valid = sd.train, sd.valid
        else:
            with np.load(job_dir / DATA, allow_pickle=False) as z:
                train, valid = _inter_from(z, "train"), _inter_from(z, "valid")
        model = AutoRecTorch(rank_cfg)

        def wrap(net):
            return DDP(net, device_ids=[device.index] if gpu else None)

        def progress(epoch, n, rec):
            with open(job_dir / "progress.log", "a") as fh:
                fh.write(json.dumps(rec) + "\n")

        info = model._fit(train, valid, rank=rank, world=world, wrap=wrap, valid_part=slice(rank, None, world),
                          progress=progress if rank == 0 else None,
                          checkpoint=job.get("checkpoint") if rank == 0 else None,
                          checkpoint_every=int(job.get("checkpoint_every", 1)), resume=job.get("resume"))
        weights = model.get_weights()
        common.atomic_savez(job_dir / f"weights_rank{rank}.npz", weights)
        flat = torch.cat([torch.from_numpy(weights[k]).ravel() for k in sorted(weights)]).to(device)
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            diff = max(float((g - gathered[0]).abs().max()) for g in gathered)
            info.extra["replica_max_abs_diff"] = diff
            info.extra["world_size"] = world
            info.extra["dist_backend"] = "nccl" if gpu else "gloo"
            common.save_model(job_dir / MODEL, config=cfg.replace(devices=(cfg.devices[0],)),
                              backend="torch", weights=weights, train=train,
                              meta={"distributed": {"world_size": world}})
            tmp = job_dir / (INFO + ".tmp")
            tmp.write_text(json.dumps(asdict(info)))
            os.replace(tmp, job_dir / INFO)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException as exc:
        (job_dir / f"error_rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}))
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m autorec.models.torch.ddp", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="one torchrun rank (launched by fit_distributed)")
    w.add_argument("job_dir")
    t = sub.add_parser("train", help="launch data-parallel training on a stored split, save the model")
    t.add_argument("--dataset", required=True)
    t.add_argument("--split", required=True, help="split spec, e.g. random or d2l-random")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--valid-ratio", type=float, default=0.05)
    t.add_argument("--data-dir", default=None)
    t.add_argument("--nproc", type=int, default=2)
    t.add_argument("--config", default="{}", help="AutoRecConfig parameters as JSON (or @file.json)")
    t.add_argument("--out", required=True, help="where to save the trained model")
    t.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    if args.cmd == "worker":
        # A rank leaves through os._exit once its results are written atomically: gloo's C++
        # worker threads can otherwise abort the process during interpreter finalisation
        # ("terminate called without an active exception", SIGABRT), seen here under CPU load.
        code = 0
        try:
            _worker(Path(args.job_dir))
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    text = Path(args.config[1:]).read_text() if args.config.startswith("@") else args.config
    try:
        params: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config is not valid JSON: {exc}") from None
    spec = {"dataset": args.dataset, "split": args.split, "seed": args.seed, "valid_ratio": args.valid_ratio,
            "data_dir": args.data_dir}
    model = fit_distributed(params, spec, args.nproc, workdir=args.workdir, quiet=False)
    model.save(args.out)
    info = model.fit_info
    print(json.dumps({"best_epoch": info.best_epoch, "epochs_run": info.epochs_run,
                      "replica_max_abs_diff": info.extra.get("replica_max_abs_diff"), "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
