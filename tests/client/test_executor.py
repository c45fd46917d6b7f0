"""``cluster.executor()`` on a real LocalCluster: the concurrent.futures contract, chunk by chunk."""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import rvidia

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[rvidia.LocalCluster]:
    with rvidia.LocalCluster(workers=2, slots=1) as local:
        yield local


def _wait_idle(cluster: rvidia.LocalCluster, timeout: float = 30.0) -> None:
    """Wait until no worker runs anything (a cancelled chunk's slot is free again)."""
    deadline = time.monotonic() + timeout
    while any(w["running"] for w in cluster.workers()):
        assert time.monotonic() < deadline, cluster.workers()
        time.sleep(0.05)


def _gated(flag: str) -> Any:
    """Item 0 waits for ``flag`` to exist (at most 20 s); every other item returns at once."""

    def fn(x: int) -> int:
        if x == 0:
            import os
            import time

            deadline = time.monotonic() + 20
            while not os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.02)
        return x * 10

    return fn


def _sleeper() -> Any:
    """A function that sleeps; made in a function so cloudpickle ships it by value."""

    def sleep(seconds: float) -> float:
        import time

        time.sleep(seconds)
        return seconds

    return sleep


_sleep = _sleeper()


# ------------------------------------------------------------ the Executor API


def test_map_squares_like_the_contract(cluster: rvidia.LocalCluster) -> None:
    with cluster.executor() as ex:
        squares = list(ex.map(lambda x: x * x, range(100)))
    assert squares == [x * x for x in range(100)]


def test_map_chunksize_and_empty(cluster: rvidia.LocalCluster) -> None:
    with cluster.executor() as ex:
        assert list(ex.map(str, range(25), chunksize=4)) == [str(x) for x in range(25)]
        assert list(ex.map(str, [])) == []


def test_submit_with_args_and_kwargs(cluster: rvidia.LocalCluster) -> None:
    def combine(a: int, b: int, *, scale: int = 1, tag: str = "") -> tuple[int, str]:
        return (a + b) * scale, tag

    with cluster.executor() as ex:
        future = ex.submit(combine, 2, 3, scale=10, tag="t")
        assert future.result(timeout=60) == (50, "t")
        assert ex.submit(combine, 1, 1).result(timeout=60) == (2, "")


def test_map_multiple_iterables(cluster: rvidia.LocalCluster) -> None:
    with cluster.executor() as ex:
        out = list(ex.map(lambda a, b, c: a * b + c, [1, 2, 3, 4], [10, 20, 30], (100, 200, 300, 400)))
    assert out == [110, 240, 390]  # zip semantics: the shortest iterable wins


def test_exception_surfaces_in_future(cluster: rvidia.LocalCluster) -> None:
    def boom(x: int) -> int:
        if x == 3:
            raise ValueError(f"boom on item {x}")
        return x

    with cluster.executor() as ex:
        error = ex.submit(boom, 3).exception(timeout=60)
        assert error is not None
        assert "ValueError" in str(error) and "boom on item 3" in str(error)
        got: list[int] = []
        with pytest.raises(rvidia.JobFailed, match="boom on item 3") as info:
            for value in ex.map(boom, range(6), chunksize=1):
                got.append(value)
        assert "ValueError" in str(info.value)
        # Items before the failing one either came back or were dropped when the job failed fast.
        assert got == list(range(len(got))) and len(got) <= 3


def test_futures_resolve_as_chunks_finish(cluster: rvidia.LocalCluster, tmp_path: Path) -> None:
    """Separate submits: the quick ones are done while item 0 still runs."""
    flag = tmp_path / "release"
    fn = _gated(str(flag))
    with cluster.executor() as ex:
        futures = [ex.submit(fn, i) for i in range(8)]
        done, _ = cf.wait(futures[1:], timeout=60)
        assert len(done) == 7
        assert not futures[0].done()
        flag.touch()
        assert [f.result(timeout=60) for f in futures] == [i * 10 for i in range(8)]


