"""`rvidia up`, the README's first command: a master and local workers in one process group, jobs
through them, and everything gone after SIGTERM. Its local workers run plainly while the master
listens on loopback only, so a user's function sees that user's files, as with multiprocessing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import rvidia

pytestmark = pytest.mark.timeout(120)


def _read_until(stream, pattern: str, timeout: float) -> re.Match[str]:
    found: list[re.Match[str]] = []
    seen: list[str] = []

    def reader() -> None:
        for line in stream:
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                found.append(match)
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    assert found, f"no line matching {pattern!r} in {timeout:g} s: {''.join(seen)[-2000:]}"
    return found[0]


def _read_here(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_up_serves_jobs_and_stops_with_everything(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "rvidia", "up", "--workers", "2", "--port", "0",
                             "--data-dir", str(tmp_path / "data"), "--no-advertise"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        match = _read_until(proc.stderr, r"dashboard at (\S+)/\s+\(token: (\S+)\)", 60)
        url, token = match.group(1), match.group(2)
        assert (tmp_path / "data" / "token").read_text().strip() == token
        with rvidia.connect(url, token=token) as cluster:
            deadline = time.monotonic() + 30
            while len([w for w in cluster.workers() if w["state"] != "lost"]) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert cluster.submit("montecarlo", samples=2_000_000, seed=3).result(timeout=60)["samples"] == 2_000_000
            mine = tmp_path / "mine.txt"
            mine.write_text("the user's own data")
            with cluster.executor() as ex:
                assert ex.submit(_read_here, str(mine)).result(timeout=60) == "the user's own data"
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 3  # the master and two workers (and their chunk processes)
    finally:
        os.killpg(proc.pid, signal.SIGTERM) if proc.poll() is None else None
        proc.wait(30)
    assert proc.returncode == 0
    gone, alive = psutil.wait_procs(family, timeout=20)
    assert not alive, alive
