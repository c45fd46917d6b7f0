"""Chunk processes that die or hang, end to end through the Python API: ``map`` jobs on a real cluster.

A chunk whose process exits (``os._exit(3)``), segfaults, runs out of memory or loops past its
``timeout`` fails with that reason; it is retried up to ``max_attempts``; the job fails naming the
reason when every attempt fails, and succeeds when a retry does. Either way the worker stays up, keeps
its id, and runs the next job exactly. (tests/worker/test_pool.py covers the pool alone.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import cloudpickle
import pytest

import rvidia
from harness import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# The functions travel by value: the workers cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ITEMS = list(range(6))
BAD = 3  # the item whose chunk misbehaves; the others succeed


def _exit(x: int) -> int:
    if x == BAD:
        os._exit(3)
    return x * x


def _segfault(x: int) -> int:
    if x == BAD:
        import ctypes

        ctypes.string_at(0)
    return x * x


def _out_of_memory(x: int) -> int:
    if x == BAD:
        bytearray(1 << 62)  # no machine has this: the allocation fails at once
    return x * x


def _forever(x: int) -> int:
    while x == BAD:
        pass
    return x * x


# name: (function, what the chunk's error says, per-chunk timeout)
MODES: dict[str, tuple[Callable[[int], int], str, float | None]] = {
    "exit": (_exit, "exit code 3", None),
    "segfault": (_segfault, "SIGSEGV", None),
    "memory": (_out_of_memory, "MemoryError", None),
    "timeout": (_forever, "timed out after 1.5 s", 1.5),
}

@pytest.fixture(scope="module")
def cluster() -> Iterator[rvidia.LocalCluster]:
    with rvidia.LocalCluster(workers=1, slots=2) as made:
        yield made


def _the_worker(cluster: rvidia.LocalCluster) -> dict[str, Any]:
    live = [w for w in cluster.workers() if w["state"] != "lost"]
    assert len(live) == 1, live
    return live[0]


def _next_job_is_exact(cluster: rvidia.LocalCluster, worker_id: str) -> None:
    """The worker is the same process under the same id, idle, and runs a job right."""
    assert all(p.poll() is None for p in cluster.worker_procs), "the worker process died"
    wait_until(lambda: _the_worker(cluster)["state"] == "idle", 15, message="the worker to be idle")
    assert _the_worker(cluster)["id"] == worker_id
    assert cluster.map(lambda x: x + 1, range(50), chunksize=5).result(timeout=60) == list(range(1, 51))


@pytest.mark.parametrize("mode", list(MODES))
def test_a_chunk_that_keeps_failing_fails_the_job_with_its_reason(cluster: rvidia.LocalCluster, mode: str) -> None:
    fn, reason, timeout = MODES[mode]
    worker_id = _the_worker(cluster)["id"]
    job = cluster.map(fn, ITEMS, chunksize=1, max_attempts=2, timeout=timeout)
    with pytest.raises(rvidia.JobFailed, match=reason) as failed:
        job.result(timeout=60)
    assert failed.value.state == "failed"
    chunks = {c["index"]: c for c in cluster.get(f"/api/v1/jobs/{job.id}/chunks")}
    bad = chunks[BAD]
    assert bad["state"] == "failed" and bad["attempts"] == 2, bad
    assert reason in (bad["error"] or ""), bad
    view = job.status()
    assert view["progress"]["failed"] >= 1 and reason in view["error"]
    _next_job_is_exact(cluster, worker_id)


@pytest.fixture(scope="module")
def plain() -> Iterator[rvidia.LocalCluster]:
    """A worker without a sandbox: its chunks share this machine's /tmp, so an attempt can leave a mark
    the next attempt sees (a sandboxed chunk's scratch and /tmp go with its process)."""
    with rvidia.LocalCluster(workers=0) as made:
        made.add_worker(slots=2, name="plain", extra=["--isolation", "none"])
        made.wait_for_workers(1)
        yield made


@pytest.mark.parametrize("mode", ["exit", "segfault"])
def test_a_chunk_that_fails_once_succeeds_on_its_retry(plain: rvidia.LocalCluster, tmp_path: Path,
                                                        mode: str) -> None:
    """The first attempt of the bad chunk dies (leaving a mark); the retry finds the mark and succeeds."""
    cluster = plain
    mark = str(tmp_path / "tried")
    die = MODES[mode][0]

    def once(x: int) -> int:
        if x == BAD and not os.path.exists(mark):
            open(mark, "w").close()
            return die(x)
        return x * x

    worker_id = _the_worker(cluster)["id"]
    job = cluster.map(once, ITEMS, chunksize=1, max_attempts=3)
    assert job.result(timeout=60) == [x * x for x in ITEMS]
    chunks = {c["index"]: c for c in cluster.get(f"/api/v1/jobs/{job.id}/chunks")}
    assert chunks[BAD]["attempts"] == 2 and chunks[BAD]["state"] == "done", chunks[BAD]
    assert all(c["attempts"] == 1 for i, c in chunks.items() if i != BAD)
    assert job.status()["progress"]["failed"] == 1
    _next_job_is_exact(cluster, worker_id)
