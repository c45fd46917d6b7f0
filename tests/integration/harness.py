"""Real masters and workers as child processes on 127.0.0.1, and the helpers the integration tests share.

Every process started here is tracked by a ``Processes`` set and ends with whoever started it
(SIGTERM, then SIGKILL, then SIGKILL to its whole process group so no chunk process outlives it).
Tests wait on conditions with deadlines (``wait_until``), never on fixed sleeps. The fixtures that
use these live in ``conftest.py``; tests import the helpers from here (``from harness import ...``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Callable, Iterator, TypeVar

import httpx

from rvidia.kinds.montecarlo import count_inside

ANNOUNCE = "rvidia master listening on "
T = TypeVar("T")


# ---------------------------------------------------------------- waiting


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
               message: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; return that, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


# ---------------------------------------------------------------- the single-process reference


@lru_cache(maxsize=None)
def reference_inside(samples: int, seed: int = 0, chunk_samples: int = 1_000_000) -> int:
    """What a montecarlo job must find, computed chunk by chunk in this process."""
    n_chunks = -(-samples // chunk_samples)
    return sum(count_inside(seed, i, min(chunk_samples, samples - i * chunk_samples)) for i in range(n_chunks))


def reference_result(samples: int, seed: int = 0, chunk_samples: int = 1_000_000) -> dict[str, Any]:
    inside = reference_inside(samples, seed, chunk_samples)
    return {"pi": 4.0 * inside / samples, "samples": samples, "inside": inside}


# ---------------------------------------------------------------- processes


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without RVIDIA_* settings, so nothing falls back to a user's master or token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RVIDIA_")}
    env["RVIDIA_DATA_DIR"] = "/nonexistent/rvidia-integration-tests"  # no token file to fall back on
    env.update(extra)
    return env


class Processes:
    """Child processes started by one fixture, each in its own session, all stopped by ``stop_all``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[str]] = []
        self._logs: list[IO[str]] = []

    def spawn(self, args: list[str], env: dict[str, str], log_name: str,
              stdout_pipe: bool = False) -> subprocess.Popen[str]:
        log = open(self.log_dir / f"{log_name}.log", "a")
        self._logs.append(log)
        proc = subprocess.Popen([sys.executable, "-m", "rvidia", *args], env=env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if stdout_pipe else log,
                                stderr=log, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:  # SIGTERM to all first, so they stop in parallel
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            stop(proc)
        for log in self._logs:
            log.close()
        self.procs.clear()


@contextmanager
def process_group(tmp_path: Path) -> Iterator[Processes]:
    """Processes that live as long as one test (its ``procs`` fixture), logging under tmp_path/logs."""
    logs = tmp_path / "logs"
    logs.mkdir()
    group = Processes(logs)
    try:
        yield group
    finally:
        group.stop_all()


def stop(proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """SIGTERM, SIGKILL after ``timeout``, then SIGKILL whatever is left of its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its session is its own (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.stdout:
        proc.stdout.close()


def kill9(proc: subprocess.Popen[str]) -> None:
    """``kill -9`` the process itself (not its group) and reap it."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _first_line(stream: IO[str], timeout: float) -> str | None:
    box: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: box.put(stream.readline() or None), daemon=True).start()
    try:
        return box.get(timeout=timeout)
    except queue.Empty:
        return None


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Master:
    """A ``rvidia master`` child process on 127.0.0.1 (or ``host``) with its own data dir."""

    procs: Processes
    data_dir: Path
    port: int = 0
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    host: str = "127.0.0.1"

    def start(self, timeout: float = 60.0) -> "Master":
        """Start (or restart, on the same port and data dir) and wait for the announce line."""
        args = ["master", "--host", self.host, "--port", str(self.port), "--data-dir", str(self.data_dir),
                *self.extra]
        self.proc = self.procs.spawn(args, clean_env(), "master", stdout_pipe=True)
        assert self.proc.stdout is not None
        line = _first_line(self.proc.stdout, timeout)
        if line is None or not line.startswith(ANNOUNCE):
            raise AssertionError(f"master did not announce itself (exit code {self.proc.poll()}): {line!r}; "
                                 f"see {self.procs.log_dir / 'master.log'}")
        self.url = line[len(ANNOUNCE):].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for the REST API, with the admin token unless another is given."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token or self.token}"},
                            timeout=30)


