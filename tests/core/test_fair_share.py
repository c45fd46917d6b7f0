"""Fair share between users in the pure scheduler: workers are shared between users first, then
between each user's jobs (docs/operations.md, "Sharing the pool between people")."""

from __future__ import annotations

from collections import Counter

from rvidia.core.events import Assign, ChunkSucceeded, JobSubmitted, WorkerJoined
from rvidia.core.scheduler import Scheduler


def make() -> Scheduler:
    return Scheduler(clock=lambda: 1000.0, worker_timeout=10.0)


def assigns(out: list) -> list[Assign]:
    return [i for i in out if isinstance(i, Assign)]


def ok(a: Assign) -> ChunkSucceeded:
    return ChunkSucceeded(a.worker_id, a.job_id, a.stage, a.index, a.attempt)


def run_rounds(s: Scheduler, first: list[Assign], rounds: int) -> Counter[str]:
    """Finish every running chunk ``rounds`` times; count assigned chunks per job."""
    counts: Counter[str] = Counter(a.job_id for a in first)
    running = first
    for _ in range(rounds):
        new = assigns(s.handle(*[ok(a) for a in running]))
        counts.update(a.job_id for a in new)
        running = new
    return counts


def test_user_with_many_jobs_gets_no_more_than_a_user_with_one() -> None:
    s = make()
    out = s.handle(JobSubmitted("a1", 1000, user="alice"), JobSubmitted("a2", 1000, user="alice"),
                   JobSubmitted("a3", 1000, user="alice"), JobSubmitted("b1", 1000, user="bob"),
                   WorkerJoined("w1", slots=2), WorkerJoined("w2", slots=2))
    first = assigns(out)
    assert len(first) == 4
    counts = run_rounds(s, first, 30)
    alice = counts["a1"] + counts["a2"] + counts["a3"]
    assert abs(alice - counts["b1"]) <= 2, counts
    # ... and alice's share is spread over her jobs.
    assert max(counts[j] for j in ("a1", "a2", "a3")) - min(counts[j] for j in ("a1", "a2", "a3")) <= 2, counts


def test_two_users_share_two_one_slot_workers() -> None:
    s = make()
    out = s.handle(WorkerJoined("w1", slots=1), WorkerJoined("w2", slots=1),
                   JobSubmitted("a1", 100, user="alice"), JobSubmitted("a2", 100, user="alice"),
                   JobSubmitted("b1", 100, user="bob"))
    first = assigns(out)
    assert sorted(a.job_id for a in first) in (["a1", "b1"], ["a2", "b1"])


def test_priority_still_comes_before_users() -> None:
    s = make()
    out = s.handle(JobSubmitted("low", 100, priority=0, user="alice"),
                   JobSubmitted("high", 100, priority=5, user="bob"), WorkerJoined("w", slots=4))
    assert {a.job_id for a in assigns(out)} == {"high"}


def test_a_user_whose_jobs_cannot_run_does_not_block_others() -> None:
    from rvidia.core.events import Requirement

    s = make()
    out = s.handle(JobSubmitted("gpu", 100, user="alice", requirement=Requirement(resources=(("gpu", 1.0),))),
                   JobSubmitted("cpu", 100, user="bob"), WorkerJoined("w", slots=3))
    assert [a.job_id for a in assigns(out)] == ["cpu"] * 3


def test_one_user_keeps_the_old_round_robin_between_jobs() -> None:
    s = make()
    out = s.handle(JobSubmitted("j1", 100, user="alice"), JobSubmitted("j2", 100, user="alice"),
                   WorkerJoined("w", slots=4))
    assert Counter(a.job_id for a in assigns(out)) == {"j1": 2, "j2": 2}


def test_jobs_without_a_user_share_as_one() -> None:
    s = make()
    out = s.handle(JobSubmitted("x", 100), JobSubmitted("y", 100), JobSubmitted("z", 100, user="carol"),
                   WorkerJoined("w", slots=4))
    counts = Counter(a.job_id for a in assigns(out))
    assert counts["z"] == 2 and counts["x"] + counts["y"] == 2


def test_per_user_limit_caps_running_chunks_and_frees_slots_for_others() -> None:
    from rvidia.core.events import CancelJob, WorkerLeft

    s = Scheduler(clock=lambda: 1000.0, worker_timeout=10.0, user_limit=2)
    first = assigns(s.handle(JobSubmitted("a1", 100, user="alice"), JobSubmitted("a2", 100, user="alice"),
                             WorkerJoined("w1", slots=3), WorkerJoined("w2", slots=3)))
    assert len(first) == 2  # four more slots stay free: alice is at her limit
    assert s.reason("a1") == "its user already runs 2 chunks, the per-user limit"
    # Finishing one lets exactly one more start.
    again = assigns(s.handle(ok(first[0])))
    assert len(again) == 1
    # Another user is not held back by alice's limit.
    bob = assigns(s.handle(JobSubmitted("b1", 100, user="bob")))
    assert len(bob) == 2 and {a.job_id for a in bob} == {"b1"}
    # Lost and cancelled chunks give the count back.
    running_a = [first[1], again[0]]
    lost_worker = running_a[0].worker_id
    s.handle(WorkerLeft(lost_worker, "gone"))
    s.handle(CancelJob("a1"), CancelJob("a2"), CancelJob("b1"))
    out = assigns(s.handle(JobSubmitted("a3", 10, user="alice")))
    assert len(out) == 2 and {a.job_id for a in out} == {"a3"}


def test_no_limit_by_default() -> None:
    out = assigns(make().handle(JobSubmitted("a1", 100, user="alice"), WorkerJoined("w1", slots=5)))
    assert len(out) == 5
