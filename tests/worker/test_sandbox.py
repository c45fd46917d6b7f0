"""Containment, for real: chunks run in bubblewrap or docker and try to get out (docs/security.md).

Each test runs a submitter-style function (the ``map`` kind, as a ``--allow-code`` worker would) in a
real sandboxed chunk process of a real pool, and checks from the host what it could and could not do:
no network (not even the master's port on 127.0.0.1), no writes outside its scratch directory and
/tmp, no home directories, nice 19, the memory and CPU-time limits failing the chunk but not the pool.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import cloudpickle
import psutil
import pytest

from rvidia.protocol import messages as m
from rvidia.protocol import values
from rvidia.worker import sandbox
from rvidia.worker.pool import ChunkPool

from sandboxes import make_launcher, require

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["bwrap", "docker"])
def sandboxed(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return str(request.param)


class Runner:
    """A one-slot pool of the given isolation that runs ``fn(item)`` as a map chunk."""

    def __init__(self, tmp: Path, fn: Callable[..., Any], isolation: str, **limits: Any) -> None:
        self.fn_path = tmp / "fn.pkl"
        self.fn_path.write_bytes(cloudpickle.dumps(fn))
        self.outcomes: asyncio.Queue[m.ChunkOutcome] = asyncio.Queue()
        self.pool = ChunkPool(1, self.outcomes.put_nowait, launcher=make_launcher(isolation, [str(tmp)], **limits))
        self.pool.start()
        self.index = 0

    def submit(self, item: Any, params: dict[str, Any] | None = None) -> None:
        self.index += 1
        task = m.ChunkTask(job_id="j1", stage=0, index=self.index, attempt=1, kind="map",
                           params={"python": "3.11", **(params or {})}, payload=pickle.dumps([item]))
        self.pool.submit(task, {"function": str(self.fn_path)})

    async def outcome(self, item: Any, timeout: float = 60) -> m.ChunkOutcome:
        self.submit(item)
        return await asyncio.wait_for(self.outcomes.get(), timeout)

    async def value(self, item: Any) -> Any:
        got = await self.outcome(item)
        assert got.ok, got.error
        return values.loads(got.result)[0]


@pytest.fixture
async def runner_factory(tmp_path: Path) -> Iterator[Callable[..., Runner]]:
    made: list[Runner] = []

    def make(fn: Callable[..., Any], isolation: str, **limits: Any) -> Runner:
        made.append(Runner(tmp_path, fn, isolation, **limits))
        return made[-1]

    yield make
    for runner in made:
        runner.pool.close()


# ---------------------------------------------------------------- what the chunks try


def _connect(port: int) -> str:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        return "connected"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _write_everywhere(paths: list[str]) -> dict[str, str]:
    got = {}
    for path in paths:
        try:
            with open(path, "w") as f:
                f.write("escaped")
            got[path] = "written"
        except OSError as exc:
            got[path] = type(exc).__name__
    return got


def _look_around(marker: str) -> dict[str, Any]:
    def listing(path: str) -> list[str] | None:
        try:
            return sorted(os.listdir(path))
        except OSError:
            return None

    return {"marker": os.path.exists(marker), "root": listing("/root"), "home": listing("/home"),
            "cwd": os.getcwd(), "env": dict(os.environ), "nice": os.getpriority(os.PRIO_PROCESS, 0),
            "uid": os.getuid()}


def _allocate(gib: int) -> int:
    if gib == 0:
        return 0
    return len(bytearray(gib << 30))


def _spin(seconds: float) -> int:
    if seconds <= 0:
        return 0
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += 1
    return n


PROCESS = uuid.uuid4().hex  # one per chunk process


def _burn(cpu_seconds: float) -> str:
    """Use this much CPU time; say which process did."""
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass
    return PROCESS


def _echo(value: Any) -> Any:
    return value


def _leave_file(name: str) -> bool:
    """Scratch is fresh for each chunk: what one chunk left there is gone for the next."""
    seen = os.path.exists(name)
    Path(name).write_text("left behind")
    return seen


# ---------------------------------------------------------------- the tests


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections (like the master's)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()


async def test_a_sandboxed_chunk_has_no_network_not_even_to_the_master_port(
        runner_factory: Callable[..., Runner], sandboxed: str, listener: int) -> None:
    plain = runner_factory(_connect, "none")
    assert await plain.value(listener) == "connected"  # the port does answer, outside a sandbox
    boxed = runner_factory(_connect, sandboxed)
    assert (await boxed.value(listener)).startswith(("ConnectionRefusedError", "OSError", "TimeoutError")), \
        "a sandboxed chunk reached a port on the host's loopback"


async def test_a_sandboxed_chunk_writes_only_to_its_scratch_dir_and_tmp(
        runner_factory: Callable[..., Runner], sandboxed: str, tmp_path: Path) -> None:
    name = f"rvidia-escape-{uuid.uuid4().hex}"
    repo = Path(__file__).resolve().parents[2]
    outside = [str(repo / name), str(repo / "src" / name), str(Path(sys.prefix) / name), f"/root/{name}",
               f"/etc/{name}", f"/usr/{name}", f"/{name}", str(tmp_path / name)]
    runner = runner_factory(_write_everywhere, sandboxed)
    got = await runner.value([*outside, name, f"/tmp/{name}"])
    try:
        # A path under /tmp (a checkout there, say) lands in the sandbox's private /tmp: writable, and
        # gone with it; the host check below is what matters for those.
        refused = [p for p in outside if not p.startswith("/tmp/")]
        assert {p: got[p] for p in refused} == {p: got[p] for p in refused if got[p] != "written"}, got
        assert got[name] == "written" and got[f"/tmp/{name}"] == "written", got  # scratch (cwd) and /tmp
        for path in outside:
            assert not os.path.exists(path), f"{path} appeared on the host"
        assert not os.path.exists(f"/tmp/{name}"), "the sandbox's /tmp is the host's"
    finally:
        for path in outside:
            Path(path).unlink(missing_ok=True)


async def test_a_sandboxed_chunk_sees_no_home_directory_runs_at_nice_19_without_the_agents_env(
        runner_factory: Callable[..., Runner], sandboxed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RVIDIA_TOKEN", "the-worker-token")
    home = Path.home()
    marker = home / f".rvidia-sandbox-marker-{uuid.uuid4().hex}"
    marker.write_text("private")
    try:
        runner = runner_factory(_look_around, sandboxed)
        seen = await runner.value(str(marker))
    finally:
        marker.unlink()
    assert seen["marker"] is False
    # What shows of /root and /home is at most the path down to the Python runtime bound read-only.
    needed = {Path(p).relative_to(top).parts[0] for p in sandbox.runtime_paths() for top in ("/root", "/home")
              if p.startswith(top + "/")}
    for top in ("root", "home"):
        assert set(seen[top] or []) <= needed, (top, seen[top])
    assert seen["cwd"] == sandbox.SCRATCH and seen["env"]["HOME"] == sandbox.SCRATCH
    assert seen["nice"] == 19
    # Nothing of the agent's; only the marker that makes file errors explain the sandbox.
    assert [k for k in seen["env"] if k.startswith("RVIDIA_")] == [sandbox.SANDBOX_ENV], seen["env"]
    if sandboxed == "docker":
        assert seen["uid"] == 65534


async def test_a_huge_allocation_fails_the_chunk_with_memory_error_and_the_pool_carries_on(
        runner_factory: Callable[..., Runner], sandboxed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # keep numpy's own reservations small under 1 GiB
    runner = runner_factory(_allocate, sandboxed, memory=1 << 30)
    outcome = await runner.outcome(64)
    assert not outcome.ok and "MemoryError" in (outcome.error or ""), outcome.error
    assert await runner.value(0) == 0


async def test_a_chunk_past_its_cpu_time_fails_and_the_pool_carries_on(
        runner_factory: Callable[..., Runner], sandboxed: str) -> None:
    runner = runner_factory(_spin, sandboxed, cpu_seconds=1)
    outcome = await runner.outcome(30.0)
    assert not outcome.ok and "SIGXCPU" in (outcome.error or "") and "--chunk-cpu-seconds" in (outcome.error or "")
    assert await runner.value(0) == 0


async def test_a_process_that_used_up_a_cpu_budget_is_replaced_before_the_next_chunk(
        runner_factory: Callable[..., Runner], sandboxed: str) -> None:
    """The hard CPU limit is per process: a fresh one keeps the next chunk's whole budget."""
    runner = runner_factory(_burn, sandboxed, cpu_seconds=1)
    first = await runner.value(0.0)
    assert await runner.value(0.0) == first  # reused while little CPU time is used
    assert await runner.value(1.2) == first  # within its budget; the process has used more than 1 s now
    assert await runner.value(0.0) != first  # so the next chunk got a fresh one


