"""The GPU check: on a machine with NVIDIA GPUs, does every CUDA code path run, and give the CPU's numbers?

``scripts/gpu-check`` prepares the environment (a CUDA build of torch; mxnet's CUDA build when it
installs) and runs ``python -m benchmarks.gpu_check``, which

1. records the machine (``nvidia-smi``, torch's CUDA build, the GPUs torch sees);
2. runs the CUDA half of the test suite (the tests parametrised over the ``device`` fixture, and
   every test whose id names cuda: ``pytest tests -k cuda``);
3. trains I-AutoRec on ML-100K's ``d2l-random`` split (the D2L configuration, 25 epochs, no
   validation) on the CPU and on ``cuda:0``, dense and sparse; DDP with nccl over every GPU present
   (one rank per GPU: a single GPU gives a one-rank job, which still runs the nccl path); MXNet on
   ``gpu(0)`` when mxnet imports with GPU support;
4. writes ``gpu.json`` (everything measured) and ``gpu.md`` (the table: median epoch seconds, test
   RMSE, the CPU's RMSE and whether they agree) into ``--out`` (default ``results``).

Dropout is 0 in these runs: CUDA and the CPU draw dropout masks from different generators, so with
dropout the two would differ by seed noise; without it the runs share the initial weights and the
batch order (both drawn on the CPU) and differ only by float32 summation order, which is what
:data:`RMSE_TOLERANCE` bounds.  Exit status 0 when everything ran and agreed, 1 when something
disagreed or failed, 2 when no GPU is visible (nothing is written then, unless ``--allow-cpu``,
which runs the same steps on the CPU only to check this script: its report says so).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: |GPU - CPU| test RMSE allowed: float32 sums in another order over 25 epochs of Adam (the CPU's
#: dense and sparse paths, which also sum in different orders, agree to about 1e-4 here)
RMSE_TOLERANCE = 2e-3
#: the D2L configuration (AutoRecConfig defaults) without dropout, 25 epochs
PARAMS: dict[str, Any] = {"dropout": 0.0, "epochs": 25}
SPLIT = "d2l-random:test_ratio=0.1"


def machine() -> dict[str, Any]:
    """What this machine has: nvidia-smi's view, torch's build and the devices it sees."""
    out: dict[str, Any] = {"python": sys.version.split()[0]}
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        out["nvidia_smi"] = smi.stdout.strip().splitlines() if smi.returncode == 0 else f"exit {smi.returncode}"
    except (OSError, subprocess.SubprocessError) as exc:
        out["nvidia_smi"] = f"not available: {exc}"
    try:
        import torch

        out["torch"] = torch.__version__
        out["torch_cuda_build"] = torch.version.cuda
        out["cuda_available"] = torch.cuda.is_available()
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError as exc:
        out["torch"] = f"not installed: {exc}"
        out["cuda_available"], out["gpus"] = False, []
    return out


def cuda_tests(timeout: float) -> dict[str, Any]:
    """``pytest tests -k cuda``: its exit status and summary line."""
    cmd = [sys.executable, "-m", "pytest", "tests", "-q", "-k", "cuda", "-p", "no:cacheprovider"]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(cmd[2:]), "exit": None, "summary": f"timed out after {timeout:g} s"}
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    return {"command": " ".join(cmd[2:]), "exit": run.returncode, "summary": lines[-1] if lines else run.stderr[-500:]}


def _split(data_dir: str | None, dataset: str):
    from autorec.splits import SplitSpec
    from benchmarks.harness import DataSource, load_data, parse_dataset

    source = DataSource(data_dir=data_dir, offline=True)
    return load_data(parse_dataset(dataset), SplitSpec.parse(SPLIT), seed=0, valid_ratio=0.0, source=source)


def _score(model: Any, test: Any) -> float:
    from autorec.metrics import rmse

    return float(rmse(model.predict(test.users, test.items), test.ratings))


def _row(name: str, backend: str, devices: list[str], path: str, fn) -> dict[str, Any]:
    """Run ``fn() -> fitted model`` and describe it; a failure is a row with its error."""
    row: dict[str, Any] = {"run": name, "backend": backend, "devices": devices, "path": path}
    t0 = time.perf_counter()
    try:
        model, test = fn()
    except Exception as exc:  # noqa: BLE001 - every failure is reported, the other rows still run
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    secs = [float(h["seconds"]) for h in (model.fit_info.history if model.fit_info else []) if "seconds" in h]
    row.update(
        fit_s=round(time.perf_counter() - t0, 2),
        epoch_s=round(statistics.median(secs), 4) if secs else None,
        test_rmse=round(_score(model, test), 5),
    )
    return row


def train_rows(data_dir: str | None, dataset: str, gpu: bool, n_gpus: int) -> list[dict[str, Any]]:
    """Every training run of the check (CPU reference rows first)."""
    from autorec.models import registry

    split = _split(data_dir, dataset)
    torch_ref = registry.get("i-autorec", "torch")

    def single(devices: list[str], path: str):
        def fn():
            model = torch_ref.build({**PARAMS, "path": path, "devices": devices})
            model.fit(split.train, None)
            return model, split.test

        return fn

    rows = [_row("reference", "torch", ["cpu"], p, single(["cpu"], p)) for p in ("dense", "sparse")]
    if gpu:
        rows += [_row("cuda", "torch", ["cuda:0"], p, single(["cuda:0"], p)) for p in ("dense", "sparse")]
        devices = [f"cuda:{i}" for i in range(max(1, n_gpus))]

        def ddp():
            cls = torch_ref.load()
            model = cls.fit_parallel({**PARAMS, "path": "dense", "devices": devices}, split.train, len(devices))
            return model, split.test

        rows.append(_row(f"DDP nccl x{len(devices)}", "torch", devices, "dense", ddp))
    rows.append(_mxnet_row(split, gpu))
    return rows


def _mxnet_row(split: Any, gpu: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run": "mxnet",
        "backend": "mxnet",
        "devices": ["gpu(0)" if gpu else "cpu(0)"],
        "path": "dense",
    }
    try:
        import mxnet as mx

        if gpu and mx.context.num_gpus() < 1:
            return {
                **row,
                "skipped": f"mxnet {mx.__version__} sees no GPU (a CPU build, or no CUDA runtime it can load)",
            }
    except Exception as exc:  # noqa: BLE001 - mxnet missing or failing to import: said in the row
        return {**row, "skipped": f"mxnet does not import: {type(exc).__name__}: {exc}"}
    from autorec.models import registry

    ref = registry.get("i-autorec", "mxnet")

    def fn():
        # Gluon's Adam places epsilon differently from torch's: the torch placement, to compare
        model = ref.build({**PARAMS, "path": "dense", "devices": row["devices"], "extra": {"adam_epsilon": "torch"}})
        model.fit(split.train, None)
        return model, split.test

    return _row("mxnet", "mxnet", row["devices"], "dense", fn)


def judge(rows: list[dict[str, Any]]) -> None:
    """Give every trained row the CPU reference RMSE of its path and whether it agrees."""
    ref = {r["path"]: r["test_rmse"] for r in rows if r["run"] == "reference" and "test_rmse" in r}
    for r in rows:
        if r["run"] == "reference" or "test_rmse" not in r or r["path"] not in ref:
            continue
        r["cpu_rmse"] = ref[r["path"]]
        r["agrees"] = abs(r["test_rmse"] - r["cpu_rmse"]) <= RMSE_TOLERANCE


def render(doc: dict[str, Any]) -> str:
    """``gpu.md`` from the ``gpu.json`` document."""
    m = doc["machine"]
    lines = ["# GPU check", ""]
    if not doc["gpu"]:
        lines += ["**No GPU: this report comes from `--allow-cpu`, a check of the script itself, not of CUDA.**", ""]
    lines += [
        f"`scripts/gpu-check` on {doc['created_at']} ({doc['wall_s']:.0f} s): {doc['dataset']}, `{SPLIT}`, "
        f"I-AutoRec with the D2L configuration and dropout 0 (`{json.dumps(PARAMS)}`), so that the CPU and "
        f"the GPU share initial weights and batch order; RMSE tolerance {RMSE_TOLERANCE:g}.",
        "",
        f"Machine: GPUs {m.get('gpus')}, nvidia-smi `{m.get('nvidia_smi')}`, torch {m.get('torch')} "
        f"(CUDA build {m.get('torch_cuda_build')}).",
        "",
        f"CUDA tests (`{doc['tests']['command']}`): exit {doc['tests']['exit']}, `{doc['tests']['summary']}`.",
        "",
        "| run | backend | devices | path | median epoch s | test RMSE | CPU RMSE | agrees |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        if "error" in r or "skipped" in r:
            what = f"failed: {r['error']}" if "error" in r else f"not run: {r['skipped']}"
            lines.append(f"| {r['run']} | {r['backend']} | {', '.join(r['devices'])} | {r['path']} | {what} | | | |")
            continue
        agrees = {True: "yes", False: "**no**", None: "-"}[r.get("agrees")]
        cpu = f"{r['cpu_rmse']:.5f}" if "cpu_rmse" in r else "-"
        epoch = f"{r['epoch_s']:.3f}" if r.get("epoch_s") is not None else "-"
        lines.append(
            f"| {r['run']} | {r['backend']} | {', '.join(r['devices'])} | {r['path']} | {epoch} | "
            f"{r['test_rmse']:.5f} | {cpu} | {agrees} |"
        )
    lines += ["", f"Verdict: {doc['verdict']}", ""]
    return "\n".join(lines)


def verdict(doc: dict[str, Any]) -> tuple[int, str]:
    failed = [r["run"] + "/" + r["path"] for r in doc["rows"] if "error" in r]
    disagree = [r["run"] + "/" + r["path"] for r in doc["rows"] if r.get("agrees") is False]
    tests_ok = doc["tests"]["exit"] in (0, 5)  # 5: no CUDA test collected (said in the summary)
    if failed or disagree or not tests_ok:
        parts = [f"failed: {failed}" if failed else "", f"RMSE off the CPU's: {disagree}" if disagree else ""]
        parts.append("" if tests_ok else f"CUDA tests exit {doc['tests']['exit']}")
        return 1, "; ".join(p for p in parts if p)
    return 0, "every run finished and agrees with the CPU" + ("" if doc["gpu"] else " (CPU only: --allow-cpu)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out", default="results", help="folder for gpu.json and gpu.md (default results)")
    p.add_argument("--dataset", default="ml-100k", help="ml-100k (default) or synthetic:NU,NI,NR")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset (default: ../shared/data if present)")
    p.add_argument("--tests-timeout", type=float, default=900.0, help="seconds for the CUDA tests (default 900)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the CUDA tests")
    p.add_argument("--allow-cpu", action="store_true", help="without a GPU, run the CPU steps (checks the script)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    facts = machine()
    gpu = bool(facts.get("cuda_available"))
    if not gpu and not args.allow_cpu:
        print(
            f"no CUDA GPU visible to torch ({facts.get('torch')}, CUDA build {facts.get('torch_cuda_build')}; "
            f"nvidia-smi: {facts.get('nvidia_smi')}): nothing checked, nothing written. scripts/gpu-check installs "
            "a CUDA build of torch; --allow-cpu runs the CPU steps only.",
            file=sys.stderr,
        )
        return 2
    tests = (
        {"command": "skipped (--skip-tests)", "exit": 0, "summary": "-"}
        if args.skip_tests
        else cuda_tests(args.tests_timeout)
    )
    print(f"CUDA tests: exit {tests['exit']}, {tests['summary']}", flush=True)
    from benchmarks.harness import shared_data_dir

    rows = train_rows(args.data_dir or shared_data_dir(), args.dataset, gpu, len(facts.get("gpus") or []))
    judge(rows)
    doc: dict[str, Any] = {
        "benchmark": "gpu-check",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "gpu": gpu,
        "dataset": args.dataset,
        "machine": facts,
        "tests": tests,
        "rows": rows,
        "tolerance": RMSE_TOLERANCE,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    code, doc["verdict"] = verdict(doc)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(doc, indent=1, default=str))
    (out / "gpu.md").write_text(render(doc))
    print(render(doc))
    return code


if __name__ == "__main__":
    sys.exit(main())
