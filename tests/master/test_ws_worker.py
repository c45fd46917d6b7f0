"""The worker WebSocket spoken by hand: handshake, refusals and close codes, results, lost workers.

A real master runs in-process (uvicorn in a thread); fake workers are raw ``websockets`` clients that
answer each Assign with the correct montecarlo counts.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import msgspec
import pytest
import websockets

import rvidia
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .live_master import LiveMaster, async_wait_until
from rvidia.kinds.montecarlo import count_inside
from rvidia.protocol import messages as m

SAMPLES, CHUNK = 3000, 1000


def hello(**changes: Any) -> m.Hello:
    fields: dict[str, Any] = dict(version=m.PROTOCOL_VERSION, name="fake", host="fakehost", os="linux",
                                  python="3.11.7", cores=4, memory_bytes=2**30, slots=2)
    fields.update(changes)
    return m.Hello(**fields)


def outcome(task: m.ChunkTask, **changes: Any) -> m.ChunkOutcome:
    """The correct result of a montecarlo chunk, as a worker computes it."""
    index, n = msgspec.msgpack.decode(task.payload, type=tuple[int, int])
    assert index == task.index
    inside = count_inside(task.params["seed"], index, n)
    fields: dict[str, Any] = dict(job_id=task.job_id, stage=task.stage, index=task.index, attempt=task.attempt,
                                  ok=True, result=msgspec.msgpack.encode(inside), seconds=0.001)
    fields.update(changes)
    return m.ChunkOutcome(**fields)


def expected_inside(seed: int, samples: int = SAMPLES, chunk: int = CHUNK) -> int:
    return sum(count_inside(seed, i, min(chunk, samples - i * chunk)) for i in range(-(-samples // chunk)))


async def connect(master: LiveMaster, **kwargs: Any) -> Any:
    kwargs.setdefault("additional_headers", master.headers)
    return await websockets.connect(master.ws_url, max_size=None, ping_interval=None, compression=None,
                                    open_timeout=10, **kwargs)


class FakeWorker:
    """A hand-written worker: heartbeats (unless silent) and answers Assigns (unless told not to)."""

    def __init__(self, master: LiveMaster, name: str = "good", slots: int = 2, heartbeat: float | None = 0.2,
                 answer: bool = True, duplicate: bool = False, worker_id: str | None = None,
                 hello_frame: bytes | None = None) -> None:
        self.master, self.name, self.slots, self.worker_id = master, name, slots, worker_id
        self.hello_frame = hello_frame
        self.heartbeat, self.answer, self.duplicate = heartbeat, answer, duplicate
        self.assigned: list[m.ChunkTask] = []
        self.sent: list[m.ChunkOutcome] = []
        self.closed = asyncio.Event()
        self.id = ""
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> "FakeWorker":
        self.ws = await connect(self.master)
        await self.ws.send(self.hello_frame or m.encode(hello(name=self.name, slots=self.slots,
                                                              worker_id=self.worker_id)))
        welcome = m.decode(await asyncio.wait_for(self.ws.recv(), 10))
        assert isinstance(welcome, m.Welcome) and welcome.worker_id
        self.id = welcome.worker_id
        self._tasks.append(asyncio.create_task(self._read()))
        if self.heartbeat:
            self._tasks.append(asyncio.create_task(self._beat()))
        return self

    async def send(self, message: m.Message) -> None:
        await self.ws.send(m.encode(message))

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                msg = m.decode(frame)
                if isinstance(msg, m.Assign):
                    self.assigned.extend(msg.tasks)
                    if self.answer:
                        await self._answer(msg.tasks)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def _answer(self, tasks: list[m.ChunkTask]) -> None:
        items = [outcome(t) for t in tasks]
        if self.duplicate:  # a stale attempt with a wrong count first, then every result twice
            wrong = [outcome(t, attempt=t.attempt + 7, result=msgspec.msgpack.encode(10**9)) for t in tasks]
            await self.send(m.Results(items=wrong))
            await self.send(m.Results(items=items + items))
        await self.send(m.Results(items=items))
        self.sent.extend(items)

    async def _beat(self) -> None:
        try:
            while True:
                await self.send(m.Heartbeat(sent_at=time.time(), running=0))
                await asyncio.sleep(self.heartbeat or 1)
        except ConnectionClosed:
            pass

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMaster]:
    live = LiveMaster(tmp_path_factory.mktemp("ws-master"), heartbeat_interval=0.5).start()
    yield live
    live.stop()


@pytest.fixture
async def good(master: LiveMaster) -> AsyncIterator[FakeWorker]:
    worker = await FakeWorker(master).start()
    yield worker
    await worker.stop()


async def submit(master: LiveMaster, seed: int) -> str:
    """Submit a 3-chunk montecarlo job; return its id."""
    async with master.async_client() as api:
        r = await api.post("/api/v1/jobs", json={"kind": "montecarlo", "params": {
            "samples": SAMPLES, "chunk_samples": CHUNK, "seed": seed}})
    assert r.status_code == 201, r.text
    return r.json()["id"]  # type: ignore[no-any-return]


async def wait_job(master: LiveMaster, job_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """Poll until the job has ended; return its final view."""
    async with master.async_client() as api:
        async def finished() -> dict[str, Any] | None:
            view = (await api.get(f"/api/v1/jobs/{job_id}")).json()
            return view if view["state"] not in ("queued", "running") else None

        return await async_wait_until(finished, timeout, f"job {job_id} to finish")  # type: ignore[no-any-return]


async def run_job(master: LiveMaster, seed: int, timeout: float = 15.0) -> dict[str, Any]:
    return await wait_job(master, await submit(master, seed), timeout)


async def workers(master: LiveMaster) -> dict[str, dict[str, Any]]:
    async with master.async_client() as api:
        return {w["id"]: w for w in (await api.get("/api/v1/workers")).json()}


async def metric(master: LiveMaster, name: str) -> float:
    async with master.async_client() as api:
        text = (await api.get("/metrics")).text
    return float(next(ln for ln in text.splitlines() if ln.startswith(name + " ")).split()[1])


async def assert_good_worker_works(master: LiveMaster, good: FakeWorker, seed: int) -> None:
    assert not good.closed.is_set(), "the good worker was disconnected"
    assert (await workers(master))[good.id]["state"] != "lost"
    before = len(good.assigned)
    view = await run_job(master, seed)
    assert view["state"] == "succeeded", view
    inside = expected_inside(seed)
    assert view["result"] == {"pi": 4.0 * inside / SAMPLES, "samples": SAMPLES, "inside": inside}
    assert view["progress"]["done"] == 3 and view["progress"]["failed"] == 0
    assert view["workers"] == {good.id: 3}
    assert len(good.assigned) - before == 3
    assert not good.closed.is_set()


async def send_oversized(ws: Any) -> None:
    """Send a frame over the limit; once the master's close frame is in, drop the connection.

    The master fails the connection with 1009 as soon as it reads the frame header and stops
    reading; uvicorn's ``websockets`` implementation then waits its 10 s close timeout for our close
    frame, which is stuck behind the unread rest of the 64 MiB frame. Aborting here skips that wait.
    """
    sender = asyncio.create_task(ws.send(BIG))
    await async_wait_until(lambda: ws.protocol.close_rcvd is not None or sender.done(), 15,
                           "the master's close frame")
    ws.transport.abort()
    try:
        await sender
    except ConnectionClosed:
        pass


async def drain(ws: Any, timeout: float = 10.0) -> tuple[list[m.Message], int | None, str]:
    """Read until the master closes the connection: the messages, the close code and reason."""
    received: list[m.Message] = []

    async def read() -> None:
        try:
            while True:
                received.append(m.decode(await ws.recv()))
        except ConnectionClosed:
            pass

    await asyncio.wait_for(read(), timeout)
    return received, ws.close_code, ws.close_reason or ""


# ---------------------------------------------------------------- handshake


async def test_hello_gets_welcome(master: LiveMaster, good: FakeWorker) -> None:
    info = (await workers(master))[good.id]
    assert info["name"] == "good" and info["slots"] == 2 and info["state"] == "idle"
    assert info["host"] == "fakehost" and info["cores"] == 4


async def test_reconnect_with_worker_id_replaces_the_old_connection(master: LiveMaster) -> None:
    old = await FakeWorker(master, name="again", slots=3, answer=False, worker_id="wsame").start()
    new = None
    try:
        assert old.id == "wsame"
        job_id = await submit(master, seed=11)
        await async_wait_until(lambda: len(old.assigned) == 3, 5, "the old connection to get 3 chunks")
        new = await FakeWorker(master, name="again", slots=3, worker_id="wsame").start()
        assert new.id == "wsame"
        await asyncio.wait_for(old.closed.wait(), 5)
        assert old.ws.close_code == m.CLOSE_REPLACED
        # Well within the 10 s worker timeout: the old connection's chunks go to the new one at once.
        view = await wait_job(master, job_id, timeout=5)
        assert view["state"] == "succeeded"
        assert view["result"]["inside"] == expected_inside(11) and view["workers"] == {"wsame": 3}
        assert sorted(t.index for t in new.assigned) == [0, 1, 2]
        listed = (await workers(master))["wsame"]
        assert listed["state"] == "idle" and listed["chunks_done"] == 3
        await assert_good_worker_works(master, new, seed=12)
    finally:
        for worker in (old, new):
            if worker is not None:
                await worker.stop()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}], ids=["no token", "wrong token"])
async def test_upgrade_without_valid_token_is_401(master: LiveMaster, good: FakeWorker,
                                                  headers: dict[str, str]) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(master, additional_headers=headers)
    assert info.value.response.status_code == 401
    await assert_good_worker_works(master, good, seed=13)


async def test_user_token_may_not_join_as_worker(master: LiveMaster) -> None:
    async with master.async_client() as api:
        token = (await api.post("/api/v1/tokens", json={"role": "user", "name": "ws-user"})).json()["token"]
    with pytest.raises(InvalidStatus) as info:
        await connect(master, additional_headers={"Authorization": f"Bearer {token}"})
    assert info.value.response.status_code == 401


def _minor_away(steps: int) -> str:
    major, minor = (int(p) for p in rvidia.__version__.split(".")[:2])
    return f"{major}.{minor + steps}.0"


async def test_a_worker_one_minor_release_apart_joins_and_works(master: LiveMaster) -> None:
    """An older or newer minor release is let in; fields it adds that this master does not know are
    ignored, so its results count like anyone's."""
    frame = msgspec.msgpack.encode({**msgspec.structs.asdict(hello(name="newer", package_version=_minor_away(1))),
                                    "type": "hello", "added_in_a_later_release": [1, 2]})
    newer = await FakeWorker(master, name="newer", hello_frame=frame).start()
    try:
        await assert_good_worker_works(master, newer, seed=41)
        shown = (await workers(master))[newer.id]
        assert shown["version"] == _minor_away(1)
    finally:
        await newer.stop()


