"""The main job's torch AutoRec runs with Adam train on the sparse path (issue 14: ``make bench``
faster without changing its numbers).  The spec asks for it (the Rprop run and the MXNet twin stay
dense), and on the real ML-100K (u1, 5% validation) the sparse path's epochs equal the tuned
configurations' dense path up to rounding: the same objective, initial weights, batches and dropout
masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomllib

from benchmarks.sweep import read_params_file

SPEC = Path(__file__).resolve().parents[1] / "benchmarks" / "specs" / "ml100k.toml"
SPARSE = {"path": "sparse", "extra": {"sparse_kernel": "auto"}}


def _autorec_entries() -> list[dict]:
    doc = tomllib.loads(SPEC.read_text())
    return [m for m in doc["model"] if m["name"] in ("i-autorec", "u-autorec")]


def test_spec_trains_torch_autorec_sparse_and_mxnet_dense():
    entries = _autorec_entries()
    torch_entries = [m for m in entries if m.get("backend") == "torch"]
    assert len(torch_entries) == 3
    for m in torch_entries:  # the tuned configurations themselves are the dense path's
        params = read_params_file(m["config"], m["name"], base=SPEC)
        assert params.get("path", "dense") == "dense"
        # Adam runs switch to the sparse path; Rprop (sign steps amplify rounding) stays dense
        assert m.get("params") == (SPARSE if params["optimizer"] == "adam" else None), m["label"]
    mx = [m for m in entries if m.get("backend") == "mxnet"]
    assert len(mx) == 1 and "params" not in mx[0] and "backends" not in mx[0]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("entry", range(2), ids=["i-autorec", "u-autorec"])
def test_sparse_path_equals_the_tuned_dense_path_on_ml100k(ml100k_dir, entry):
    torch = pytest.importorskip("torch")
    from autorec.models.autorec.torch import AutoRecTorch, native
    from autorec.splits import load_split

    m = [m for m in _autorec_entries() if m.get("backend") == "torch" and m.get("params")][entry]
    base = read_params_file(m["config"], m["name"], base=SPEC)
    base.update(epochs=4, threads=1, based="user" if m["name"] == "u-autorec" else "item")
    split = load_split("ml-100k", "canonical:u1", valid_ratio=0.05, data_dir=ml100k_dir)
    variants = [("dense", {}), ("sparse", m["params"])]
    if native.available():  # and Adam fused into the wide weights' gradient passes (extra.fused_step)
        variants.append(("fused", {"path": "sparse", "extra": {"sparse_kernel": "native", "fused_step": True}}))
    runs = {}
    for name, over in variants:
        model = AutoRecTorch({**base, **over})
        info = model.fit(split.train, split.valid)
        runs[name] = ([h["valid_rmse"] for h in info.history], model.evaluate(split.test)["rmse"])
    assert torch.get_num_threads() == 1
    for name in runs:
        np.testing.assert_allclose(runs[name][0], runs["dense"][0], rtol=0, atol=1e-6, err_msg=name)
        assert runs[name][1] == pytest.approx(runs["dense"][1], abs=1e-6), name
