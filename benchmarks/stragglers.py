"""A pool with one deliberately slowed worker: does a job still finish in the healthy workers' time?

    python benchmarks/stragglers.py [--chunks 40] [--chunk-samples 20000000] [--slowdown 10] [--repeats 3]

Three configurations, each a fresh LocalCluster, the same Monte Carlo job (its result is checked to be
exact against a single-process count every time):

- **healthy**: two healthy workers only: the time to beat;
- **slowed, speculation off**: the two healthy workers plus one whose chunk processes are stopped
  (SIGSTOP) for (slowdown-1)/slowdown of every 100 ms, a machine `--slowdown` times slower; the master
  runs with `--speculation 0`, so its last chunk holds the job up;
- **slowed, speculation on** (the default): the same pool; at the job's tail the slowed worker's chunk
  gets a backup copy on a healthy worker.

It prints the median seconds of each and the ratios to the healthy pool. The slowed worker's duty
cycle costs a little CPU on this machine too, so a ratio slightly above 1.0 is the floor. POSIX only
(SIGSTOP).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
import rvidia  # noqa: E402
from rvidia.kinds.montecarlo import count_inside  # noqa: E402


class Throttle(threading.Thread):
    """Keeps one worker's chunk processes stopped for most of every period: a slower machine."""

    def __init__(self, agent_pid: int, slowdown: float, period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.agent, self.period = psutil.Process(agent_pid), period
        self.running_share = 1.0 / slowdown
        self.done = threading.Event()

    def _chunks(self) -> list[psutil.Process]:
        try:
            return [p for p in self.agent.children(recursive=True)
                    if not any("resource_tracker" in a for a in p.cmdline())]
        except psutil.Error:
            return []

    def _signal(self, procs: list[psutil.Process], stop: bool) -> None:
        for proc in procs:
            try:
                proc.suspend() if stop else proc.resume()
            except psutil.Error:
                pass

    def run(self) -> None:
        while not self.done.is_set():
            procs = self._chunks()
            self._signal(procs, False)
            time.sleep(self.period * self.running_share)
            self._signal(procs, True)
            time.sleep(self.period * (1 - self.running_share))
        self._signal(self._chunks(), False)


def one_run(args: argparse.Namespace, slowed: bool, speculation: bool) -> float:
    master_args = [] if speculation else ["--speculation", "0"]
    with rvidia.LocalCluster(workers=0, master_args=master_args) as cluster:
        cluster.add_worker(1, name="healthy-1")
        cluster.add_worker(1, name="healthy-2")
        throttle = None
        if slowed:
            slow = cluster.add_worker(1, name="slowed")
            throttle = Throttle(slow.pid, args.slowdown)
            throttle.start()
        cluster.wait_for_workers(3 if slowed else 2, 60)
        samples = args.chunks * args.chunk_samples
        start = time.perf_counter()
        result = cluster.submit("montecarlo", samples=samples, seed=args.seed,
                                chunk_samples=args.chunk_samples).result(timeout=600)
        seconds = time.perf_counter() - start
        if throttle is not None:
            throttle.done.set()
            throttle.join()
        if result["inside"] != args.expected:
            raise SystemExit(f"wrong result: {result['inside']} points inside, expected {args.expected}")
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--chunk-samples", type=int, default=20_000_000)
    parser.add_argument("--slowdown", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    args.expected = sum(count_inside(args.seed, i, args.chunk_samples) for i in range(args.chunks))
    configs = [("healthy (2 workers)", False, True), ("slowed, speculation off", True, False),
               ("slowed, speculation on", True, True)]
    medians: dict[str, float] = {}
    for label, slowed, speculation in configs:
        times = [one_run(args, slowed, speculation) for _ in range(args.repeats)]
        medians[label] = statistics.median(times)
        print(f"{label}: {', '.join(f'{t:.2f}' for t in times)} s", file=sys.stderr, flush=True)
    base = medians[configs[0][0]]
    print(f"\n{args.chunks} chunks of {args.chunk_samples:,} samples; one worker {args.slowdown:g}x slower\n")
    print("| pool | median seconds | vs healthy |")
    print("| --- | ---: | ---: |")
    for label, seconds in medians.items():
        print(f"| {label} | {seconds:.2f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
