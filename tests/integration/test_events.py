"""/ws/events streams job and worker changes to signed-in clients."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from websockets.exceptions import InvalidStatus

import rvidia
from rvidia.addresses import ws_url


@pytest.fixture(scope="module")
def cluster():
    with rvidia.LocalCluster(workers=1) as c:
        yield c


async def _collect(url: str, token: str, until: str, timeout: float = 30) -> list[dict]:
    seen: list[dict] = []
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        async def read() -> None:
            while True:
                event = json.loads(await ws.recv())
                seen.append(event)
                if event["type"] == "job" and event["state"] == until:
                    return
        await asyncio.wait_for(read(), timeout)
    return seen


async def test_job_events_follow_a_job_to_the_end(cluster: rvidia.LocalCluster) -> None:
    url = ws_url(cluster.url, "/ws/events")
    reader = asyncio.create_task(_collect(url, cluster.token, "succeeded"))
    await asyncio.sleep(0.3)  # subscribed before the job starts
    job = await asyncio.to_thread(cluster.submit, "montecarlo", samples=5_000_000, seed=2)
    events = await reader
    mine = [e for e in events if e["type"] == "job" and e["id"] == job.id]
    states = [e["state"] for e in mine]
    assert states[0] == "queued" and states[-1] == "succeeded"
    assert mine[-1]["progress"]["done"] == mine[-1]["progress"]["total"] == 5
    assert any(e["type"] == "worker" for e in events)  # the worker went busy and back


async def test_events_need_a_token(cluster: rvidia.LocalCluster) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(ws_url(cluster.url, "/ws/events")):
            pass
    assert info.value.response.status_code == 401
