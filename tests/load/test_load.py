"""Load: 200 simulated workers joining at once and 500 concurrent REST clients against one master.

The workers are light clients speaking the real protocol (``benchmarks/simworkers.py``) that compute
every montecarlo chunk for real, so the job's result is checked exactly. Bounded: a fixed number of
requests and chunks, every wait with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from harness import Master, Processes, clean_env, reference_result, wait_until  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
WORKERS, CLIENTS, REQUESTS_EACH = 200, 500, 4
SAMPLES, CHUNK = 20_000 * 1000, 1000  # 20,000 chunks (the smallest allowed), each tens of microseconds


@pytest.fixture
def procs(tmp_path: Path) -> Any:
    logs = tmp_path / "logs"
    logs.mkdir()
    group = Processes(logs)
    yield group
    group.stop_all()


async def rest_storm(url: str, token: str, job_id: str) -> list[int]:
    """CLIENTS clients at once, each with its own connection, REQUESTS_EACH requests each."""
    paths = ["/api/v1/workers", f"/api/v1/jobs/{job_id}", "/api/v1/jobs?limit=20", "/api/v1/kinds"]

    async def one(i: int) -> list[int]:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=60) as client:
            return [(await client.get(paths[(i + k) % len(paths)])).status_code for k in range(REQUESTS_EACH)]

    results = await asyncio.gather(*(one(i) for i in range(CLIENTS)), return_exceptions=True)
    codes: list[int] = []
    for r in results:
        codes.extend(r if isinstance(r, list) else [-1])  # an exception counts as a failed request
    return codes


def test_200_workers_and_500_rest_clients(procs: Processes, tmp_path: Path) -> None:
    master = Master(procs, tmp_path / "data", extra=["--worker-timeout", "10"]).start()
    fleet = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "simworkers.py"), "--master", master.url,
                              "--token", master.token, "--workers", str(WORKERS)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        api = master.client()

        def all_joined() -> bool:
            rows = api.get("/api/v1/workers").json()
            return sum(1 for w in rows if w["state"] != "lost") == WORKERS

        wait_until(all_joined, 120, interval=0.5, message=f"{WORKERS} simulated workers to join")
        rss_before = psutil.Process(master.proc.pid).memory_info().rss  # type: ignore[union-attr]
        job = api.post("/api/v1/jobs", json={"kind": "montecarlo", "params": {
            "samples": SAMPLES, "seed": 77, "chunk_samples": CHUNK}}).json()["id"]
        codes = asyncio.run(rest_storm(master.url, master.token, job))
        assert len(codes) == CLIENTS * REQUESTS_EACH and set(codes) == {200}, sorted(set(codes))

        def ended() -> dict[str, Any] | None:
            view = api.get(f"/api/v1/jobs/{job}").json()
            return view if view["state"] not in ("queued", "running") else None

        view = wait_until(ended, 180, interval=0.5, message="the 20,000-chunk job to finish")
        assert view["state"] == "succeeded" and view["result"] == reference_result(SAMPLES, 77, CHUNK)
        rows = api.get("/api/v1/workers").json()
        assert len(rows) == WORKERS and all(w["state"] != "lost" for w in rows), \
            [w for w in rows if w["state"] == "lost"][:3]
        assert sum(w["chunks_done"] for w in rows) == SAMPLES // CHUNK
        rss = psutil.Process(master.proc.pid).memory_info().rss  # type: ignore[union-attr]
        assert rss < 400 * 2**20, f"master RSS {rss / 2**20:.0f} MiB"
        print(f"master RSS {rss_before / 2**20:.0f} MiB with {WORKERS} workers joined, "
              f"{rss / 2**20:.0f} MiB after the job and {len(codes)} requests")
    finally:
        fleet.send_signal(signal.SIGTERM)
        out, err = fleet.communicate(timeout=60)
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["joined"] == WORKERS and stats["errors"] == 0 and stats["refused"] == 0, (stats, err[-2000:])
    assert stats["done"] == SAMPLES // CHUNK
