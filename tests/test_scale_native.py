"""The native sparse kernels (autorec.models.autorec.torch.native) against dense references and against the
torch sparse path: same products, same loss, same gradients, same training trajectory."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (pip install .[torch])")

from autorec.errors import ConfigError, TrainingDivergedError  # noqa: E402
from autorec.interactions import Interactions  # noqa: E402


@pytest.fixture(scope="module")
def native():
    from autorec.models.autorec.torch import native as nat

    if not nat.available():
        pytest.skip(f"native kernels unavailable: {nat.unavailable_reason()}")
    return nat


@pytest.fixture(params=[1, 2, 3])
def threads(request):
    """torch's thread count (the kernels use it) for the test, restored after it."""
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)


def _random_batch(rng, n_rows=37, n_cols=53, density=0.15, empty_rows=(3, 10), empty_cols=(0, 7, 52)):
    mask = rng.random((n_rows, n_cols)) < density
    mask[list(empty_rows), :] = False
    mask[:, list(empty_cols)] = False
    vals = np.where(mask, rng.integers(1, 6, size=mask.shape), 0).astype(np.float32)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64)
    cols = np.nonzero(mask)[1].astype(np.int64)
    data = vals[mask].astype(np.float32)
    return mask, vals, torch.from_numpy(indptr), torch.from_numpy(cols), torch.from_numpy(data)


def test_kernels_match_dense_reference(native, rng, threads):
    mask, dense, crow, col, val = _random_batch(rng)
    n_rows, n_cols = dense.shape
    b = native.Batch(crow, col, val, n_rows, n_cols)
    assert b.nnz == int(mask.sum())
    X = torch.from_numpy(dense)
    W = torch.randn(n_cols, 19, dtype=torch.float32)
    H = torch.randn(n_rows, 19, dtype=torch.float32)
    g = torch.randn(b.nnz, dtype=torch.float32)
    G = torch.zeros(n_rows, n_cols)
    G[torch.from_numpy(mask)] = g  # row-major boolean order == CSR order
    torch.testing.assert_close(b.spmm(val, W), X @ W, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.spmm_rows(val, W), X @ W, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.spmm_t(val, H), X.t() @ H, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.sddmm(H, W), (H @ W.t())[torch.from_numpy(mask)], rtol=1e-5, atol=1e-5)
    dH, dW, db = b.decode_backward(g, W, H)
    assert db is None
    torch.testing.assert_close(dH, G @ W, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dW, G.t() @ H, rtol=1e-5, atol=1e-5)
    # columns without entries get an all-zero gradient row (written, not left uninitialised)
    assert torch.all(b.spmm_t(val, H)[[0, 7, 52]] == 0)


@pytest.mark.parametrize("hidden", [5, 21, 64])
def test_kernels_on_every_column_length(native, rng, threads, hidden):
    """Column j holds j % 11 entries (0-10: none, tails of 1-3 after 0-2 groups of four), so every
    branch of the four-entries-per-loop passes runs: the products against float64 references."""
    n_rows, n_cols = 12, 44
    mask = np.zeros((n_rows, n_cols), dtype=bool)
    for j in range(n_cols):
        mask[rng.choice(n_rows, size=j % 11, replace=False), j] = True
    vals = np.where(mask, rng.integers(1, 6, size=mask.shape), 0).astype(np.float32)
    indptr = torch.from_numpy(np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64))
    cols = torch.from_numpy(np.nonzero(mask)[1].astype(np.int64))
    b = native.Batch(indptr, cols, torch.from_numpy(vals[mask]), n_rows, n_cols)
    X = torch.from_numpy(vals).double()
    W, H = torch.randn(n_cols, hidden), torch.randn(n_rows, hidden)
    g = torch.randn(b.nnz)
    G = torch.zeros(n_rows, n_cols, dtype=torch.float64)
    G[torch.from_numpy(mask)] = g.double()
    torch.testing.assert_close(b.spmm(None, W).double(), X @ W.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.spmm_t(None, H).double(), X.t() @ H.double(), rtol=1e-5, atol=1e-5)
    dH, dW, _ = b.decode_backward(g, W, H)
    torch.testing.assert_close(dH.double(), G @ W.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dW.double(), G.t() @ H.double(), rtol=1e-5, atol=1e-5)
    assert torch.all(dW[[j for j in range(n_cols) if j % 11 == 0]] == 0)


