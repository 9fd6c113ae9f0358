"""Data-parallel AutoRec training: ``DistributedDataParallel`` over ``torchrun`` processes.

:func:`fit_parallel` (:meth:`AutoRecTorch.fit_parallel`) writes a job folder holding ``job.json``
(the config, the world size, threads, checkpoint options) and ``data.npz`` (the train and
validation parts), then runs

    python -m torch.distributed.run --standalone --nproc-per-node N --local-addr 127.0.0.1
        -m autorec.models.autorec.torch.ddp worker JOB_DIR

Every rank loads the whole train part (the inputs of every row must be at hand) and walks the same
global batch order; rank r takes ``shard(batch, r, world)`` of every global batch and scales its
share of the loss so that DDP's gradient average is exactly the single-device batch gradient (see
:class:`~autorec.models.autorec.torch.model.TorchEpochs`); an empty share still joins the
all-reduce with a zero loss.  Dropout masks are drawn for the whole global batch and each rank keeps
its rows, so the run is the single-device run.  Validation pairs are sharded the same way and the
squared-error sums and counts all-reduced, so every rank takes the same early-stopping decision.
Backend: gloo on CPU, nccl when the devices are GPUs (rank r uses ``devices[local_rank]``).

Rank 0 writes the trained model (``model.npz``, the :meth:`AutoRecTorch.save` format), the fit
info and the checkpoints; every rank writes ``weights_rank{r}.npz`` (to check the replicas agree).
A failing rank writes ``error_rank{r}.json`` atomically; the launcher re-raises it as the same
error type.  A rank is :func:`run_rank`; ``ddp train`` (:mod:`~autorec.models.autorec.torch.ddp_train`)
runs it under a torchrun one starts oneself, e.g. on several nodes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from autorec import errors
from autorec.atomic import atomic_write
from autorec.devices import parse_device
from autorec.env import die_with_parent
from autorec.errors import AutoRecBenchError, ConfigError
from autorec.interactions import Interactions
from autorec.models.autorec.config import AutoRecConfig
from autorec.models.autorec.torch.model import AutoRecTorch, TorchEpochs, torch_device
from autorec.models.base import FitInfo, check_parts
from autorec.models.training import atomic_savez

JOB = "job.json"
DATA = "data.npz"
MODEL = "model.npz"
INFO = "fit_info.json"
PROGRESS = "progress.log"
LOG = "torchrun.log"


# ====================================================================== launcher side
def _parts(label: str, parts: Any) -> tuple[Interactions, Interactions | None]:
    """(train, valid) of a ``(train, valid)`` pair, a :class:`~autorec.splits.SplitData` or a
    train part alone."""
    if isinstance(parts, Interactions):
        return parts, None
    if hasattr(parts, "train") and hasattr(parts, "valid"):
        return parts.train, parts.valid
    if isinstance(parts, (tuple, list)) and len(parts) == 2:
        return parts[0], parts[1]
    raise ConfigError(
        f"{label}: fit_parallel needs train Interactions, a (train, valid) pair or a SplitData, "
        f"got {type(parts).__name__}"
    )


def _arrays(prefix: str, part: Interactions) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_users": np.asarray(part.users, np.int32),
        f"{prefix}_items": np.asarray(part.items, np.int32),
        f"{prefix}_ratings": np.asarray(part.ratings, np.float32),
        f"{prefix}_shape": np.array([part.n_users, part.n_items], np.int64),
        f"{prefix}_scale": np.array(part.rating_scale, np.float64),
    }


def _part(z: Any, prefix: str) -> Interactions | None:
    if f"{prefix}_users" not in z:
        return None
    nu, ni = (int(v) for v in z[f"{prefix}_shape"])
    lo, hi = (float(v) for v in z[f"{prefix}_scale"])
    return Interactions(
        users=z[f"{prefix}_users"],
        items=z[f"{prefix}_items"],
        ratings=z[f"{prefix}_ratings"],
        n_users=nu,
        n_items=ni,
        rating_scale=(lo, hi),
    )


def _check_devices(label: str, cfg: AutoRecConfig, nproc: int) -> None:
    """:class:`ConfigError` before any work for a mix of CPU and GPU devices, or too few GPUs."""
    kinds = {parse_device(d)[0] for d in cfg.devices}
    if len(kinds) > 1:
        raise ConfigError(f"{label}: devices={list(cfg.devices)} mix cpu and gpu; use all cpu (gloo) or all gpu (nccl)")
    if "gpu" in kinds:
        if len(cfg.devices) < nproc:
            raise ConfigError(
                f"{label}: fit_parallel with {nproc} ranks but only {len(cfg.devices)} GPU device(s) "
                f"named in devices={list(cfg.devices)}"
            )
        for dev in cfg.devices[:nproc]:
            torch_device(label, dev)


def fit_parallel(
    params: Mapping[str, Any],
    parts: Any,
    nproc: int | None = None,
    *,
    threads_per_rank: int | None = None,
    workdir: str | os.PathLike | None = None,
    timeout: float = 1800,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: str | os.PathLike | None = None,
    quiet: bool = True,
) -> AutoRecTorch:
    """Train AutoRec data-parallel in ``nproc`` torchrun processes (default: one per device);
    returns the trained :class:`AutoRecTorch` (rank 0's weights, on the first device) with
    ``fit_info`` set.

    ``parts``: a ``(train, valid)`` pair, a :class:`~autorec.splits.SplitData` or train
    :class:`Interactions` alone.  ``threads_per_rank``: intra-op threads of each rank (default
    ``config.threads``, else the cores shared out).  ``workdir`` keeps the job folder (every replica's
    weights, logs); without it a temporary folder is used and removed.  ``checkpoint``: written by
    rank 0 every ``checkpoint_every`` epochs; ``resume``: a checkpoint every rank continues from.
    ``fit_info.extra["replica_max_abs_diff"]`` is the largest difference between the replicas'
    parameters after training (0 when DDP kept them identical).
    """
    label = AutoRecTorch.label()
    cfg = AutoRecConfig.from_dict(params, model=label)
    nproc = int(nproc if nproc is not None else len(cfg.devices))
    if nproc < 1:
        raise ConfigError(f"{label}: fit_parallel nproc={nproc} must be >= 1")
    _check_devices(label, cfg, nproc)
    train, valid = _parts(label, parts)
    check_parts(label, train, valid, cold_start=cfg.cold_start)
    own = workdir is None
    job_dir = Path(tempfile.mkdtemp(prefix="autorec-ddp-")) if own else Path(workdir)
    job_dir.mkdir(parents=True, exist_ok=True)
    for stale in [
        *job_dir.glob("error_rank*.json"),
        *job_dir.glob("weights_rank*.npz"),
        job_dir / MODEL,
        job_dir / INFO,
    ]:
        stale.unlink(missing_ok=True)
    try:
        threads = threads_per_rank or cfg.threads or max(1, (os.cpu_count() or 1) // nproc)
        job = {
            "config": cfg.to_dict(),
            "threads": int(threads),
            "checkpoint": os.path.abspath(checkpoint) if checkpoint is not None else None,
            "checkpoint_every": int(checkpoint_every),
            "resume": os.path.abspath(resume) if resume is not None else None,
        }
        (job_dir / JOB).write_text(json.dumps(job, indent=1))
        arrays = _arrays("train", train)
        if valid is not None and len(valid):
            arrays.update(_arrays("valid", valid))
        atomic_savez(job_dir / DATA, arrays)
        _launch(job_dir, nproc, threads, timeout, quiet)
        model = AutoRecTorch.load(job_dir / MODEL, devices=[cfg.devices[0]], threads=cfg.threads)
        model.fit_info = FitInfo(**json.loads((job_dir / INFO).read_text()))
        return model
    finally:
        if own:
            shutil.rmtree(job_dir, ignore_errors=True)


def _launch(job_dir: Path, nproc: int, threads: int, timeout: float, quiet: bool) -> None:
    """Run the ranks under torchrun; re-raise a rank's error, or the log tail when torchrun failed.
    ``--standalone``: the rendezvous store and the ranks' master store bind port 0 and keep it (torch
    shares the agent's store with the ranks), so no port is picked here and released for torchrun to
    bind again, which another process could take in between; ``--local-addr``: on the loopback
    interface, whatever the host name resolves to."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
        "--local-addr", "127.0.0.1",
        "-m", "autorec.models.autorec.torch.ddp", "worker", str(job_dir),
    ]  # fmt: skip
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[4])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = str(threads)
    with open(job_dir / LOG, "wb") as log:
        out = log if quiet else None
        # torchrun dies with this process (and each rank with torchrun, see main): a launcher killed by a
        # timeout or SIGKILL left torchrun and its ranks training on, beside the next runs
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT if quiet else None, preexec_fn=die_with_parent
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AutoRecBenchError(
                f"fit_parallel: torchrun did not finish within {timeout:g} s (log: {job_dir / LOG})"
            ) from None
        finally:
            if proc.poll() is None:  # timed out, or interrupted: the ranks go with torchrun
                proc.kill()
                proc.wait()
    raise_rank_errors(job_dir, nproc)
    if proc.returncode != 0 or not (job_dir / MODEL).is_file():
        tail = (job_dir / LOG).read_text(errors="replace")[-3000:]
        raise AutoRecBenchError(f"fit_parallel: torchrun exited with status {proc.returncode}; log tail:\n{tail}")