# ---------------------------------------------------------------- bad clients

BIG = b"\x00" * (m.MAX_FRAME_BYTES + 1)
# name: (send hello first?, what to send then, expected close code, words in the Refused/close reason)
BAD: dict[str, tuple[bool, Any, int, str]] = {
    "wrong version": (False, m.encode(hello(version=99)), m.CLOSE_VERSION, "version 99"),
    "two minor releases away": (False, m.encode(hello(package_version=_minor_away(2))), m.CLOSE_VERSION,
                                "more than one minor version"),
    "other major release": (False, m.encode(hello(package_version="99.0.0")), m.CLOSE_VERSION, "99.0.0"),
    "text first": (False, "hello", m.CLOSE_UNSUPPORTED, "binary"),
    "garbage first": (False, b"\xc1garbage", m.CLOSE_PROTOCOL_ERROR, "invalid message"),
    "heartbeat first": (False, m.encode(m.Heartbeat(sent_at=1.0)), m.CLOSE_PROTOCOL_ERROR, "must be a hello"),
    "negative slots": (False, m.encode(hello(slots=-1)), m.CLOSE_PROTOCOL_ERROR, "negative"),
    "oversized first": (False, BIG, m.CLOSE_TOO_BIG, ""),
    "text after hello": (True, "{}", m.CLOSE_UNSUPPORTED, "binary"),
    "garbage after hello": (True, b"\x93\x01\x02", m.CLOSE_PROTOCOL_ERROR, "invalid message"),
    "unknown tag after hello": (True, msgspec.msgpack.encode({"type": "nope"}), m.CLOSE_PROTOCOL_ERROR, "nope"),
    "master message after hello": (True, m.encode(m.Assign(tasks=[])), m.CLOSE_PROTOCOL_ERROR, "Assign"),
    "second hello": (True, m.encode(hello()), m.CLOSE_PROTOCOL_ERROR, "Hello"),
    "oversized after hello": (True, BIG, m.CLOSE_TOO_BIG, ""),
}


