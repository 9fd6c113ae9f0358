"""One scale row, measured in the harness's worker process (job kind ``scale``).

:class:`ScaleJob` is a :class:`~benchmarks.harness.worker.Worker` with its own ``run``; the harness
starts it (fresh process, thread count, timeout, peak RSS, events) and writes what it leaves.  In
order, each stage's seconds, RSS and peak RSS recorded (``scale["stages"]``):

1. ``probe``: the machine's dense float32 matmul rate (:mod:`benchmarks.scale.probes`);
2. ``generate``, ``split``, ``parts``: the synthetic ratings the row's dataset name determines
   (generated here, never in the parent), the split, the train and test parts (the ratings and the
   split freed before training);
3. the memory check again, now with the worst batch's exact ratings: a row that does not fit
   fails with outcome ``refused`` before training;
4. ``train``: ``epochs`` timed epochs (no validation inside them), a checkpoint every epoch for a
   checkpointed row (``resume`` continues from it).  A dense row whose estimated epoch (FLOP model /
   measured matmul rate) exceeds ``dense_epoch_budget_s`` is timed on a random subset of its rows
   (row ids are random in popularity) and its epoch time scaled by the number of steps: the dense
   path's cost per row does not depend on the ratings;
5. ``evaluate``: test RMSE / MAE in bounded-memory batches; then the pipeline's peak RSS is taken,
   before the after-run probes (matmul again, bandwidth) and the optional ``profile`` of a few steps.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from autorec import env
from autorec import scale as sc
from autorec.errors import MemoryBudgetError
from autorec.interactions import Interactions
from autorec.models import registry
from autorec.splits import SplitSpec, make_split
from benchmarks.harness.data import parse_dataset, synthetic_ratings
from benchmarks.harness.worker import Worker, fit_summary, rss_mb
from benchmarks.record import Metrics, Sizes
from benchmarks.scale.records import refusal_message, section
from benchmarks.scale.spec import Row

PEAK_SOURCE = "VmHWM of the row's worker after evaluation (before the after-run probes)"


def peak_bytes() -> int:
    """This worker's peak RSS since exec (VmHWM; ``ru_maxrss`` only where /proc is missing, which
    also counts the parent's RSS at fork)."""
    hwm = env.process_memory_bytes("VmHWM")
    return hwm if hwm is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def subset(part: Interactions, based: str, n_rows: int) -> Interactions:
    """``part`` restricted to its first ``n_rows`` AutoRec rows (items for I-AutoRec, users for
    U-AutoRec), in a smaller index space on that side only."""
    keep = (part.items if based == "item" else part.users) < n_rows
    return Interactions(
        users=np.ascontiguousarray(part.users[keep]),
        items=np.ascontiguousarray(part.items[keep]),
        ratings=np.ascontiguousarray(part.ratings[keep]),
        n_users=part.n_users if based == "item" else n_rows,
        n_items=n_rows if based == "item" else part.n_items,
        rating_scale=part.rating_scale,
    )


