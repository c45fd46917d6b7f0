"""Unit tests for the pure scheduler state machine (rvidia.core.scheduler)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from collections import Counter

import pytest

from rvidia.core.events import (
    AcceptResult, Assign, CancelChunk, CancelJob, CapacityChanged, ChunkFailed, ChunkSucceeded,
    DrainWorker, DropResult, FinishJob, JobFailed, JobSubmitted, Requirement, RetryChunk,
    StageComplete, StageStarted, Tick, WorkerJoined, WorkerLeft, WorkerLost, WorkerSeen,
)
from rvidia.core.scheduler import MAX_LOSSES, Scheduler

TIMEOUT = 10.0


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make() -> tuple[Scheduler, FakeClock]:
    clock = FakeClock()
    return Scheduler(clock=clock, worker_timeout=TIMEOUT, prefetch_below=0), clock  # exact slots


def of(out: list, kind: type) -> list:
    return [i for i in out if isinstance(i, kind)]


def ok(a: Assign) -> ChunkSucceeded:
    return ChunkSucceeded(a.worker_id, a.job_id, a.stage, a.index, a.attempt)


def fail(a: Assign, error: str = "boom") -> ChunkFailed:
    return ChunkFailed(a.worker_id, a.job_id, a.stage, a.index, a.attempt, error)


CODE = Requirement(needs_code=True, python="3.11")


# ---------------------------------------------------------------- bounded in-flight


def test_worker_never_gets_more_than_its_slots() -> None:
    s, _ = make()
    assigns = of(s.handle(WorkerJoined("w", slots=3), JobSubmitted("j", 10)), Assign)
    assert len(assigns) == 3 and s.running_on("w") == 3
    assert s.handle() == []  # nothing freed, nothing new
    out = s.handle(ok(assigns[0]))
    assert of(out, AcceptResult) == [AcceptResult("w", "j", 0, assigns[0].index, 1)]
    assert [a.index for a in of(out, Assign)] == [3]
    assert s.running_on("w") == 3


def test_hundred_chunks_two_single_slot_workers_only_two_running() -> None:
    s, _ = make()
    out = s.handle(WorkerJoined("w1", 1), WorkerJoined("w2", 1), JobSubmitted("j", 100))
    running = {a.index: a for a in of(out, Assign)}
    accepted: list[int] = []
    completes = 0
    while running:
        assert len(running) <= 2
        assert len({a.worker_id for a in running.values()}) == len(running)  # one per worker
        assert s.running_on("w1") <= 1 and s.running_on("w2") <= 1
        index = min(running)
        out = s.handle(ok(running.pop(index)))
        accepted += [r.index for r in of(out, AcceptResult)]
        completes += len(of(out, StageComplete))
        for a in of(out, Assign):
            running[a.index] = a
    assert sorted(accepted) == list(range(100))
    assert completes == 1


def test_job_spreads_over_workers() -> None:
    s, _ = make()
    out = s.handle(WorkerJoined("w1", 2), WorkerJoined("w2", 2), JobSubmitted("j", 2))
    assert {a.worker_id for a in of(out, Assign)} == {"w1", "w2"}


# ---------------------------------------------------------------- fairness


def test_equal_priority_jobs_alternate_in_one_pass() -> None:
    s, _ = make()
    out = s.handle(JobSubmitted("a", 10), JobSubmitted("b", 10), WorkerJoined("w", 4))
    assert [a.job_id for a in of(out, Assign)] == ["a", "b", "a", "b"]


def test_equal_priority_jobs_alternate_as_slots_free() -> None:
    s, _ = make()
    out = s.handle(JobSubmitted("a", 10), JobSubmitted("b", 10), WorkerJoined("w", 1))
    order = []
    (current,) = of(out, Assign)
    for _ in range(8):
        order.append(current.job_id)
        (current,) = of(s.handle(ok(current)), Assign)
    assert order == ["a", "b"] * 4


def test_higher_priority_gets_free_slots_first() -> None:
    s, _ = make()
    out = s.handle(JobSubmitted("low", 5), JobSubmitted("high", 3, priority=5), WorkerJoined("w", 2))
    first = of(out, Assign)
    assert [a.job_id for a in first] == ["high", "high"]
    assert [a.job_id for a in of(s.handle(ok(first[0])), Assign)] == ["high"]  # one more waiting
    assert [a.job_id for a in of(s.handle(ok(first[1])), Assign)] == ["low"]  # high has none left


def test_lower_priority_runs_where_higher_cannot() -> None:
    s, _ = make()
    out = s.handle(
        JobSubmitted("high", 10, priority=9, requirement=CODE),
        JobSubmitted("low", 10),
        WorkerJoined("plain", 2),
        WorkerJoined("coder", 1, allow_code=True, python="3.11"),
    )
    placed = {(a.worker_id, a.job_id) for a in of(out, Assign)}
    assert placed == {("coder", "high"), ("plain", "low")}
    assert s.running_on("plain") == 2 and s.running_on("coder") == 1


# ---------------------------------------------------------------- retries


def test_failed_chunk_is_retried_and_reassigned() -> None:
    s, _ = make()
    (a,) = of(s.handle(WorkerJoined("w", 1), JobSubmitted("j", 1, max_attempts=3)), Assign)
    out = s.handle(fail(a, "ZeroDivisionError: x"))
    assert of(out, RetryChunk) == [RetryChunk("j", 0, 0, "ZeroDivisionError: x", lost=False)]
    assert of(out, Assign) == [Assign("w", "j", 0, 0, 2)]
    assert not of(out, JobFailed)


def test_job_fails_after_max_attempts_with_real_error_and_cancels_the_rest() -> None:
    s, _ = make()
    out = s.handle(WorkerJoined("w1", 1), WorkerJoined("w2", 1), JobSubmitted("j", 5, max_attempts=3))
    by_index = {a.index: a for a in of(out, Assign)}
    a0, other = by_index[0], by_index[1]
    for attempt in (1, 2):
        assert a0.attempt == attempt
        out = s.handle(fail(a0, f"ValueError: bad row {attempt}"))
        assert len(of(out, RetryChunk)) == 1
        (a0,) = of(out, Assign)
        assert a0.index == 0
    out = s.handle(fail(a0, "ValueError: bad row 17"))
    (failed,) = of(out, JobFailed)
    assert failed.job_id == "j" and "ValueError: bad row 17" in failed.error
    assert of(out, CancelChunk) == [CancelChunk(other.worker_id, "j", 0, 1, 1)]
    assert not of(out, Assign) and not of(out, RetryChunk)
    # the cancelled chunk's result arriving later is dropped; nothing else runs
    out = s.handle(ok(other))
    assert of(out, DropResult) and not of(out, AcceptResult) and not of(out, Assign)
    assert s.running_on("w1") == 0 and s.running_on("w2") == 0


def test_persisted_failures_count_towards_max_attempts() -> None:
    s, _ = make()
    out = s.handle(WorkerJoined("w", 1),
                   JobSubmitted("j", 1, max_attempts=3, attempts={0: 2}, failures={0: 2}))
    (a,) = of(out, Assign)
    assert a.attempt == 3
    out = s.handle(fail(a, "still broken"))
    (failed,) = of(out, JobFailed)
    assert "still broken" in failed.error


# ---------------------------------------------------------------- worker loss


def test_worker_left_requeues_and_reassigns_to_another_worker() -> None:
    s, _ = make()
    out = s.handle(WorkerJoined("w1", 2), JobSubmitted("j", 2))
    assert {a.worker_id for a in of(out, Assign)} == {"w1"}
    assert of(s.handle(WorkerJoined("w2", 2)), Assign) == []
    out = s.handle(WorkerLeft("w1", "connection closed"))
    assert of(out, WorkerLost) == [WorkerLost("w1", "connection closed")]
    assert sorted(r.index for r in of(out, RetryChunk)) == [0, 1]
    assert all("w1" in r.error and r.lost for r in of(out, RetryChunk))
    assert sorted((a.worker_id, a.index, a.attempt) for a in of(out, Assign)) == [
        ("w2", 0, 2), ("w2", 1, 2)]
    assert s.running_on("w1") == 0


def test_heartbeat_timeout_declares_worker_lost() -> None:
    s, clock = make()
    (a,) = of(s.handle(WorkerJoined("w", 1), JobSubmitted("j", 1)), Assign)
    clock.advance(TIMEOUT)
    assert s.handle(Tick()) == []  # exactly at the limit: still alive
    clock.advance(0.5)
    out = s.handle(Tick())
    (lost,) = of(out, WorkerLost)
    assert lost.worker_id == "w" and "heartbeat" in lost.reason
    (retry,) = of(out, RetryChunk)
    assert (retry.job_id, retry.stage, retry.index, retry.lost) == ("j", 0, 0, True)
    # the chunk goes to a fresh worker with a new attempt number
    out = s.handle(WorkerJoined("w2", 1))
    assert of(out, Assign) == [Assign("w2", "j", 0, 0, 2)]


def test_worker_seen_keeps_worker_alive() -> None:
    s, clock = make()
    s.handle(WorkerJoined("quiet", 1), WorkerJoined("chatty", 1), JobSubmitted("j", 2))
    for _ in range(3):  # 18 s in all, the chatty one heard from every 6 s
        clock.advance(TIMEOUT * 0.6)
        out = s.handle(WorkerSeen("chatty"), Tick())
        assert "chatty" not in {w.worker_id for w in of(out, WorkerLost)}
    assert "chatty" in s.workers and "quiet" not in s.workers
    assert s.running_on("chatty") == 1


def test_losses_do_not_count_against_max_attempts() -> None:
    s, _ = make()
    (a,) = of(s.handle(WorkerJoined("w0", 1), JobSubmitted("j", 1, max_attempts=1)), Assign)
    for n in range(1, 5):
        out = s.handle(WorkerLeft(a.worker_id, "bye"), WorkerJoined(f"w{n}", 1))
        assert not of(out, JobFailed)
        (a,) = of(out, Assign)
        assert a.attempt == n + 1
    out = s.handle(ok(a))
    assert of(out, AcceptResult) and of(out, StageComplete)


def test_chunk_lost_with_too_many_workers_fails_the_job() -> None:
    s, _ = make()
    (a,) = of(s.handle(WorkerJoined("w0", 1), JobSubmitted("j", 1)), Assign)
    for n in range(1, MAX_LOSSES):
        (a,) = of(s.handle(WorkerLeft(a.worker_id, "bye"), WorkerJoined(f"w{n}", 1)), Assign)
    out = s.handle(WorkerLeft(a.worker_id, "bye"))
    (failed,) = of(out, JobFailed)
    assert "lost" in failed.error
    assert "j" not in s.jobs


def test_worker_reconnecting_with_same_id_requeues_its_chunks() -> None:
    s, _ = make()
    (a,) = of(s.handle(WorkerJoined("w", 1), JobSubmitted("j", 1)), Assign)
    out = s.handle(WorkerJoined("w", 1))
    assert of(out, WorkerLost)[0].worker_id == "w"
    (b,) = of(out, Assign)
    assert (b.worker_id, b.index, b.attempt) == ("w", 0, 2)
    # the old attempt's result from the same worker id is late, not current
    assert of(s.handle(ok(a)), DropResult)
    assert of(s.handle(ok(b)), AcceptResult)


# ---------------------------------------------------------------- late and duplicate results


def test_late_result_after_reassignment_is_dropped() -> None:
    s, _ = make()
    (old,) = of(s.handle(WorkerJoined("w1", 1), JobSubmitted("j", 1)), Assign)
    s.handle(WorkerLeft("w1", "gone"))
    out = s.handle(ok(old))  # late while the chunk waits for a worker
    assert of(out, DropResult) and not of(out, AcceptResult)
    (new,) = of(s.handle(WorkerJoined("w2", 1)), Assign)
    out = s.handle(ok(old))  # late after the chunk was re-assigned
    assert of(out, DropResult) and not of(out, AcceptResult)
    out = s.handle(fail(old))  # a late failure does not trigger a retry either
    assert of(out, DropResult) and not of(out, RetryChunk)
    out = s.handle(ok(new))
    assert of(out, AcceptResult) == [AcceptResult("w2", "j", 0, 0, 2)]


def test_duplicate_success_is_accepted_once() -> None:
    s, _ = make()
    (a,) = of(s.handle(WorkerJoined("w", 1), JobSubmitted("j", 2)), Assign)
    first, second = s.handle(ok(a)), s.handle(ok(a))
    assert len(of(first, AcceptResult)) == 1
    assert not of(second, AcceptResult)
    assert of(second, DropResult)[0].why == "chunk re-assigned or already done"


def test_result_for_cancelled_job_is_dropped() -> None:
    s, _ = make()
    (a,) = of(s.handle(WorkerJoined("w", 1), JobSubmitted("j", 1)), Assign)
    s.handle(CancelJob("j"))
    out = s.handle(ok(a))
    assert out == [DropResult("w", "j", 0, 0, 1, "job finished or cancelled")]
    out = s.handle(ChunkSucceeded("w", "never-submitted", 0, 0, 1))
    assert of(out, DropResult) and not of(out, AcceptResult)


# ---------------------------------------------------------------- cancel


def test_cancel_job_cancels_running_chunks_and_stops_assigning() -> None:
    s, _ = make()
    out = s.handle(WorkerJoined("w1", 2), WorkerJoined("w2", 1), JobSubmitted("j", 10))
    running = of(out, Assign)
    out = s.handle(CancelJob("j"))
    assert sorted(of(out, CancelChunk), key=lambda c: c.index) == [
        CancelChunk(a.worker_id, "j", 0, a.index, a.attempt) for a in sorted(running, key=lambda a: a.index)]
    assert not of(out, Assign)
    assert s.running_on("w1") == 0 and s.running_on("w2") == 0
    # freed slots stay free for this job, but another job gets them
    assert of(s.handle(WorkerJoined("w3", 1)), Assign) == []
    out = s.handle(JobSubmitted("other", 5))
    assert {a.job_id for a in of(out, Assign)} == {"other"} and len(of(out, Assign)) == 4
    assert s.reason("j") is None


def test_finish_job_forgets_it() -> None:
    s, _ = make()
    (a,) = of(s.handle(WorkerJoined("w", 1), JobSubmitted("j", 3)), Assign)
    out = s.handle(FinishJob("j"))
    assert of(out, CancelChunk) == [CancelChunk("w", "j", 0, a.index, 1)]
    assert "j" not in s.jobs and s.running_on("w") == 0


# ---------------------------------------------------------------- stages


def test_stage_complete_only_after_the_last_chunk() -> None:
    s, _ = make()
    out = s.handle(WorkerJoined("w", 3), JobSubmitted("j", 3))
    a, b, c = of(out, Assign)
    assert not of(s.handle(ok(a)), StageComplete)
    assert not of(s.handle(ok(c)), StageComplete)
    out = s.handle(ok(b))
    assert of(out, StageComplete) == [StageComplete("j", 0)]
    assert out.index(of(out, AcceptResult)[0]) < out.index(StageComplete("j", 0))
    assert not of(s.handle(ok(b)), StageComplete)  # a duplicate does not complete it again


def test_stage_started_runs_the_new_stage_and_drops_old_results() -> None:
    s, _ = make()
    (a,) = of(s.handle(WorkerJoined("w", 2), JobSubmitted("j", 1)), Assign)
    # fail once so that stage 0 has a stale attempt 1 besides the accepted attempt 2
    (a2,) = of(s.handle(fail(a)), Assign)
    assert of(s.handle(ok(a2)), StageComplete) == [StageComplete("j", 0)]
    out = s.handle(StageStarted("j", 1, 3))
    assigns = of(out, Assign)
    assert sorted((x.stage, x.index, x.attempt) for x in assigns) == [(1, 0, 1), (1, 1, 1)]
    out = s.handle(ok(a2), ChunkSucceeded("w", "j", 0, 0, 1))  # stage 0 results are old now
    assert len(of(out, DropResult)) == 2 and not of(out, AcceptResult)
    (third,) = of(s.handle(*[ok(x) for x in assigns]), Assign)
    assert (third.stage, third.index) == (1, 2)
    assert of(s.handle(ok(third)), StageComplete) == [StageComplete("j", 1)]


def test_zero_chunk_job_completes_at_once() -> None:
    s, _ = make()
    assert s.handle(JobSubmitted("j", 0)) == [StageComplete("j", 0)]  # even with no workers
    assert s.handle(WorkerJoined("w", 1)) == []
    out = s.handle(StageStarted("j", 1, 0))
    assert out == [StageComplete("j", 1)]


# ---------------------------------------------------------------- rebuild from persisted state


def test_rebuild_assigns_only_unfinished_chunks_and_continues_attempts() -> None:
    s, _ = make()
    out = s.handle(WorkerJoined("w", 10),
                   JobSubmitted("j", 5, stage=2, done=frozenset({0, 2}), attempts={1: 2, 3: 1}))
    assigns = of(out, Assign)
    assert sorted((a.stage, a.index, a.attempt) for a in assigns) == [(2, 1, 3), (2, 3, 2), (2, 4, 1)]
    completes = []
    for a in assigns:
        completes += of(s.handle(ok(a)), StageComplete)
    assert completes == [StageComplete("j", 2)]


def test_rebuild_with_everything_done_completes_at_once() -> None:
    s, _ = make()
    out = s.handle(WorkerJoined("w", 1), JobSubmitted("j", 3, done=frozenset({0, 1, 2})))
    assert out == [StageComplete("j", 0)]


# ---------------------------------------------------------------- reason()


@pytest.mark.parametrize("setup, requirement, expected", [
    ((), Requirement(), "no workers connected"),
    ((WorkerJoined("plain", 1), WorkerJoined("py312", 1, allow_code=True, python="3.12")), CODE,
     "no worker started with --allow-code and Python 3.11"),
    ((WorkerJoined("w", 1, resources=(("gpu", 1.0),)),), Requirement(resources=(("gpu", 2.0),)),
     "no worker has the resources asked (gpu=2)"),
    ((WorkerJoined("w", 1), DrainWorker("w")), Requirement(),
     "every worker that could run it is paused or drained"),
    ((WorkerJoined("w", 1), CapacityChanged("w", 1, paused=True)), Requirement(),
     "every worker that could run it is paused or drained"),
])
def test_reason_explains_why_a_job_cannot_run(setup: tuple, requirement: Requirement, expected: str) -> None:
    s, _ = make()
    s.handle(*setup, JobSubmitted("j", 2, requirement=requirement))
    assert s.reason("j") == expected


def test_reason_none_when_a_worker_can_serve() -> None:
    s, _ = make()
    s.handle(WorkerJoined("w", 1, allow_code=True, python="3.11"), JobSubmitted("j", 5, requirement=CODE))
    assert s.running_on("w") == 1
    assert s.reason("j") is None  # busy but able: just waiting its turn
    assert s.reason("unknown") is None


# ---------------------------------------------------------------- drain and capacity


def test_drain_stops_new_assignments_and_undrain_resumes() -> None:
    s, _ = make()
    (a,) = of(s.handle(WorkerJoined("w", 1), WorkerJoined("d", 1), DrainWorker("d"),
                       JobSubmitted("j", 3)), Assign)
    assert a.worker_id == "w" and s.running_on("d") == 0
    s.handle(DrainWorker("w"))
    out = s.handle(ok(a))  # the running chunk still counts
    assert of(out, AcceptResult) and not of(out, Assign)
    assert s.handle(Tick()) == []
    out = s.handle(DrainWorker("w", drain=False))
    assert [(x.worker_id, x.index) for x in of(out, Assign)] == [("w", 1)]


def test_paused_capacity_stops_assignments_and_resume_restarts() -> None:
    s, _ = make()
    (a,) = of(s.handle(WorkerJoined("w", 1), JobSubmitted("j", 5)), Assign)
    out = s.handle(CapacityChanged("w", 1, paused=True), ok(a))
    assert of(out, AcceptResult) and not of(out, Assign)
    out = s.handle(CapacityChanged("w", 3))
    assert len(of(out, Assign)) == 3 and s.running_on("w") == 3


def test_capacity_drop_does_not_cancel_but_blocks_until_below() -> None:
    s, _ = make()
    running = of(s.handle(WorkerJoined("w", 3), JobSubmitted("j", 10)), Assign)
    out = s.handle(CapacityChanged("w", 1))
    assert not of(out, CancelChunk) and not of(out, Assign)
    assert not of(s.handle(ok(running[0])), Assign)  # 2 running, 1 slot
    assert not of(s.handle(ok(running[1])), Assign)  # 1 running, 1 slot
    assert len(of(s.handle(ok(running[2])), Assign)) == 1


@pytest.mark.parametrize("speculation, prefetch", [(0.0, 0.0), (2.0, 0.0), (2.0, 5.0)],
                         ids=["plain", "speculative", "prefetch"])
@pytest.mark.parametrize("seed", range(300))
def test_random_interleaving_accepts_each_index_exactly_once(seed: int, speculation: float, prefetch: float) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    s = Scheduler(clock=clock, worker_timeout=TIMEOUT, speculation=speculation, speculation_min=1.0,
                  prefetch_below=prefetch)
    per_slot = 2 if prefetch else 1  # with prefetch a worker holds one more chunk per slot
    n_chunks = {"a": rng.randint(0, 30), "b": rng.randint(1, 30)}
    # The copies the scheduler considers running: (job, index, attempt) -> Assign. One per chunk, or
    # two while a speculative backup runs.
    live: dict[tuple[str, int, int], Assign] = {}

    def copies(job_id: str, index: int) -> list[Assign]:
        return [a for a in live.values() if (a.job_id, a.index) == (job_id, index)]
    history: list[Assign] = []
    workers: dict[str, int] = {}  # connected worker -> slots
    paused: set[str] = set()
    drained: set[str] = set()
    accepted: Counter = Counter()
    completes: Counter = Counter()
    losses = 0  # loss events so far; kept below MAX_LOSSES so no job may fail

    def apply(out: list) -> None:
        for ins in out:
            assert not isinstance(ins, JobFailed), ins
            if isinstance(ins, Assign):
                key = (ins.job_id, ins.index)
                others = copies(*key)
                if ins.backup:
                    assert speculation and len(others) == 1 and others[0].worker_id != ins.worker_id, ins
                else:
                    assert not others, f"{key} assigned twice"
                assert accepted[key] == 0, f"{key} assigned after it was accepted"
                w = ins.worker_id
                assert w in workers and w not in paused and w not in drained
                live[(*key, ins.attempt)] = ins
                history.append(ins)
                assert sum(1 for a in live.values() if a.worker_id == w) <= per_slot * workers[w]
            elif isinstance(ins, CancelChunk):  # only the losing copy of a chunk just accepted
                a = live.pop((ins.job_id, ins.index, ins.attempt))
                assert a.worker_id == ins.worker_id and accepted[(ins.job_id, ins.index)] == 1
            elif isinstance(ins, WorkerLost):
                for key in [k for k, a in live.items() if a.worker_id == ins.worker_id]:
                    del live[key]
            elif isinstance(ins, AcceptResult):
                accepted[(ins.job_id, ins.index)] += 1
            elif isinstance(ins, StageComplete):
                completes[ins.job_id] += 1
                n = n_chunks[ins.job_id]
                assert sum(accepted[(ins.job_id, i)] for i in range(n)) == n
        for w in workers:
            assert s.running_on(w) == sum(1 for a in live.values() if a.worker_id == w)

    def forget(worker_id: str) -> None:
        workers.pop(worker_id, None)
        paused.discard(worker_id)
        drained.discard(worker_id)

    apply(s.handle(JobSubmitted("a", n_chunks["a"], max_attempts=10**6),
                   JobSubmitted("b", n_chunks["b"], priority=rng.choice([0, 1]), max_attempts=10**6)))
    for _ in range(250):
        action = rng.choice(["ok", "ok", "ok", "fail", "stale", "join", "leave", "timeout",
                             "tick", "capacity", "drain"])
        can_lose = losses < MAX_LOSSES - 1
        if action in ("ok", "fail") and live:
            a = live.pop(rng.choice(sorted(live)))
            out = s.handle(ok(a) if action == "ok" else fail(a))
            expected = 1 if action == "ok" or not copies(a.job_id, a.index) else 0
            assert len(of(out, AcceptResult if action == "ok" else RetryChunk)) == expected
            apply(out)
        elif action == "stale" and history:
            a = rng.choice(history)  # late, duplicate or cancelled by a loss, unless still live
            if (a.job_id, a.index, a.attempt) not in live:
                out = s.handle(ok(a) if rng.random() < 0.7 else fail(a))
                assert len(of(out, DropResult)) == 1
                assert not of(out, AcceptResult) and not of(out, RetryChunk) and not of(out, Assign)
        elif action == "join" or not workers:
            worker_id = f"w{rng.randint(0, 6)}"  # may be a rejoin, or a reconnect of a live id
            if worker_id in workers:
                if not can_lose:
                    continue
                losses += 1
            forget(worker_id)
            workers[worker_id] = rng.randint(1, 3)
            apply(s.handle(WorkerJoined(worker_id, workers[worker_id])))
        elif action in ("leave", "timeout") and can_lose:
            losses += 1
            victim = rng.choice(sorted(workers))
            if action == "leave":
                out = s.handle(WorkerLeft(victim, "bye"))
            else:  # everyone else says hello just before the tick
                clock.advance(TIMEOUT + 1)
                out = s.handle(*[WorkerSeen(w) for w in workers if w != victim], Tick())
            assert [w.worker_id for w in of(out, WorkerLost)] == [victim]
            forget(victim)
            apply(out)
        elif action == "tick":
            clock.advance(TIMEOUT / 3)
            out = s.handle(*[WorkerSeen(w) for w in workers], Tick())
            assert not of(out, WorkerLost)
            apply(out)
        elif action == "capacity":
            w = rng.choice(sorted(workers))
            workers[w], pause = rng.randint(0, 3), rng.random() < 0.3
            paused.add(w) if pause else paused.discard(w)
            apply(s.handle(CapacityChanged(w, workers[w], paused=pause)))
        elif action == "drain":
            w = rng.choice(sorted(workers))
            drain = rng.random() < 0.5
            drained.add(w) if drain else drained.discard(w)
            apply(s.handle(DrainWorker(w, drain)))
    # finish: unblock every worker and let all running chunks succeed
    for w in sorted(workers):
        workers[w] = max(workers[w], 1)
        paused.discard(w)
        drained.discard(w)
        apply(s.handle(CapacityChanged(w, workers[w]), DrainWorker(w, False)))
    if not workers:
        workers["final"] = 2
        apply(s.handle(WorkerJoined("final", 2)))
    for _ in range(1000):
        if not live:
            break
        apply(s.handle(ok(live.pop(min(live)))))
    assert not live
    for job, n in n_chunks.items():
        assert all(accepted[(job, i)] == 1 for i in range(n)), job
        assert completes[job] == 1, job
    assert sum(accepted.values()) == sum(n_chunks.values())
