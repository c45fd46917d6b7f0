"""``cluster.executor()``: a ``concurrent.futures.Executor`` whose futures resolve chunk by chunk.

It speaks ``/ws/client``: jobs go out with their small inputs inline and the master pushes each
chunk's result as soon as it is accepted. ``map`` is one ``map`` job; ``submit`` calls are batched:
while one submission waits for the master's answer, new calls gather and go out together as one job
of ``(fn, args, kwargs)`` items, so a tight submit loop costs a few jobs, not one per call.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Executor, Future, InvalidStateError
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from rvidia.client.api import ApiError, JobFailed, MasterUnreachable, default_chunksize
from rvidia.client.mapjob import pack_calls, pack_map
from rvidia.protocol import client as c
from rvidia.protocol import values

if TYPE_CHECKING:
    from rvidia.client.api import Cluster
    from rvidia.client.channel import Channel

MAX_BATCH = 10_000  # submit() calls gathered into one job at most
INLINE_LIMIT = 4 * 1024 * 1024  # larger inputs are uploaded to the blob store, not sent inline


@dataclass
class _Tracked:
    """A submitted job's futures; chunk ``i`` resolves ``futures[i*chunksize:(i+1)*chunksize]``."""

    futures: list[Future[Any]]
    chunksize: int
    job_id: str = ""


