"""Light simulated workers that speak the real worker protocol, for load tests and scale benchmarks.

    python benchmarks/simworkers.py --master http://127.0.0.1:8765 --token T --workers 250 [--slots 1]

Each one is a WebSocket connection to ``/ws/worker`` with a real Hello, heartbeats and real answers:
it computes every ``montecarlo`` chunk it is given for real (``count_inside``, so keep
``chunk_samples`` tiny for load) and reports the result in a ``Results`` frame, batched the way the
real agent batches. Hundreds run in one asyncio process; spread a thousand over a few processes
(``--processes``). The fleet prints one JSON line of statistics when it stops (SIGTERM, SIGINT or
``--seconds``): chunks done, workers joined and refused, connection errors, and the dispatch
latency: each worker's time from sending a result to receiving its next Assign, that is how fast the
master refills a freed slot (p50 and p99, over every refill).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
import websockets  # noqa: E402

from rvidia.addresses import ws_url  # noqa: E402
from rvidia.kinds.montecarlo import count_inside  # noqa: E402
from rvidia.protocol import messages as m  # noqa: E402


@dataclass
class Stats:
    done: int = 0
    errors: int = 0
    refused: int = 0
    joined: int = 0
    waits: list[float] = field(default_factory=list)  # result sent -> next Assign received, seconds

    def merge(self, other: dict[str, Any]) -> None:
        self.done += other["done"]
        self.errors += other["errors"]
        self.refused += other["refused"]
        self.joined += other["joined"]
        self.waits.extend(other["waits"])

    def summary(self) -> dict[str, Any]:
        waits = sorted(self.waits)

        def pct(p: float) -> float | None:
            return round(waits[min(len(waits) - 1, int(p * len(waits)))] * 1000, 3) if waits else None

        return {"done": self.done, "errors": self.errors, "refused": self.refused, "joined": self.joined,
                "dispatch_ms_p50": pct(0.5), "dispatch_ms_p99": pct(0.99), "samples": len(waits)}


def answer(task: m.ChunkTask) -> m.ChunkOutcome:
    """The real result of a montecarlo chunk (other kinds fail: this fleet is for montecarlo)."""
    if task.kind != "montecarlo":
        return m.ChunkOutcome(job_id=task.job_id, stage=task.stage, index=task.index, attempt=task.attempt,
                              ok=False, error=f"the simulated worker runs only montecarlo, not {task.kind}")
    index, n = msgspec.msgpack.decode(task.payload, type=tuple[int, int])
    inside = count_inside(task.params.get("seed", 0), index, n)
    return m.ChunkOutcome(job_id=task.job_id, stage=task.stage, index=task.index, attempt=task.attempt,
                          ok=True, result=msgspec.msgpack.encode(inside), seconds=0.0)


async def sim_worker(master: str, token: str, name: str, slots: int, stop: asyncio.Event, stats: Stats,
                     heartbeat: float | None = None) -> None:
    hello = m.Hello(version=m.PROTOCOL_VERSION, name=name, host="simhost", os="sim", python="3.11.0",
                    cores=slots, memory_bytes=2**30, slots=slots, speed=1.0)
    try:
        async with websockets.connect(ws_url(master, "/ws/worker"), additional_headers={
                "Authorization": f"Bearer {token}"}, max_size=None, ping_interval=None, compression=None,
                open_timeout=60) as ws:
            await ws.send(m.encode(hello))
            welcome = m.decode(await asyncio.wait_for(ws.recv(), 60))
            if not isinstance(welcome, m.Welcome):
                stats.refused += 1
                return
            stats.joined += 1
            beat = asyncio.create_task(_beat(ws, heartbeat or welcome.heartbeat_interval))
            stopper = asyncio.create_task(stop.wait())
            try:
                await _serve(ws, stats, stopper)
            finally:
                beat.cancel()
                stopper.cancel()
    except (OSError, websockets.ConnectionClosed, asyncio.TimeoutError, websockets.InvalidStatus):
        if not stop.is_set():
            stats.errors += 1


async def _serve(ws: Any, stats: Stats, stopper: asyncio.Task[Any]) -> None:
    sent_at: float | None = None
    while not stopper.done():
        receive = asyncio.create_task(ws.recv())
        done, _ = await asyncio.wait({receive, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if receive not in done:
            receive.cancel()
            return
        msg = m.decode(receive.result())
        if isinstance(msg, m.Assign):
            if sent_at is not None:
                stats.waits.append(time.perf_counter() - sent_at)
            items = [answer(task) for task in msg.tasks]
            await ws.send(m.encode(m.Results(items=items)))
            sent_at = time.perf_counter()
            stats.done += sum(1 for item in items if item.ok)


async def _beat(ws: Any, interval: float) -> None:
    try:
        while True:
            await ws.send(m.encode(m.Heartbeat(sent_at=time.time(), running=0)))
            await asyncio.sleep(interval)
    except websockets.ConnectionClosed:
        pass


async def fleet(master: str, token: str, n: int, slots: int, prefix: str, seconds: float | None,
                stop: asyncio.Event | None = None) -> Stats:
    """Run ``n`` simulated workers until ``stop`` is set (or ``seconds`` pass); their statistics."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    if seconds:
        loop.call_later(seconds, stop.set)
    stats = Stats()
    await asyncio.gather(*(sim_worker(master, token, f"{prefix}{i}", slots, stop, stats) for i in range(n)))
    return stats


def _process_main(master: str, token: str, n: int, slots: int, prefix: str, seconds: float | None,
                  out: Any) -> None:
    stats = asyncio.run(fleet(master, token, n, slots, prefix, seconds))
    out.put(stats.__dict__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", required=True)
    parser.add_argument("--token", default=os.environ.get("RVIDIA_TOKEN"))
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    per = [args.workers // args.processes + (i < args.workers % args.processes) for i in range(args.processes)]
    procs = [ctx.Process(target=_process_main, args=(args.master, args.token, n, args.slots, f"sim{i}-",
                                                     args.seconds, out)) for i, n in enumerate(per)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: Any) -> None:
        for proc in procs:
            if proc.pid:
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    total = Stats()
    for _ in procs:
        total.merge(out.get())
    for proc in procs:
        proc.join()
    print(json.dumps(total.summary()), flush=True)


if __name__ == "__main__":
    main()
