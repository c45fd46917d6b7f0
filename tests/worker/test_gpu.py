"""GPU detection and the GPU matmul path.

Detection is checked against a stand-in ``nvidia-smi`` on PATH (a real program run as the worker runs
it). The compute path needs a CUDA device and CuPy or PyTorch: it runs where a GPU is lent, and is
skipped elsewhere with the reason.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from rvidia.worker import gpu

SMI_OUTPUT = "NVIDIA H200, 143771, 570.86.15\nNVIDIA A100-SXM4-40GB, 40960, 570.86.15\n"


def test_parse_smi() -> None:
    found = gpu.parse_smi(SMI_OUTPUT + "garbage line\n\n")
    assert [g.name for g in found] == ["NVIDIA H200", "NVIDIA A100-SXM4-40GB"]
    assert found[0].memory_bytes == 143771 * 1024 * 1024 and found[1].driver == "570.86.15"


def test_detect_runs_nvidia_smi_from_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nprintf '{SMI_OUTPUT}'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(gpu, "_from_nvml", lambda: [])
    assert [g.name for g in gpu.detect()] == ["NVIDIA H200", "NVIDIA A100-SXM4-40GB"]


def test_no_gpu_tool_means_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(gpu, "_from_nvml", lambda: [])
    assert gpu.detect() == []


def test_integer_products_and_no_backend_stay_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert gpu.matmul(a, a.T) is None
    monkeypatch.setenv("RVIDIA_NO_GPU", "1")
    gpu.backend.cache_clear()
    try:
        assert gpu.backend() is None and gpu.matmul(a.astype(float), a.T.astype(float)) is None
    finally:
        gpu.backend.cache_clear()


@pytest.mark.skipif(gpu.backend() is None, reason="no CUDA device with CuPy or PyTorch on this machine")
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_gpu_matmul_matches_numpy(dtype: str, rtol: float) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((300, 200)).astype(dtype), rng.random((200, 100)).astype(dtype)
    got = gpu.matmul(a, b)
    assert got is not None and got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, a @ b, rtol=rtol)
