"""The scheduler core alone, in a discrete-event simulation: decisions per second and memory.

    python benchmarks/scheduler_sim.py [--workers 1000,10000,100000] [--chunks 1000000] [--slots 1]

Each simulated worker finishes its chunk 1 to 3 simulated milliseconds after it was assigned; every
result arrives with the WorkerSeen that the master sends along with it, and a Tick comes every 0.5
simulated seconds, as in the master. It counts scheduling decisions (Assign instructions) and events
per second of real time, and the growth of the process's memory. The point of the table is how the
cost grows with the number of workers: it should not (no scans over all workers or chunks per event).
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from rvidia.core.events import Assign, ChunkSucceeded, JobSubmitted, StageComplete, Tick, WorkerJoined, WorkerSeen  # noqa: E402
from rvidia.core.scheduler import Scheduler  # noqa: E402

TICK = 0.5


def simulate(n_workers: int, n_chunks: int, slots: int = 1, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    now = [0.0]
    rss0 = psutil.Process().memory_info().rss
    sched = Scheduler(lambda: now[0], worker_timeout=30.0)
    start = time.perf_counter()
    out = sched.handle(*[WorkerJoined(f"w{i}", slots) for i in range(n_workers)], JobSubmitted("j", n_chunks))
    events, decisions = n_workers + 1, 0
    pending: list[tuple[float, int, Assign]] = []  # (finish time, tie-break, assignment)
    serial = 0
    next_tick = TICK
    finished = False

    def take(instructions: list[Any]) -> None:
        nonlocal decisions, serial, finished
        for ins in instructions:
            if isinstance(ins, Assign):
                decisions += 1
                serial += 1
                heapq.heappush(pending, (now[0] + rng.uniform(0.001, 0.003), serial, ins))
            elif isinstance(ins, StageComplete):
                finished = True

    take(out)
    while pending:
        at, _, a = heapq.heappop(pending)
        now[0] = at
        if at >= next_tick:
            take(sched.handle(Tick()))
            events += 1
            next_tick += TICK
        take(sched.handle(WorkerSeen(a.worker_id), ChunkSucceeded(a.worker_id, a.job_id, a.stage, a.index, a.attempt)))
        events += 2
    seconds = time.perf_counter() - start
    assert finished and decisions == n_chunks, (finished, decisions)
    rss = psutil.Process().memory_info().rss - rss0
    return {"workers": n_workers, "chunks": n_chunks, "seconds": seconds, "decisions_per_s": decisions / seconds,
            "events_per_s": events / seconds, "us_per_event": 1e6 * seconds / events, "rss_mib": rss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1000,10000,100000")
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--slots", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for n in (int(x) for x in args.workers.split(",")):
        row = simulate(n, args.chunks, args.slots)
        rows.append(row)
        print(f"{n} workers: {row['decisions_per_s']:,.0f} decisions/s, {row['us_per_event']:.1f} us/event, "
              f"+{row['rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    print(f"\n{args.chunks:,} chunks, {args.slots} slot(s) per worker, one job\n")
    print("| workers | seconds | decisions/s | events/s | us per event | memory growth |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['workers']:,} | {r['seconds']:.1f} | {r['decisions_per_s']:,.0f} | {r['events_per_s']:,.0f} | "
              f"{r['us_per_event']:.1f} | {r['rss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