def test_one_map_job_resolves_chunk_by_chunk(cluster: rvidia.LocalCluster, tmp_path: Path) -> None:
    """Within one map job, each future resolves with its own chunk, not when the job ends."""
    flag = tmp_path / "release"
    fn = _gated(str(flag))
    with cluster.executor() as ex:
        futures = ex._launch(fn, [((i,), {}) for i in range(8)], 1)  # the futures behind ex.map
        deadline = time.monotonic() + 30
        while not ex._jobs and time.monotonic() < deadline:  # the master's answer comes asynchronously
            time.sleep(0.01)
        job_id = next(iter(ex._jobs))
        done, _ = cf.wait(futures[1:], timeout=60)
        assert len(done) == 7 and not futures[0].done()
        assert cluster.get(f"/api/v1/jobs/{job_id}")["state"] == "running"
        flag.touch()
        assert [f.result(timeout=60) for f in futures] == [i * 10 for i in range(8)]
    assert cluster.get(f"/api/v1/jobs/{job_id}")["state"] == "succeeded"


def test_map_timeout(cluster: rvidia.LocalCluster) -> None:
    ex = cluster.executor()
    try:
        results = ex.map(_sleep, [30.0], timeout=1.0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            next(results)
        assert time.monotonic() - started < 20
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    _wait_idle(cluster)


# ------------------------------------------------------------ shutdown


def test_shutdown_cancel_futures(cluster: rvidia.LocalCluster) -> None:
    ex = cluster.executor(chunksize=1)
    futures = [ex.submit(_sleep, 0.0)] + [ex.submit(_sleep, 30.0) for _ in range(5)]
    assert futures[0].result(timeout=60) == 0.0
    deadline = time.monotonic() + 30
    jobs: set[str] = set()
    while not jobs and time.monotonic() < deadline:  # accepted asynchronously, batched into jobs
        jobs = {t.job_id for t in list(ex._jobs.values()) if any(f in futures[1:] for f in t.futures)}
        time.sleep(0.01)
    assert jobs
    started = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - started < 10
    assert all(f.done() for f in futures)
    assert futures[0].result() == 0.0
    for future in futures[1:]:
        assert future.cancelled()
        with pytest.raises(cf.CancelledError):
            future.result(timeout=0)
    states = {cluster.get(f"/api/v1/jobs/{job}")["state"] for job in jobs}
    assert states == {"cancelled"}
    _wait_idle(cluster)  # the running chunks were killed, not left to sleep 30 s


def test_submit_after_shutdown(cluster: rvidia.LocalCluster) -> None:
    ex = cluster.executor()
    assert ex.submit(abs, -4).result(timeout=60) == 4
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(abs, -1)
    with pytest.raises(RuntimeError):
        ex.map(abs, [1])
    with cluster.executor() as ex2:
        pass
    with pytest.raises(RuntimeError):
        ex2.submit(abs, -1)


def test_context_exit_waits_for_pending(cluster: rvidia.LocalCluster) -> None:
    with cluster.executor() as ex:
        futures = [ex.submit(_sleep, 0.3) for _ in range(3)]
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [0.3] * 3


# ------------------------------------------------------------ crashes


def test_chunk_process_crash_fails_job_and_worker_survives(cluster: rvidia.LocalCluster) -> None:
    def crash(x: int) -> int:
        import os

        os._exit(3)

    workers_before = {w["id"] for w in cluster.workers() if w["state"] != "lost"}
    with cluster.executor() as ex:
        error = ex.submit(crash, 1).exception(timeout=60)
        assert isinstance(error, rvidia.JobFailed)
        assert error.state == "failed"
        assert "chunk process died" in str(error)
        assert "exit code 3" in str(error)
        assert all(p.poll() is None for p in cluster.worker_procs)
        assert ex.submit(lambda: os.getpid() > 0).result(timeout=60) is True
        assert list(ex.map(lambda x: -x, range(10), chunksize=2)) == [-x for x in range(10)]
    workers_after = {w["id"] for w in cluster.workers() if w["state"] != "lost"}
    assert workers_after == workers_before


def test_large_arguments_travel_through_the_blob_store(cluster: rvidia.LocalCluster) -> None:
    """Batches over the inline limit become blobs that workers fetch; results stay exact."""
    import numpy as np

    from rvidia.client.mapjob import BATCH_INLINE_LIMIT

    arrays = [np.full(BATCH_INLINE_LIMIT // 8 + 1000, float(i)) for i in range(3)]
    with cluster.executor() as ex:
        sums = list(ex.map(lambda a: float(a.sum()), arrays, chunksize=1))
        assert ex.submit(lambda a: a.shape, arrays[0]).result(timeout=60) == arrays[0].shape
    assert sums == [float(a.sum()) for a in arrays]
    assert cluster.map(lambda a: float(a[0]), arrays).result(timeout=60) == [0.0, 1.0, 2.0]