def _read_error(path: Path) -> dict[str, Any] | None:
    """A rank's error record, or ``None`` when the file cannot be read as one."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def raise_rank_errors(job_dir: Path, nproc: int | None = None) -> None:
    """Re-raise a rank's failure.  The suite's own errors (e.g. TrainingDivergedError) come first,
    then other errors, then error files that cannot be read (they still say that their rank
    failed); within each, the earliest written wins (later ones are usually peers losing the
    connection).  With ``nproc``, a rank of the job that wrote no error file is named beside a
    foreign error: it may have died first (killed for memory, a crash), leaving its peers to report
    the lost connection."""
    found = []
    for f in job_dir.glob("error_rank*.json"):
        e = _read_error(f)
        if e is None:
            rank = f.stem.removeprefix("error_rank")
            found.append((2, f.stat().st_mtime, {"rank": rank, "message": f"failed ({f.name} is unreadable)"}, None))
            continue
        cls = getattr(errors, str(e.get("type", "")), None)
        ours = isinstance(cls, type) and issubclass(cls, AutoRecBenchError)
        found.append((0 if ours else 1, f.stat().st_mtime, e, cls if ours else None))
    if found:
        _, _, e, cls = min(found, key=lambda t: (t[0], t[1]))
        prefix = "" if cls is not None or "type" not in e else f"{e['type']}: "
        silent = [r for r in range(nproc or 0) if not (job_dir / f"error_rank{r}.json").exists()]
        tail = ""
        if silent and cls is None:
            tail = (
                f" (rank(s) {', '.join(map(str, silent))} wrote no error: one may have died first, e.g. killed for "
                f"memory, and this rank lost its connection; the torchrun log says: {job_dir / LOG})"
            )
        raise (cls or AutoRecBenchError)(f"rank {e.get('rank')}: {prefix}{e.get('message')}{tail}")


# ====================================================================== worker side
class RankModel(AutoRecTorch):
    """One rank's model: its trainer runs through ``DistributedDataParallel`` on its share of every
    global batch, and its validation RMSE is the all-reduced one."""

    def __init__(self, config: AutoRecConfig, *, rank: int, world: int, gpu: bool) -> None:
        super().__init__(config)
        self.rank, self.world, self.gpu = rank, world, gpu

    def _trainer(self) -> TorchEpochs:
        from torch.nn.parallel import DistributedDataParallel

        index = self.device.index if self.gpu else None
        ddp = DistributedDataParallel(self.net, device_ids=[index] if index is not None else None)
        return TorchEpochs(self, rank=self.rank, world=self.world, forward=ddp)

    def validation_rmse(self, valid: Interactions) -> float:
        """RMSE of the final predictions on all of ``valid``: each rank predicts its share
        (``rank::world``), the squared-error sums and counts are all-reduced."""
        import torch

        part = slice(self.rank, None, self.world)
        pred = self.predict(valid.users[part], valid.items[part])
        err = pred - np.asarray(valid.ratings[part], dtype=np.float64)
        t = torch.tensor([float(np.dot(err, err)), float(len(err))], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        sse, n = t.tolist()
        return math.sqrt(sse / n) if n > 0 else float("nan")

    def _fit_extra(self) -> dict[str, Any]:
        import torch

        # what each rank ran with: the launcher's own thread count (recorded in the run's environment)
        # is not it (a run's --threads is shared out between the ranks, at least one each)
        return {
            **super()._fit_extra(),
            "world_size": self.world,
            "dist_backend": "nccl" if self.gpu else "gloo",
            "threads_per_rank": int(torch.get_num_threads()),
        }


Parts = tuple[Interactions, Interactions | None]


def run_rank(
    out: Path,
    config: Mapping[str, Any],
    threads: int,
    parts: Callable[[], Parts],
    *,
    checkpoint: str | None = None,
    checkpoint_every: int = 1,
    resume: str | None = None,
    finish: Callable[[RankModel], None] | None = None,
) -> None:
    """One rank under torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous from its
    environment): join the process group, get the train and validation ``parts``, fit, write this
    rank's weights into ``out`` and, on rank 0, the model, the fit info and whatever ``finish`` adds.
    A failure is written to ``out/error_rank{r}.json`` and re-raised."""
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    try:
        cfg = AutoRecConfig.from_dict(config)
        gpu = parse_device(cfg.devices[0])[0] == "gpu"
        dev = cfg.devices[local_rank] if gpu else "cpu"
        model = RankModel(cfg.replace(devices=(dev,), threads=int(threads)), rank=rank, world=world, gpu=gpu)
        if gpu:
            torch.cuda.set_device(model.device)
        dist.init_process_group("nccl" if gpu else "gloo")
        train, valid = parts()

        def progress(epoch: int, n: int, rec: dict) -> None:
            with open(out / PROGRESS, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

        info = model.fit(
            train,
            valid,
            progress=progress if rank == 0 else None,
            checkpoint=checkpoint if rank == 0 else None,
            checkpoint_every=checkpoint_every,
            resume=resume,
        )
        weights = model.get_weights()
        atomic_savez(out / f"weights_rank{rank}.npz", weights)
        flat = torch.cat([torch.from_numpy(weights[k]).ravel() for k in sorted(weights)]).to(model.device)
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            info.extra["replica_max_abs_diff"] = max(float((g - gathered[0]).abs().max()) for g in gathered)
            model.save(out / MODEL)
            text = json.dumps(asdict(info)).encode()
            atomic_write(out / INFO, lambda fh: fh.write(text))
            if finish is not None:
                finish(model)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException as exc:
        record = {"rank": rank, "type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
        text = json.dumps(record).encode()
        atomic_write(out / f"error_rank{rank}.json", lambda fh: fh.write(text))
        raise


def _worker(job_dir: Path) -> None:
    """A rank of :func:`fit_parallel`: the job and its data from the job folder."""
    job = json.loads((job_dir / JOB).read_text())

    def parts() -> Parts:
        with np.load(job_dir / DATA, allow_pickle=False) as z:
            train, valid = _part(z, "train"), _part(z, "valid")
        assert train is not None
        return train, valid

    run_rank(
        job_dir,
        job["config"],
        int(job["threads"]),
        parts,
        checkpoint=job["checkpoint"],
        checkpoint_every=int(job["checkpoint_every"]),
        resume=job["resume"],
    )


def main(argv: list[str] | None = None) -> int:
    from autorec.models.autorec.torch import ddp_train  # it imports this module

    p = argparse.ArgumentParser(prog="python -m autorec.models.autorec.torch.ddp", description="one torchrun rank")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("worker", help="one torchrun rank (launched by fit_parallel)").add_argument("job_dir")
    ddp_train.add_arguments(sub.add_parser("train", help=ddp_train.HELP))
    args = p.parse_args(argv)
    if args.cmd == "worker":  # a rank dies with its torchrun (killed by a timeout, or its launcher killed)
        torchrun = os.getppid()
        die_with_parent()
        if os.getppid() != torchrun:  # torchrun was gone before that took effect (the rank was reparented)
            os._exit(1)
    # A rank leaves through os._exit once its results are written atomically: gloo's C++ worker
    # threads can otherwise abort the process during interpreter finalisation ("terminate called
    # without an active exception", SIGABRT), seen here under CPU load.
    code = 0
    try:
        _worker(Path(args.job_dir)) if args.cmd == "worker" else ddp_train.train(args)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