def test_batch_rejects_bad_structure(native):
    crow = torch.tensor([0, 2], dtype=torch.int64)
    with pytest.raises(ValueError, match="outside"):
        native.Batch(crow, torch.tensor([1, 9]), torch.ones(2), 1, 5)
    with pytest.raises(ValueError, match="does not describe"):
        native.Batch(torch.tensor([0, 3]), torch.tensor([1, 2]), torch.ones(2), 1, 5)


def _column_order_reference(crow, col, val, n_cols):
    """The column-ordered index as a stable sort by column of the batch's CSR entries (numpy)."""
    rows = np.repeat(np.arange(len(crow) - 1), np.diff(crow))
    order = np.argsort(col, kind="stable")
    colptr = np.concatenate([[0], np.cumsum(np.bincount(col, minlength=n_cols))])
    return colptr, rows[order].astype(np.int32), order, val[order]


@pytest.mark.parametrize("shape", [(37, 53, 0.15, 20), (400, 300, 0.4, 250)])  # the second: >16k entries
def test_gather_builds_the_batch_of_the_rows_slice(native, rng, threads, shape):
    """Batch.gather(rows) reads the matrix's CSR arrays in place and gives exactly the batch that
    Batch(...) builds from the rows' CSR slice: row pointer, columns, values, and the
    column-ordered index a stable sort by column gives (on 1-3 threads; the larger batch takes the
    threaded counting sort); with csr_order=False only the column-ordered arrays."""
    import scipy.sparse as sp

    from autorec.models.autorec.rows import batch_entries

    n_rows, n_cols, density, batch = shape
    mask = rng.random((n_rows, n_cols)) < density
    mask[[1, 5], :] = False  # empty rows
    mask[:, [0, 3]] = False  # empty columns
    csr = sp.csr_matrix(np.where(mask, rng.integers(1, 11, size=mask.shape) / 2, 0).astype(np.float32))
    src = native.CsrRows(csr)
    rows = rng.permutation(n_rows)[:batch]
    rows[:2] = [5, 1]
    indptr, _, cols, vals = batch_entries(csr, rows)
    ref = native.Batch(torch.from_numpy(indptr), torch.from_numpy(cols), torch.from_numpy(vals), batch, n_cols)
    colptr, ccrow, cpos, cval = _column_order_reference(indptr, cols, vals, n_cols)
    got = native.Batch.gather(src, rows)
    assert got.nnz == ref.nnz == len(cols)
    for b in (ref, got):
        assert torch.equal(b.crow, torch.from_numpy(indptr))
        assert torch.equal(b.col, torch.from_numpy(cols)) and torch.equal(b.val, torch.from_numpy(vals))
        assert np.array_equal(b.colptr.numpy(), colptr) and np.array_equal(b.ccrow.numpy(), ccrow)
        assert np.array_equal(b.cpos.numpy(), cpos) and np.array_equal(b.cval.numpy(), cval)
    lean = native.Batch.gather(src, rows, csr_order=False)
    assert lean.col is None and lean.val is None and lean.cpos is None
    for name in ("crow", "colptr", "ccrow", "cval"):
        assert torch.equal(getattr(lean, name), getattr(ref, name)), name
    W = torch.randn(n_cols, 7)
    assert torch.equal(lean.spmm(None, W), ref.spmm(ref.val, W))
    with pytest.raises(RuntimeError, match="csr_order=False.*cpos"):
        lean.sddmm(torch.randn(batch, 7), W)
    with pytest.raises(RuntimeError, match="csr_order=False.*col"):
        lean.column_sums(torch.ones(lean.nnz))


