"""``cluster.executor()``: a ``concurrent.futures.Executor`` whose futures resolve chunk by chunk.

Each ``submit`` is a one-item ``map`` job and each ``map`` call one job of many chunks. A watcher
thread follows the jobs through ``GET /jobs/{id}/results`` (long-polled when one job is pending) and
resolves each future as soon as its chunk's result arrives, not when the whole job ends.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Executor, Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import msgspec

from rvidia.client.api import ApiError, JobFailed, MasterUnreachable, default_chunksize
from rvidia.protocol import values

if TYPE_CHECKING:
    from rvidia.client.api import Cluster


class _Page(msgspec.Struct):
    state: str
    stage: int
    seq: int
    items: list[tuple[int, bytes]]


@dataclass
class _Tracked:
    job_id: str
    chunksize: int
    futures: list[Future[Any]]
    allow_pickle: bool
    seq: int = 0
    seen: set[int] = field(default_factory=set)


class ClusterExecutor(Executor):
    def __init__(self, cluster: "Cluster", chunksize: int | None = None, allow_pickle_results: bool = False,
                 max_attempts: int = 1) -> None:
        self.cluster = cluster
        self.chunksize = chunksize
        self.allow_pickle = allow_pickle_results
        self.max_attempts = max_attempts
        self._jobs: dict[str, _Tracked] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._shutdown = False
        self._thread = threading.Thread(target=self._watch, name="rvidia-executor", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ Executor API

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        futures = self._launch(fn, [(args, kwargs)], 1)
        return futures[0]

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 0) -> Iterator[Any]:
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        calls = [(args, {}) for args in zip(*iterables)]
        size = chunksize or self.chunksize or default_chunksize(len(calls))
        futures = self._launch(fn, calls, size) if calls else []
        deadline = None if timeout is None else time.monotonic() + timeout

        def results() -> Iterator[Any]:
            for future in futures:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                yield future.result(left)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            with self._lock:
                jobs = list(self._jobs.values())
            for tracked in jobs:  # futures first, so the watcher cannot fail them as "job cancelled"
                for future in tracked.futures:
                    future.cancel()
            for tracked in jobs:
                try:
                    self.cluster.request("POST", f"/api/v1/jobs/{tracked.job_id}/cancel")
                except (ApiError, MasterUnreachable):
                    pass
        if wait:
            with self._lock:
                pending = [f for t in self._jobs.values() for f in t.futures]
            for future in pending:
                try:
                    future.exception()
                except BaseException:
                    pass
        self._shutdown = True
        self._wake.set()
        if wait:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------ internals

    def _launch(self, fn: Callable[..., Any], calls: list[Any], chunksize: int) -> list[Future[Any]]:
        job = self.cluster.map(fn, calls, chunksize=chunksize, star=True, max_attempts=self.max_attempts,
                               allow_pickle_results=self.allow_pickle)
        # Left pending (not running) so that future.cancel() and shutdown(cancel_futures=True) work.
        futures: list[Future[Any]] = [Future() for _ in calls]
        with self._lock:
            self._jobs[job.id] = _Tracked(job.id, chunksize, futures, self.allow_pickle)
        self._wake.set()
        return futures

    def _watch(self) -> None:
        idle = 0.005
        while not self._shutdown or self._jobs:
            with self._lock:
                jobs = list(self._jobs.values())
            if not jobs:
                if self._shutdown:
                    return
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            progressed = False
            for tracked in jobs:
                wait = 1.0 if len(jobs) == 1 else 0.0
                try:
                    progressed |= self._poll(tracked, wait)
                except (ApiError, MasterUnreachable) as exc:
                    self._fail(tracked, exc)
            if not progressed and len(jobs) > 1:
                time.sleep(idle)
                idle = min(idle * 2, 0.1)
            else:
                idle = 0.005

    def _poll(self, tracked: _Tracked, wait: float) -> bool:
        response = self.cluster.request(
            "GET", f"/api/v1/jobs/{tracked.job_id}/results", params={"after": tracked.seq, "wait": wait})
        page = msgspec.msgpack.decode(response.content, type=_Page)
        for index, raw in page.items:
            if index in tracked.seen:
                continue
            tracked.seen.add(index)
            start = index * tracked.chunksize
            try:
                outputs = values.loads(raw, allow_pickle=tracked.allow_pickle)
            except Exception as exc:
                for future in tracked.futures[start : start + tracked.chunksize]:
                    _settle(future, error=exc)
                continue
            for future, value in zip(tracked.futures[start : start + tracked.chunksize], outputs):
                _settle(future, value)
        tracked.seq = page.seq
        if page.state in ("failed", "cancelled") and not page.items:
            view = self.cluster.get(f"/api/v1/jobs/{tracked.job_id}")
            self._fail(tracked, JobFailed(tracked.job_id, view["state"], view.get("error")))
        elif page.state == "succeeded" and not page.items:
            self._forget(tracked)
        return bool(page.items)

    def _fail(self, tracked: _Tracked, exc: BaseException) -> None:
        for future in tracked.futures:
            _settle(future, error=exc)
        self._forget(tracked)

    def _forget(self, tracked: _Tracked) -> None:
        with self._lock:
            self._jobs.pop(tracked.job_id, None)


def _settle(future: Future[Any], value: Any = None, error: BaseException | None = None) -> None:
    """Resolve ``future`` unless it is already done (the caller may have cancelled it meanwhile)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except InvalidStateError:
        pass
