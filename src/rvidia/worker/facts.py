"""What a worker tells the master about its machine."""

from __future__ import annotations

import os
import platform
import socket
import sys
import time

import psutil


def cores() -> int:
    return os.cpu_count() or 1


def memory_bytes() -> int:
    return int(psutil.virtual_memory().total)


def python_version() -> str:
    return "{}.{}.{}".format(*sys.version_info[:3])


def os_name() -> str:
    return f"{platform.system()} {platform.release()}".strip()


def hostname() -> str:
    return socket.gethostname()


def speed_score(seconds: float = 0.05) -> float:
    """A short single-core benchmark: millions of simple Python operations per second.

    Only ratios between workers matter; it lets the dashboard and placement see uneven machines.
    """
    n = 0
    x = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for i in range(10_000):
            x = (x + i * i) % 1_000_003
        n += 10_000
    elapsed = time.perf_counter() - start
    return round(n / elapsed / 1e6, 2)