@pytest.mark.parametrize("name", list(BAD))
async def test_bad_client_is_closed_and_others_keep_working(master: LiveMaster, good: FakeWorker,
                                                            name: str) -> None:
    with_hello, frame, code, words = BAD[name]
    ws = await connect(master)
    bad_id = None
    if with_hello:
        await ws.send(m.encode(hello(name=f"bad-{name}", slots=0)))  # never given chunks
        welcome = m.decode(await ws.recv())
        assert isinstance(welcome, m.Welcome)
        bad_id = welcome.worker_id
    if frame is BIG:
        await send_oversized(ws)
    else:
        await ws.send(frame)
    received, got_code, close_reason = await drain(ws)
    assert got_code == code, (got_code, close_reason, received)
    refusals = [r for r in received if isinstance(r, m.Refused)]
    if not with_hello and code != m.CLOSE_TOO_BIG:
        assert len(refusals) == 1 and words in refusals[0].reason
    assert not any(isinstance(r, (m.Assign, m.Welcome)) for r in received)
    assert words in close_reason or words in " ".join(r.reason for r in refusals)
    # uvicorn's (deprecated) ``websockets`` implementation reports a connection it failed with 1009 to
    # the app only after its 10 s close timeout (``websockets-sansio`` does at once), so that bad
    # worker is not waited for here; slots=0 keeps it from holding chunks meanwhile.
    if bad_id is not None and frame is not BIG:
        info = await async_wait_until(lambda: _state(master, bad_id), 5, "the bad worker to be dropped")
        assert info == "lost"
    await assert_good_worker_works(master, good, seed=len(name))


