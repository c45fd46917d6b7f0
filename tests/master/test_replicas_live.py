"""Replicated jobs on a live master: a dishonest worker is outvoted and flagged, the result is exact.

The workers are hand-written protocol peers (see test_ws_worker.py): the honest ones compute each
montecarlo chunk for real, the liar returns a wrong count.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import msgspec
import pytest

from .live_master import LiveMaster, async_wait_until
from .test_ws_worker import SAMPLES, CHUNK, FakeWorker, expected_inside, outcome, wait_job, workers
from rvidia.protocol import messages as m


class Liar(FakeWorker):
    """Answers every chunk with a count that is off by one."""

    async def _answer(self, tasks: list[m.ChunkTask]) -> None:
        items = []
        for task in tasks:
            right = msgspec.msgpack.decode(outcome(task).result)
            items.append(outcome(task, result=msgspec.msgpack.encode(right + 1)))
        await self.send(m.Results(items=items))
        self.sent.extend(items)


@pytest.fixture
def master(tmp_path_factory: pytest.TempPathFactory) -> Any:
    live = LiveMaster(tmp_path_factory.mktemp("replicas-master"), heartbeat_interval=0.5).start()
    yield live
    live.stop()


@pytest.fixture
async def stopper() -> AsyncIterator[list[FakeWorker]]:
    started: list[FakeWorker] = []
    yield started
    for worker in started:
        await worker.stop()


async def submit(master: LiveMaster, seed: int, replicas: int) -> dict[str, Any]:
    async with master.async_client() as api:
        r = await api.post("/api/v1/jobs", json={"kind": "montecarlo", "replicas": replicas, "params": {
            "samples": SAMPLES, "seed": seed, "chunk_samples": CHUNK}})
        assert r.status_code == 201, r.text
        return r.json()


async def job(master: LiveMaster, job_id: str) -> dict[str, Any]:
    async with master.async_client() as api:
        return (await api.get(f"/api/v1/jobs/{job_id}")).json()


async def test_the_liar_is_outvoted_and_flagged(master: LiveMaster, stopper: list[FakeWorker]) -> None:
    honest = await FakeWorker(master, name="honest", slots=3).start()
    liar = await Liar(master, name="liar", slots=3).start()
    stopper += [honest, liar]
    job_id = (await submit(master, 31, replicas=2))["id"]
    # Every chunk ran on both and disagrees: the deciding run waits for a third worker, and says so.
    await async_wait_until(lambda: len(honest.sent) == 3 and len(liar.sent) == 3, 10, "both to answer")
    waiting = await job(master, job_id)
    assert waiting["state"] == "running" and "disagree" in (waiting["reason"] or ""), waiting
    judge = await FakeWorker(master, name="judge", slots=3).start()
    stopper.append(judge)
    view = await wait_job(master, job_id, 15)
    inside = expected_inside(31)
    assert view["state"] == "succeeded" and view["result"]["inside"] == inside, view
    assert view["outvoted"] == {liar.id: 3}
    shown = await workers(master)
    assert shown[liar.id]["flagged"] and shown[liar.id]["outvoted"] == 3
    assert not shown[honest.id]["flagged"] and not shown[judge.id]["flagged"]
    assert set(view["workers"]) <= {honest.id, judge.id}


async def test_honest_replicas_agree_without_an_extra_run(master: LiveMaster, stopper: list[FakeWorker]) -> None:
    a = await FakeWorker(master, name="a", slots=3).start()
    b = await FakeWorker(master, name="b", slots=3).start()
    stopper += [a, b]
    job_id = (await submit(master, 32, replicas=2))["id"]
    view = await wait_job(master, job_id, 15)
    assert view["state"] == "succeeded" and view["result"]["inside"] == expected_inside(32)
    assert len(a.assigned) == 3 and len(b.assigned) == 3 and view["outvoted"] == {}


async def test_replicas_beyond_the_limit_are_refused(master: LiveMaster) -> None:
    async with master.async_client() as api:
        r = await api.post("/api/v1/jobs", json={"kind": "montecarlo", "replicas": 0, "params": {"samples": 10}})
    assert r.status_code == 422 and "replicas" in r.json()["error"]
