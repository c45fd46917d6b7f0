"""The events and counters the dashboard draws from: chunk events, the failing chunk, /stats."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

import rvidia
from rvidia.addresses import ws_url


@pytest.fixture(scope="module")
def cluster():
    with rvidia.LocalCluster(workers=1, slots=2) as c:
        yield c


async def _events_until(cluster: rvidia.LocalCluster, submit, state: str, timeout: float = 60) -> tuple[str, list]:
    seen: list[dict] = []
    url = ws_url(cluster.url, "/ws/events")
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {cluster.token}"}) as ws:
        await asyncio.sleep(0.2)  # subscribed before the job starts
        job = await asyncio.to_thread(submit)

        async def read() -> None:
            while True:
                event = json.loads(await ws.recv())
                seen.append(event)
                if event["type"] == "job" and event["id"] == job.id and event["state"] == state:
                    return
        await asyncio.wait_for(read(), timeout)
    return job.id, seen


async def test_chunk_events_carry_the_chunks_fields(cluster: rvidia.LocalCluster) -> None:
    job_id, events = await _events_until(
        cluster, lambda: cluster.submit("montecarlo", samples=4_000_000, chunk_samples=1_000_000), "succeeded")
    chunks = [e for e in events if e["type"] == "chunk" and e["job_id"] == job_id]
    assert {e["index"] for e in chunks if e["state"] == "running"} == {0, 1, 2, 3}
    done = {e["index"]: e for e in chunks if e["state"] == "done"}
    assert set(done) == {0, 1, 2, 3}
    for e in done.values():
        assert e["worker"] and e["started_at"] and e["finished_at"] >= e["started_at"]
        assert e["attempts"] == 1 and e["error"] is None and e["stage"] == 0
    # The same fields as GET /jobs/{id}/chunks, which the dashboard merges them into.
    rest = {c["index"]: c for c in cluster.get(f"/api/v1/jobs/{job_id}/chunks")}
    for index, e in done.items():
        for key in ("index", "state", "worker", "attempts", "started_at", "finished_at", "error"):
            assert e[key] == rest[index][key] or (key == "error" and not rest[index][key]), key
    stats = cluster.get("/api/v1/stats", params={"seconds": 120})
    assert sum(stats["finished_per_second"]["counts"]) >= 4 and stats["jobs"]["succeeded"] >= 1


async def test_the_chunk_that_fails_a_job_is_marked_with_its_error(cluster: rvidia.LocalCluster) -> None:
    job_id, events = await _events_until(
        cluster, lambda: cluster.map(lambda x: 1 / x, [1, 0, 2], max_attempts=1), "failed")
    failed = [e for e in events if e["type"] == "chunk" and e["job_id"] == job_id and e["state"] == "failed"]
    assert [e["index"] for e in failed] == [1] and "ZeroDivisionError" in failed[0]["error"]
    rest = {c["index"]: c for c in cluster.get(f"/api/v1/jobs/{job_id}/chunks")}
    assert rest[1]["state"] == "failed" and "ZeroDivisionError" in rest[1]["error"]