async def _state(master: LiveMaster, wid: str) -> str | None:
    state = (await workers(master))[wid]["state"]
    return state if state == "lost" else None


# ---------------------------------------------------------------- results


async def test_duplicate_stale_and_late_results_do_not_change_the_result(master: LiveMaster) -> None:
    worker = await FakeWorker(master, name="dup", duplicate=True).start()
    try:
        finished = await metric(master, "rvidia_chunks_finished_total")
        failed = await metric(master, "rvidia_chunks_failed_total")
        view = await run_job(master, seed=21)
        inside = expected_inside(21)
        assert view["state"] == "succeeded" and view["result"]["inside"] == inside
        assert view["progress"] == {"total": 3, "done": 3, "running": 0, "failed": 0}
        # Late copies of accepted results, a failure for a done chunk, results for chunks nobody asked for.
        late = list(worker.sent[-3:])
        await worker.send(m.Results(items=late))
        await worker.send(m.Results(items=[outcome(worker.assigned[-1], ok=False, error="late failure")]))
        await worker.send(m.Results(items=[outcome(worker.assigned[-1], index=99),
                                           outcome(worker.assigned[-1], job_id="jnope")]))
        # Frames on one connection are handled in order: once a later job is done, so are those.
        second = await run_job(master, seed=22)
        assert second["state"] == "succeeded" and second["result"]["inside"] == expected_inside(22)
        async with master.async_client() as api:
            again = (await api.get(f"/api/v1/jobs/{view['id']}")).json()
            chunks = (await api.get(f"/api/v1/jobs/{view['id']}/chunks")).json()
        assert again["result"] == view["result"] and again["state"] == "succeeded"
        assert again["progress"] == view["progress"] and again["workers"] == {worker.id: 3}
        assert [(c["index"], c["state"], c["attempts"], c["error"]) for c in chunks] == \
            [(0, "done", 1, None), (1, "done", 1, None), (2, "done", 1, None)]
        assert await metric(master, "rvidia_chunks_finished_total") == finished + 6
        assert await metric(master, "rvidia_chunks_failed_total") == failed
        assert not worker.closed.is_set()
        assert (await workers(master))[worker.id]["chunks_done"] == 6
    finally:
        await worker.stop()