def test_gather_rejects_bad_rows_and_columns(native):
    import types

    import scipy.sparse as sp

    src = native.CsrRows(sp.csr_matrix(np.eye(4, dtype=np.float32)))
    for rows in ([0, 4], [-1], [[0, 1]], [0.5]):
        with pytest.raises(ValueError, match="row"):
            native.Batch.gather(src, np.array(rows))
    bad = types.SimpleNamespace(
        shape=(2, 3), indptr=np.array([0, 1, 2]), indices=np.array([0, 7], np.int32), data=np.ones(2, np.float32)
    )
    with pytest.raises(ValueError, match=r"column index is outside \[0, 3\)"):
        native.Batch.gather(native.CsrRows(bad), [1, 0])
    short = types.SimpleNamespace(
        shape=(2, 3), indptr=np.array([0, 1, 3]), indices=np.array([0, 1], np.int32), data=np.ones(2)
    )
    with pytest.raises(ValueError, match="row pointer ending at 3"):
        native.CsrRows(short)
    assert native.Batch.gather(src, np.array([], dtype=np.int64)).nnz == 0
    wide = sp.csr_matrix((np.ones(2, np.float32), np.array([1, 2**32 + 1]), np.array([0, 1, 2])), shape=(2, 3))
    with pytest.raises(ValueError, match=r"CsrRows: a column index is outside \[0, 3\)"):
        native.CsrRows(wide)  # int64 indices: checked before the int32 cast could wrap 2**32 + 1 to 1
    with pytest.raises(ValueError, match=r"row pointer of length 0 \(empty\) does not describe"):
        native.Batch(torch.tensor([], dtype=torch.int64), torch.tensor([1]), torch.ones(1), 1, 5)


_THREAD_LIMIT_CHILD = """
import numpy as np, scipy.sparse as sp, torch
from autorec.models.autorec.torch import native
torch.set_num_threads(4)
rng = np.random.default_rng(0)
csr = sp.random(600, 400, density=0.3, format="csr", dtype=np.float32, random_state=1)
rows = rng.permutation(600)[:300]
b = native.Batch.gather(native.CsrRows(csr), rows)
X = torch.from_numpy(csr[rows].toarray())
W = torch.randn(400, 16)
order = np.argsort(csr[rows].indices, kind="stable")
assert b.nnz > 16384 and np.array_equal(b.cpos.numpy(), order), "index"
torch.testing.assert_close(b.spmm(None, W), X @ W, rtol=1e-4, atol=1e-4)
print("ok", torch.get_num_threads())
"""


@pytest.mark.parametrize("limit", [{"OMP_THREAD_LIMIT": "2"}, {"OMP_DYNAMIC": "true"}])
def test_kernels_are_right_with_fewer_openmp_threads_than_asked(native, limit):
    """Where OpenMP grants a smaller team than the kernels ask for (a thread limit, dynamic
    teams), each thread runs several of the split's chunks: the batch index and the products stay
    right (they used to skip the chunks of threads that never started)."""
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _THREAD_LIMIT_CHILD],
        env={**os.environ, **limit},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", "4"]