class ClusterExecutor(Executor):
    def __init__(self, cluster: "Cluster", chunksize: int | None = None, allow_pickle_results: bool = False,
                 max_attempts: int = 1) -> None:
        self.cluster = cluster
        self.chunksize = chunksize
        self.allow_pickle = allow_pickle_results
        self.max_attempts = max_attempts
        self._lock = threading.RLock()
        self._refs = count(1)
        self._waiting: dict[int, _Tracked] = {}  # submitted, not yet accepted: by ref
        self._jobs: dict[str, _Tracked] = {}  # accepted and running: by job id
        self._batch: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Future[Any]]] = []
        self._batch_in_flight = False
        self._channel: Channel | None = None
        self._shutdown = False

    # ------------------------------------------------------------ Executor API

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        future: Future[Any] = Future()
        with self._lock:
            self._batch.append((fn, args, kwargs, future))
            if not self._batch_in_flight:
                self._send_batch()
        return future

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
        self._shutdown = True  # no new work; what was submitted still goes out and runs
        if cancel_futures:
            with self._lock:
                tracked = list(self._waiting.values()) + list(self._jobs.values())
                batch, self._batch = self._batch, []
            for _, _, _, future in batch:
                future.cancel()
            for t in tracked:  # futures first, so a pushed "job cancelled" cannot fail them
                for future in t.futures:
                    future.cancel()
            for t in tracked:
                if t.job_id and self._channel is not None and self._channel.alive:
                    try:
                        self._channel.send(c.CancelJob(job_id=t.job_id))
                    except MasterUnreachable:
                        pass
        if wait:
            while pending := self._pending_futures():
                for future in pending:
                    try:
                        future.exception()
                    except BaseException:
                        pass
        if self._channel is not None and (wait or cancel_futures):
            self._channel.close()  # with wait=False, running work keeps its connection

    def _pending_futures(self) -> list[Future[Any]]:
        with self._lock:
            futures = [f for t in [*self._waiting.values(), *self._jobs.values()] for f in t.futures]
            futures += [b[3] for b in self._batch]
        return [f for f in futures if not f.done()]

    # ------------------------------------------------------------ sending

    def _connect(self) -> "Channel":
        from rvidia.client.channel import Channel

        if self._channel is None or not self._channel.alive:
            self._channel = Channel(self.cluster.url, self.cluster.token, self._on_message, self._on_lost,
                                    ca=self.cluster.ca)
        return self._channel

    def _params(self, n: int, **extra: Any) -> dict[str, Any]:
        return {"python": "{}.{}".format(*sys.version_info[:2]), "items": n, "keep_results": False,
                "allow_pickle_results": self.allow_pickle, **extra}

    def _launch(self, fn: Callable[..., Any], calls: list[Any], chunksize: int) -> list[Future[Any]]:
        """One map job of (args, kwargs) items; the function travels once, inline."""
        function_blob, items_blob = pack_map(fn, calls, chunksize, self.cluster.upload)
        futures: list[Future[Any]] = [Future() for _ in calls]
        message = c.SubmitJob(ref=0, kind="map", params=self._params(len(calls), star=True),
                              max_attempts=self.max_attempts)
        self._attach(message, {"function": function_blob, "items": items_blob})
        self._send(message, _Tracked(futures, chunksize))
        return futures

    def _send_batch(self) -> None:
        """Send every gathered submit() call as one job (called with the lock held)."""
        batch, self._batch = self._batch[:MAX_BATCH], self._batch[MAX_BATCH:]
        batch = [b for b in batch if not b[3].cancelled()]
        if not batch:
            return
        chunksize = self.chunksize or default_chunksize(len(batch))
        items_blob = pack_calls([(fn, args, kwargs) for fn, args, kwargs, _ in batch], chunksize,
                                self.cluster.upload)
        message = c.SubmitJob(ref=0, kind="map", params=self._params(len(batch), calls=True),
                              max_attempts=self.max_attempts)
        self._attach(message, {"items": items_blob})
        self._batch_in_flight = True
        self._send(message, _Tracked([b[3] for b in batch], chunksize), is_batch=True)

    def _attach(self, message: c.SubmitJob, data: dict[str, bytes]) -> None:
        """Small inputs ride inline; large ones (big array arguments) go through the blob store."""
        for name, blob in data.items():
            if len(blob) <= INLINE_LIMIT:
                message.inline[name] = blob
            else:
                message.inputs[name] = self.cluster.upload(blob)

    def _send(self, message: c.SubmitJob, tracked: _Tracked, is_batch: bool = False) -> None:
        with self._lock:
            message.ref = next(self._refs) * 2 + int(is_batch)
            self._waiting[message.ref] = tracked
            try:
                self._connect().send(message)
            except MasterUnreachable as exc:
                self._waiting.pop(message.ref, None)
                if is_batch:
                    self._batch_in_flight = False
                self._fail(tracked, exc)

    # ------------------------------------------------------------ receiving (the channel's thread)

    def _on_message(self, message: c.ToClient) -> None:
        if isinstance(message, c.ChunkDone):
            self._on_chunk(message)
        elif isinstance(message, c.Accepted):
            with self._lock:
                tracked = self._waiting.pop(message.ref)
                tracked.job_id = message.job_id
                self._jobs[message.job_id] = tracked
                self._next_batch(message.ref)
        elif isinstance(message, c.Rejected):
            with self._lock:
                tracked = self._waiting.pop(message.ref)
                self._next_batch(message.ref)
            self._fail(tracked, ApiError(422, message.error))
        elif isinstance(message, c.JobEnded):
            with self._lock:
                tracked = self._jobs.pop(message.job_id, None)
            if tracked is not None and message.state != "succeeded":
                self._fail(tracked, JobFailed(message.job_id, message.state, message.error))

    def _next_batch(self, ref: int) -> None:
        if ref % 2 == 1:  # the batch in flight was answered: the next one may go
            self._batch_in_flight = False
            if self._batch:
                self._send_batch()

    def _on_chunk(self, message: c.ChunkDone) -> None:
        tracked = self._jobs.get(message.job_id)
        if tracked is None:
            return
        start = message.index * tracked.chunksize
        futures = tracked.futures[start : start + tracked.chunksize]
        try:
            results = values.loads(message.result, allow_pickle=self.allow_pickle)
        except Exception as exc:
            for future in futures:
                _settle(future, error=exc)
            return
        for future, value in zip(futures, results):
            _settle(future, value)

    def _on_lost(self, reason: BaseException) -> None:
        with self._lock:
            tracked = list(self._waiting.values()) + list(self._jobs.values())
            self._waiting.clear()
            self._jobs.clear()
            self._batch_in_flight = False
        for t in tracked:
            self._fail(t, reason)

    @staticmethod
    def _fail(tracked: _Tracked, exc: BaseException) -> None:
        for future in tracked.futures:
            _settle(future, error=exc)


def _settle(future: Future[Any], value: Any = None, error: BaseException | None = None) -> None:
    """Resolve ``future`` unless it is already done (the caller may have cancelled it meanwhile)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except InvalidStateError:
        pass
