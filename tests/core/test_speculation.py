"""Speculative execution in the pure scheduler: backups for stragglers at a job's tail."""

from __future__ import annotations

from rvidia.core.events import (
    AcceptResult, Assign, CancelChunk, ChunkFailed, ChunkSucceeded, DropResult, JobSubmitted, RetryChunk,
    StageComplete, Tick, WorkerJoined, WorkerLeft, WorkerSeen,
)
from rvidia.core.scheduler import Scheduler



class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def of(out: list, kind: type) -> list:
    return [i for i in out if isinstance(i, kind)]


def ok(a: Assign) -> ChunkSucceeded:
    return ChunkSucceeded(a.worker_id, a.job_id, a.stage, a.index, a.attempt)


def fail(a: Assign) -> ChunkFailed:
    return ChunkFailed(a.worker_id, a.job_id, a.stage, a.index, a.attempt, "boom")


def make(speculation: float = 2.0, minimum: float = 1.0) -> tuple[Scheduler, FakeClock]:
    clock = FakeClock()
    return Scheduler(clock, worker_timeout=1e9, speculation=speculation, speculation_min=minimum,
                     prefetch_below=0), clock


def tail_with_straggler(s: Scheduler, clock: FakeClock, n: int = 4) -> Assign:
    """Workers 'slow' and 'fast' (1 slot each) run a job of n chunks; 'fast' finishes all but the
    one 'slow' took first, each in 1 s. Returns the straggler's assignment."""
    first = of(s.handle(WorkerJoined("slow", 1), WorkerJoined("fast", 1), JobSubmitted("j", n)), Assign)
    straggler = next(a for a in first if a.worker_id == "slow")
    current = next(a for a in first if a.worker_id == "fast")
    for _ in range(n - 1):
        clock.advance(1.0)
        out = of(s.handle(ok(current)), Assign)
        if out:
            current = out[0]
            assert current.worker_id == "fast" and not current.backup
    return straggler


def test_a_straggler_at_the_tail_gets_one_backup_and_the_first_result_wins() -> None:
    s, clock = make()
    straggler = tail_with_straggler(s, clock)
    clock.advance(0.5)  # the straggler has run 3.5 s; typical is 1 s, so the limit is 2 s
    out = s.handle(Tick())
    backup = of(out, Assign)
    assert len(backup) == 1 and backup[0].backup and backup[0].worker_id == "fast"
    assert (backup[0].index, backup[0].attempt) == (straggler.index, straggler.attempt + 1)
    assert s.running_chunks("j") == 1 and s.running_on("slow") == 1 and s.running_on("fast") == 1
    assert not of(s.handle(Tick()), Assign)  # one backup per chunk at most
    out = s.handle(ok(backup[0]))
    assert of(out, AcceptResult) and of(out, StageComplete)
    assert of(out, CancelChunk) == [CancelChunk("slow", "j", 0, straggler.index, straggler.attempt)]
    assert s.running_on("slow") == 0 and s.running_chunks("j") == 0
    late = s.handle(ok(straggler))  # the cancelled copy's result, had it raced the cancel
    assert of(late, DropResult) and not of(late, AcceptResult)


def test_the_original_may_still_win() -> None:
    s, clock = make()
    straggler = tail_with_straggler(s, clock)
    clock.advance(5)
    backup = of(s.handle(Tick()), Assign)[0]
    out = s.handle(ok(straggler))
    assert of(out, AcceptResult)[0].worker_id == "slow"
    assert of(out, CancelChunk) == [CancelChunk("fast", "j", 0, backup.index, backup.attempt)]


def test_no_backup_before_the_tail_or_before_the_limit() -> None:
    s, clock = make()
    first = of(s.handle(WorkerJoined("a", 1), WorkerJoined("b", 1), JobSubmitted("j", 10)), Assign)
    clock.advance(1.0)
    nxt = of(s.handle(ok(first[0])), Assign)  # chunks still pending: free slots take those
    clock.advance(100)
    assert not [a for a in of(s.handle(Tick()), Assign) if a.backup]
    assert nxt
    s2, clock2 = make()
    tail_with_straggler(s2, clock2, n=2)  # the straggler has run 1 s: not yet twice the typical chunk
    assert not of(s2.handle(Tick()), Assign)
    clock2.advance(1.1)
    assert len(of(s2.handle(Tick()), Assign)) == 1


def test_the_minimum_keeps_tiny_chunks_from_being_copied() -> None:
    s, clock = make(minimum=10.0)
    tail_with_straggler(s, clock)
    clock.advance(5.0)  # far above 2x the 1 s typical, below the 10 s minimum
    assert not of(s.handle(Tick()), Assign)
    clock.advance(6.0)
    assert len(of(s.handle(Tick()), Assign)) == 1


def test_off_when_the_factor_is_zero() -> None:
    s, clock = make(speculation=0.0)
    tail_with_straggler(s, clock)
    clock.advance(1000)
    assert not of(s.handle(Tick()), Assign)


def test_a_failed_copy_while_the_other_runs_is_not_retried() -> None:
    s, clock = make()
    straggler = tail_with_straggler(s, clock)
    clock.advance(5)
    backup = of(s.handle(Tick()), Assign)[0]
    out = s.handle(fail(backup))
    assert not of(out, RetryChunk) and s.running_chunks("j") == 1
    out = s.handle(ok(straggler))
    assert of(out, AcceptResult) and of(out, StageComplete)


def test_losing_the_stragglers_worker_keeps_the_backup_running() -> None:
    s, clock = make()
    tail_with_straggler(s, clock)
    clock.advance(5)
    backup = of(s.handle(Tick()), Assign)[0]
    out = s.handle(WorkerLeft("slow", "gone"))
    assert not of(out, RetryChunk) and not of(out, Assign) and s.running_chunks("j") == 1
    assert of(s.handle(ok(backup)), StageComplete)


def test_a_backup_never_goes_to_the_stragglers_own_worker() -> None:
    s, clock = make()
    first = of(s.handle(WorkerJoined("slow", 2), WorkerJoined("fast", 1), JobSubmitted("j", 3)), Assign)
    on_fast = next(a for a in first if a.worker_id == "fast")
    clock.advance(1.0)
    s.handle(ok(on_fast))  # 'fast' is now free, 'slow' runs two chunks and has no free slot
    clock.advance(5)
    backups = of(s.handle(WorkerSeen("slow"), Tick()), Assign)
    assert len(backups) == 1 and backups[0].worker_id == "fast"
