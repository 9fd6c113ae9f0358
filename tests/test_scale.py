"""The scale work: FLOP model, memory estimator, up-front refusal, the runner and its report, the
sparse pipeline's memory discipline, and sparse/dense agreement."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from autorec import scale as sc
from autorec.errors import ConfigError, MemoryBudgetError

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
    assert one / 1e9 == pytest.approx(14.8, abs=0.05)      # "the input alone is 14.8 GB float32"
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
    assert train["weights, gradients, optimizer state"] == 16 * params           # weight, grad, m, v
    assert train["CSR matrix"] == 8 * est.workload.nnz + 8 * (n_items + 1)
    assert est.stages["generate"]["ratings table"] == 20 * n + 8 * (n_users + n_items)
    assert est.total == max(est.stage_totals.values())
    assert 2e9 < est.total < 8e9          # the ML-20M target: <= 8 GB
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


@pytest.mark.parametrize("text,expected", [
    ("19GB", 19 * 10**9), ("19.5G", int(19.5e9)), ("512MiB", 512 * 2**20), ("2gib", 2 * 2**30),
    ("1000", 1000), (4096, 4096), ("50%", 500),
])
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
    sc.check_memory(sc.estimate_memory(100, 100, 1000), 19 * 10**9)   # fits: no error


# ====================================================================== runner
def _spec(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(textwrap.dedent(body))
    return p


TINY = """
[scale]
epochs = 3
probe_n = 128
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
    from benchmarks.scale import DEFAULT_SPEC, load_spec

    settings, rows = load_spec(DEFAULT_SPEC)
    ids = [r.row_id for r in rows]
    for shape in ("ml-1m", "ml-10m", "ml-20m", "netflix"):
        for based in ("item", "user"):
            assert f"{shape}-{based}-sparse-native" in ids and f"{shape}-{based}-dense" in ids
            assert f"{shape}-{based}-dense-full" in ids
    assert all(r.hidden == (500,) for r in rows)
    assert all(r.epochs >= 3 for r in rows)
    assert [r for r in rows if r.shape == "netflix"][0].checkpoint
    bad = _spec(tmp_path, """
        [scale]
        epochs = 2
        [[scale.rows]]
        shapes = ["ml-1m"]
        """)
    with pytest.raises(ConfigError, match="3 timed epochs"):
        load_spec(bad)
    bad.write_text('[scale]\n[[scale.rows]]\nshapes = ["ml-2m"]\n')
    with pytest.raises(ConfigError, match="unknown shape"):
        load_spec(bad)
    bad.write_text('[scale]\n[scale.model]\nhidden_activation = "swish"\n[[scale.rows]]\nshapes = ["ml-1m"]\n')
    with pytest.raises(ConfigError, match="hidden_activation"):
        load_spec(bad)


def test_refused_up_front_without_running(tmp_path, monkeypatch):
    """A row over the budget is recorded as 'does not fit' from the estimate; no worker starts."""
    import benchmarks.scale as bs

    def no_worker(*a, **k):
        raise AssertionError("a worker was started for a row over the budget")

    monkeypatch.setattr(bs.subprocess, "Popen", no_worker)
    spec = _spec(tmp_path, TINY.format(budget=40))
    out = tmp_path / "raw"
    rc = bs.main(["--spec", str(spec), "--out", str(out), "--max-memory", "1MB", "--report", str(tmp_path / "rep")])
    assert rc == 0
    recs = {r["row_id"]: r for r in bs.load_records(out)}
    assert set(recs) == {"tiny-item-sparse-native", "tiny-item-dense", "tiny-item-dense-full"}
    for r in recs.values():
        assert r["status"] == "refused"
        assert r["needs_bytes"] > r["limit_bytes"] == 10**6
    md = (tmp_path / "rep" / "scale.md").read_text()
    assert "does not fit: needs" in md


