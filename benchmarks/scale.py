"""One master, many simulated workers: dispatch rate, dispatch latency and the master's memory.

    python benchmarks/scale.py [--workers 1000] [--processes 4] [--chunks 100000] [--slots 1]

A real ``rvidia master`` (its own process, a temporary data dir) and ``--workers`` light workers that
speak the real protocol (``benchmarks/simworkers.py``, spread over ``--processes`` processes) run one
Monte Carlo job of ``--chunks`` chunks of 1,000 samples; every chunk is computed for real and the
result is checked exactly. It prints chunks dispatched per second (from the job's start to its end,
on the master's clock), the dispatch latency (p50, p99: a worker's wait from sending a result to its
next assignment), the master's peak RSS, and how many workers were wrongly declared lost (must be 0).
On a 2-core machine the workers' processes share the cores with the master, so the rate is a floor.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from rvidia.kinds.montecarlo import count_inside  # noqa: E402

CHUNK = 1000
ANNOUNCE = "rvidia master listening on "


def start_master(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "rvidia", "master", "--port", "0", "--data-dir", str(data_dir),
                             "--no-advertise", "--worker-timeout", "10"], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL,
                            env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(ANNOUNCE):
        raise SystemExit(f"the master did not start: {line!r}")
    return proc, line[len(ANNOUNCE):].strip()


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc, self.peak, self.done = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory(prefix="rvidia-scale-") as tmp:
        master, url = start_master(Path(tmp), env)
        token = (Path(tmp) / "token").read_text().strip()
        rss = PeakRss(master.pid)
        rss.start()
        fleet = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "simworkers.py"), "--master", url,
                                  "--token", token, "--workers", str(args.workers), "--processes",
                                  str(args.processes), "--slots", str(args.slots)],
                                 stdout=subprocess.PIPE, text=True, env=env)
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        try:
            joined_at = time.perf_counter()
            while sum(w["state"] != "lost" for w in api.get("/api/v1/workers").json()) < args.workers:
                if time.perf_counter() - joined_at > 300:
                    raise SystemExit("the simulated workers did not all join in 300 s")
                time.sleep(0.5)
            joined = time.perf_counter() - joined_at
            rss_joined = master_rss = psutil.Process(master.pid).memory_info().rss
            job = api.post("/api/v1/jobs", json={"kind": "montecarlo", "params": {
                "samples": args.chunks * CHUNK, "seed": args.seed, "chunk_samples": CHUNK}}).json()["id"]
            while (view := api.get(f"/api/v1/jobs/{job}").json())["state"] in ("queued", "running"):
                time.sleep(0.5)
            workers = api.get("/api/v1/workers").json()
        finally:
            fleet.send_signal(signal.SIGTERM)
            out, _ = fleet.communicate(timeout=120)
            rss.done.set()
            master_rss = max(rss.peak, master_rss)
            master.send_signal(signal.SIGTERM)
            master.wait(30)
    stats = json.loads(out.strip().splitlines()[-1])
    expected = sum(count_inside(args.seed, i, CHUNK) for i in range(args.chunks))
    ok = view["state"] == "succeeded" and view["result"]["inside"] == expected
    span = (_ts(view["finished_at"]) - _ts(view["started_at"]))
    lost = sum(w["state"] == "lost" for w in workers)
    print(f"\n{args.workers:,} simulated workers ({args.slots} slot each, {args.processes} processes), "
          f"{args.chunks:,} chunks of {CHUNK:,} samples; {datetime.now():%Y-%m-%d %H:%M}; result "
          f"{'exact' if ok else 'WRONG: ' + json.dumps(view.get('result'))}\n")
    print("| figure | measured | target |")
    print("| --- | ---: | ---: |")
    print(f"| all workers joined in | {joined:.1f} s | |")
    print(f"| dispatch rate | {args.chunks / span:,.0f} chunks/s | >= 5,000 |")
    print(f"| dispatch latency p50 / p99 | {stats['dispatch_ms_p50']} / {stats['dispatch_ms_p99']} ms | |")
    print(f"| master RSS with the workers joined / peak | {rss_joined / 2**20:.0f} / {master_rss / 2**20:.0f} MiB "
          f"| <= 500 MiB |")
    print(f"| workers wrongly declared lost | {lost} | 0 |")
    print(f"| simulated workers' connection errors | {stats['errors']} | 0 |")
    if not ok or lost:
        sys.exit(1)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    main()
