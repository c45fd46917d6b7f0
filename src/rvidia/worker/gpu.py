"""GPUs: finding them (for the worker's facts) and multiplying on one (for ``matmul``).

Why optional everywhere: most lab machines have no GPU, or no CUDA library for Python. Detection asks
NVML (``pynvml``) or ``nvidia-smi`` and says "none" on any failure; the compute path uses CuPy, else
PyTorch, only when one of them imports and sees a CUDA device, and otherwise returns None so the
caller keeps its numpy path. ``RVIDIA_NO_GPU=1`` turns the compute path off (to compare, or to leave
the GPU to its owner).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from typing import Any

from rvidia.protocol.messages import Gpu as GpuInfo


def detect() -> list[GpuInfo]:
    """The NVIDIA GPUs of this machine, by NVML where installed, else by ``nvidia-smi``; [] if none."""
    return _from_nvml() or _from_smi()


def _from_nvml() -> list[GpuInfo]:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            found.append(GpuInfo(_text(pynvml.nvmlDeviceGetName(handle)),
                                 int(pynvml.nvmlDeviceGetMemoryInfo(handle).total), driver))
        return found
    except Exception:
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_smi(timeout: float = 5.0) -> list[GpuInfo]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_smi(out)


def parse_smi(out: str) -> list[GpuInfo]:
    """``nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits``
    lines (memory in MiB) -> GpuInfo; lines that do not parse are skipped."""
    found = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0]:
            continue
        try:
            memory = int(float(parts[1]) * 1024 * 1024)
        except ValueError:
            memory = 0
        found.append(GpuInfo(parts[0], memory, parts[2]))
    return found


# ---------------------------------------------------------------- compute

GPU_DTYPES = ("float32", "float64")  # integer products stay on the CPU, where they are exact


@lru_cache(maxsize=1)
def backend() -> str | None:
    """'cupy' or 'torch' when that library sees a CUDA device here, else None (checked once)."""
    if os.environ.get("RVIDIA_NO_GPU", "").strip() not in ("", "0"):
        return None
    try:
        import cupy  # type: ignore[import-not-found]

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return "cupy"
    except Exception:
        pass
    try:
        import torch  # type: ignore[import-not-found]

        if torch.cuda.is_available():
            return "torch"
    except Exception:
        pass
    return None


def matmul(a: Any, b: Any) -> Any | None:
    """``a @ b`` on the GPU as a numpy array, or None when it should run on the CPU (no GPU, no
    library, an integer dtype, or a GPU error such as running out of memory)."""
    name = backend()
    if name is None or a.dtype.name not in GPU_DTYPES or b.dtype.name not in GPU_DTYPES:
        return None
    try:
        if name == "cupy":
            import cupy

            return cupy.asnumpy(cupy.asarray(a) @ cupy.asarray(b))
        import torch

        product = torch.from_numpy(a).to("cuda") @ torch.from_numpy(b).to("cuda")
        return product.cpu().numpy()
    except Exception:
        return None