def test_runner_end_to_end_with_dense_extrapolation(tmp_path):
    """Three timed epochs in a fresh worker; the dense row over its time budget is timed on a
    row subset and labelled extrapolated; the report renders from the raw files."""
    import benchmarks.scale as bs

    spec = _spec(tmp_path, TINY.format(budget=1e-9))
    out = tmp_path / "raw"
    rc = bs.main(["--spec", str(spec), "--out", str(out), "--report", str(tmp_path / "rep")])
    assert rc == 0
    recs = {r["row_id"]: r for r in bs.load_records(out)}
    s, d, f = recs["tiny-item-sparse-native"], recs["tiny-item-dense"], recs["tiny-item-dense-full"]
    assert s["status"] == d["status"] == "ok" and f["status"] == "estimate"
    for r in (s, d):
        assert len(r["epoch_seconds"]) == 3
        assert r["seconds_per_epoch_measured"] == pytest.approx(sorted(r["epoch_seconds"])[1])
        assert r["peak_rss_bytes"] > 50e6 and r["matmul_gflops"] > 0 and r["achieved_gflops"] > 0
        assert r["ratings_per_second"] > 0 and r["load_avg_before"] is not None
        assert r["environment"]["torch"] and r["config"]["hidden"] == [8]
        assert r["env_flags"]["THP_MEM_ALLOC_ENABLE"] == "1"
        assert math.isfinite(r["evaluation"]["test_rmse"])
    assert s["timing_mode"] == "full epochs"
    assert s["flops_per_epoch"] == 10 * s["n_train"] * 8
    assert s["config"]["extra"]["sparse_kernel"] == "native"
    assert d["timing_mode"].startswith("extrapolated") and d["extrapolation"]["rows_timed"] < d["n_rows"]
    ex = d["extrapolation"]
    assert d["seconds_per_epoch"] == pytest.approx(d["seconds_per_epoch_measured"] * ex["steps"] / ex["steps_timed"])
    # finished rows are skipped on a rerun (their raw files are left as they are)
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    rc = bs.main(["--spec", str(spec), "--out", str(out)])
    assert rc == 0
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before
    md = (tmp_path / "rep" / "scale.md").read_text()
    assert "extrapolated" in md and "tiny-item-sparse-native" in md
    assert (tmp_path / "rep" / "scale_epoch_time.png").stat().st_size > 1000


def _fake(row_id, shape, based, path, spe, peak=1e9, kernel="native", loss=0.1, status="ok", **kw):
    nu, ni, nr = sc.SHAPES.get(shape, (100, 50, 1000))
    rows, n_in = (ni, nu) if based == "item" else (nu, ni)
    rec = {"kind": "scale", "schema": "autorec-bench/scale/1", "row_id": row_id, "status": status,
           "shape": shape, "based": based, "path": path, "kernel": kernel if path == "sparse" else None,
           "n_users": nu, "n_items": ni, "n_ratings": nr, "n_train": int(nr * 0.855), "n_train_timed": int(nr * 0.855),
           "n_rows": rows, "n_in": n_in, "hidden": [500], "batch_size": 256}
    if status == "ok":
        rec.update({"seconds_per_epoch": spe, "seconds_per_epoch_measured": spe, "epoch_seconds": [spe] * 3,
                    "timing_mode": "full epochs", "ratings_per_second": rec["n_train"] / spe,
                    "flops_per_epoch": 10 * rec["n_train"] * 500, "achieved_gflops": 10 * rec["n_train"] * 500 / spe / 1e9,
                    "matmul_gflops": 150.0, "peak_rss_bytes": peak, "train_loss": [loss * 2, loss],
                    "matmul_fraction": 10 * rec["n_train"] * 500 / spe / 1e9 / 150.0,
                    "estimate": {"total_bytes": int(peak * 0.9), "peak_stage": "train"},
                    "load_avg_before": [0.1, 0.2, 0.3], "load_avg_after": [0.2, 0.2, 0.3],
                    "environment": {"cpu_model": "cpu", "cpu_count": 2, "torch": "2.13.0"}, "torch_threads": 2,
                    "env_flags": {"THP_MEM_ALLOC_ENABLE": "1"}})
    rec.update(kw)
    return rec