async def test_the_scratch_dir_is_fresh_for_each_chunk(runner_factory: Callable[..., Runner], sandboxed: str) -> None:
    runner = runner_factory(_leave_file, sandboxed)
    assert await runner.value("note.txt") is False
    assert await runner.value("note.txt") is False


async def test_suspend_stops_the_sandboxed_chunk_and_resume_lets_it_go_on(
        runner_factory: Callable[..., Runner], sandboxed: str) -> None:
    runner = runner_factory(_spin, sandboxed)
    await runner.value(0)
    runner.submit(30.0)
    await asyncio.sleep(0.5)
    started = runner.pool.slots[0].proc
    assert started is not None
    runner.pool.suspend()
    if sandboxed == "docker":
        def paused() -> str:
            return subprocess.run(["docker", "inspect", "-f", "{{.State.Paused}}", started.container or ""],
                                  capture_output=True, text=True).stdout.strip()

        await _until(lambda: paused() == "true")
        runner.pool.resume()
        await _until(lambda: paused() == "false")
    else:
        children = [psutil.Process(p) for p in sandbox.oscompat.process_tree(started.pid)]
        assert any("rvidia.worker.child" in " ".join(c.cmdline()) for c in children)
        await _until(lambda: all(c.status() == psutil.STATUS_STOPPED for c in children))
        runner.pool.resume()
        await _until(lambda: all(c.status() != psutil.STATUS_STOPPED for c in children))
    runner.pool.cancel_all()


