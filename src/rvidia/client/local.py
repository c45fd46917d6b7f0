"""``LocalCluster``: a real master and real workers as child processes of this one.

The same processes ``rvidia master`` and ``rvidia worker`` start, on loopback, so what works here
works across machines. ``rvidia up`` and ``rvidia run`` are built on it.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from rvidia import lifeline
from rvidia.client.api import Cluster, MasterUnreachable

_ANNOUNCE = "rvidia master listening on "


def local_slots(workers: int) -> int:
    """Slots per local worker so that the workers together use every core once."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


class LocalCluster(Cluster):
    """Master plus ``workers`` local workers; ``with rvidia.LocalCluster(workers=2) as cluster:``."""

    def __init__(self, workers: int = 2, *, slots: int | None = None, data_dir: str | os.PathLike[str] | None = None,
                 host: str = "127.0.0.1", port: int = 0, allow_code: bool = True,
                 worker_timeout: float | None = None, quiet: bool = True, start_timeout: float = 60.0,
                 advertise: bool = False, master_args: list[str] | None = None,
                 isolation: str | None = "none") -> None:
        # ``isolation``: how the local workers contain chunk processes (`rvidia worker --isolation`).
        # A LocalCluster runs its own user's code on its own machine, as multiprocessing would, so by
        # default its chunks see that user's files ("none"); None takes the worker's default (bwrap
        # where it works), which `rvidia up`, a master others may reach, uses.
        self._isolation = isolation
        self._tmp = None if data_dir is not None else tempfile.mkdtemp(prefix="rvidia-local-")
        self.data_dir = Path(data_dir if data_dir is not None else self._tmp)  # type: ignore[arg-type]
        self.procs: list[subprocess.Popen[str]] = []
        self._quiet = quiet
        self._closed = False
        try:
            url = self._start_master(host, port, worker_timeout, start_timeout, advertise, master_args or [])
            token = (self.data_dir / "token").read_text().strip()
            super().__init__(url, token)
            for i in range(workers):
                self.add_worker(slots or local_slots(workers), name=f"local-{i + 1}", allow_code=allow_code)
            self.wait_for_workers(workers, start_timeout)
        except BaseException:
            self.close()
            raise

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        out = subprocess.DEVNULL if self._quiet else None
        proc = subprocess.Popen([sys.executable, "-m", "rvidia", *args], stdout=subprocess.PIPE,
                                stderr=out, stdin=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {}), lifeline.ENV: "stdin"},
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def _start_master(self, host: str, port: int, worker_timeout: float | None, timeout: float,
                      advertise: bool = False, extra: list[str] | None = None) -> str:
        """``extra``: more `rvidia master` flags (LocalCluster(master_args=...))."""
        args = ["master", "--host", host, "--port", str(port), "--data-dir", str(self.data_dir), *(extra or [])]
        if not advertise:  # a throwaway cluster (rvidia run, tests) is no service to announce; `up` asks
            args.append("--no-advertise")
        if worker_timeout is not None:
            args += ["--worker-timeout", str(worker_timeout)]
        self.master_proc = self._spawn(args)
        line = _read_line(self.master_proc.stdout, timeout)  # type: ignore[arg-type]
        if line is None or not line.startswith(_ANNOUNCE):
            code = self.master_proc.poll()
            raise MasterUnreachable(f"the local master did not start (exit code {code}): {line!r}")
        return line[len(_ANNOUNCE):].strip()

    def add_worker(self, slots: int = 1, name: str | None = None, allow_code: bool = True,
                   extra: list[str] | None = None) -> subprocess.Popen[str]:
        """Start one more local worker process (tests kill these to check recovery)."""
        # Local workers share the machine with the person who started them: owner-first would pause
        # them for that person's own submitting and waiting (`extra` may turn it back on).
        args = ["worker", "--master", self.url, "--slots", str(slots), "--grace", "1", "--no-owner-first"]
        if name:
            args += ["--name", name]
        if allow_code:
            args.append("--allow-code")
        if self._isolation is not None:
            args += ["--isolation", self._isolation]
        proc = self._spawn(args + (extra or []), env={"RVIDIA_TOKEN": self.token or ""})
        return proc

    @property
    def worker_procs(self) -> list[subprocess.Popen[str]]:
        return [p for p in self.procs if p is not self.master_proc]

    def wait_for_workers(self, n: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            live = [w for w in self.workers() if w["state"] != "lost"]
            if len(live) >= n:
                return live
            if time.monotonic() > deadline:
                raise MasterUnreachable(f"only {len(live)} of {n} local workers joined in {timeout:g} s")
            time.sleep(0.05)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if hasattr(self, "http"):
            super().close()
        master = getattr(self, "master_proc", None)
        for proc in [p for p in self.procs if p is not master] + ([master] if master else []):
            _stop(proc)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _stop(proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stdin):
        if stream:
            stream.close()


def _read_line(stream: IO[str], timeout: float) -> str | None:
    """The first line a child prints, or None if it prints nothing in time."""
    box: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: box.put(stream.readline() or None), daemon=True).start()
    try:
        return box.get(timeout=timeout)
    except queue.Empty:
        return None
