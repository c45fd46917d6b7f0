"""``LocalCluster``: it starts what it says, stops everything it started, and cleans up after itself."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import psutil
import pytest

import rvidia
from rvidia.client.local import local_slots

pytestmark = pytest.mark.timeout(120)


def _descendants(cluster: rvidia.LocalCluster) -> list[psutil.Process]:
    """Every process below the ones the cluster started (the workers' chunk processes)."""
    found: list[psutil.Process] = []
    for proc in cluster.procs:
        try:
            found += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    return found


def _wait_chunk_processes(cluster: rvidia.LocalCluster, n: int, timeout: float = 30.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while len(found := _descendants(cluster)) < n:
        assert time.monotonic() < deadline, f"{len(found)} of {n} chunk processes started"
        time.sleep(0.05)
    return found


def test_starts_workers_and_close_stops_everything() -> None:
    cluster = rvidia.LocalCluster(workers=3)
    try:
        data_dir = cluster.data_dir
        assert data_dir.is_dir() and (data_dir / "token").is_file()
        assert len(cluster.worker_procs) == 3 and cluster.master_proc not in cluster.worker_procs
        assert all(p.poll() is None for p in cluster.procs)

        workers = cluster.workers()
        assert sorted(w["name"] for w in workers) == ["local-1", "local-2", "local-3"]
        assert {w["state"] for w in workers} == {"idle"}
        assert {w["slots"] for w in workers} == {local_slots(3)}
        assert all(w["running"] == 0 and w["allow_code"] for w in workers)

        assert cluster.map(lambda x: x + 1, range(6), chunksize=1).result(timeout=60) == list(range(1, 7))
        chunk_procs = _wait_chunk_processes(cluster, 3 * local_slots(3))
        url = cluster.url
    finally:
        cluster.close()

    assert cluster.master_proc.poll() is not None
    assert all(p.poll() is not None for p in cluster.worker_procs)
    _, alive = psutil.wait_procs(chunk_procs, timeout=15)
    assert alive == [], f"chunk processes left behind: {alive}"
    assert not data_dir.exists()
    with rvidia.connect(url, token="x") as client, pytest.raises(rvidia.MasterUnreachable):
        client.health()
    cluster.close()  # a second close is harmless


def test_without_allow_code_map_stays_queued(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with rvidia.LocalCluster(workers=1, slots=2, allow_code=False, data_dir=data_dir) as cluster:
        [worker] = cluster.workers()
        assert worker["slots"] == 2 and worker["state"] == "idle" and not worker["allow_code"]
        assert stat.S_IMODE((data_dir / "token").stat().st_mode) == 0o600

        job = cluster.map(lambda x: x, [1, 2])
        with pytest.raises(TimeoutError):
            job.result(timeout=1.5)
        view = job.status()
        assert view["state"] == "queued"
        assert "--allow-code" in (view["reason"] or "")

        # Built-in kinds still run on a worker without --allow-code.
        assert cluster.submit("montecarlo", samples=2000, chunk_samples=1000).result(timeout=60)["samples"] == 2000
        assert job.status()["state"] == "queued"
        job.cancel()
        procs = list(cluster.procs)

    assert all(p.poll() is not None for p in procs)
    assert data_dir.is_dir() and (data_dir / "token").is_file()  # a caller's data dir is kept
