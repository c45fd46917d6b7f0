"""Replicated jobs in the pure scheduler: copies on different workers, votes, outvoted workers."""

from __future__ import annotations

from rvidia.core.events import (
    AcceptResult, Assign, ChunkFailed, ChunkSucceeded, DropResult, JobFailed, JobSubmitted, Outvoted,
    RetryChunk, StageComplete, WorkerJoined, WorkerLeft,
)
from rvidia.core.scheduler import Scheduler


def make() -> Scheduler:
    return Scheduler(clock=lambda: 1000.0, worker_timeout=10.0)


def of(out: list, kind: type) -> list:
    return [i for i in out if isinstance(i, kind)]


def ok(a: Assign, vote: str = "same") -> ChunkSucceeded:
    return ChunkSucceeded(a.worker_id, a.job_id, a.stage, a.index, a.attempt, vote)


def test_each_chunk_runs_on_as_many_different_workers_and_agreement_accepts_once() -> None:
    s = make()
    out = of(s.handle(WorkerJoined("a", 2), WorkerJoined("b", 2), JobSubmitted("j", 2, replicas=2)), Assign)
    assert sorted((x.index, x.worker_id) for x in out) == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    first = s.handle(ok(out[0]))
    assert not of(first, AcceptResult)  # waits for the other copy
    by_index = {x.index: [y for y in out if y.index == x.index] for x in out}
    second = s.handle(ok(by_index[0][1]))
    accepted = of(second, AcceptResult)
    assert len(accepted) == 1 and accepted[0].index == 0
    assert len(of(second, DropResult)) == 1 and not of(second, Outvoted)  # the twin's result is freed
    done = s.handle(*[ok(x) for x in by_index[1]])
    assert len(of(done, AcceptResult)) == 1 and of(done, StageComplete)


def test_a_disagreement_runs_one_more_copy_elsewhere_and_the_minority_is_outvoted() -> None:
    s = make()
    out = of(s.handle(WorkerJoined("honest", 1), WorkerJoined("liar", 1), JobSubmitted("j", 1, replicas=2)),
             Assign)
    honest = next(x for x in out if x.worker_id == "honest")
    liar = next(x for x in out if x.worker_id == "liar")
    s.handle(ok(honest, "good"))
    out = s.handle(ok(liar, "bad"))
    assert not of(out, AcceptResult) and not of(out, Assign)  # both workers have run it
    assert "has not run that chunk" in (s.reason("j") or "")
    third = of(s.handle(WorkerJoined("judge", 1)), Assign)
    assert [x.worker_id for x in third] == ["judge"]
    out = s.handle(ok(third[0], "good"))
    assert [(x.worker_id, x.attempt) for x in of(out, AcceptResult)] == [("honest", honest.attempt)]
    assert [(x.worker_id, x.winner) for x in of(out, Outvoted)] == [("liar", "honest")]
    assert len(of(out, DropResult)) == 2 and of(out, StageComplete)


def test_no_majority_after_the_extra_copies_fails_the_job_with_the_votes() -> None:
    s = make()
    out = of(s.handle(*[WorkerJoined(f"w{i}", 1) for i in range(4)], JobSubmitted("j", 1, replicas=2)), Assign)
    s.handle(ok(out[0], "x"))
    more = of(s.handle(ok(out[1], "y")), Assign)
    more = of(s.handle(ok(more[0], "z")), Assign)
    out = s.handle(ok(more[0], "w"))
    failed = of(out, JobFailed)
    assert failed and "disagree" in failed[0].error and len(of(out, DropResult)) == 4


def test_a_failed_or_lost_copy_is_run_again_and_its_worker_may_take_it() -> None:
    s = make()
    out = of(s.handle(WorkerJoined("a", 1), WorkerJoined("b", 1), JobSubmitted("j", 1, replicas=2)), Assign)
    on_a = next(x for x in out if x.worker_id == "a")
    on_b = next(x for x in out if x.worker_id == "b")
    again = s.handle(ChunkFailed("a", "j", 0, 0, on_a.attempt, "boom"))
    assert of(again, RetryChunk) and [x.worker_id for x in of(again, Assign)] == ["a"]
    retry = of(again, Assign)[0]
    s.handle(ok(on_b))
    out = s.handle(WorkerLeft("a", "gone"))
    assert of(out, RetryChunk) and not of(out, Assign)  # b voted already: it may not run a second copy
    out = s.handle(WorkerJoined("c", 1))
    assert [x.worker_id for x in of(out, Assign)] == ["c"]
    done = s.handle(ok(of(out, Assign)[0]))
    assert of(done, AcceptResult) and of(done, StageComplete) and retry.attempt > on_a.attempt


def test_too_few_workers_is_the_reason_it_waits() -> None:
    s = make()
    s.handle(WorkerJoined("a", 4), JobSubmitted("j", 3, replicas=2))
    assert s.reason("j") == "replicas=2 needs that many different workers; 1 can run it"