class ScaleJob(Worker):
    """Measures the row in ``options["row"]`` under the memory limit ``options["limit"]`` (bytes),
    checkpointing to ``options["checkpoint"]`` (and resuming from it with ``options["resume"]``)."""

    def run(self) -> None:
        row = Row.from_dict(self.options["row"])
        limit = int(self.options["limit"])
        ident = self.plan.identity
        s = self.state["scale"] = section(row, row.estimate().to_dict(), limit, "failed", stages={})
        ref = registry.get(ident.model, ident.backend)
        ref.load()  # imports torch before the thread count is set
        import torch

        from benchmarks.scale.probes import dense_matmul_gflops, stream_bandwidth_gbs

        self.threads = env.set_threads(self.threads)
        self.memory["rss_after_imports"] = rss_mb()
        t0 = time.perf_counter()
        probe = dense_matmul_gflops(row.probe_n)
        t0 = self.stage("probe", t0)
        ratings = synthetic_ratings(parse_dataset(ident.data.name))
        t0 = self.stage("generate", t0)
        split = make_split(
            ratings,
            SplitSpec.from_dict(self.plan.split_spec),
            seed=ident.split.seed,
            valid_ratio=ident.split.valid_ratio,
        )
        t0 = self.stage("split", t0)
        data = split.data(ratings)
        train, test, n_valid, s["split_sha256"] = data.train, data.test, len(data.valid), split.sha256
        del data, split, ratings
        self.stage("parts", t0)
        self.timing["load"] = round(sum(s["stages"][k]["seconds"] for k in ("generate", "split", "parts")), 3)
        self.memory["rss_after_data"] = rss_mb()
        self.state["sizes"] = Sizes(
            n_users=int(train.n_users),
            n_items=int(train.n_items),
            n_train=len(train),
            n_valid=n_valid,
            n_test=len(test),
            rating_scale=tuple(float(v) for v in train.rating_scale),
        )
        w_full = row.workload(len(train))
        counts = np.bincount(train.items if row.based == "item" else train.users, minlength=w_full.n_rows)
        bnnz = sc.max_batch_nnz(counts, row.batch_size)
        est = row.estimate(batch_nnz=bnnz)
        s["estimate"] = est.to_dict()
        if est.total > limit:
            s.update(outcome="refused", reason=f"after generating the data: the worst batch holds {bnnz} ratings")
            raise MemoryBudgetError(refusal_message(row.row_id, est.total, limit))

        fit_train, eval_test = train, test
        if row.path == "dense":
            est_s = sc.epoch_flops(w_full, "dense") / (0.7 * probe["gflops"] * 1e9)
            n_sub = self.dense_subset_rows(row, w_full, est_s)
            if n_sub < w_full.n_rows:
                fit_train, eval_test = subset(train, row.based, n_sub), subset(test, row.based, n_sub)
                s["extrapolation"] = {
                    "rows_timed": n_sub,
                    "rows": w_full.n_rows,
                    "steps_timed": math.ceil(n_sub / row.batch_size),
                    "steps": w_full.steps_per_epoch,
                    "estimated_full_epoch_s": est_s,
                }
        params = {**ident.params, "threads": self.threads}
        model = ref.build(params)
        ck = self.options.get("checkpoint")
        fit_kw: dict[str, Any] = {}
        if ck is not None:
            fit_kw.update(checkpoint=ck, checkpoint_every=1)
            if self.options.get("resume") and Path(ck).exists():
                fit_kw["resume"] = ck
        self.emit(event="stage", stage="training")
        t_fit = time.perf_counter()
        info = model.fit(fit_train, progress=self.progress, **fit_kw)
        fit_seconds = time.perf_counter() - t_fit
        self.stage("train", t_fit)
        self.state["fit"] = fit_summary(info)
        secs = [float(h["seconds"]) for h in info.history]
        median = statistics.median(secs)
        self.timing.update(fit=fit_seconds, per_epoch=median, fit_per_epoch=fit_seconds / len(secs))
        self.record_speed(row, fit_train, median, probe["gflops"], checkpoint=ck)

        if row.evaluate and len(eval_test):
            self.emit(event="stage", stage="evaluating")
            t_e = time.perf_counter()
            ev = model.evaluate(eval_test)
            self.timing["predict"] = time.perf_counter() - t_e
            self.state["metrics"] = Metrics(test_rmse=ev["rmse"], test_mae=ev["mae"])
            self.state["sizes"] = dataclasses.replace(self.state["sizes"], n_cold_start=int(ev["n_cold_start"]))
            on = "timed rows' test ratings" if "extrapolation" in s else "all test ratings"
            s["evaluation"] = {"n": int(ev["n"]), "on": on}
            self.stage("evaluate", t_e)
        s["peak_rss_bytes"] = peak_bytes()  # the pipeline's peak, before the probes below
        s["peak_rss_source"] = PEAK_SOURCE
        s["matmul"] = probe
        s["matmul_after"] = dense_matmul_gflops(row.probe_n, repeats=5)
        s["bandwidth"] = stream_bandwidth_gbs(min(256 * 10**6, max(16 * 10**6, 64 * row.probe_n**2)))
        s["bandwidth_bound_seconds"] = s["traffic_bytes_per_epoch"]["total"] / (s["bandwidth"]["gbs"] * 1e9)
        if row.profile_steps > 0:
            self.emit(event="stage", stage="profiling")
            t_p = time.perf_counter()
            s["profile"] = self.profile(ref, params, fit_train, row)
            self.stage("profile", t_p)
        s["torch_threads"] = torch.get_num_threads()
        s["env_flags"] = {k: os.environ.get(k) for k in ("THP_MEM_ALLOC_ENABLE", "OMP_NUM_THREADS")}
        s["outcome"] = "measured"

    # ------------------------------------------------------------------ parts of the measurement
    def stage(self, name: str, t0: float) -> float:
        """Record stage ``name`` (seconds since ``t0``, RSS and peak RSS now); the time now."""
        self.state["scale"]["stages"][name] = {
            "seconds": round(time.perf_counter() - t0, 3),
            "rss_bytes": env.process_memory_bytes("VmRSS") or 0,
            "maxrss_bytes": peak_bytes(),
        }
        return time.perf_counter()

    @staticmethod
    def dense_subset_rows(row: Row, w: sc.Workload, est_s: float) -> int:
        """The rows a dense row times: all of them, or (estimated epoch over the budget) a multiple
        of the batch size that fits the budget, at least two batches."""
        if est_s <= row.dense_epoch_budget_s:
            return w.n_rows
        frac = row.dense_epoch_budget_s / est_s
        return min(max(row.batch_size * 2, int(w.n_rows * frac) // row.batch_size * row.batch_size), w.n_rows)

    def record_speed(self, row: Row, fit_train: Interactions, median: float, gflops: float, checkpoint: Any) -> None:
        """The FLOP model and the speed of the timed epochs (extrapolated to the full epoch when
        only a subset was timed), the compute and memory-traffic models."""
        s = self.state["scale"]
        w_run = sc.Workload.from_shape(
            fit_train.n_users,
            fit_train.n_items,
            len(fit_train),
            based=row.based,
            hidden=row.hidden,
            batch_size=row.batch_size,
        )
        flops = sc.epoch_flops(w_run, row.path)
        ex = s.get("extrapolation")
        if ex is not None:
            factor = ex["steps"] / ex["steps_timed"]
            s["seconds_per_epoch"] = median * factor
            s["timing_mode"] = (
                f"extrapolated: {ex['rows_timed']} of {ex['rows']} rows timed "
                f"({ex['steps_timed']} of {ex['steps']} steps), x{factor:.2f}"
            )
        else:
            s["seconds_per_epoch"] = median
            s["timing_mode"] = "full epochs"
        s.update(
            checkpoint=checkpoint,
            n_train_timed=len(fit_train),
            ratings_per_second=len(fit_train) / median,
            flops_per_epoch=flops,
            flop_formula=sc.flop_formula(w_run, row.path),
            achieved_gflops=flops / median / 1e9,
            matmul_fraction=flops / median / 1e9 / gflops,
            optimizer_updates_per_epoch=w_run.steps_per_epoch * w_run.n_params,
            flop_bound_seconds=flops / (gflops * 1e9),
            n_params=w_run.n_params,
            steps_per_epoch=w_run.steps_per_epoch,
            traffic_bytes_per_epoch=sc.epoch_traffic_bytes(
                w_run,
                row.path,
                str(row.model.get("optimizer", "adam")),
                fused=row.kernel == "native-fused",
                one_pass_decoder=row.kernel == "native-fused"
                and row.model.get("output_activation", "identity") == "identity",
            ),
        )

    def profile(self, ref: Any, params: dict[str, Any], train: Interactions, row: Row) -> dict[str, Any]:
        """torch.profiler's top operators (self CPU time) over one training epoch of
        ``row.profile_steps`` batches: the second epoch of a two-epoch fit on a row subset, so setup
        (weight init, the optimizer's first-step state) is not in it."""
        from torch.profiler import ProfilerActivity, profile, schedule

        n_rows = row.batch_size * row.profile_steps
        sub = subset(train, row.based, n_rows)
        if len(sub) == 0:
            return {}
        m = ref.build({**params, "epochs": 2})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Profiler won't be using warmup")
            sched = schedule(wait=1, warmup=0, active=1, repeat=1)
            with profile(activities=[ProfilerActivity.CPU], schedule=sched) as prof:
                m.fit(sub, progress=lambda epoch, n, info: prof.step())
        ops = [
            {"name": ev.key, "self_cpu_ms": ev.self_cpu_time_total / 1000.0, "calls": int(ev.count)}
            for ev in prof.key_averages()
        ]
        ops.sort(key=lambda r: -r["self_cpu_ms"])
        total = sum(r["self_cpu_ms"] for r in ops) or 1.0
        for r in ops:
            r["share"] = r["self_cpu_ms"] / total
        rows = sub.n_items if row.based == "item" else sub.n_users
        scope = f"epoch 2 of a 2-epoch fit on {rows} rows ({math.ceil(n_rows / row.batch_size)} steps)"
        return {"scope": scope, "ops": ops[:15]}

    def progress(self, epoch: int, n_epochs: int, row: dict) -> None:
        self.emit(
            event="epoch",
            epoch=epoch,
            epochs=n_epochs,
            train_loss=row.get("train_loss"),
            valid_rmse=row.get("valid_rmse"),
            seconds=row.get("seconds"),
            rss_bytes=env.process_memory_bytes("VmRSS"),
        )