async def _until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- docker's command line


async def test_the_docker_command_is_locked_down_and_nothing_from_a_task_reaches_it(
        runner_factory: Callable[..., Runner], monkeypatch: pytest.MonkeyPatch) -> None:
    require("docker")
    launched: list[list[str]] = []
    real = subprocess.Popen

    def spy(argv: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(argv, list):
            launched.append([str(a) for a in argv])
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    runner = runner_factory(_echo, "docker")
    hostile = ["--privileged", "-v /:/host", "--network host"]  # in the task: its payload
    assert await runner.value(hostile) == hostile
    runs = [a[a.index("run"):] for a in launched
            if "run" in a and any(x.endswith("docker") for x in a)]
    assert runs
    for argv in runs:
        text = " ".join(argv)
        for flag in ("run -i", "--rm", "--network none", "--read-only", "--cap-drop ALL", "--security-opt no-new-privileges",
                     "--pids-limit", "--memory", "--cpus", "--user 65534:65534", "--log-driver none"):
            assert flag in text, flag
        assert "--privileged" not in text and "/:/host" not in text and "--network host" not in text
        assert "source=/root," not in text and "source=/home," not in text and "source=/," not in text


def _read_home(path: str) -> str:
    with open(path) as f:
        return f.read()


async def test_a_file_error_in_a_sandbox_says_it_is_the_sandbox(
        runner_factory: Callable[..., Runner], sandboxed: str) -> None:
    marker = Path.home() / f".rvidia-hint-{uuid.uuid4().hex}"
    marker.write_text("private")
    try:
        runner = runner_factory(_read_home, sandboxed)
        got = await runner.outcome(str(marker))
    finally:
        marker.unlink()
    assert not got.ok and "FileNotFoundError" in (got.error or "")
    assert "ran in the worker's sandbox" in (got.error or "") and "--isolation none" in (got.error or "")