def test_render_scale_is_pure_and_checks_targets(tmp_path):
    from benchmarks.scale import render_scale, target_results

    recs = [_fake("ml-1m-item-sparse-native", "ml-1m", "item", "sparse", 0.2),
            _fake("ml-1m-item-dense", "ml-1m", "item", "dense", 1.0),
            _fake("ml-1m-user-sparse-native", "ml-1m", "user", "sparse", 0.3),
            _fake("ml-1m-user-dense", "ml-1m", "user", "dense", 0.9),
            _fake("ml-20m-item-sparse-native", "ml-20m", "item", "sparse", 45.0, peak=5e9),
            _fake("ml-20m-item-dense-full", "ml-20m", "item", "dense-full", None, status="refused",
                  needs_bytes=48.2e9, limit_bytes=20e9, reason="the seed formulation"),
            {"kind": "other", "row_id": "ignored"}]
    a, b = tmp_path / "a", tmp_path / "b"
    files_a = render_scale(recs, a)
    shuffled = list(recs)
    random.Random(1).shuffle(shuffled)
    render_scale(shuffled, b)
    assert [p.name for p in files_a] == ["scale.md", "scale.csv", "scale_epoch_time.png"]
    for name in ("scale.md", "scale.csv", "scale_epoch_time.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    md = (a / "scale.md").read_text()
    assert "**does not fit: needs 48.2 GB** (limit 20.0 GB)" in md
    assert "10 * nnz * h" in md and "10 * rows * n_in * h" in md
    t = {r["shape"] + r["target"][:12]: r for r in target_results(recs)}
    ml1 = [r for r in target_results(recs) if r["shape"] == "ml-1m"][0]
    assert ml1["met"] is False and "I-AutoRec 5.0x" in ml1["measured"] and "U-AutoRec 3.0x" in ml1["measured"]
    ml20 = [r for r in target_results(recs) if r["shape"] == "ml-20m"][0]
    assert ml20["met"] is True and "45.0 s/epoch" in ml20["measured"]
    net = [r for r in target_results(recs) if r["shape"] == "netflix"][0]
    assert net["met"] is None
    assert "contended" not in md
    busy = _fake("ml-1m-user-dense", "ml-1m", "user", "dense", 0.9, load_avg_before=[3.2, 2.0, 1.0])
    render_scale([r for r in recs if r["row_id"] != "ml-1m-user-dense"] + [busy], b)
    assert "**contended** (load 3.2" in (b / "scale.md").read_text()
    from benchmarks.scale import contended
    own = _fake("x", "ml-1m", "item", "dense", 30.0, load_avg_after=[1.95, 1.0, 0.5])   # its own 2 threads
    assert not contended(own)
    assert contended(dict(own, load_avg_after=[3.9, 2.0, 1.0]))
    assert contended(dict(own, matmul_after={"gflops": 80.0}))
    assert contended(dict(own, matmul_gflops=80.0, matmul_after={"gflops": 150.0}))   # busy start
    csv_text = (a / "scale.csv").read_text().splitlines()
    assert csv_text[0].startswith("row_id,status,shape") and len(csv_text) == 1 + 6
    del t


# ====================================================================== memory discipline
_NEVER_DENSE = r"""
import resource, sys, tracemalloc
tracemalloc.start()
import numpy as np
from autorec.data.synthetic import generate
from autorec.interactions import Interactions
from autorec.metrics import evaluate
from autorec.models.torch import AutoRecTorch
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
    if kernel == "native":
        from autorec.models.torch import native
        if not native.available():
            continue
    m = AutoRecTorch(dict(based=based, path="sparse", hidden=(4,), epochs=1, batch_size=bs, threads=1,
                          extra={"sparse_kernel": kernel, "fused_optimizer": True}))
    m.fit(train)
    ev = evaluate(m, train, test)
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
    env = dict(os.environ, PYTHONPATH=str(REPO), THP_MEM_ALLOC_ENABLE="1")
    out = subprocess.run([sys.executable, "-c", _NEVER_DENSE], capture_output=True, text=True, env=env,
                         cwd=str(REPO), timeout=300)
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
    from autorec.metrics import evaluate
    from autorec.models.torch import AutoRecTorch
    from autorec.splits import make_split

    r = generate(1200, 700, 40_000, seed=5)
    d = make_split(r, "random", seed=0).data(r)
    res = {}
    for path, kern in (("dense", "torch"), ("sparse", "torch"), ("sparse", "native")):
        from autorec.models.torch import native
        if kern == "native" and not native.available():
            continue
        m = AutoRecTorch(dict(based=based, path=path, hidden=(64,), epochs=3, batch_size=64, seed=2,
                              extra={"sparse_kernel": kern}))
        info = m.fit(d.train)
        res[(path, kern)] = ([h["train_loss"] for h in info.history], m.predict(d.test.users, d.test.items),
                             evaluate(m, d.train, d.test)["rmse"])
    ref = res[("dense", "torch")]
    for key, (loss, pred, rmse) in res.items():
        np.testing.assert_allclose(loss, ref[0], rtol=2e-4, err_msg=str(key))
        np.testing.assert_allclose(pred, ref[1], rtol=1e-3, atol=2e-3, err_msg=str(key))
        assert rmse == pytest.approx(ref[2], abs=1e-3)
    assert ref[0][-1] < ref[0][0]        # it learned something


def test_worker_checkpoint_resume_keeps_the_epoch_record(tmp_path):
    """A checkpointed row killed after an epoch resumes (--resume) to a record with all epochs."""
    pytest.importorskip("torch")
    import benchmarks.scale as bs

    spec = _spec(tmp_path, TINY.format(budget=40).replace("probe_n = 128", "probe_n = 128\ncheckpoint_min_ratings = 1"))
    _, rows = bs.load_spec(spec)
    row = [r for r in rows if r.path == "sparse"][0]
    assert row.checkpoint
    out = tmp_path / "raw"
    ck_dir = out / "checkpoints"
    # run the first 2 of 3 epochs (a checkpoint per epoch), as if killed after epoch 2
    from dataclasses import replace
    short = replace(row, epochs=2)
    bs.worker(short, out / "short.json", 10**12, checkpoint_dir=ck_dir)
    ck = ck_dir / f"{short.row_id}.ckpt.npz"
    assert ck.exists()
    rec = bs.worker(row, out / f"{row.row_id}.json", 10**12, resume=True, checkpoint_dir=ck_dir)
    assert rec["resumed_from_epoch"] == 2 and len(rec["epoch_seconds"]) == 3
    assert json.loads((out / f"{row.row_id}.json").read_text())["status"] == "ok"


def test_report_renders_scale_from_raw_scale_folder(tmp_path):
    """`autorec-bench report` regenerates scale.md/csv from <raw>/scale (and lists them in its
    manifest, so a later report without scale raw files removes them again); a tagged (b256) row
    never stands in for the main row in the targets."""
    import json as _json

    from benchmarks import report

    raw = tmp_path / "raw"
    (raw / "scale").mkdir(parents=True)
    recs = [_fake("ml-1m-item-sparse-native", "ml-1m", "item", "sparse", 0.2),
            _fake("ml-1m-item-sparse-native-b256", "ml-1m", "item", "sparse", 0.1, row={"tag": "b256"}),
            _fake("ml-1m-item-dense", "ml-1m", "item", "dense", 1.0)]
    for r in recs:
        (raw / "scale" / f"{r['row_id']}.json").write_text(_json.dumps(r))
    out = tmp_path / "results"
    files = report.build_report(raw, out, plots=False)
    names = {p.name for p in files}
    assert {"scale.md", "scale.csv"} <= names and "scale_epoch_time.png" not in names
    assert "[scale.md](scale.md)" in (out / "README.md").read_text()
    md = (out / "scale.md").read_text()
    assert "I-AutoRec 5.0x" in md  # 1.0 / 0.2 from the main row, not 1.0 / 0.1 from the b256 row
    assert "| ml-1m | I-AutoRec | sparse (native kernels) | 256 |" in md
    for r in recs:
        (raw / "scale" / f"{r['row_id']}.json").unlink()
    report.build_report(raw, out, plots=False)
    assert not (out / "scale.md").exists()
    assert "No scale results yet" in (out / "README.md").read_text()
