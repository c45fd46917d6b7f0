"""Prefetch in the pure scheduler: short chunks are held one per slot behind the running ones."""

from __future__ import annotations

from rvidia.core.events import (Assign, CapacityChanged, ChunkHandedBack, ChunkSucceeded, DrainWorker, JobFailed,
                                JobSubmitted, RetryChunk, WorkerJoined)
from rvidia.core.scheduler import MAX_LOSSES, Scheduler


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def assigns(out: list) -> list[Assign]:
    return [i for i in out if isinstance(i, Assign)]


def ok(a: Assign) -> ChunkSucceeded:
    return ChunkSucceeded(a.worker_id, a.job_id, a.stage, a.index, a.attempt)


def started(seconds: float, slots: int = 2) -> tuple[Scheduler, Clock, list[Assign]]:
    """One worker ran the job's first chunk in ``seconds``; returns what came after it."""
    clock = Clock()
    s = Scheduler(clock, worker_timeout=1e9, prefetch_below=0.5)
    first = assigns(s.handle(WorkerJoined("w", slots), JobSubmitted("j", 100)))
    assert len(first) == slots  # nothing known about the job yet: no prefetch
    clock.now += seconds
    return s, clock, first[1:] + assigns(s.handle(ok(first[0])))


def test_short_chunks_fill_one_more_per_slot_and_never_more() -> None:
    s, clock, held = started(0.01)
    assert len(held) == 4 and s.running_on("w") == 4  # 2 slots running, 2 held
    clock.now += 0.01
    again = assigns(s.handle(ok(held[0])))
    assert len(again) == 1 and s.running_on("w") == 4


def test_long_chunks_are_not_held() -> None:
    s, _, held = started(2.0)
    assert len(held) == 2 and s.running_on("w") == 2


def test_free_slots_elsewhere_come_before_prefetch() -> None:
    s, clock, _ = started(0.01)
    out = assigns(s.handle(WorkerJoined("idle", 2)))
    assert [a.worker_id for a in out] == ["idle", "idle", "idle", "idle"]  # its 2 slots, then its 2 held


def test_paused_or_drained_workers_hold_nothing_more() -> None:
    s, clock, held = started(0.01)
    s.handle(CapacityChanged("w", 0, paused=True))
    clock.now += 0.01
    assert not assigns(s.handle(ok(held[0])))
    s2, clock2, held2 = started(0.01)
    s2.handle(DrainWorker("w", True))
    assert not assigns(s2.handle(ok(held2[0])))


def test_nothing_is_held_behind_a_chunk_that_runs_long() -> None:
    """A worker whose chunk has run past speculation_min gets no prefetched chunk: it would wait there
    while other workers could run it."""
    clock = Clock()
    s = Scheduler(clock, worker_timeout=1e9, prefetch_below=0.5, speculation_min=1.0)
    first = assigns(s.handle(WorkerJoined("w", 1), JobSubmitted("j", 100)))
    clock.now += 0.01
    nxt = assigns(s.handle(ok(first[0])))  # the next chunk runs, one more is held behind it
    assert len(nxt) == 2 and s.running_on("w") == 2
    clock.now += 5.0  # nxt[0] runs long
    # The held chunk starts now, but from the master's view it has waited 5 s: nothing more is held.
    assert not assigns(s.handle(ok(nxt[0]))) and s.running_on("w") == 1
    clock.now += 0.01
    s2 = assigns(s.handle(WorkerJoined("x", 1)))
    assert s2 and all(a.worker_id == "x" for a in s2)  # the other worker takes the work meanwhile


def test_a_chunk_given_back_unstarted_is_no_loss() -> None:
    """Held chunks handed back before they ran go round again as often as needed; a chunk given back
    after it ran counts toward MAX_LOSSES."""
    for unstarted, fails in ((True, False), (False, True)):
        s = Scheduler(Clock(), worker_timeout=1e9, prefetch_below=0)
        a = assigns(s.handle(WorkerJoined("w", 1), JobSubmitted("j", 1)))[0]
        out: list = []
        for _ in range(MAX_LOSSES + 2):
            out = s.handle(ChunkHandedBack("w", "j", a.stage, a.index, a.attempt, "held", unstarted))
            if any(isinstance(i, JobFailed) for i in out):
                break
            assert any(isinstance(i, RetryChunk) for i in out)
            a = assigns(out)[0]
        assert any(isinstance(i, JobFailed) for i in out) is fails