async def test_silent_worker_is_lost_and_its_chunks_run_elsewhere(tmp_path: Path) -> None:
    live = LiveMaster(tmp_path, worker_timeout=1.0, heartbeat_interval=0.2).start()
    silent = good = None
    try:
        silent = await FakeWorker(live, name="silent", slots=3, heartbeat=None, answer=False).start()
        job_id = await submit(live, seed=31)
        await async_wait_until(lambda: len(silent.assigned) == 3, 5, "the silent worker to get 3 chunks")
        good = await FakeWorker(live, name="good", slots=2).start()
        assert not good.assigned  # nothing is free until the silent worker is declared lost
        view = await wait_job(live, job_id, timeout=10)
        assert view["state"] == "succeeded", view
        async with live.async_client() as api:
            chunks = (await api.get(f"/api/v1/jobs/{job_id}/chunks")).json()
        inside = expected_inside(31)
        assert view["result"] == {"pi": 4.0 * inside / SAMPLES, "samples": SAMPLES, "inside": inside}
        assert view["workers"] == {good.id: 3}
        assert [t.attempt for t in silent.assigned] == [1, 1, 1]
        assert sorted(t.index for t in good.assigned) == [0, 1, 2]
        assert {t.attempt for t in good.assigned} == {2}
        assert all(c["worker"] == good.id and c["state"] == "done" and c["attempts"] == 2 for c in chunks)
        await asyncio.wait_for(silent.closed.wait(), 5)
        assert silent.ws.close_code == m.CLOSE_POLICY
        assert "heartbeat" in (silent.ws.close_reason or "")
        listed = await workers(live)
        assert listed[silent.id]["state"] == "lost" and listed[good.id]["state"] == "idle"
        assert listed[good.id]["chunks_done"] == 3
        assert view["progress"]["failed"] == 0  # a lost worker is not the chunk's fault
    finally:
        for worker in (silent, good):
            if worker is not None:
                await worker.stop()
        live.stop()


async def test_bye_hands_back_chunks(master: LiveMaster, good: FakeWorker) -> None:
    leaver = await FakeWorker(master, name="leaver", slots=3, answer=False).start()
    try:
        await good.send(m.Capacity(slots=0, paused=True))  # let the leaver take every chunk first

        async def paused() -> bool:
            return (await workers(master))[good.id]["state"] == "paused"

        await async_wait_until(paused, 5, "the good worker to be paused")
        job_id = await submit(master, seed=41)
        await async_wait_until(lambda: len(leaver.assigned) == 3, 5, "the leaver to get 3 chunks")
        await leaver.send(m.Bye(reason="test"))
        await good.send(m.Capacity(slots=2))
        view = await wait_job(master, job_id, timeout=10)
        assert view["state"] == "succeeded" and view["result"]["inside"] == expected_inside(41)
        assert view["workers"] == {good.id: 3}
    finally:
        await leaver.stop()