def test_autograd_functions_gradcheck_against_torch(native, rng):
    mask, dense, crow, col, val = _random_batch(rng, 11, 17, 0.3, (2,), (4,))
    b = native.Batch(crow, col, val, 11, 17)
    W = torch.randn(17, 5, requires_grad=True)
    W2 = W.detach().clone().requires_grad_(True)
    Hs = torch.randn(11, 5, requires_grad=True)
    Hs2 = Hs.detach().clone().requires_grad_(True)
    X = torch.from_numpy(dense)
    m = torch.from_numpy(mask)
    y = native.encode(W, b).sin().sum() + (native.decode(Hs, W, b) ** 2).sum()
    y.backward()
    y2 = (X @ W2).sin().sum() + (((Hs2 @ W2.t())[m]) ** 2).sum()
    y2.backward()
    torch.testing.assert_close(W.grad, W2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(Hs.grad, Hs2.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("need", ["all", "h-and-bias", "w-and-bias", "no-bias"])
def test_decode_with_bias_gradients(native, rng, need):
    """The decoder bias folded into the kernel: forward and all gradient combinations equal the
    reference ``H @ W^T + b`` at the observed entries."""
    mask, dense, crow, col, val = _random_batch(rng, 13, 21, 0.3, (2,), (4, 20))
    b = native.Batch(crow, col, val, 13, 21)
    m = torch.from_numpy(mask)
    need_h, need_w, need_b = (
        need in ("all", "h-and-bias", "no-bias"),
        need in ("all", "w-and-bias", "no-bias"),
        need != "no-bias",
    )
    H = torch.randn(13, 6).requires_grad_(need_h)
    W = torch.randn(21, 6).requires_grad_(need_w)
    bias = torch.randn(21).requires_grad_(need_b)
    H2, W2, b2 = (t.detach().clone().requires_grad_(t.requires_grad) for t in (H, W, bias))
    out = native.decode(H, W, b, bias)
    ref = (H2 @ W2.t() + b2)[m]
    torch.testing.assert_close(out, ref.detach(), rtol=1e-5, atol=1e-5)
    g = torch.randn(b.nnz)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    for a, r in ((H, H2), (W, W2), (bias, b2)):
        if r.requires_grad:
            torch.testing.assert_close(a.grad, r.grad, rtol=1e-4, atol=1e-5)
        else:
            assert a.grad is None
    if need_b:  # columns without entries: zero bias gradient
        assert torch.all(bias.grad[[4, 20]] == 0)


def test_recycled_gradient_buffers_are_fully_overwritten(native, rng):
    """The trainer hands last step's wide gradients back to the pool; the kernels must overwrite
    every element of a reused buffer (here poisoned with NaN) and the result is the same gradient."""
    from autorec.models.autorec.rows import batch_entries
    from autorec.models.autorec.torch import AutoRecTorch

    train = _interactions(rng)
    m = AutoRecTorch(dict(based="item", hidden=(16,), path="sparse", dropout=0.0, extra={"sparse_kernel": "native"}))
    m.make_trainer(train, None)
    rows = np.arange(0, m.n_rows, 3)
    indptr, _, cols, vals = batch_entries(m.train_matrix, rows)

    def grads():
        m.net.zero_grad(set_to_none=True)
        m.net(torch.from_numpy(indptr), torch.from_numpy(cols), torch.from_numpy(vals), len(rows)).backward()
        return [p.grad.detach().clone() for p in m.net.parameters() if p.grad is not None]

    ref = grads()
    assert len(ref) == 4  # every parameter has its gradient
    pool = native.grad_pool(m.net)
    wide = [m.net.layers[0].weight_t, m.net.layers[-1].weight]
    native.recycle_grads(m.net)  # last step's gradients -> the pool, the parameters' grads cleared
    assert len(pool) == 2 and all(w.grad is None for w in wide)
    n, h = wide[0].shape
    bufs = [pool.take(n, h), pool.take(n, h)]
    ptrs = {t.data_ptr() for t in bufs}
    for buf in bufs:
        buf.fill_(float("nan"))
        pool.give(buf)
    del buf, bufs  # a reference held here would make autograd copy the buffer instead of taking it
    again = grads()
    assert {w.grad.data_ptr() for w in wide} == ptrs  # the recycled buffers, taken over without a copy
    assert len(pool) == 0
    for a, r in zip(again, ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, r, rtol=0, atol=0)
    # views, other shapes and dtypes are not pooled
    wide[0].grad = torch.zeros(wide[0].shape[1], wide[0].shape[0]).t()
    native.recycle_grads(m.net)
    assert wide[0].grad is not None and len(pool) == 1


def _interactions(rng, n_users=120, n_items=70, n=1500) -> Interactions:
    keys = rng.choice(n_users * n_items, size=n, replace=False)
    return Interactions(
        users=(keys // n_items).astype(np.int32),
        items=(keys % n_items).astype(np.int32),
        ratings=rng.integers(1, 6, size=n).astype(np.float32),
        n_users=n_users,
        n_items=n_items,
        rating_scale=(1.0, 5.0),
    )


@pytest.mark.parametrize("based", ["item", "user"])
@pytest.mark.parametrize("hidden", [(16,), (12, 6, 12)])
@pytest.mark.parametrize("act", ["identity", "sigmoid"])
def test_native_loss_and_gradients_equal_torch_sparse(native, rng, based, hidden, act):
    from autorec.models.autorec.rows import batch_entries
    from autorec.models.autorec.torch import AutoRecTorch

    train = _interactions(rng)
    if act == "sigmoid":  # a sigmoid output needs ratings in (0, 1)
        train = Interactions(train.users, train.items, train.ratings / 5, train.n_users, train.n_items, (0.2, 1.0))
    nets = {}
    for kern in ("torch", "native"):
        m = AutoRecTorch(
            dict(
                based=based,
                hidden=hidden,
                path="sparse",
                dropout=0.0,
                output_activation=act,
                extra={"sparse_kernel": kern},
            )
        )
        m.make_trainer(train, None)
        nets[kern] = m
    assert type(nets["native"].net.layers[0]).__name__ == "TransposedLinear"
    w = nets["torch"].get_weights()
    nets["native"].set_weights(w)
    np.testing.assert_array_equal(nets["native"].get_weights()["W0"], w["W0"])
    rows = np.arange(0, nets["torch"].n_rows, 2)
    indptr, _, cols, vals = batch_entries(nets["torch"].train_matrix, rows)
    out = {}
    for kern, m in nets.items():
        m.net.train()
        m.net.zero_grad(set_to_none=True)
        sse = m.net(torch.from_numpy(indptr), torch.from_numpy(cols), torch.from_numpy(vals), len(rows))
        sse.backward()
        grads = {}
        for k, layer in enumerate(m.net.layers):
            gw = layer.weight_t.grad.t() if hasattr(layer, "weight_t") else layer.weight.grad
            grads[f"W{k}"] = gw.detach().numpy().copy()
            grads[f"b{k}"] = layer.bias.grad.detach().numpy().copy()
        out[kern] = (float(sse.detach()), grads)
    assert out["native"][0] == pytest.approx(out["torch"][0], rel=1e-5)
    for k in out["torch"][1]:
        np.testing.assert_allclose(out["native"][1][k], out["torch"][1][k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_native_training_trajectory_equals_torch(native, rng):
    from autorec.models.autorec.torch import AutoRecTorch

    train = _interactions(rng, 150, 90, 2500)
    res = {}
    for kern, fused in (("torch", False), ("native", True)):
        m = AutoRecTorch(
            dict(
                path="sparse",
                hidden=(24,),
                epochs=3,
                batch_size=32,
                seed=3,
                extra={"sparse_kernel": kern, "fused_optimizer": fused},
            )
        )
        info = m.fit(train)
        res[kern] = (
            [h["train_loss"] for h in info.history],
            m.get_weights(),
            m.predict(train.users[:200], train.items[:200]),
        )
    np.testing.assert_allclose(res["native"][0], res["torch"][0], rtol=1e-5)
    for k in res["torch"][1]:
        np.testing.assert_allclose(res["native"][1][k], res["torch"][1][k], rtol=1e-4, atol=2e-5, err_msg=k)
    np.testing.assert_allclose(res["native"][2], res["torch"][2], rtol=1e-4, atol=1e-4)


def test_native_dense_path_and_checkpoint_resume(native, rng, tmp_path):
    """The transposed first layer works on the dense path too, and survives checkpoint/resume."""
    from autorec.models.autorec.torch import AutoRecTorch

    train = _interactions(rng)
    cfg = dict(path="dense", hidden=(8,), epochs=2, batch_size=16, extra={"sparse_kernel": "native"})
    a = AutoRecTorch(cfg)
    a.fit(train)
    b = AutoRecTorch(dict(cfg, extra={"sparse_kernel": "torch"}))
    b.fit(train)
    for k, v in b.get_weights().items():
        np.testing.assert_allclose(a.get_weights()[k], v, rtol=1e-5, atol=1e-6)
    _assert_resume_equals_uninterrupted(
        train, dict(cfg, path="sparse", epochs=3, extra={"sparse_kernel": "native", "fused_optimizer": True}), tmp_path
    )


def _assert_resume_equals_uninterrupted(train, cfg: dict, tmp_path) -> None:
    """A fit stopped after epoch 2 of 3 and resumed from its checkpoint equals an uninterrupted fit."""
    from autorec.models.autorec.torch import AutoRecTorch

    full = AutoRecTorch(cfg)
    full.fit(train)

    class Stop(Exception):
        pass

    def stop_after_2(epoch, n, info):
        if epoch == 2:
            raise Stop

    ck = tmp_path / "ck.npz"
    with pytest.raises(Stop):
        AutoRecTorch(cfg).fit(train, checkpoint=ck, progress=stop_after_2)
    resumed = AutoRecTorch(cfg)
    resumed.fit(train, resume=ck)
    for k, v in full.get_weights().items():
        np.testing.assert_allclose(resumed.get_weights()[k], v, rtol=1e-6, atol=1e-7, err_msg=k)


def test_sparse_kernel_knob_is_validated(native):
    from autorec.models.autorec.torch import AutoRecTorch

    with pytest.raises(ConfigError, match="sparse_kernel"):
        native.resolve_kernel("fast")
    assert native.resolve_kernel(None) == "torch"
    assert native.resolve_kernel("auto", "cuda") == "torch"
    assert native.resolve_kernel("auto", "cpu") == "native"
    with pytest.raises(ConfigError, match="CPU only"):
        native.resolve_kernel("native", "cuda")
    with pytest.raises(ConfigError, match="sparse_kernel"):  # refused at construction, before any work
        AutoRecTorch(dict(extra={"sparse_kernel": "fast"}))


def test_kernels_compile_into_the_cache_folder(native, tmp_path, monkeypatch):
    """The kernel cache: $AUTOREC_KERNEL_DIR, else the "kernels" folder of the cache root."""
    from autorec.models.autorec.torch import native_build

    monkeypatch.delenv(native_build.ENV_KERNEL_DIR, raising=False)
    monkeypatch.setenv("AUTOREC_CACHE_DIR", str(tmp_path / "cache"))
    assert native_build.kernel_dir() == tmp_path / "cache" / "kernels"
    monkeypatch.setenv(native_build.ENV_KERNEL_DIR, str(tmp_path / "k"))
    assert native_build.kernel_dir() == tmp_path / "k"
    assert native_build.SOURCE.name == "native.cpp" and native_build.SOURCE.is_file()


def _adam_reference(p: torch.Tensor, grads: list[torch.Tensor], lr=0.01, wd=0.1, fused=False):
    """``p`` after torch.optim.Adam steps with the given gradients, and its moments."""
    q = torch.nn.Parameter(p.clone())
    opt = torch.optim.Adam([q], lr=lr, weight_decay=wd, fused=fused)
    for g in grads:
        q.grad = g.clone()
        opt.step()
    st = opt.state[q]
    return q.detach(), st["exp_avg"], st["exp_avg_sq"]


def test_fused_adam_kernels_match_gradients_plus_torch_adam(native, rng, threads):
    """ar_encode_backward_adam / ar_decode_backward_adam: the reference gradients (dense products)
    followed by torch's Adam, step after step, including the rows of columns without entries."""
    mask, dense, crow, col, val = _random_batch(rng)
    n_rows, n_cols = dense.shape
    b = native.Batch(crow, col, val, n_rows, n_cols)
    X, Mk = torch.from_numpy(dense), torch.from_numpy(mask)
    W0, W1 = torch.randn(n_cols, 19), torch.randn(n_cols, 19)
    lr, wd, betas, eps = 0.01, 0.1, (0.9, 0.999), 1e-8
    opt = torch.optim.Adam([torch.nn.Parameter(W0.clone()), torch.nn.Parameter(W1.clone())], lr=lr, weight_decay=wd)
    group = opt.param_groups[0]
    w0, w1 = W0.clone(), W1.clone()
    m0, v0, m1, v1 = (torch.zeros_like(W0) for _ in range(4))
    st0 = {"step": torch.tensor(0.0)}
    st1 = {"step": torch.tensor(0.0)}
    g0s, g1s = [], []
    ref1 = W1.clone()
    for _ in range(3):
        dZ = torch.randn(n_rows, 19)
        H = torch.randn(n_rows, 19)
        g = torch.randn(b.nnz)
        G = torch.zeros(n_rows, n_cols)
        G[Mk] = g
        g0s.append(X.t() @ dZ)
        g1s.append(G.t() @ H)
        b.encode_backward_adam(dZ, w0, m0, v0, native.adam_hyper(group, st0))
        dH, db = b.decode_backward_adam(g, w1, H, m1, v1, native.adam_hyper(group, st1))
        torch.testing.assert_close(dH, G @ ref1, rtol=1e-5, atol=1e-5)  # with the weights before the step
        torch.testing.assert_close(db, G.sum(0), rtol=1e-5, atol=1e-5)
        ref1, _, _ = _adam_reference(W1, g1s, lr, wd)
    assert betas == tuple(opt.param_groups[0]["betas"]) and eps == opt.param_groups[0]["eps"]
    for w, m, v, W, gs in ((w0, m0, v0, W0, g0s), (w1, m1, v1, W1, g1s)):
        rw, rm, rv = _adam_reference(W, gs, lr, wd)
        # the gradients' summation order differs from the dense products': rounding only
        torch.testing.assert_close(m, rm, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(v, rv, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(w, rw, rtol=1e-5, atol=1e-5)
        # the empty columns' rows moved too (weight decay and momentum), as torch's Adam moves them
        assert not torch.equal(w[[0, 7, 52]], W[[0, 7, 52]])


def _fit_fused(train, fused_step, **cfg):
    from autorec.models.autorec.torch import AutoRecTorch

    base = dict(path="sparse", hidden=(24,), epochs=3, batch_size=32, seed=3, dropout=0.1, reg=1e-3, lr=0.003)
    base.update(cfg)
    extra = {"sparse_kernel": "native", "fused_optimizer": True, "fused_step": fused_step}
    m = AutoRecTorch(dict(base, extra=extra))
    info = m.fit(train)
    return [h["train_loss"] for h in info.history], m


@pytest.mark.parametrize(
    "cfg",
    [
        dict(based="item"),
        dict(based="user", hidden=(12, 6, 12), hidden_activation="relu"),
        dict(based="item", reg=0.0, loss="observed-mean"),
    ],
    ids=["item", "user-deep", "no-reg-mean-loss"],
)
def test_fused_step_trajectory_equals_unfused(native, rng, cfg):
    """extra['fused_step'] is the same training (dropout masks, weight decay, every layer) as the
    unfused native path with torch's Adam: the same losses, weights and predictions up to rounding."""
    train = _interactions(rng, 150, 90, 2500)
    la, a = _fit_fused(train, False, **cfg)
    lb, b = _fit_fused(train, True, **cfg)
    np.testing.assert_allclose(lb, la, rtol=1e-5)
    for k, v in a.get_weights().items():
        np.testing.assert_allclose(b.get_weights()[k], v, rtol=1e-4, atol=2e-5, err_msg=k)
    np.testing.assert_allclose(
        b.predict(train.users[:200], train.items[:200]),
        a.predict(train.users[:200], train.items[:200]),
        rtol=1e-4,
        atol=1e-4,
    )
    # the wide weights' moments are in the optimizer's own state, as plain Adam keeps them
    fused_net = b.net
    assert fused_net.layers[0].weight_t.grad is None and fused_net.layers[-1].weight.grad is None


def test_fused_step_checkpoint_resume(native, rng, tmp_path):
    """The wide weights' Adam moments are in the checkpointed optimizer state: a resumed fused fit
    equals an uninterrupted one."""
    cfg = dict(path="sparse", hidden=(8,), epochs=3, batch_size=16, reg=1e-3)
    _assert_resume_equals_uninterrupted(
        _interactions(rng), dict(cfg, extra={"sparse_kernel": "native", "fused_step": True}), tmp_path
    )


@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(path="dense"), "path='sparse'"),
        (dict(path="sparse", optimizer="rprop"), "optimizer='adam'"),
        (dict(path="sparse", reg_form="paper", reg=1.0), "reg_form='wd'"),
    ],
)
def test_fused_step_refuses_what_it_cannot_fuse(native, rng, cfg, match):
    from autorec.models.autorec.torch import AutoRecTorch

    m = AutoRecTorch(dict(cfg, hidden=(8,), epochs=1, extra={"sparse_kernel": "native", "fused_step": True}))
    with pytest.raises(ConfigError, match=match):
        m.fit(_interactions(rng))
    net = _native_net()
    with pytest.raises(ConfigError, match="needs the Adam optimizer"):
        native.FusedAdam(net, torch.optim.SGD(net.parameters(), lr=0.1))


def _native_net():
    from autorec.models.autorec.torch.net import AutoRecNet

    return AutoRecNet([10, 4, 10], ["sigmoid", "identity"], 0.0, "sparse", kernel="native")


def _fused_steps(native, one_pass: bool, batches, mult=0.5):
    """A deep native net (identity output) and its optimizer after FusedAdam.train_step on each batch
    (one or two decoder passes), and the returned (loss, sse) per step."""
    from autorec.models.autorec.torch.net import AutoRecNet

    torch.manual_seed(0)
    net = AutoRecNet([53, 16, 8, 53], ["sigmoid", "relu", "identity"], 0.1, "sparse", kernel="native")
    opt = torch.optim.Adam(net.parameters(), lr=0.01, weight_decay=1e-3)
    fused = native.FusedAdam(net, opt)
    fused.one_pass = one_pass
    losses, checked = [], []
    for crow, col, val, n_rows in batches:
        opt.zero_grad(set_to_none=True)
        torch.manual_seed(len(losses))  # the same dropout masks in both runs
        batch = native.Batch(crow, col, val, n_rows, 53)
        losses.append(fused.train_step(batch, mult=mult, check=checked.append))
        opt.step()
    assert [loss for loss, _ in losses] == checked  # every step's loss went through the check
    return net, opt, losses


def test_one_pass_decoder_step_equals_two_passes_bitwise(native, rng, threads):
    """With an identity output, ar_decode_step_adam (forward, backward and Adam in one pass) leaves
    bitwise the weights and moments of the forward product + fused backward (one dot-product
    routine, the gradient autograd computes); only the loss is summed differently (double)."""
    batches = []
    for _ in range(4):
        _, dense, crow, col, val = _random_batch(rng)
        batches.append((crow, col, val, dense.shape[0]))
    a, opt_a, la = _fused_steps(native, False, batches)
    b, opt_b, lb = _fused_steps(native, True, batches)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a.state[pa][key], opt_b.state[pb][key]), (name, key)
    np.testing.assert_allclose(np.array(lb), np.array(la), rtol=1e-6)
    sig = _native_net()  # sigmoid hidden, identity output: one pass by default
    assert native.FusedAdam(sig, torch.optim.Adam(sig.parameters())).one_pass
    from autorec.models.autorec.torch.net import AutoRecNet

    net = AutoRecNet([10, 4, 10], ["sigmoid", "sigmoid"], 0.0, "sparse", kernel="native")
    assert not native.FusedAdam(net, torch.optim.Adam(net.parameters())).one_pass  # sigmoid output: two passes


def test_four_entries_dot_products_are_row_dots_bitwise(native, rng):
    """The kernels evaluate four entries' outputs in one loop (row_dot4: four accumulation chains
    instead of one) only where each is bitwise the one-entry routine's (row_dot), which the library
    checks once when it loads; then every width and scale gives the same bits."""
    lib = native.library()
    if lib.ar_dots4_exact() != 1:
        pytest.skip("this compiler vectorises row_dot4 differently: the kernels use row_dot per entry")
    for h in [*range(1, 70), 127, 128, 129, 255, 256, 257, 499, 500, 501, 1000, 1023]:
        for scale in (1e-3, 1.0, 1e3):
            x = np.ascontiguousarray(rng.standard_normal((4, h)) * scale, dtype=np.float32)
            w = np.ascontiguousarray(rng.standard_normal(h), dtype=np.float32)
            assert lib.ar_dots4_agree(x.ctypes.data, w.ctypes.data, h) == 4, (h, scale)


def test_one_pass_decoder_step_reports_a_non_finite_loss(native, rng):
    """A NaN target makes the one-pass step's loss NaN: the check sees it and stops the step before
    the encoder's pass (the fit raises TrainingDivergedError, naming epoch and batch)."""
    _, dense, crow, col, val = _random_batch(rng)
    val = val.clone()
    val[5] = float("nan")

    def check(loss):
        raise TrainingDivergedError(f"loss {loss}")

    from autorec.models.autorec.torch.net import AutoRecNet

    net = AutoRecNet([53, 6, 53], ["sigmoid", "identity"], 0.0, "sparse", kernel="native")
    fused = native.FusedAdam(net, torch.optim.Adam(net.parameters()))
    w0 = net.layers[0].weight_t.detach().clone()
    with pytest.raises(TrainingDivergedError, match="nan"):
        fused.train_step(native.Batch(crow, col, val, dense.shape[0], 53), mult=1.0, check=check)
    assert torch.equal(net.layers[0].weight_t.detach(), w0)  # the encoder never moved


def test_fused_step_fit_stops_on_divergence(native, rng):
    from autorec.models.autorec.torch import AutoRecTorch

    m = AutoRecTorch(
        dict(
            path="sparse",
            hidden=(8,),
            hidden_activation="relu",
            epochs=2,
            lr=1e30,
            extra={"sparse_kernel": "native", "fused_step": True},
        )
    )
    with pytest.raises(TrainingDivergedError, match=r"training loss is inf at epoch \d+, batch \d+"):
        m.fit(_interactions(rng))
