"""The GPU check script (``scripts/gpu-check`` -> ``benchmarks.gpu_check``) where no GPU is: it
refuses to write a report, and its CPU-only mode runs the same steps (the MXNet row against the
torch reference checks the comparison itself).  On a GPU machine the script is run by hand."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import gpu_check
from tests.conftest import HAS_MXNET, needs_torch

REPO = Path(__file__).resolve().parents[1]


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="a GPU is visible: the check would run")
def test_without_a_gpu_nothing_is_written_and_the_exit_is_2(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path), "--skip-tests"]) == 2
    assert "no CUDA GPU visible to torch" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="nvidia-smi present")
def test_the_script_says_there_is_no_gpu(tmp_path):
    out = subprocess.run(
        [str(REPO / "scripts" / "gpu-check")],
        capture_output=True,
        text=True,
        env={**os.environ, "OUT": str(tmp_path)},
        timeout=60,
    )
    assert out.returncode == 2 and "finds no NVIDIA GPU" in out.stderr
    assert list(tmp_path.iterdir()) == []


@needs_torch
@pytest.mark.slow
def test_cpu_only_mode_runs_every_cpu_step_and_reports_it(tmp_path):
    code = gpu_check.main(["--allow-cpu", "--skip-tests", "--dataset", "synthetic:80,60,3000", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "gpu.json").read_text())
    rows = {(r["run"], r["path"]): r for r in doc["rows"]}
    assert rows[("reference", "dense")]["test_rmse"] > 0 and rows[("reference", "sparse")]["test_rmse"] > 0
    # the CPU's two paths sum in different orders and still agree within the GPU tolerance
    assert abs(rows[("reference", "dense")]["test_rmse"] - rows[("reference", "sparse")]["test_rmse"]) <= 2e-3
    mx = rows[("mxnet", "dense")]
    if HAS_MXNET:  # the same config in MXNet (torch's Adam epsilon) agrees with torch's CPU number
        assert mx["agrees"] is True and mx["cpu_rmse"] == rows[("reference", "dense")]["test_rmse"]
        assert code == 0
    else:
        assert "mxnet does not import" in mx["skipped"]
    text = (tmp_path / "gpu.md").read_text()
    assert "No GPU: this report comes from `--allow-cpu`" in text and "| reference | torch | cpu | dense |" in text


def _doc(rows, tests_exit=0):
    return {
        "gpu": True,
        "created_at": "t",
        "wall_s": 1.0,
        "dataset": "ml-100k",
        "machine": {"gpus": ["X"], "nvidia_smi": ["X"], "torch": "2.13.0", "torch_cuda_build": "12.6"},
        "tests": {"command": "pytest tests -k cuda", "exit": tests_exit, "summary": "3 passed"},
        "rows": rows,
    }


def test_a_gpu_number_off_the_cpus_fails_the_check():
    rows = [
        {"run": "reference", "backend": "torch", "devices": ["cpu"], "path": "dense", "epoch_s": 0.2, "test_rmse": 0.9},
        {"run": "cuda", "backend": "torch", "devices": ["cuda:0"], "path": "dense", "epoch_s": 0.01, "test_rmse": 0.91},
        {"run": "cuda", "backend": "torch", "devices": ["cuda:0"], "path": "sparse", "error": "RuntimeError: x"},
    ]
    gpu_check.judge(rows)
    assert rows[1]["agrees"] is False and rows[1]["cpu_rmse"] == 0.9
    doc = _doc(rows)
    code, why = gpu_check.verdict(doc)
    assert code == 1 and "cuda/dense" in why and "cuda/sparse" in why
    doc["verdict"] = why
    text = gpu_check.render(doc)
    assert "| cuda | torch | cuda:0 | dense | 0.010 | 0.91000 | 0.90000 | **no** |" in text
    assert "failed: RuntimeError: x" in text


def test_failing_cuda_tests_fail_the_check():
    rows = [{"run": "reference", "backend": "torch", "devices": ["cpu"], "path": "dense", "test_rmse": 0.9}]
    assert gpu_check.verdict(_doc(rows, tests_exit=1))[0] == 1
    assert gpu_check.verdict(_doc(rows, tests_exit=0))[0] == 0
