"""The scale work: FLOP model, memory estimator, up-front refusal, the runner (on the harness's
launcher, one run record per row) and its report, the schema-1 upgrade, the sparse pipeline's
memory discipline, and sparse/dense agreement."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autorec import env
from autorec import scale as sc
from autorec.errors import ConfigError, DataError, MemoryBudgetError
from benchmarks import record
from benchmarks.record import Conditions, FitSummary, Metrics, RunRecord, Sizes, Timing
from benchmarks.scale import DEFAULT_SPEC, Row, contended, load_records, load_spec, render_scale, target_results
from benchmarks.scale.cli import main
from benchmarks.scale.records import (
    decided_record,
    epoch_seconds,
    outcome,
    plan_for,
    row_of,
    scale_of,
    section,
    train_losses,
)
from benchmarks.scale.upgrade import OLD_PROFILE_SCOPE, upgrade_v1

REPO = Path(__file__).resolve().parents[1]


# ====================================================================== FLOPs
def test_flops_one_hidden_layer_known_shapes():
    n_users, n_items, _ = sc.SHAPES["ml-1m"]
    w = sc.Workload.from_shape(n_users, n_items, 900_000, based="item", hidden=(500,))
    assert (w.n_rows, w.n_in) == (3706, 6040)
    assert sc.epoch_flops(w, "dense") == 10 * 3706 * 6040 * 500
    assert sc.epoch_flops(w, "sparse") == 10 * 900_000 * 500
    assert sc.epoch_flops(w, "dense-full") == sc.epoch_flops(w, "dense")
    # the ratio is the inverse density
    assert sc.epoch_flops(w, "dense") / sc.epoch_flops(w, "sparse") == pytest.approx(1 / w.density)
    u = sc.Workload.from_shape(n_users, n_items, 900_000, based="user", hidden=(500,))
    assert (u.n_rows, u.n_in) == (6040, 3706)
    assert sc.epoch_flops(u, "dense") == sc.epoch_flops(w, "dense")
    assert "10 * nnz * h = 10 * 900000 * 500" == sc.flop_formula(w, "sparse")
    assert w.n_params == 2 * 6040 * 500 + 500 + 6040
    assert w.steps_per_epoch == math.ceil(3706 / 256)


def test_flops_deep_stack():
    w = sc.Workload(n_rows=100, n_in=1000, nnz=5000, hidden=(50, 20, 50), batch_size=10)
    # dense: first layer 4 R a b, the others 6 R a b
    dense = 4 * 100 * 1000 * 50 + 6 * 100 * 50 * 20 + 6 * 100 * 20 * 50 + 6 * 100 * 50 * 1000
    assert sc.epoch_flops(w, "dense") == dense
    # sparse: first 4 nnz h1, last 6 nnz hL, dense middle layers
    sparse = 4 * 5000 * 50 + 6 * 100 * 50 * 20 + 6 * 100 * 20 * 50 + 6 * 5000 * 50
    assert sc.epoch_flops(w, "sparse") == sparse
    with pytest.raises(ConfigError, match="path"):
        sc.epoch_flops(w, "fast")


def test_workload_rejects_impossible_shapes():
    with pytest.raises(ConfigError, match="exceeds"):
        sc.Workload(10, 10, 101)
    with pytest.raises(ConfigError, match="positive"):
        sc.Workload(0, 10, 0)
    with pytest.raises(ConfigError, match="based"):
        sc.Workload.from_shape(10, 10, 5, based="both")


# ====================================================================== memory
def test_dense_full_bytes_ml20m_is_the_seed_matrix():
    n_users, n_items, _ = sc.SHAPES["ml-20m"]
    one = n_items * n_users * 4
    assert one / 1e9 == pytest.approx(14.8, abs=0.05)  # "the input alone is 14.8 GB float32"
    assert sc.dense_full_bytes(n_items, n_users) == 3 * one


def test_estimate_components_on_known_shapes():
    n_users, n_items, n = sc.SHAPES["ml-20m"]
    est = sc.estimate_memory(n_users, n_items, n, based="item", hidden=(500,), path="sparse")
    n_test = round(0.1 * n)
    n_valid = round(0.05 * (n - n_test))
    assert est.workload.nnz == n - n_test - n_valid
    params = 2 * n_users * 500 + 500 + n_users
    assert est.workload.n_params == params
    train = est.stages["train"]
    assert train["weights, gradients, optimizer state"] == 16 * params  # weight, grad, m, v
    assert train["CSR matrix"] == 8 * est.workload.nnz + 8 * (n_items + 1)
    assert est.stages["generate"]["ratings table"] == 20 * n + 8 * (n_users + n_items)
    assert est.total == max(est.stage_totals.values())
    assert 2e9 < est.total < 8e9  # the ML-20M target: <= 8 GB
    full = sc.estimate_memory(n_users, n_items, n, based="item", path="dense-full")
    assert full.total > 3 * 14.8e9
    dense = sc.estimate_memory(n_users, n_items, n, based="item", path="dense", batch_size=256)
    assert dense.stages["train"]["batch activations (dense rows)"] == 6 * 4 * 256 * n_users
    # Netflix I-AutoRec fits the 20 GB target; U-AutoRec is far smaller
    nu, ni, nn = sc.SHAPES["netflix"]
    net_i = sc.estimate_memory(nu, ni, nn, based="item")
    net_u = sc.estimate_memory(nu, ni, nn, based="user")
    assert net_u.total < net_i.total < 20e9
    assert "train" in net_i.describe() or "generate" in net_i.describe()
    d = net_i.to_dict()
    assert d["total_bytes"] == net_i.total and d["workload"]["n_rows"] == ni


def test_estimate_uses_the_measured_batch_bound():
    a = sc.estimate_memory(1000, 500, 20_000, batch_nnz=None)
    b = sc.estimate_memory(1000, 500, 20_000, batch_nnz=10**7)
    assert b.stages["train"]["batch activations (per observed entry)"] == 64 * 10**7
    assert b.total > a.total
    assert "measured bound" in b.assumptions["batch_nnz"]


def test_max_batch_nnz_is_the_sum_of_the_largest_rows():
    counts = np.array([5, 1, 9, 3, 7])
    assert sc.max_batch_nnz(counts, 2) == 16
    assert sc.max_batch_nnz(counts, 10) == 25
    assert sc.max_batch_nnz([], 4) == 0


@pytest.mark.parametrize(
    "text,expected",
    [
        ("19GB", 19 * 10**9),
        ("19.5G", int(19.5e9)),
        ("512MiB", 512 * 2**20),
        ("2gib", 2 * 2**30),
        ("1000", 1000),
        (4096, 4096),
        ("50%", 500),
    ],
)
def test_parse_bytes(text, expected):
    assert sc.parse_bytes(text, total=1000) == expected


@pytest.mark.parametrize("bad", ["lots", "12XB", "0", "150%", "-3GB", True, 0])
def test_parse_bytes_rejects(bad):
    with pytest.raises(ConfigError):
        sc.parse_bytes(bad, total=1000)


def test_default_limit_is_80_percent_of_ram():
    assert sc.default_memory_limit() == int(0.8 * sc.total_memory())
    assert sc.parse_bytes("80%") == int(0.8 * sc.total_memory())


def test_check_memory_refuses_with_estimate_and_limit():
    n_users, n_items, n = sc.SHAPES["netflix"]
    est = sc.estimate_memory(n_users, n_items, n, based="item", path="dense-full")
    with pytest.raises(MemoryBudgetError) as exc:
        sc.check_memory(est, 19 * 10**9, what="netflix dense-full")
    msg = str(exc.value)
    assert "does not fit: needs" in msg and "19.0 GB" in msg and "--max-memory" in msg and "sparse" in msg
    sc.check_memory(sc.estimate_memory(100, 100, 1000), 19 * 10**9)  # fits: no error


# ====================================================================== spec
def _spec(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(textwrap.dedent(body))
    return p


TINY = """
[scale]
epochs = 3
probe_n = 128
threads = 1
dense_epoch_budget_s = {budget}
[scale.model]
hidden = [8]
batch_size = 32
extra = {{ fused_optimizer = true }}
[[scale.rows]]
shapes = [{{name = "tiny", n_users = 300, n_items = 120, n_ratings = 6000}}]
based = ["item"]
paths = ["sparse", "dense", "dense-full"]
kernels = ["native"]
"""


def test_spec_loading_and_validation(tmp_path):
    settings, rows = load_spec(DEFAULT_SPEC)
    ids = [r.row_id for r in rows]
    for shape in ("ml-1m", "ml-10m", "ml-20m", "netflix"):
        for based in ("item", "user"):
            assert f"{shape}-{based}-sparse-native" in ids and f"{shape}-{based}-dense" in ids
            assert f"{shape}-{based}-dense-full" in ids
    assert all(r.hidden == (500,) for r in rows)
    assert all(r.epochs >= 3 for r in rows)
    assert [r for r in rows if r.shape == "netflix"][0].checkpoint
    net = [r for r in rows if r.row_id == "ml-10m-item-sparse-native"][0]
    assert net.dataset == "synthetic:ml-10m@1,0"
    bad = _spec(tmp_path, '[scale]\nepochs = 2\n[[scale.rows]]\nshapes = ["ml-1m"]\n')
    with pytest.raises(ConfigError, match="3 timed epochs"):
        load_spec(bad)
    bad.write_text('[scale]\n[[scale.rows]]\nshapes = ["ml-2m"]\n')
    with pytest.raises(ConfigError, match="unknown shape"):
        load_spec(bad)
    bad.write_text('[scale]\n[scale.model]\nhidden_activation = "swish"\n[[scale.rows]]\nshapes = ["ml-1m"]\n')
    with pytest.raises(ConfigError, match="hidden_activation"):
        load_spec(bad)
    bad.write_text('[scale]\n[scale.model]\nseed = 3\n[[scale.rows]]\nshapes = ["ml-1m"]\n')
    with pytest.raises(ConfigError, match="set per row"):
        load_spec(bad)


def test_a_row_is_a_run_of_the_registry_model():
    """A row's identity: its synthetic dataset, split, model name and resolved parameters; custom
    shapes name their counts; the sparse kernel is part of the parameters."""
    _, rows = load_spec(DEFAULT_SPEC)
    row = [r for r in rows if r.row_id == "ml-1m-user-sparse-torch"][0]
    ident = plan_for(row).identity
    assert (ident.data.name, ident.model, ident.backend) == ("synthetic:ml-1m@1,0", "u-autorec", "torch")
    assert ident.split.spec == "random:test_ratio=0.1" and ident.split.valid_ratio == 0.05
    assert ident.params["path"] == "sparse" and ident.params["extra"]["sparse_kernel"] == "torch"
    assert ident.params["batch_size"] == 1024 and ident.params["epochs"] == 3
    other = [r for r in rows if r.row_id == "ml-1m-user-sparse-native"][0]
    assert plan_for(other).run_id != plan_for(row).run_id
    tiny = Row(shape="tiny", n_users=300, n_items=120, n_ratings=6000, based="item", path="dense", seed=4)
    assert tiny.dataset == "synthetic:300,120,6000,4"


# ====================================================================== runner
def _by_id(raw: Path) -> dict:
    return {scale_of(r)["row_id"]: r for r in load_records(raw)}


def test_refused_up_front_without_running(tmp_path, monkeypatch):
    """A row over the budget is recorded as 'does not fit' from the estimate; no worker starts."""
    import benchmarks.scale.runner as runner

    def no_worker(*a, **k):
        raise AssertionError("a worker was started for a row over the budget")

    monkeypatch.setattr(runner, "launch", no_worker)
    spec = _spec(tmp_path, TINY.format(budget=40))
    out = tmp_path / "raw"
    rc = main(["--spec", str(spec), "--out", str(out), "--max-memory", "1MB", "--report", str(tmp_path / "rep")])
    assert rc == 0
    recs = _by_id(out)
    assert set(recs) == {"tiny-item-sparse-native", "tiny-item-dense", "tiny-item-dense-full"}
    for r in recs.values():
        assert r.status == "failed" and outcome(r) == "refused"
        assert scale_of(r)["estimate"]["total_bytes"] > scale_of(r)["limit_bytes"] == 10**6
        assert r.error.type == "MemoryBudgetError" and "does not fit: needs" in r.error.message
    md = (tmp_path / "rep" / "scale.md").read_text()
    assert "does not fit: needs" in md
    # refused rows are finished: a rerun leaves them
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    assert main(["--spec", str(spec), "--out", str(out), "--max-memory", "1MB"]) == 0
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before


def test_runner_end_to_end_with_dense_extrapolation(tmp_path):
    """Three timed epochs in a fresh worker (the harness's launcher, job kind 'scale'); the dense
    row over its time budget is timed on a row subset and labelled extrapolated; the estimate-only
    dense-full row needs no worker; the report renders from the raw files; finished rows are
    skipped on a rerun."""
    spec = _spec(tmp_path, TINY.format(budget=1e-9))
    out = tmp_path / "raw"
    rc = main(["--spec", str(spec), "--out", str(out), "--report", str(tmp_path / "rep")])
    assert rc == 0
    recs = _by_id(out)
    s, d, f = recs["tiny-item-sparse-native"], recs["tiny-item-dense"], recs["tiny-item-dense-full"]
    assert [outcome(r) for r in (s, d, f)] == ["measured", "measured", "estimate"]
    assert s.status == d.status == f.status == "ok"
    for r in (s, d):
        sec = scale_of(r)
        assert r.identity.data.name == "synthetic:300,120,6000,0" and r.identity.model == "i-autorec"
        assert len(r.fit.history) == 3 and r.timing.per_epoch == pytest.approx(sorted(epoch_seconds(r))[1])
        assert sec["peak_rss_bytes"] > 50e6 and sec["matmul"]["gflops"] > 0 and sec["achieved_gflops"] > 0
        assert sec["ratings_per_second"] > 0 and r.conditions.threads == 1 and r.conditions.load_before
        assert r.environment["torch"] and r.identity.params["hidden"] == [8]
        assert sec["env_flags"] == {"THP_MEM_ALLOC_ENABLE": "1", "OMP_NUM_THREADS": "1"}
        assert set(sec["stages"]) >= {"probe", "generate", "split", "parts", "train", "evaluate"}
        assert math.isfinite(r.metrics.test_rmse) and r.sizes.n_train + r.sizes.n_valid + r.sizes.n_test == 6000
        assert r.memory.peak_rss >= sec["peak_rss_bytes"] / 2**20 - 1
    assert scale_of(s)["timing_mode"] == "full epochs"
    assert scale_of(s)["flops_per_epoch"] == 10 * s.sizes.n_train * 8
    assert s.identity.params["extra"]["sparse_kernel"] == "native"
    ex = scale_of(d)["extrapolation"]
    assert scale_of(d)["timing_mode"].startswith("extrapolated") and ex["rows_timed"] < ex["rows"] == 120
    assert scale_of(d)["seconds_per_epoch"] == pytest.approx(d.timing.per_epoch * ex["steps"] / ex["steps_timed"])
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    assert main(["--spec", str(spec), "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before
    md = (tmp_path / "rep" / "scale.md").read_text()
    assert "extrapolated" in md and "tiny-item-sparse-native" in md
    assert (tmp_path / "rep" / "scale_epoch_time.png").stat().st_size > 1000


def test_worker_checkpoint_resume_keeps_the_epoch_record(tmp_path):
    """A checkpointed row killed after an epoch resumes (--resume) to a record with all epochs."""
    pytest.importorskip("torch")
    from benchmarks.scale.job import ScaleJob

    spec = _spec(tmp_path, TINY.format(budget=40).replace("probe_n = 128", "probe_n = 128\ncheckpoint_min_ratings = 1"))
    row = [r for r in load_spec(spec)[1] if r.path == "sparse"][0]
    assert row.checkpoint
    ck = tmp_path / "row.ckpt.npz"

    def measure(r: Row, resume: bool):
        job = ScaleJob(
            plan_for(r),
            1,
            lambda **ev: None,
            {"row": r.to_dict(), "limit": 10**12, "resume": resume, "checkpoint": str(ck)},
        )
        job.run()
        return job.finish("ok", dict(job.state), 0.0)

    measure(replace(row, epochs=2), resume=False)  # as if killed after epoch 2 of 3
    assert ck.exists()
    rec = measure(row, resume=True)
    assert rec.fit is not None and rec.fit.extra["resumed_from_epoch"] == 2 and len(rec.fit.history) == 3
    assert outcome(rec) == "measured" and scale_of(rec)["checkpoint"] == str(ck)


# ====================================================================== report
def _row(shape: str, based: str, path: str, kernel: str = "native", tag: str = "") -> Row:
    nu, ni, nr = sc.SHAPES[shape]
    model = {"hidden": [500], "batch_size": 256}
    return Row(
        shape=shape,
        n_users=nu,
        n_items=ni,
        n_ratings=nr,
        based=based,
        path=path,
        kernel=kernel if path == "sparse" else "-",
        model=model,
        tag=tag,
    )


def _fake(
    row: Row,
    spe: float,
    peak: float = 1e9,
    loss: float = 0.1,
    load_before=(0.1, 0.2, 0.3),
    load_after=(0.2, 0.2, 0.3),
    **scale_facts,
) -> RunRecord:
    """A measured row's record, without running anything."""
    n_train = int(row.n_ratings * 0.855)
    flops = 10 * n_train * 500
    est = {**row.estimate().to_dict(), "total_bytes": int(peak * 0.9), "peak_stage": "train"}
    facts = {
        "seconds_per_epoch": spe,
        "timing_mode": "full epochs",
        "n_train_timed": n_train,
        "ratings_per_second": n_train / spe,
        "flops_per_epoch": flops,
        "achieved_gflops": flops / spe / 1e9,
        "matmul_fraction": flops / spe / 1e9 / 150.0,
        "peak_rss_bytes": peak,
        "matmul": {"gflops": 150.0},
        "matmul_after": {"gflops": 150.0},
        "flop_bound_seconds": 0.1,
        "bandwidth_bound_seconds": 0.2,
        "traffic_bytes_per_epoch": {"total": 8e9, "optimizer": 5e9},
        "bandwidth": {"gbs": 40.0},
        "torch_threads": 2,
        "env_flags": {"THP_MEM_ALLOC_ENABLE": "1"},
        **scale_facts,
    }
    history = tuple({"epoch": k, "train_loss": loss * (4 - k), "seconds": spe} for k in (1, 2, 3))
    return plan_for(row).record(
        "ok",
        scale=section(row, est, 20 * 10**9, "measured", **facts),
        fit=FitSummary(best_epoch=None, weights_epoch=3, epochs_run=3, history=history),
        sizes=Sizes(n_users=row.n_users, n_items=row.n_items, n_train=n_train, n_valid=1, n_test=1),
        metrics=Metrics(test_rmse=0.95, test_mae=0.75),
        timing=Timing(per_epoch=spe),
        conditions=Conditions(
            threads=2,
            load_before=load_before,
            load_after=load_after,
            contended=env.contended(load_before, load_after, 2),
        ),
        environment={"cpu_model": "cpu", "cpu_count": 2, "torch": "2.13.0"},
    )


def _refused(row: Row, limit: int) -> RunRecord:
    rec = decided_record(plan_for(row), row, row.estimate().to_dict(), limit)
    assert rec is not None
    return rec


def test_render_scale_is_pure_and_checks_targets(tmp_path):
    recs = [
        _fake(_row("ml-1m", "item", "sparse"), 0.2),
        _fake(_row("ml-1m", "item", "dense"), 1.0),
        _fake(_row("ml-1m", "user", "sparse"), 0.3),
        _fake(_row("ml-1m", "user", "dense"), 0.9),
        _fake(_row("ml-20m", "item", "sparse"), 45.0, peak=5e9),
        _refused(_row("ml-20m", "item", "dense-full"), 20 * 10**9),
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    files_a = render_scale(recs, a)
    shuffled = list(recs)
    random.Random(1).shuffle(shuffled)
    render_scale(shuffled, b)
    assert [p.name for p in files_a] == ["scale.md", "scale.csv", "scale_epoch_time.png"]
    for name in ("scale.md", "scale.csv", "scale_epoch_time.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    md = (a / "scale.md").read_text()
    needs = scale_of(recs[-1])["estimate"]["total_bytes"]
    assert f"**does not fit: needs {needs / 1e9:.1f} GB** (limit 20.0 GB)" in md
    assert "10 * nnz * h" in md and "10 * rows * n_in * h" in md
    results = {r["target"][:16]: r for r in target_results(recs)}
    ml1 = results["ML-1M shape: spa"]
    assert ml1["met"] is False and "I-AutoRec 5.0x" in ml1["measured"] and "U-AutoRec 3.0x" in ml1["measured"]
    assert "final train loss differs by 0%" in ml1["measured"]
    ml20 = results["ML-20M shape, I-"]
    assert ml20["met"] is True and "45.0 s/epoch, peak RSS 5.00 GB" in ml20["measured"]
    assert results["Netflix shape, I"]["met"] is None
    assert "contended" not in md
    busy = _fake(_row("ml-1m", "user", "dense"), 0.9, load_before=(3.2, 2.0, 1.0))
    render_scale(recs[:3] + [busy] + recs[4:], b)
    assert "**contended** (load 3.2 -> 0.2, matmul 150 -> 150 GFLOP/s)" in (b / "scale.md").read_text()
    own = _fake(_row("ml-1m", "item", "dense"), 30.0, load_after=(1.95, 1.0, 0.5))  # its own 2 threads
    assert not contended(own)
    assert contended(_fake(_row("ml-1m", "item", "dense"), 30.0, load_after=(3.9, 2.0, 1.0)))
    assert contended(_fake(_row("ml-1m", "item", "dense"), 30.0, matmul_after={"gflops": 80.0}))
    assert contended(_fake(_row("ml-1m", "item", "dense"), 30.0, matmul={"gflops": 80.0}))  # busy start
    csv_text = (a / "scale.csv").read_text().splitlines()
    assert csv_text[0].startswith("row_id,status,shape") and len(csv_text) == 1 + 6
    assert csv_text[1].startswith("ml-1m-item-sparse-native,ok,ml-1m,I-AutoRec,sparse,native,")


def test_report_renders_scale_from_raw_scale_folder(tmp_path):
    """`autorec-bench report` regenerates scale.md/csv from <raw>/scale (and lists them in its
    manifest, so a later report without scale raw files removes them again); a tagged (b256) row
    never stands in for the main row in the targets."""
    from benchmarks import report

    raw = tmp_path / "raw"
    recs = [
        _fake(_row("ml-1m", "item", "sparse"), 0.2),
        _fake(_row("ml-1m", "item", "sparse", tag="b256"), 0.1),
        _fake(_row("ml-1m", "item", "dense"), 1.0),
    ]
    for r in recs:
        record.write(raw / "scale" / f"{scale_of(r)['row_id']}.json", r)
    out = tmp_path / "results"
    files = report.build_report(raw, out, plots=False)
    names = {p.name for p in files}
    assert {"scale.md", "scale.csv"} <= names and "scale_epoch_time.png" not in names
    assert "[scale.md](scale.md)" in (out / "README.md").read_text()
    md = (out / "scale.md").read_text()
    assert "I-AutoRec 5.0x" in md  # 1.0 / 0.2 from the main row, not 1.0 / 0.1 from the b256 row
    assert "| ml-1m | I-AutoRec | sparse (native kernels) | 256 |" in md
    for p in (raw / "scale").glob("*.json"):
        p.unlink()
    report.build_report(raw, out, plots=False)
    assert not (out / "scale.md").exists()
    assert "No scale results yet" in (out / "README.md").read_text()


# ====================================================================== schema-1 upgrade
def _v1(rec: RunRecord) -> dict:
    """The schema-1 file the old runner wrote for the row of ``rec`` (a measured fake)."""
    row, s = row_of(rec), scale_of(rec)
    assert rec.sizes is not None
    doc = {
        "schema": "autorec-bench/scale/1",
        "kind": "scale",
        "row_id": row.row_id,
        "status": "ok",
        "row": row.to_dict(),
        "estimate": s["estimate"],
        "limit_bytes": s["limit_bytes"],
        "epoch_seconds": epoch_seconds(rec),
        "train_loss": train_losses(rec),
        "seconds_per_epoch_measured": rec.timing.per_epoch,
        "fit_wall_seconds": 3.5,
        "wall_seconds": 9.0,
        "resumed_from_epoch": None,
        "config": {**rec.identity.params, "threads": None},
        "evaluation": {
            "test_rmse": 0.95,
            "test_mae": 0.75,
            "n": 7,
            "n_cold_start": 0,
            "seconds": 0.1,
            "on": "all test ratings",
        },
        "n_train": rec.sizes.n_train,
        "n_valid": 1,
        "n_test": 1,
        "matmul_gflops": 150.0,
        "peak_rss_bytes_self": 2**30,
        "peak_rss_bytes_process": 2**30,
        "threads": 2,
        "load_avg_before": [0.1, 0.2, 0.3],
        "load_avg_after": [0.2, 0.2, 0.3],
        "environment": rec.environment,
        "git_commit": "abc123",
        "created_at": "2026-12-01T12:21:01Z",
        "stages": {k: {"seconds": 0.5, "rss_bytes": 1, "maxrss_bytes": 2} for k in ("generate", "split", "parts")},
        **{k: v for k, v in s.items() if k not in ("row_id", "row", "outcome", "estimate", "limit_bytes")},
    }
    doc["profile"] = s["profile"]["ops"]  # the first schema-1 rows recorded a bare list
    return doc


def test_upgrade_v1_converts_once_and_keeps_the_numbers(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    ops = [{"name": "aten::mm", "self_cpu_ms": 1.0, "calls": 1, "share": 1.0}]
    measured = _fake(_row("ml-1m", "item", "sparse"), 0.2, profile={"scope": OLD_PROFILE_SCOPE, "ops": ops})
    refused = _refused(_row("ml-20m", "item", "dense-full"), 20 * 10**9)
    old_refused = {
        "schema": "autorec-bench/scale/1",
        "kind": "scale",
        "row_id": "ml-20m-item-dense-full",
        "status": "refused",
        "row": row_of(refused).to_dict(),
        "estimate": scale_of(refused)["estimate"],
        "limit_bytes": 20 * 10**9,
        "needs_bytes": scale_of(refused)["estimate"]["total_bytes"],
        "reason": "the seed (D2L) formulation densifies the whole matrix",
    }
    (raw / "ml-1m-item-sparse-native.json").write_text(json.dumps(_v1(measured)))
    (raw / "ml-20m-item-dense-full.json").write_text(json.dumps(old_refused))
    with pytest.raises(DataError, match="--upgrade-v1"):
        load_records(raw)
    assert main(["--upgrade-v1", str(raw)]) == 0
    recs = _by_id(raw)
    m, r = recs["ml-1m-item-sparse-native"], recs["ml-20m-item-dense-full"]
    assert m.run_id == measured.run_id and r.run_id == refused.run_id  # what a run of the row writes today
    assert scale_of(m)["converted_from"] == {
        "schema_version": 1,
        "git_commit": "abc123",
        "created_at": "2026-12-01T12:21:01Z",
    }
    assert (m.git_commit, m.created_at) == ("abc123", "2026-12-01T12:21:01Z")
    assert epoch_seconds(m) == epoch_seconds(measured) and m.timing.per_epoch == measured.timing.per_epoch
    assert m.metrics.test_rmse == 0.95 and m.timing.predict == 0.1 and m.timing.fit == 3.5
    assert scale_of(m)["profile"]["ops"][0]["name"] == "aten::mm" and m.memory.peak_rss == 1024.0
    assert m.conditions.load_before == (0.1, 0.2, 0.3) and not m.conditions.contended
    for key in ("seconds_per_epoch", "achieved_gflops", "matmul_fraction", "peak_rss_bytes", "matmul"):
        assert scale_of(m)[key] == scale_of(measured)[key], key
    assert r.status == "failed" and outcome(r) == "refused" and scale_of(r)["converted_from"]["git_commit"] is None
    render_scale([measured, refused], tmp_path / "new")
    render_scale(load_records(raw), tmp_path / "converted")
    assert (tmp_path / "new" / "scale.md").read_text() == (tmp_path / "converted" / "scale.md").read_text()
    before = {p.name: p.read_bytes() for p in raw.glob("*.json")}
    assert main(["--upgrade-v1", str(raw)]) == 0  # already converted: nothing changes
    assert {p.name: p.read_bytes() for p in raw.glob("*.json")} == before


def test_upgrade_v1_refuses_a_record_whose_config_is_not_the_rows(tmp_path):
    doc = _v1(_fake(_row("ml-1m", "item", "sparse"), 0.2, profile={"scope": OLD_PROFILE_SCOPE, "ops": []}))
    doc["config"]["lr"] = 0.5
    (tmp_path / "x.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="configuration"):
        upgrade_v1(tmp_path)
    assert json.loads((tmp_path / "x.json").read_text())["schema"] == "autorec-bench/scale/1"  # untouched


# ====================================================================== memory discipline
_NEVER_DENSE = r"""
import tracemalloc
tracemalloc.start()
import numpy as np
from autorec.data.synthetic import generate
from autorec.interactions import Interactions
from autorec.models.autorec.torch import AutoRecTorch
from autorec.models.autorec.torch import native
n_users, n_items, n = 300_000, 40_000, 400_000
r = generate(n_users, n_items, n, seed=1)
assert (r.n_users, r.n_items) == (n_users, n_items)
perm = np.random.default_rng(0).permutation(len(r))
tr, te = perm[:360_000], perm[360_000:]
def part(idx):
    return Interactions(r.users[idx], r.items[idx], r.ratings[idx], r.n_users, r.n_items, r.rating_scale)
train, test = part(tr), part(te)
dense_bytes = 4 * r.n_users * r.n_items
for based, kernel, bs in (("item", "native", 4096), ("user", "native", 16384), ("item", "torch", 4096),
                          ("user", "torch", 16384)):
    if kernel == "native" and not native.available():
        continue
    m = AutoRecTorch(dict(based=based, path="sparse", hidden=(4,), epochs=1, batch_size=bs, threads=1,
                          extra={"sparse_kernel": kernel, "fused_optimizer": True}))
    m.fit(train)
    ev = m.evaluate(test)
    assert np.isfinite(ev["rmse"]), ev
    list(zip(range(2), m.reconstruct(np.arange(4), batch_size=2)))   # bounded full reconstruction
_, peak_traced = tracemalloc.get_traced_memory()
# VmHWM: this process's own peak since exec (ru_maxrss would include the parent's RSS at fork time,
# i.e. the whole pytest session's)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(dense_bytes, hwm * 1024, peak_traced)
"""


def test_sparse_pipeline_never_allocates_a_dense_matrix():
    """At a shape whose dense rows x cols float32 matrix is 48 GB, generation, CSR, training
    (I- and U-AutoRec, native and torch kernels) and evaluation stay under 1.5 GB of RSS."""
    pytest.importorskip("torch")
    environ = dict(os.environ, PYTHONPATH=str(REPO), THP_MEM_ALLOC_ENABLE="1")
    out = subprocess.run(
        [sys.executable, "-c", _NEVER_DENSE], capture_output=True, text=True, env=environ, cwd=str(REPO), timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    dense_bytes, peak_rss, peak_numpy = (int(x) for x in out.stdout.split()[-3:])
    assert dense_bytes == 4 * 300_000 * 40_000 == 48 * 10**9
    assert peak_rss < 1.5e9, f"peak RSS {peak_rss / 1e9:.2f} GB"
    assert peak_numpy < 0.3e9, f"numpy peak {peak_numpy / 1e9:.2f} GB"


# ====================================================================== sparse == dense
@pytest.mark.parametrize("based", ["item", "user"])
def test_sparse_and_dense_paths_agree_on_a_medium_synthetic_set(based):
    """Same seed, same config: the two paths follow the same training trajectory (losses per
    epoch) and give the same predictions, to float32 tolerance."""
    pytest.importorskip("torch")
    from autorec.data.synthetic import generate
    from autorec.models.autorec.torch import AutoRecTorch, native
    from autorec.splits import make_split

    r = generate(1200, 700, 40_000, seed=5)
    d = make_split(r, "random", seed=0).data(r)
    res = {}
    for path, kern in (("dense", "torch"), ("sparse", "torch"), ("sparse", "native")):
        if kern == "native" and not native.available():
            continue
        m = AutoRecTorch(
            dict(based=based, path=path, hidden=(64,), epochs=3, batch_size=64, seed=2, extra={"sparse_kernel": kern})
        )
        info = m.fit(d.train)
        res[(path, kern)] = (
            [h["train_loss"] for h in info.history],
            m.predict(d.test.users, d.test.items),
            m.evaluate(d.test)["rmse"],
        )
    ref = res[("dense", "torch")]
    for key, (loss, pred, rmse) in res.items():
        np.testing.assert_allclose(loss, ref[0], rtol=2e-4, err_msg=str(key))
        np.testing.assert_allclose(pred, ref[1], rtol=1e-3, atol=2e-3, err_msg=str(key))
        assert rmse == pytest.approx(ref[2], abs=1e-3)
    assert ref[0][-1] < ref[0][0]  # it learned something


def test_fused_rows_and_targets_read_the_faster_exact_sparse_variant(tmp_path):
    """A ``native-fused`` row is the native kernels with ``extra.fused_step`` (its own run identity);
    targets and the speedup table read the faster of the two exact native variants and say which."""
    row = _row("ml-10m", "user", "sparse", kernel="native-fused")
    assert row.row_id == "ml-10m-user-sparse-native-fused"
    assert row.params()["extra"] == {"sparse_kernel": "native", "fused_step": True}
    assert "fused" in row.path_label
    plain = _row("ml-10m", "user", "sparse")
    assert plan_for(row).run_id != plan_for(plain).run_id
    bad = _spec(tmp_path, '[scale]\n[[scale.rows]]\nshapes = ["ml-1m"]\nkernels = ["fastest"]\n')
    with pytest.raises(ConfigError, match="native-fused"):
        load_spec(bad)
    recs = [
        _fake(_row("ml-10m", "item", "sparse"), 2.0),
        _fake(_row("ml-10m", "item", "sparse", kernel="native-fused"), 1.6),
        _fake(_row("ml-10m", "item", "dense"), 48.0),
        _fake(_row("ml-10m", "user", "sparse"), 2.0),
        _fake(_row("ml-10m", "user", "sparse", kernel="native-fused"), 2.5),  # slower: not read
        _fake(_row("ml-10m", "user", "dense"), 40.0),
    ]
    results = target_results(recs)
    old = [r for r in results if r["target"].startswith("ML-10M shape: sparse >= 20x")][0]
    new = [r for r in results if r["target"].startswith("Issue 14: ML-10M shape: sparse >= 25x")][0]
    assert "I-AutoRec [Adam fused] 30.0x" in old["measured"] and "U-AutoRec 20.0x" in old["measured"]
    assert old["met"] is True and new["met"] is False
    md_dir = tmp_path / "r"
    render_scale(recs, md_dir)
    md = (md_dir / "scale.md").read_text()
    assert "| ml-10m | I-AutoRec | sparse (native kernels, Adam fused into the gradient passes) | 30.0x |" in md
    assert "| 1.25x |" in md and "| 0.80x |" in md  # native ÷ fused, per model


def test_traffic_model_of_the_fused_adam_step():
    """With Adam fused into the wide weights' gradient passes, each wide parameter costs 7 float32 per
    step (forward read; read + write of weight and both moments) instead of 11 (the forward and
    backward reads, the gradient write, Adam's 7); every other part is unchanged."""
    w = sc.Workload.from_shape(69878, 10677, 8_550_047, based="item", hidden=(500,), batch_size=1024)
    a, b = sc.epoch_traffic_bytes(w, "sparse"), sc.epoch_traffic_bytes(w, "sparse", fused=True)
    s = w.sizes
    outer = s[0] * s[1] + s[-2] * s[-1]
    assert a["total"] - b["total"] == w.steps_per_epoch * 4 * 4 * outer
    assert a["observed entries"] == b["observed entries"]
    assert b["weight reads"] == w.steps_per_epoch * 4 * outer
    # the one-pass decoder (identity output): the decoder weight's forward read is gone
    c = sc.epoch_traffic_bytes(w, "sparse", fused=True, one_pass_decoder=True)
    assert b["total"] - c["total"] == w.steps_per_epoch * 4 * s[-2] * s[-1]
    assert c["weight reads"] == w.steps_per_epoch * 4 * s[0] * s[1]
