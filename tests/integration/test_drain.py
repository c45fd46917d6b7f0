"""Maintenance: drain a worker while a job runs, then undrain it (docs/operations.md, "Maintenance")."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

import rvidia
from harness import (Processes, reference_result, run_cli, start_cluster, start_worker, wait_for_workers,
                     wait_until)

pytestmark = pytest.mark.timeout(180)


def test_drain_while_a_job_runs_then_undrain() -> None:
    with rvidia.LocalCluster(workers=2, slots=1) as cluster:
        def slow(x: int) -> int:
            import time

            time.sleep(0.4)
            return x * x

        job = cluster.map(slow, range(24), chunksize=1)
        workers = {w["name"]: w for w in cluster.workers()}
        w1 = workers["local-1"]["id"]

        def on_w1() -> list[dict[str, Any]]:
            return [c for c in cluster.get(f"/api/v1/jobs/{job.id}/chunks") if c["worker"] == w1]

        wait_until(lambda: any(c["state"] == "running" for c in on_w1()), 30, message="a chunk running on local-1")
        drained = run_cli("drain", "local-1", "--master", cluster.url, token=cluster.token)
        assert drained.code == 0, drained.stderr

        def view() -> dict[str, Any]:
            return next(w for w in cluster.workers() if w["id"] == w1)

        assert view()["drained"] is True
        # Its running chunk finishes (done, not handed back), and then it holds nothing.
        wait_until(lambda: view()["running"] == 0, 30, message="local-1's running chunk to finish")
        before = on_w1()
        assert before and all(c["state"] == "done" for c in before), before
        # The job goes on on local-2 alone; nothing new starts on local-1.
        done_then = cluster.job(job.id).status()["progress"]["done"]
        wait_until(lambda: cluster.job(job.id).status()["progress"]["done"] >= done_then + 4, 30,
                   message="the job to go on on local-2")
        assert len(on_w1()) == len(before)
        shown = view()
        assert shown["drained"] is True and shown["running"] == 0
        assert shown["state"] in ("idle", "busy", "paused", "lost") and shown["state"] != "busy"
        table = run_cli("workers", "--json", "--master", cluster.url, token=cluster.token)
        assert table.code == 0 and any(w["name"] == "local-1" and w["drained"] for w in table.json())

        undrained = run_cli("undrain", "local-1", "--master", cluster.url, token=cluster.token)
        assert undrained.code == 0, undrained.stderr
        assert view()["drained"] is False
        wait_until(lambda: len(on_w1()) > len(before), 30, message="local-1 to take chunks again")
        assert job.result(timeout=60) == [x * x for x in range(24)]


def test_a_workers_own_sigterm_drains_it_before_it_exits(procs: Processes, tmp_path: Path) -> None:
    """SIGTERM: shown drained at once, its running chunk finishes there, nothing new starts, exit 0."""
    cluster = start_cluster(procs, tmp_path / "data", workers=1)
    leaving = start_worker(procs, cluster.url, cluster.token, "leaving", 1, extra=("--grace", "30"))
    wait_for_workers(cluster.api, ["leaving"])
    samples, chunk = 16 * 40_000_000, 40_000_000  # 16 chunks of about 0.4 s each
    job_id = cluster.submit("montecarlo", samples=samples, seed=5, chunk_samples=chunk)
    wid = cluster.workers_by_name()["leaving"]["id"]

    def on_leaving() -> list[dict[str, Any]]:
        return [c for c in cluster.chunks(job_id) if c["worker"] == wid]

    wait_until(lambda: any(c["state"] == "running" for c in on_leaving()), 30, message="a chunk on 'leaving'")
    leaving.send_signal(signal.SIGTERM)
    shown = wait_until(lambda: (w := cluster.workers_by_name()["leaving"])["drained"] and w, 10,
                       message="'leaving' to be shown drained")
    assert shown["state"] != "busy" or shown["running"] == 1
    assert leaving.wait(60) == 0
    mine = on_leaving()
    assert mine and all(c["state"] == "done" for c in mine), mine  # finished, not handed back
    assert cluster.wait_job(job_id, 180)["result"] == reference_result(samples, 5, chunk)
    assert len(cluster.chunks(job_id)) == 16 and len(on_leaving()) == len(mine)
