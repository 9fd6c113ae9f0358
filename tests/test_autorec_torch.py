"""AutoRec in PyTorch: dense vs sparse equivalence, training, prediction, persistence, resume, faults."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from autorec.config import AutoRecConfig  # noqa: E402
from autorec.errors import ConfigError, DataError, TrainingDivergedError  # noqa: E402
from autorec.interactions import Interactions  # noqa: E402
from autorec.metrics import evaluate, predict_pairs, rmse  # noqa: E402
from autorec.models import common  # noqa: E402
from autorec.models.torch import AutoRecTorch  # noqa: E402
from autorec.models.torch.model import _Trainer  # noqa: E402


def low_rank(seed=0, n_users=120, n_items=80, n=4000, rank=3, noise=0.3):
    """Ratings 1..5 from a rank-`rank` model plus noise; returns (train, valid, test)."""
    rng = np.random.default_rng(seed)
    u_f = rng.normal(size=(n_users, rank))
    i_f = rng.normal(size=(n_items, rank))
    pairs = rng.choice(n_users * n_items, size=n, replace=False)
    u, i = pairs // n_items, pairs % n_items
    r = np.clip(np.round(3 + (u_f[u] * i_f[i]).sum(1) + noise * rng.normal(size=n)), 1, 5)

    def part(s):
        return Interactions(u[s].astype(np.int32), i[s].astype(np.int32), r[s].astype(np.float32),
                            n_users, n_items, (1.0, 5.0))

    a, b = int(0.8 * n), int(0.9 * n)
    return part(slice(0, a)), part(slice(a, b)), part(slice(b, n))


@pytest.fixture(scope="module")
def data():
    return low_rank()


def _built(cfg: dict, train: Interactions) -> AutoRecTorch:
    m = AutoRecTorch(cfg)
    m._set_train(train)
    m._build(m._csr.shape[1])
    return m


def _loss_grads(model: AutoRecTorch, rows: np.ndarray, seed: int = 7):
    t = _Trainer(model, model._csr)
    cfg = model.config
    nnz = int(t.row_nnz[rows].sum())
    mult = common.loss_multiplier(cfg.loss, len(rows), t.n_in, nnz)
    frac = common.paper_reg_fraction(len(rows), t.n_rows)
    model.net.train()
    model.net.zero_grad()
    torch.manual_seed(seed)
    loss, _, _, _ = t._batch_loss(rows, mult, frac, False)
    loss.backward()
    return float(loss.detach()), {n: p.grad.detach().clone() for n, p in model.net.named_parameters()}


# ====================================================================== dense == sparse
@pytest.mark.parametrize("hidden", [(16,), (12, 8, 12)], ids=["one-hidden", "deep"])
@pytest.mark.parametrize("loss", ["d2l", "observed-sum", "observed-mean"])
@pytest.mark.parametrize("based", ["item", "user"])
def test_dense_and_sparse_same_loss_and_gradients(data, based, loss, hidden):
    train = data[0]
    cfg = dict(based=based, loss=loss, hidden=hidden, dropout=0.2, reg=0.01, reg_form="paper", seed=3)
    dense = _built({**cfg, "path": "dense"}, train)
    sparse = _built({**cfg, "path": "sparse"}, train)
    for k, v in dense.get_weights().items():
        np.testing.assert_array_equal(v, sparse.get_weights()[k])
    rows = common.epoch_batches(dense._csr.shape[0], dense.config, 1)[0][:37]
    ld, gd = _loss_grads(dense, rows)
    ls, gs = _loss_grads(sparse, rows)
    assert ld == pytest.approx(ls, rel=2e-5)
    assert ld > 0
    for name in gd:
        scale = float(gd[name].abs().max()) + 1e-12
        np.testing.assert_allclose(gs[name].numpy(), gd[name].numpy(), rtol=1e-4, atol=2e-5 * scale,
                                   err_msg=name)


@pytest.mark.parametrize("act", ["sigmoid", "relu", "tanh", "elu", "selu"])
def test_dense_and_sparse_agree_for_output_activations(data, act):
    train = data[0]
    cfg = dict(hidden=(10,), output_activation=act, hidden_activation="tanh", dropout=0.0,
               loss="observed-mean", init="xavier")
    rows = np.arange(25)
    ld, gd = _loss_grads(_built({**cfg, "path": "dense"}, train), rows)
    ls, gs = _loss_grads(_built({**cfg, "path": "sparse"}, train), rows)
    assert ld == pytest.approx(ls, rel=2e-5)
    for name in gd:
        np.testing.assert_allclose(gs[name].numpy(), gd[name].numpy(), rtol=1e-4,
                                   atol=2e-5 * (float(gd[name].abs().max()) + 1e-12))


def test_d2l_loss_is_gluon_l2loss_on_masked_output(data):
    """loss = sum over the batch of 0.5 * mean_j (pred*sign(x) - x)^2, divided by batch_size."""
    train = data[0]
    m = _built(dict(hidden=(9,), dropout=0.0, reg=0.0), train)
    rows = np.array([0, 3, 5, 8, 13, 21, 34])
    loss, _ = _loss_grads(m, rows)
    x = m._csr[rows].toarray()
    with torch.no_grad():
        pred = m.net.forward_dense(torch.from_numpy(x)).numpy()
    per_row = 0.5 * np.mean((pred * np.sign(x) - x) ** 2, axis=1)
    assert loss == pytest.approx(per_row.sum() / len(rows), rel=1e-5)
    m2 = _built(dict(hidden=(9,), dropout=0.0, reg=0.0, loss="observed-sum"), train)
    m2.set_weights(m.get_weights())
    assert _loss_grads(m2, rows)[0] == pytest.approx(((pred - x) ** 2)[x != 0].sum(), rel=1e-5)


def test_paper_reg_term_scaled_per_batch(data):
    train = data[0]
    base = dict(hidden=(9,), dropout=0.0, loss="observed-mean")
    m0 = _built({**base, "reg": 0.0}, train)
    m1 = _built({**base, "reg": 0.5, "reg_form": "paper"}, train)
    rows = np.arange(20)
    l0, _ = _loss_grads(m0, rows)
    l1, _ = _loss_grads(m1, rows)
    w = m0.get_weights()
    sq = float((w["W0"].astype(np.float64) ** 2).sum() + (w["W1"].astype(np.float64) ** 2).sum())
    assert l1 - l0 == pytest.approx(0.25 * sq * 20 / m0._csr.shape[0], rel=1e-3)


class _Shapes(TorchDispatchMode):
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
    """Every tensor produced by every op of a sparse step (forward, backward, Adam) is recorded: none
    has the (batch, n_in) shape of a densified batch; the dense path, for contrast, has them."""
    train = data[0]
    rows = np.arange(11)
    found = {}
    for path in ("sparse", "dense"):
        m = _built(dict(based=based, hidden=(13, 7, 13), path=path, dropout=0.1), train)
        t = _Trainer(m, m._csr)
        rec = _Shapes()
        with rec:
            loss, _, _, _ = t._batch_loss(rows, 0.1, 0.1, False)
            loss.backward()
            t.opt.step()
        n_in = m._csr.shape[1]
        found[path] = [s for s in rec.seen if s[2] == torch.strided and s[1] in ((11, n_in), (n_in, 11))]
    assert found["sparse"] == []
    assert found["dense"]


# ====================================================================== training
@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize("based", ["item", "user"])
def test_fit_learns_and_early_stops(data, based, path):
    train, valid, test = data
    m = AutoRecTorch(based=based, path=path, hidden=(40,), epochs=50, lr=0.03, batch_size=16,
                     loss="observed-mean", patience=8, dropout=0.0, reg=1e-3, threads=1)
    info = m.fit(train, valid)
    assert 1 <= info.best_epoch <= info.epochs_run <= 50
    assert [h["epoch"] for h in info.history] == list(range(1, info.epochs_run + 1))
    for h in info.history:
        assert {"epoch", "train_loss", "valid_rmse", "seconds"} <= set(h)
    best = min(h["valid_rmse"] for h in info.history)
    assert info.history[info.best_epoch - 1]["valid_rmse"] == best
    # the restored best weights give exactly the best validation RMSE
    assert evaluate(m, train, valid)["rmse"] == pytest.approx(best, abs=1e-6)
    base = rmse(np.full(len(test), train.global_mean), test.ratings)
    assert evaluate(m, train, test)["rmse"] < base - 0.3


def test_dense_and_sparse_training_trajectories_agree(data):
    train, valid, _ = data
    cfg = dict(hidden=(20,), epochs=3, lr=0.005, batch_size=16, dropout=0.1)
    a = AutoRecTorch({**cfg, "path": "dense"})
    b = AutoRecTorch({**cfg, "path": "sparse"})
    ia, ib = a.fit(train, valid), b.fit(train, valid)
    for ha, hb in zip(ia.history, ib.history):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-4)
        assert ha["valid_rmse"] == pytest.approx(hb["valid_rmse"], abs=1e-4)
    for k, v in a.get_weights().items():
        np.testing.assert_allclose(b.get_weights()[k], v, atol=1e-4)


def test_seeded_runs_are_identical(data):
    train, valid, _ = data
    cfg = dict(hidden=(12,), epochs=2, batch_size=16, dropout=0.3, seed=11)
    w1 = AutoRecTorch(cfg)
    w1.fit(train, valid)
    w2 = AutoRecTorch(cfg)
    w2.fit(train, valid)
    for k, v in w1.get_weights().items():
        np.testing.assert_array_equal(w2.get_weights()[k], v)


@pytest.mark.parametrize("optimizer,lr,extra", [("sgd", 0.05, {"sgd_momentum": 0.9}), ("rprop", 0.01, {}),
                                                 ("lbfgs", 0.5, {"lbfgs_max_iter": 5})])
@pytest.mark.parametrize("reg_form", ["wd", "paper"])
def test_other_optimizers_reduce_loss(data, optimizer, lr, extra, reg_form):
    train, valid, _ = data
    m = AutoRecTorch(hidden=(16,), optimizer=optimizer, lr=lr, epochs=6, batch_size=64, extra=extra,
                     loss="observed-mean", reg=1e-3, reg_form=reg_form, dropout=0.0, init="xavier")
    info = m.fit(train, valid)
    losses = [h["train_loss"] for h in info.history]
    assert losses[-1] < losses[0]
    if optimizer in ("rprop", "lbfgs"):
        assert all(h["steps"] == 1 for h in info.history)  # one full-batch step per epoch


def test_lr_schedules_recorded(data):
    train = data[0]
    m = AutoRecTorch(hidden=(8,), epochs=4, lr=0.01, lr_schedule="step", lr_step=2, lr_gamma=0.1)
    info = m.fit(train)
    assert [h["lr"] for h in info.history] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert info.best_epoch is None
    m = AutoRecTorch(hidden=(8,), epochs=4, lr=0.01, lr_schedule="cosine", optimizer="sgd",
                     extra={"record_batch_losses": True})
    info = m.fit(train)
    assert info.history[0]["lr"] == pytest.approx(0.01) and info.history[-1]["lr"] < 0.002
    n_batches = len(common.epoch_batches(train.n_items, m.config, 1))
    assert all(len(h["batch_losses"]) == n_batches for h in info.history)


@pytest.mark.parametrize("init", ["normal", "xavier", "uniform", "default"])
def test_init_schemes(data, init):
    train = data[0]
    m = _built(dict(hidden=(30,), init=init, init_scale=0.02), train)
    w = m.get_weights()
    assert w["W0"].shape == (30, train.n_users) and w["b1"].shape == (train.n_users,)
    if init == "normal":
        assert abs(w["W0"].std() - 0.02) < 0.002 and not w["b0"].any()
    if init == "default":  # torch's Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert np.abs(w["W0"]).max() <= 1 / np.sqrt(train.n_users) + 1e-6
    same = _built(dict(hidden=(30,), init=init, init_scale=0.02), train).get_weights()
    np.testing.assert_array_equal(same["W0"], w["W0"])


def test_initial_weights_and_set_weights(data):
    train = data[0]
    ref = _built(dict(hidden=(6,), seed=1), train).get_weights()
    m = AutoRecTorch(hidden=(6,), epochs=1, lr=1e-9, seed=2, optimizer="sgd", dropout=0.0)
    m.fit(train, initial_weights=ref)
    for k, v in m.get_weights().items():
        np.testing.assert_allclose(v, ref[k], atol=1e-6)
    with pytest.raises(ConfigError, match="shape"):
        m.set_weights({**ref, "W1": ref["W0"]})
    fresh = AutoRecTorch(hidden=(6,))
    fresh.set_weights(ref)  # builds the network from the shapes
    assert fresh.get_weights()["W0"].shape == ref["W0"].shape


# ====================================================================== prediction
@pytest.mark.parametrize("based", ["item", "user"])
def test_predict_matches_reconstruct_and_paths_agree(data, based):
    train, valid, test = data
    dense = AutoRecTorch(based=based, hidden=(10, 6, 10), epochs=2, batch_size=32, path="dense",
                         extra={"predict_batch_rows": 7})
    dense.fit(train)
    sparse = AutoRecTorch(based=based, hidden=(10, 6, 10), path="sparse", extra={"predict_batch_rows": 5})
    sparse._set_train(train)
    sparse.set_weights(dense.get_weights())
    pd = dense.predict(test.users, test.items)
    ps = sparse.predict(test.users, test.items)
    np.testing.assert_allclose(ps, pd, atol=1e-5)
    full = np.zeros((dense._csr.shape[0], dense._csr.shape[1]), np.float32)
    seen = []
    for rows, out in dense.reconstruct(batch_size=9):
        assert out.shape == (len(rows), dense._csr.shape[1])
        full[rows] = out
        seen.append(rows)
    assert np.concatenate(seen).tolist() == list(range(dense._csr.shape[0]))
    r, c = common.pairs_to_rows(test.users, test.items, based)
    np.testing.assert_allclose(full[r, c], pd, atol=1e-5)
    rows_s, out_s = next(sparse.reconstruct(rows=np.array([4, 2]), batch_size=2))
    np.testing.assert_allclose(out_s, full[[4, 2]], atol=1e-5)
    assert dense.predict(np.array([], np.int64), np.array([], np.int64)).shape == (0,)


def test_predict_rejects_bad_pairs(data):
    train = data[0]
    m = AutoRecTorch(hidden=(4,), epochs=1)
    with pytest.raises(ConfigError, match="fit"):
        m.predict(np.array([0]), np.array([0]))
    m.fit(train)
    with pytest.raises(DataError, match="user index"):
        m.predict(np.array([train.n_users]), np.array([0]))


# ====================================================================== persistence and resume
def test_save_load_round_trip(tmp_path, data):
    train, valid, test = data
    m = AutoRecTorch(hidden=(8,), epochs=2, path="sparse")
    m.fit(train, valid)
    p = tmp_path / "model.autorec"
    m.save(p)
    assert [f.name for f in tmp_path.iterdir()] == ["model.autorec"]
    back = AutoRecTorch.load(p)
    assert back.params() == m.params()
    np.testing.assert_array_equal(back.predict(test.users, test.items), m.predict(test.users, test.items))
    a, _ = predict_pairs(back, train, test.users, test.items)
    b, _ = predict_pairs(m, train, test.users, test.items)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("optimizer", ["adam", "rprop"])
def test_resume_equals_uninterrupted(tmp_path, data, optimizer):
    train, valid, _ = data
    cfg = dict(hidden=(12,), epochs=5, batch_size=32, dropout=0.2, optimizer=optimizer, lr=0.005,
               lr_schedule="step", lr_step=2, patience=10)
    full = AutoRecTorch(cfg)
    info_full = full.fit(train, valid)

    class Interrupt(Exception):
        pass

    def stop_after_2(epoch, n, rec):
        if epoch == 2:
            raise Interrupt

    ck = tmp_path / "ck"
    part = AutoRecTorch(cfg)
    with pytest.raises(Interrupt):
        part.fit(train, valid, progress=stop_after_2, checkpoint=ck, checkpoint_every=1)
    assert common.load_checkpoint(ck).epoch == 2
    resumed = AutoRecTorch(cfg)
    info = resumed.fit(train, valid, resume=ck, checkpoint=ck)
    assert info.epochs_run == info_full.epochs_run == 5
    assert info.best_epoch == info_full.best_epoch
    for k, v in full.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[k], v)
    assert [h["valid_rmse"] for h in info.history] == [h["valid_rmse"] for h in info_full.history]
    with pytest.raises(ConfigError, match="hidden"):
        AutoRecTorch({**cfg, "hidden": (13,)}).fit(train, valid, resume=ck)


# ====================================================================== faults and config
def test_divergence_raises_naming_epoch_and_batch(data):
    train = data[0]
    m = AutoRecTorch(hidden=(8,), optimizer="sgd", lr=1e6, loss="observed-sum", epochs=3,
                     hidden_activation="relu")
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+, batch \d+.*lr=1e\+06"):
        m.fit(train)


def test_injected_nan_raises(data):
    train = data[0]
    bad = Interactions(train.users, train.items, np.where(np.arange(len(train)) == 5, np.nan,
                                                          train.ratings).astype(np.float32),
                       train.n_users, train.n_items, train.rating_scale)
    with pytest.raises(TrainingDivergedError, match="epoch 1, batch"):
        AutoRecTorch(hidden=(4,), epochs=1).fit(bad)


@pytest.mark.parametrize("params,match", [
    ({"hidden_activation": "swish"}, "hidden_activation"),
    ({"hidden": (0,)}, "hidden"),
    ({"devices": ("cuda:7",)}, "cuda"),
    ({"devices": ("cpu", "cpu")}, "fit_distributed"),
    ({"extra": {"momentum": 0.9}}, "extra"),
    ({"nonsense": 1}, "unknown"),
    ({"lr": 0}, "lr"),
])
def test_invalid_configs_rejected_up_front(params, match):
    with pytest.raises(ConfigError, match=match):
        AutoRecTorch(params)


def test_interface(data):
    m = AutoRecTorch.from_params({"hidden": "20,10,20", "based": "user"})
    assert (m.name, m.backend) == ("autorec", "torch")
    assert m.params()["hidden"] == [20, 10, 20]
    assert AutoRecTorch.from_params(m.params()).params() == m.params()
    assert AutoRecTorch(AutoRecConfig(hidden=(5,)), lr=0.1).config.lr == 0.1
    with pytest.raises(DataError):
        m.fit("not interactions")


def test_threads_set_at_fit(data):
    train = data[0]
    before = torch.get_num_threads()
    try:
        AutoRecTorch(hidden=(4,), epochs=1, threads=1).fit(train)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_fit_on_device(data, device):
    train, valid, test = data
    m = AutoRecTorch(hidden=(16,), epochs=2, devices=("cuda:0" if device == "cuda" else "cpu",), path="sparse")
    m.fit(train, valid)
    assert m.fit_info.extra["device"].startswith(device)
    assert np.isfinite(evaluate(m, train, test)["rmse"])


@pytest.mark.parametrize("based", ["item", "user"])
def test_learns_on_movielens_shaped_synthetic_data(based):
    from autorec.data.synthetic import generate
    from autorec.splits import make_split

    ratings = generate(300, 200, 12000, seed=1)
    sd = make_split(ratings, "random", seed=0).data(ratings)
    m = AutoRecTorch(based=based, hidden=(64,), epochs=40, lr=0.01, batch_size=32, loss="observed-mean",
                     reg=1e-3, patience=5, dropout=0.0, path="sparse", threads=1)
    m.fit(sd.train, sd.valid)
    base = evaluate(type("Mean", (), {"predict": lambda self, u, i: np.full(len(u), sd.train.global_mean)})(),
                    sd.train, sd.test)["rmse"]
    got = evaluate(m, sd.train, sd.test)["rmse"]
    assert got < base - 0.1, (got, base)


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_bounded_output_activation_that_cannot_reach_the_ratings_is_refused(data, act):
    """A sigmoid/tanh output on 1..5 ratings would be clipped to the minimum everywhere (test RMSE
    ~2.8): refused up front, naming the activation and the scale; ratings rescaled into range train."""
    train = data[0]
    lo, hi = train.rating_scale
    assert hi > 1
    with pytest.raises(ConfigError, match=rf"output_activation='{act}'.*ratings are on \[{lo:g}, {hi:g}\]"):
        AutoRecTorch(dict(hidden=(8,), output_activation=act, epochs=1)).fit(train)
    scaled = Interactions(users=train.users, items=train.items,
                          ratings=((train.ratings - lo) / (hi - lo)).astype(np.float32),
                          n_users=train.n_users, n_items=train.n_items, rating_scale=(0.0, 1.0))
    info = AutoRecTorch(dict(hidden=(8,), output_activation=act, epochs=2)).fit(scaled)
    assert info.epochs_run == 2 and np.isfinite(info.history[-1]["train_loss"])
