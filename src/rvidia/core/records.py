"""The scheduler's in-memory view of workers and jobs (no I/O, no clock)."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Iterator

from rvidia.core.events import Requirement
from rvidia.core.replicas import Vote

ChunkKey = tuple[str, int, int]  # job id, stage, index
DURATIONS_KEPT = 64  # recent successful chunk durations per job, for the speculation rule


class PendingChunks:
    """Chunk indices waiting to run: retries first, then fresh indices in order.

    Fresh indices are produced lazily from a counter so a job of ten million chunks costs a few
    integers of memory, not a list.
    """

    __slots__ = ("_next", "_n", "_skip", "_retry")

    def __init__(self, n_chunks: int, skip: frozenset[int] = frozenset()) -> None:
        self._next = 0
        self._n = n_chunks
        self._skip = set(skip)
        self._retry: deque[int] = deque()
        self._advance()

    def _advance(self) -> None:
        while self._next < self._n and self._next in self._skip:
            self._skip.discard(self._next)
            self._next += 1

    def __bool__(self) -> bool:
        return bool(self._retry) or self._next < self._n

    def __len__(self) -> int:
        return len(self._retry) + max(0, self._n - self._next - len(self._skip))

    def pop(self) -> int:
        if self._retry:
            return self._retry.popleft()
        index = self._next
        self._next += 1
        self._advance()
        return index

    def push_retry(self, index: int) -> None:
        self._retry.append(index)

    def clear(self) -> None:
        self._retry.clear()
        self._next = self._n


class FreeWorkers:
    """Workers with a free slot, bucketed by how many they have, so that the worker with the most
    free slots is found without a scan over the pool (the number of buckets is the number of distinct
    slot counts, a handful)."""

    __slots__ = ("_buckets", "_free_of")

    def __init__(self) -> None:
        self._buckets: dict[int, dict[str, None]] = {}
        self._free_of: dict[str, int] = {}

    def set(self, worker_id: str, free: int) -> None:
        old = self._free_of.get(worker_id)
        if old == free:
            return
        if old is not None:
            bucket = self._buckets[old]
            del bucket[worker_id]
            if not bucket:
                del self._buckets[old]
            del self._free_of[worker_id]
        if free > 0:
            self._buckets.setdefault(free, {})[worker_id] = None
            self._free_of[worker_id] = free

    def __bool__(self) -> bool:
        return bool(self._free_of)

    def __len__(self) -> int:
        return len(self._free_of)

    def most_free_first(self) -> Iterator[str]:
        """Worker ids, most free slots first; within a count, longest at that count first. The
        caller must not change the index while it iterates."""
        for free in sorted(self._buckets, reverse=True):
            yield from self._buckets[free]


class LastSeen:
    """Workers ordered by when they were last heard from (the clock only moves forward), so a tick
    finds the silent ones without looking at the others."""

    __slots__ = ("_order",)

    def __init__(self) -> None:
        self._order: OrderedDict[str, float] = OrderedDict()

    def seen(self, worker_id: str, at: float) -> None:
        self._order[worker_id] = at
        self._order.move_to_end(worker_id)

    def forget(self, worker_id: str) -> None:
        self._order.pop(worker_id, None)

    def silent_since(self, deadline: float) -> list[str]:
        """Workers last heard from before ``deadline``, oldest first."""
        out = []
        for worker_id, at in self._order.items():
            if at >= deadline:
                break
            out.append(worker_id)
        return out


@dataclass(slots=True)
class WorkerEntry:
    worker_id: str
    slots: int
    allow_code: bool
    python: str
    resources: dict[str, float]
    last_seen: float
    paused: bool = False
    drained: bool = False
    running: dict[ChunkKey, int] = field(default_factory=dict)  # chunk -> attempt

    @property
    def free(self) -> int:
        if self.paused or self.drained:
            return 0
        return max(0, self.slots - len(self.running))

    @property
    def ahead(self) -> int:
        """Room for chunks held behind the running ones (prefetch): one per slot."""
        if self.paused or self.drained:
            return 0
        return max(0, 2 * self.slots - len(self.running))

    def can_serve(self, req: Requirement) -> bool:
        if req.needs_code and not (self.allow_code and self.python == req.python):
            return False
        return all(self.resources.get(name, 0.0) >= amount for name, amount in req.resources)


@dataclass(slots=True)
class JobEntry:
    job_id: str
    priority: int
    max_attempts: int
    requirement: Requirement
    stage: int
    n_chunks: int
    pending: PendingChunks
    done: int = 0
    # index -> {attempt: (worker, started at)}: one copy normally, two while a backup runs.
    running: dict[int, dict[int, tuple[str, float]]] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)  # index -> attempts started
    failures: dict[int, int] = field(default_factory=dict)  # index -> failed attempts
    losses: dict[int, int] = field(default_factory=dict)  # index -> attempts lost with a worker
    user: str = ""  # who submitted it: the unit of fair share
    # Seconds the latest successful attempts took: what a "typical" chunk of this stage takes.
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=DURATIONS_KEPT))
    median: float | None = None  # typical()'s memo; None: to compute
    # Replicated jobs (replicas > 1), per chunk index being decided: copies still to start, workers
    # that ran a copy (each copy goes to a different one), results in, extra copies asked for.
    replicas: int = 1
    wanting: dict[int, int] = field(default_factory=dict)
    ran_on: dict[int, set[str]] = field(default_factory=dict)
    votes: dict[int, list[Vote]] = field(default_factory=dict)
    extra: dict[int, int] = field(default_factory=dict)

    @property
    def has_work(self) -> bool:
        """Chunks (or copies of replicated chunks) wait to be handed out."""
        return bool(self.pending) or bool(self.wanting)

    def forget_index(self, index: int) -> None:
        for table in (self.wanting, self.ran_on, self.votes, self.extra):
            table.pop(index, None)

    def clear_replicas(self) -> None:
        for table in (self.wanting, self.ran_on, self.votes, self.extra):
            table.clear()

    def copies(self, index: int, worker_id: str, attempt: int) -> bool:
        """Whether ``attempt`` of chunk ``index`` on ``worker_id`` is one of its running copies."""
        copy = self.running.get(index, {}).get(attempt)
        return copy is not None and copy[0] == worker_id

    def took(self, seconds: float) -> None:
        """A successful attempt's duration, for ``typical``."""
        self.durations.append(seconds)
        self.median = None

    def forget_durations(self) -> None:
        self.durations.clear()
        self.median = None

    def typical(self) -> float | None:
        """The median duration of the recent successful attempts, None before the first one (asked on
        every placement decision, so it is computed once per new duration)."""
        if self.median is None and self.durations:
            ordered = sorted(self.durations)
            self.median = ordered[len(ordered) // 2]
        return self.median

    @property
    def stage_finished(self) -> bool:
        return self.done >= self.n_chunks and not self.running and not self.has_work
