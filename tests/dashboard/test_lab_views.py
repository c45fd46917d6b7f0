"""The dashboard shows what lab sharing reports: an outvoted (flagged) worker, on the Workers page and
on the job's page. A dishonest worker is a protocol peer that answers every chunk with a wrong count."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Iterator

import msgspec
import pytest
import websockets

import rvidia
from rvidia.addresses import ws_url
from rvidia.kinds.montecarlo import count_inside
from rvidia.protocol import messages as m

from .helpers import missing, shot, sign_in

pytestmark = pytest.mark.skipif(bool(missing()), reason=f"browser tests skipped: {missing()}")


def _liar(url: str, token: str, stop: threading.Event) -> None:
    async def serve() -> None:
        hello = m.Hello(version=m.PROTOCOL_VERSION, name="liar", host="liarhost", os="sim", python="3.11.0",
                        cores=4, memory_bytes=2**30, slots=4)
        async with websockets.connect(ws_url(url, "/ws/worker"), additional_headers={
                "Authorization": f"Bearer {token}"}, max_size=None, ping_interval=None) as ws:
            await ws.send(m.encode(hello))
            await ws.recv()  # the welcome
            while not stop.is_set():
                try:
                    msg = m.decode(await asyncio.wait_for(ws.recv(), 0.3))
                except asyncio.TimeoutError:
                    await ws.send(m.encode(m.Heartbeat(sent_at=time.time())))
                    continue
                if isinstance(msg, m.Assign):
                    items = []
                    for t in msg.tasks:
                        index, n = msgspec.msgpack.decode(t.payload, type=tuple[int, int])
                        wrong = count_inside(t.params["seed"], index, n) + 1
                        items.append(m.ChunkOutcome(job_id=t.job_id, stage=t.stage, index=t.index, attempt=t.attempt,
                                                    ok=True, result=msgspec.msgpack.encode(wrong)))
                    await ws.send(m.encode(m.Results(items=items)))

    asyncio.run(serve())


@pytest.fixture
def pool() -> Iterator[tuple[rvidia.LocalCluster, threading.Event]]:
    with rvidia.LocalCluster(workers=1, slots=2) as cluster:
        stop = threading.Event()
        thread = threading.Thread(target=_liar, args=(cluster.url, cluster.token, stop), daemon=True)
        thread.start()
        try:
            yield cluster, stop
        finally:
            stop.set()
            thread.join(10)


def test_an_outvoted_worker_is_flagged(page, pool: tuple[rvidia.LocalCluster, threading.Event]) -> None:
    cluster, _ = pool
    cluster.wait_for_workers(2, 30)
    job = cluster.submit("montecarlo", samples=3000, seed=5, chunk_samples=1000, replicas=2)
    judge = cluster.add_worker(slots=2, name="judge")  # the third, deciding copy needs a third worker
    try:
        result = job.result(timeout=60)
        assert result["inside"] == sum(count_inside(5, i, 1000) for i in range(3))
        sign_in(page, cluster, "#/workers")
        row = page.locator("tr.worker-row", has_text="liar")
        row.locator(".flagged:has-text('outvoted ×3')").wait_for(timeout=15_000)
        assert page.locator("tr.worker-row .flagged").count() == 1  # only the liar
        shot(page, "workers-outvoted")
        page.goto(f"{cluster.url}/#/jobs/{job.id}")
        page.locator(".pw.flagged:has-text('(outvoted ×3)')").wait_for(timeout=15_000)
        shot(page, "job-outvoted", full_page=True)
    finally:
        judge.terminate()
        judge.wait(10)


def test_cores_count_each_machine_once(page, pool: tuple[rvidia.LocalCluster, threading.Event]) -> None:
    """Two workers on this machine and one on "liarhost" (4 cores): this machine's cores once, plus 4."""
    import os

    cluster, _ = pool
    cluster.add_worker(slots=1, name="second-here")
    cluster.wait_for_workers(3, 30)
    sign_in(page, cluster, "#/workers")
    expected = (os.cpu_count() or 1) + 4
    page.locator(f"#workers-summary:has-text('3 online · 7 slots · {expected} cores')").wait_for(timeout=15_000)