def start_worker(procs: Processes, url: str, token: str, name: str, slots: int = 1,
                 extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """``python -m rvidia worker`` with the token in RVIDIA_TOKEN; owner-first off (the test machine's
    own load must not pause it) unless ``extra`` turns it on."""
    args = ["worker", "--master", url, "--slots", str(slots), "--name", name, "--grace", "1", "--no-owner-first",
            *extra]
    return procs.spawn(args, clean_env(RVIDIA_TOKEN=token), f"worker-{name}")


def wait_for_workers(api: httpx.Client, names: list[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    """Wait until a live worker of each name is listed; return them by name."""
    if not names:
        return {}

    def live() -> dict[str, dict[str, Any]] | None:
        rows = {w["name"]: w for w in api.get("/api/v1/workers").json() if w["state"] != "lost"}
        return rows if all(n in rows for n in names) else None

    return wait_until(live, timeout, message=f"workers {names} to join")


@dataclass
class Cluster:
    """A master and named workers, all child processes; ``api`` is an admin REST client."""

    master: Master
    procs: Processes
    workers: dict[str, subprocess.Popen[str]]
    api: httpx.Client

    @property
    def url(self) -> str:
        return self.master.url

    @property
    def token(self) -> str:
        return self.master.token

    def submit(self, kind: str, **params: Any) -> str:
        response = self.api.post("/api/v1/jobs", json={"kind": kind, "params": params})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.api.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def chunks(self, job_id: str) -> list[dict[str, Any]]:
        response = self.api.get(f"/api/v1/jobs/{job_id}/chunks")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait_job(self, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until the job ends; on timeout, say where it was stuck."""
        last: dict[str, Any] = {}

        def ended() -> bool:
            last.update(self.job(job_id))
            return last["state"] in ("succeeded", "failed", "cancelled")

        try:
            wait_until(ended, timeout, message=f"job {job_id} to finish")
        except AssertionError as exc:
            workers = [(w["name"], w["state"], w["running"]) for w in self.workers_by_name().values()]
            raise AssertionError(f"{exc}: still {last['state']}, progress {last['progress']}, "
                                 f"reason {last['reason']!r}, workers {workers}") from None
        return last

    def workers_by_name(self) -> dict[str, dict[str, Any]]:
        """The newest entry per worker name (a lost worker stays listed)."""
        return {w["name"]: w for w in self.api.get("/api/v1/workers").json()}


def start_cluster(procs: Processes, data_dir: Path, workers: int = 2, slots: int = 1,
                  master_extra: tuple[str, ...] = ()) -> Cluster:
    master = Master(procs, data_dir, extra=list(master_extra)).start()
    api = master.client()
    names = [f"w{i + 1}" for i in range(workers)]
    started = {name: start_worker(procs, master.url, master.token, name, slots) for name in names}
    wait_for_workers(api, names)
    return Cluster(master, procs, started, api)


# ---------------------------------------------------------------- the command line


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        lines = self.stdout.splitlines()
        assert len(lines) == 1, f"expected one line on stdout, got {self.stdout!r}"
        return json.loads(lines[0])


def run_cli(*args: str, token: str | None = None, cwd: Path | None = None, timeout: float = 90.0) -> CliResult:
    """``python -m rvidia ARGS`` in a clean environment (RVIDIA_TOKEN set only if ``token`` is given)."""
    env = clean_env(**({"RVIDIA_TOKEN": token} if token else {}))
    done = subprocess.run([sys.executable, "-m", "rvidia", *args], env=env, cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return CliResult(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: CliResult, code: int) -> None:
    """The contract's failure shape: exit ``code``, one line on stderr, no traceback, nothing on stdout."""
    assert result.code == code, f"exit {result.code} != {code}; stderr: {result.stderr!r}"
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == "", result.stdout
