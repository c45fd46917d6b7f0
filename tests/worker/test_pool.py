"""The chunk process pool with real processes: crashes, timeouts, cancel, reuse; plain, under bubblewrap
and in docker (the `isolation` fixture of conftest.py)."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import cloudpickle
import pytest

from rvidia.protocol import messages as m
from rvidia.protocol import values
from rvidia.worker.pool import ChunkPool

from sandboxes import make_launcher


def _task(index: int, items: list[Any], timeout: float | None = None) -> m.ChunkTask:
    return m.ChunkTask(job_id="j1", stage=0, index=index, attempt=1, kind="map",
                       params={"python": "3.11"}, payload=pickle.dumps(items), timeout=timeout)


class Harness:
    def __init__(self, tmp: Path, fn: Callable[..., Any], slots: int = 1, isolation: str = "none") -> None:
        self.fn_path = tmp / "fn.pkl"
        self.fn_path.write_bytes(cloudpickle.dumps(fn))
        self.outcomes: asyncio.Queue[m.ChunkOutcome] = asyncio.Queue()
        self.pool = ChunkPool(slots, self.outcomes.put_nowait, launcher=make_launcher(isolation, [str(tmp)]))
        self.pool.start()

    def submit(self, task: m.ChunkTask) -> None:
        self.pool.submit(task, {"function": str(self.fn_path)})

    async def next(self, timeout: float = 60) -> m.ChunkOutcome:
        return await asyncio.wait_for(self.outcomes.get(), timeout)

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.pool.slots if s.proc is not None]


PROCESS = uuid.uuid4().hex  # one per chunk process (pids repeat inside a sandbox's pid namespace)


def _behave(x: int) -> str:
    if x == -1:
        os._exit(3)
    if x == -2:
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == -3:
        raise MemoryError()
    if x == -4:
        while True:
            pass
    if x == -5:
        raise ValueError("bad item")
    return PROCESS


@pytest.fixture
async def harness(tmp_path: Path, isolation: str):
    h = Harness(tmp_path, _behave, isolation=isolation)
    yield h
    h.pool.close()


async def test_runs_and_reuses_the_process(harness: Harness) -> None:
    harness.submit(_task(0, [1]))
    first = await harness.next()
    harness.submit(_task(1, [2]))
    second = await harness.next()
    assert first.ok and second.ok
    assert values.loads(first.result) == values.loads(second.result)  # the same process: reused


@pytest.mark.parametrize("item, reason", [
    (-1, "chunk process died (exit code 3)"),
    (-2, "chunk process died (killed by SIGSEGV)"),
    (-3, "MemoryError"),
    (-5, "ValueError: bad item"),
])
async def test_a_failing_chunk_fails_alone_and_the_pool_carries_on(harness: Harness, item: int, reason: str) -> None:
    harness.submit(_task(0, [item]))
    outcome = await harness.next()
    assert not outcome.ok and reason in (outcome.error or "")
    harness.submit(_task(1, [1]))
    assert (await harness.next()).ok


async def test_timeout_kills_the_chunk(harness: Harness) -> None:
    harness.submit(_task(0, [-4], timeout=0.5))
    outcome = await harness.next()
    assert not outcome.ok and "timed out after 0.5 s" in (outcome.error or "")
    harness.submit(_task(1, [1]))
    assert (await harness.next()).ok


async def test_cancel_kills_without_an_outcome(harness: Harness) -> None:
    harness.submit(_task(0, [-4]))
    await asyncio.sleep(0.5)
    old = harness.pids()
    harness.pool.cancel([m.ChunkRef("j1", 0, 0, 1)])
    assert harness.pool.running == 0
    harness.submit(_task(1, [1]))
    outcome = await harness.next()
    assert outcome.ok and outcome.index == 1
    assert harness.pids() != old
    assert harness.outcomes.empty()


async def test_more_tasks_than_slots_wait_their_turn(harness: Harness) -> None:
    for i in range(4):
        harness.submit(_task(i, [i + 1]))
    got = sorted([(await harness.next()).index for _ in range(4)])
    assert got == [0, 1, 2, 3]


async def test_a_task_held_behind_a_long_chunk_is_handed_back(harness: Harness) -> None:
    """A prefetched task that waits past the hold limit goes back to the master, unrun."""
    harness.pool.hold_limit = 0.3
    harness.submit(_task(0, [-4], timeout=5))  # loops until its timeout
    harness.submit(_task(1, [1]))
    back = await harness.next()
    assert back.index == 1 and back.handed_back and not back.ok and "behind a long-running chunk" in (back.error or "")
    assert harness.pool.running == 1  # only the long one
    harness.pool.cancel([m.ChunkRef("j1", 0, 0, 1)])


DIE_AT_START = [sys.executable, "-c", "import os; os._exit(7)"]  # a chunk process that dies at once


async def test_a_process_that_dies_at_start_is_restarted_with_backoff() -> None:
    """A broken environment must not make the worker spin starting processes."""
    outcomes: asyncio.Queue[m.ChunkOutcome] = asyncio.Queue()
    pool = ChunkPool(1, outcomes.put_nowait, entry=DIE_AT_START)
    pool.start()
    await asyncio.sleep(3.0)
    started = pool.slots[0].generation
    pool.close()
    assert 2 <= started <= 4  # after 0.5 s, 1 s, 2 s: a handful of starts, not hundreds
    assert outcomes.empty()
