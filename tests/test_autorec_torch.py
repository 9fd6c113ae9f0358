"""What only the PyTorch AutoRec does: the sparse path never densifies a batch, full-batch Rprop and
L-BFGS, one device per model (several go through fit_parallel), threads, devices.  What both
backends do is tests/test_autorec_backends.py."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from autorec.errors import ConfigError  # noqa: E402
from autorec.models.autorec.semantics import epoch_batches  # noqa: E402
from autorec.models.autorec.torch import AutoRecTorch  # noqa: E402
from tests.synthetic_parts import learnable  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return learnable()


class _Shapes(TorchDispatchMode):
    """Records (op, shape, layout) of every tensor every op produces."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.seen.append((str(func), tuple(t.shape), t.layout))
        return out


@pytest.mark.parametrize("based", ["item", "user"])
def test_sparse_path_never_builds_a_dense_batch(data, based):
    """Every tensor of every op of a sparse epoch (forward, backward, Adam) is recorded: none has the
    (batch, n_in) shape of a densified batch; the dense path, for contrast, has them."""
    found = {}
    for path in ("sparse", "dense"):
        model = AutoRecTorch(based=based, hidden=(13, 7, 13), path=path, dropout=0.1, batch_size=11, threads=1)
        trainer = model.make_trainer(data.train, None)
        n_in = model.n_in
        batch_rows = {len(b) for b in epoch_batches(model.n_rows, model.config, 1)}
        rec = _Shapes()
        with rec:
            trainer.train_epoch(1)
        dense_shapes = {(b, n_in) for b in batch_rows} | {(n_in, b) for b in batch_rows}
        found[path] = [s for s in rec.seen if s[2] == torch.strided and s[1] in dense_shapes]
    assert found["sparse"] == []
    assert found["dense"]


@pytest.mark.parametrize("optimizer,lr,extra", [("rprop", 0.01, {}), ("lbfgs", 0.5, {"lbfgs_max_iter": 5})])
@pytest.mark.parametrize("reg_form", ["wd", "paper"])
def test_full_batch_optimizers_take_one_step_per_epoch_and_reduce_loss(data, optimizer, lr, extra, reg_form):
    m = AutoRecTorch(hidden=(16,), optimizer=optimizer, lr=lr, epochs=6, batch_size=64, extra=extra, threads=1,
                     loss="observed-mean", reg=1e-3, reg_form=reg_form, dropout=0.0, init="xavier")  # fmt: skip
    info = m.fit(data.train, data.valid)
    losses = [h["train_loss"] for h in info.history]
    assert losses[-1] < losses[0]
    assert all(h["steps"] == 1 for h in info.history)


def test_full_batch_with_dropout_resumes_exactly(data, tmp_path):
    """Rprop's step evaluates the objective over chunks with the epoch's dropout masks; a resumed run
    equals the uninterrupted one."""
    cfg = dict(hidden=(12,), optimizer="rprop", lr=0.01, epochs=4, batch_size=40, dropout=0.2, threads=1,
               loss="observed-sum", reg_form="paper", reg=1.0)  # fmt: skip
    full = AutoRecTorch(cfg)
    full.fit(data.train, data.valid)
    ck = tmp_path / "ck.npz"
    AutoRecTorch({**cfg, "epochs": 2}).fit(data.train, data.valid, checkpoint=ck)
    resumed = AutoRecTorch(cfg)
    resumed.fit(data.train, data.valid, resume=ck)
    for k, v in full.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[k], v, err_msg=k)


def test_checkpoint_writes_the_optimizer_moments_as_they_are_and_reads_format_2(data, tmp_path, monkeypatch):
    """A checkpoint holds Adam's moments as arrays (views of the optimizer's memory when written, not
    a serialised copy of the state dict first) and the weights as views too; a format-2 checkpoint
    (the state dict serialised whole) still resumes, and both resume to the uninterrupted run."""
    import io

    from autorec.models import training

    cfg = dict(hidden=(12,), epochs=4, batch_size=32, dropout=0.2, lr=0.005, threads=1)
    full = AutoRecTorch(cfg)
    full.fit(data.train, data.valid)
    ck = tmp_path / "ck.npz"
    AutoRecTorch({**cfg, "epochs": 2}).fit(data.train, data.valid, checkpoint=ck)
    with np.load(ck) as z:
        names = set(z.files)
    assert "optimizer" not in names and "opt/skeleton" in names
    assert len([n for n in names if n.startswith("opt/t")]) == 12  # 4 parameters: step, exp_avg, exp_avg_sq
    saved = training.load_checkpoint(ck)
    assert isinstance(saved.optimizer_state, dict)

    trainer = AutoRecTorch(cfg).make_trainer(data.train, data.valid)
    trainer.train_epoch(1)
    arrays = trainer.optimizer_state()
    moments = [t for st in trainer.opt.state.values() for k, t in st.items() if k != "step"]
    assert len(moments) == 8 and all(any(np.shares_memory(a, t.numpy()) for a in arrays.values()) for t in moments)
    # so are the weights (state(copy=False), what the checkpoint writes); state() copies
    params = [p.detach().numpy() for p in trainer.net.parameters()]
    views, copies = trainer.state(copy=False), trainer.state()
    assert all(any(np.shares_memory(v, p) for p in params) for v in views.values())
    assert not any(np.shares_memory(c, p) for c in copies.values() for p in params)
    assert all(np.array_equal(views[k], copies[k]) for k in copies)

    # a tensor the state holds twice is written once and read back as one tensor
    first = next(iter(trainer.opt.state.values()))
    first["alias"] = first["exp_avg"]
    twice = trainer.optimizer_state()
    assert len(twice) == len(arrays)
    other = AutoRecTorch(cfg).make_trainer(data.train, data.valid)
    other.load_optimizer_state(twice)
    back = next(iter(other.opt.state.values()))
    assert back["alias"] is back["exp_avg"] and torch.equal(back["exp_avg"], first["exp_avg"])
    del first["alias"]

    # the same state written as format 2 did: one byte string
    trainer.load_optimizer_state(saved.optimizer_state)
    buf = io.BytesIO()
    torch.save(trainer.opt.state_dict(), buf)
    old = tmp_path / "old.npz"
    monkeypatch.setattr(training, "CHECKPOINT_FORMAT", "autorec-bench-checkpoint/2")
    training.save_checkpoint(old, training.Checkpoint(**{**saved.__dict__, "optimizer_state": buf.getvalue()}))
    monkeypatch.undo()
    assert isinstance(training.load_checkpoint(old).optimizer_state, bytes)
    for path in (ck, old):
        resumed = AutoRecTorch(cfg)
        resumed.fit(data.train, data.valid, resume=path)
        for k, v in full.get_weights().items():
            np.testing.assert_array_equal(resumed.get_weights()[k], v, err_msg=f"{path.name}: {k}")


