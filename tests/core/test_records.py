"""Unit tests for the scheduler's in-memory records (PendingChunks, WorkerEntry)."""

from __future__ import annotations

import pytest

from rvidia.core.events import Requirement
from rvidia.core.records import PendingChunks, WorkerEntry


def drain(pending: PendingChunks) -> list[int]:
    out = []
    while pending:
        out.append(pending.pop())
    return out


# ---------------------------------------------------------------- PendingChunks


def test_fresh_indices_come_out_in_order() -> None:
    pending = PendingChunks(5)
    assert len(pending) == 5
    assert drain(pending) == [0, 1, 2, 3, 4]
    assert not pending
    assert len(pending) == 0


def test_empty_is_falsy() -> None:
    pending = PendingChunks(0)
    assert not pending
    assert len(pending) == 0


def test_skip_leaves_out_done_indices() -> None:
    pending = PendingChunks(6, frozenset({0, 2, 3, 5}))
    assert len(pending) == 2
    assert drain(pending) == [1, 4]


def test_skip_everything_is_empty() -> None:
    pending = PendingChunks(3, frozenset({0, 1, 2}))
    assert not pending
    assert len(pending) == 0


def test_len_tracks_pops_with_skips() -> None:
    pending = PendingChunks(10, frozenset({1, 4, 9}))
    expected = [0, 2, 3, 5, 6, 7, 8]
    for i, index in enumerate(expected):
        assert len(pending) == len(expected) - i
        assert pending.pop() == index
    assert len(pending) == 0
    assert not pending


def test_retries_come_before_fresh_indices_in_fifo_order() -> None:
    pending = PendingChunks(4)
    assert pending.pop() == 0
    assert pending.pop() == 1
    pending.push_retry(1)
    pending.push_retry(0)
    assert len(pending) == 4
    assert drain(pending) == [1, 0, 2, 3]


def test_retry_makes_exhausted_pending_truthy_again() -> None:
    pending = PendingChunks(1)
    assert pending.pop() == 0
    assert not pending
    pending.push_retry(0)
    assert pending
    assert len(pending) == 1
    assert pending.pop() == 0
    assert not pending


def test_clear_drops_retries_and_fresh_indices() -> None:
    pending = PendingChunks(10, frozenset({7}))
    pending.pop()
    pending.push_retry(0)
    pending.clear()
    assert not pending
    assert len(pending) == 0


def test_huge_job_is_lazy() -> None:
    pending = PendingChunks(10_000_000, frozenset({0}))
    assert len(pending) == 9_999_999
    assert pending.pop() == 1
    assert len(pending) == 9_999_998


# ---------------------------------------------------------------- WorkerEntry


def make_worker(**kw) -> WorkerEntry:
    args = dict(worker_id="w", slots=2, allow_code=False, python="", resources={}, last_seen=0.0)
    args.update(kw)
    return WorkerEntry(**args)


def test_worker_free_slots() -> None:
    worker = make_worker(slots=2)
    assert worker.free == 2
    worker.running[("j", 0, 0)] = 1
    assert worker.free == 1
    worker.running[("j", 0, 1)] = 1
    worker.running[("j", 0, 2)] = 1  # over-full after a capacity drop: never negative
    assert worker.free == 0


@pytest.mark.parametrize("flag", ["paused", "drained"])
def test_paused_or_drained_worker_has_no_free_slots(flag: str) -> None:
    worker = make_worker(slots=4, **{flag: True})
    assert worker.free == 0


def test_can_serve_code_needs_allow_code_and_same_python() -> None:
    req = Requirement(needs_code=True, python="3.11")
    assert not make_worker().can_serve(req)
    assert not make_worker(allow_code=True, python="3.12").can_serve(req)
    assert make_worker(allow_code=True, python="3.11").can_serve(req)
    assert make_worker().can_serve(Requirement())


def test_can_serve_resources() -> None:
    req = Requirement(resources=(("gpu", 1.0), ("mem_gb", 8.0)))
    assert not make_worker().can_serve(req)
    assert not make_worker(resources={"gpu": 1.0, "mem_gb": 4.0}).can_serve(req)
    assert make_worker(resources={"gpu": 2.0, "mem_gb": 8.0}).can_serve(req)


def test_free_workers_most_free_first_and_moves_between_buckets() -> None:
    from rvidia.core.records import FreeWorkers

    free = FreeWorkers()
    free.set("a", 1)
    free.set("b", 3)
    free.set("c", 3)
    free.set("d", 0)  # no free slot: not listed
    assert list(free.most_free_first()) == ["b", "c", "a"] and len(free) == 3
    free.set("b", 1)  # moved to the end of its new count
    assert list(free.most_free_first()) == ["c", "a", "b"]
    free.set("c", 0)
    free.set("a", 0)
    free.set("b", 0)
    assert not free and list(free.most_free_first()) == []


def test_last_seen_finds_only_the_silent() -> None:
    from rvidia.core.records import LastSeen

    seen = LastSeen()
    for i, name in enumerate("abcd"):
        seen.seen(name, float(i))
    seen.seen("a", 10.0)  # heard again: now the newest
    assert seen.silent_since(2.5) == ["b", "c"]
    seen.forget("b")
    assert seen.silent_since(100.0) == ["c", "d", "a"]
