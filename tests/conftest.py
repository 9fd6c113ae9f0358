"""Shared fixtures: the real-data folder (skips when absent), a seeded RNG, a device fixture
parametrised over cpu/cuda, and availability of the optional frameworks."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path | None:
    """``AUTOREC_DATA_DIR`` if set, else ``../shared/data`` beside the checkout, if it exists."""
    env = os.environ.get("AUTOREC_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = real_data_dir()
    if d is None:
        pytest.skip("no real MovieLens copy (set AUTOREC_DATA_DIR)")
    return d


def _need_dataset(data_dir: Path, name: str) -> Path:
    p = data_dir / name
    if not p.is_dir():
        pytest.skip(f"no {name} folder under {data_dir}")
    return data_dir


@pytest.fixture(scope="session")
def ml100k_dir(data_dir) -> Path:
    """The data folder holding ``ml-100k/`` (skips when absent)."""
    return _need_dataset(data_dir, "ml-100k")


@pytest.fixture(scope="session")
def mlsmall_dir(data_dir) -> Path:
    return _need_dataset(data_dir, "ml-latest-small")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20150518)


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


HAS_TORCH = has_module("torch")
HAS_MXNET = has_module("mxnet")
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch not installed (pip install .[torch])")
needs_mxnet = pytest.mark.skipif(not HAS_MXNET, reason="mxnet not installed (pip install .[mxnet])")
needs_myfm = pytest.mark.skipif(not has_module("myfm"), reason="myfm not installed (pip install .[bayes])")


def exact_native(lib, differs, *, may_differ: str, reproduces: str):
    """A C++ kernel (``lib``) that must reproduce ``reproduces`` bitwise: skipped where it cannot be
    built; where its self-check (``differs()``) finds a difference the test FAILS (a regression), or,
    with ``$may_differ=1`` set (a library build of another operation order), skips."""
    if not lib.available():
        pytest.skip(f"native {lib.source.name} unavailable: {lib.unavailable_reason()}")
    found = differs()
    if found is not None:
        message = f"{lib.source.name} does not reproduce {reproduces}: {found}"
        if os.environ.get(may_differ):
            pytest.skip(message)
        pytest.fail(f"{message} (a regression; or, with a build of another operation order, set {may_differ}=1)")
    return lib


def _cuda_available() -> bool:
    if not HAS_TORCH:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.fixture(params=["cpu", "cuda"])
def device(request) -> str:
    if request.param == "cuda" and not _cuda_available():
        pytest.skip("no CUDA device")
    return request.param
