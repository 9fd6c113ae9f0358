"""Multi-node DDP proven on one machine: two torchrun launchers (``--nnodes 2 --nproc-per-node 1``,
c10d rendezvous on 127.0.0.1, each its own node) run ``python -m autorec.models.autorec.torch.ddp
train`` on a stored split; both ranks end with identical parameters and the model scores within 0.01
test RMSE of one process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from autorec.models.autorec.torch import AutoRecTorch  # noqa: E402
from autorec.splits import load_split  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.synthetic_parts import learnable  # noqa: E402
from tests.tuning_helpers import cli_env, write_parts  # noqa: E402

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

PARAMS = {"hidden": "[32]", "epochs": "8", "lr": "0.03", "batch_size": "16", "reg": "0.001", "dropout": "0.05"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_nodes_by_c10d_rendezvous_train_the_one_process_model(tmp_path):
    split = write_parts(tmp_path, learnable(n_users=100, n_items=81, density=0.43, seed=4))
    out = tmp_path / "model"
    port = _free_port()
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "autorec-test",
            "--local-addr", "127.0.0.1", "-m", "autorec.models.autorec.torch.ddp", "train", "--dataset", "tiny",
            "--split", split, "--rating-scale", "1,5", "--seed", "5", "--valid-ratio", "0.1", "--threads", "1",
            "--out", str(out)]  # fmt: skip
    node += [a for k, v in PARAMS.items() for a in ("--set", f"{k}={v}")]
    env = {**cli_env(tmp_path), "PYTHONPATH": str(REPO)}
    launchers = [subprocess.Popen(node, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]
    launchers.append(subprocess.Popen(node, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in launchers]
    assert [p.returncode for p in launchers] == [0, 0], "\n".join(log[-3000:] for log in logs)
    # the two nodes' replicas hold identical parameters
    with np.load(out / "weights_rank0.npz") as w0, np.load(out / "weights_rank1.npz") as w1:
        assert sorted(w0.files) == ["W0", "W1", "b0", "b1"]
        for k in w0.files:
            np.testing.assert_array_equal(w0[k], w1[k])
    info = json.loads((out / "fit_info.json").read_text())
    assert info["extra"]["world_size"] == 2 and info["extra"]["replica_max_abs_diff"] == 0.0
    # within 0.01 test RMSE of the same configuration in one process
    data = load_split("tiny", split, seed=5, valid_ratio=0.1, rating_scale="1,5")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["split_sha256"] == data.split.sha256
    single = AutoRecTorch(hidden=(32,), epochs=8, lr=0.03, batch_size=16, reg=1e-3, dropout=0.05, seed=5, threads=1)
    single.fit(data.train, data.valid)
    assert abs(metrics["test_rmse"] - single.evaluate(data.test)["rmse"]) < 0.01
    model = AutoRecTorch.load(out / "model.npz")
    assert model.evaluate(data.test)["rmse"] == pytest.approx(metrics["test_rmse"], abs=1e-9)