def test_default_init_is_torchs(data):
    """``init="default"``: torch's Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), seeded."""
    weights = []
    for _ in range(2):
        m = AutoRecTorch(hidden=(30,), init="default", seed=1)
        m.make_trainer(data.train, None)
        weights.append(m.get_weights())
    n_in = data.train.n_users
    assert np.abs(weights[0]["W0"]).max() <= 1 / np.sqrt(n_in) + 1e-6
    np.testing.assert_array_equal(weights[0]["W0"], weights[1]["W0"])


@pytest.mark.parametrize(
    "params,match",
    [
        ({"devices": ("cuda:7",)}, "cuda"),
        ({"devices": ("cpu", "cpu")}, "fit_parallel"),
        ({"extra": {"adam_epsilon": "torch"}}, "unknown torch backend knob"),
        ({"extra": {"sparse_kernel": "fast"}}, "sparse_kernel"),
        ({"extra": {"fused_step": "no"}}, "must be true or false"),
        ({"extra": {"lbfgs_max_iter": 0}}, "lbfgs_max_iter.*positive integer"),
        ({"extra": {"lbfgs_history": -1}}, "lbfgs_history.*positive integer"),
        ({"extra": {"lbfgs_line_search": "armijo"}}, "'strong_wolfe' only"),
    ],
)
def test_torch_only_configs_rejected_up_front(params, match):
    with pytest.raises(ConfigError, match=match):
        AutoRecTorch(params)


def test_launcher_and_backend():
    assert AutoRecTorch.launcher(["cpu"]) == "single"
    assert AutoRecTorch.launcher(["cpu(0)", "cpu(1)"]) == "ddp"
    assert (AutoRecTorch.backend, AutoRecTorch.requires) == ("torch", (("torch", "torch"),))


def test_threads_set_at_fit(data):
    before = torch.get_num_threads()
    try:
        AutoRecTorch(hidden=(4,), epochs=1, threads=1).fit(data.train)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_fit_on_device(data, device):
    m = AutoRecTorch(hidden=(16,), epochs=2, devices=("cuda:0" if device == "cuda" else "cpu",), path="sparse")
    m.fit(data.train, data.valid)
    assert m.fit_info is not None and m.fit_info.extra["device"].startswith(device)
    assert np.isfinite(m.evaluate(data.test)["rmse"])


PAIR_SHAPES = [(500, 0), (500, 1), (500, 2001), (37, 7100), (1, 51), (40_000, 1), (40_000, 5), (300_000, 3)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("width,n_pairs", PAIR_SHAPES)
def test_decode_pairs_in_chunks_gives_the_one_shot_floats(threads, width, n_pairs, monkeypatch):
    # the chunked CPU evaluation returns bitwise what the one-shot (pairs, h) formula returns,
    # across chunk boundaries (a short last chunk, a last pair alone, rows longer than a chunk,
    # which torch reduces on several threads when one is alone)
    from autorec.models.autorec.torch import net as netmod

    net = netmod.AutoRecNet([11, width, 11], ["sigmoid", "identity"], 0.0, "sparse")
    gen = torch.Generator().manual_seed(width + n_pairs)
    with torch.no_grad():
        net.layers[-1].weight.copy_(torch.randn(11, width, generator=gen))
        net.layers[-1].bias.copy_(torch.randn(11, generator=gen))
    h = torch.randn(40, width, generator=gen)
    local = torch.sort(torch.randint(0, 40, (n_pairs,), generator=gen)).values
    col = torch.randint(0, 11, (n_pairs,), generator=gen)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            want = (h[local] * net.layers[-1].weight[col]).sum(dim=1) + net.layers[-1].bias[col]
            got = net.decode_pairs(h, local, col)
            monkeypatch.setattr(netmod, "PAIR_CHUNK", 3 * width - 1)  # chunks of two pairs
            small = net.decode_pairs(h, local, col)
    finally:
        torch.set_num_threads(before)
    assert got.shape == (n_pairs,)
    assert torch.equal(got, want) and torch.equal(small, want)
