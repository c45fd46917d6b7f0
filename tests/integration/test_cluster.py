"""A real master and real workers: sharing work, losing a worker, losing the master, cancelling.

Every montecarlo result is compared with the single-process reference, exactly: chunk boundaries and
random streams do not depend on who ran what, so a lost or re-run chunk must not change a single count.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psutil

from harness import (Cluster, Processes, kill9, reference_result, start_cluster, wait_for_workers,
                      wait_until)

# Small chunks make a job that lasts a couple of seconds while the reference stays cheap to compute.
LONG = {"samples": 24_000_000, "seed": 11, "chunk_samples": 8_000}
LONG_CHUNKS = LONG["samples"] // LONG["chunk_samples"]


def _running_with_progress(cluster: Cluster, job_id: str, at_least: int) -> dict[str, Any] | None:
    view = cluster.job(job_id)
    assert view["state"] in ("queued", "running"), f"job ended too early: {view['state']}"
    return view if view["state"] == "running" and view["progress"]["done"] >= at_least else None


def _committed_done(db: Path, job_id: str) -> set[int]:
    """Chunk indices whose completion the master has committed to its database (what survives kill -9)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, timeout=5)
    try:
        rows = conn.execute("SELECT idx FROM chunks WHERE job_id=? AND state='done'", (job_id,)).fetchall()
    finally:
        conn.close()
    return {idx for (idx,) in rows}


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---------------------------------------------------------------- a shared cluster


def test_two_workers_share_a_job_and_match_the_reference(cluster: Cluster) -> None:
    params = {"samples": 20_000_000, "seed": 3, "chunk_samples": 500_000}
    job_id = cluster.submit("montecarlo", **params)
    view = cluster.wait_job(job_id)

    assert view["state"] == "succeeded", view
    assert view["result"] == reference_result(**params)
    assert view["progress"] == {"total": 40, "done": 40, "running": 0, "failed": 0}
    ids = {w["id"] for w in cluster.workers_by_name().values()}
    assert set(view["workers"]) == ids, f"both workers should have run chunks: {view['workers']}"
    assert all(n > 0 for n in view["workers"].values())
    assert sum(view["workers"].values()) == 40
    chunks = cluster.chunks(job_id)
    assert [c["index"] for c in chunks] == list(range(40))
    assert all(c["state"] == "done" and c["worker"] in ids for c in chunks)


def test_cancel_a_long_job_frees_the_workers(cluster: Cluster) -> None:
    job_id = cluster.submit("montecarlo", samples=10**11, seed=1)  # 100,000 chunks: minutes of work
    wait_until(lambda: _running_with_progress(cluster, job_id, 1), 30, message="the job to make progress")

    response = cluster.api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    view = cluster.job(job_id)
    assert view["state"] == "cancelled" and view["finished_at"] is not None

    again = cluster.api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert isinstance(again.json()["error"], str)

    def all_idle() -> bool:
        rows = cluster.workers_by_name().values()
        return all(w["state"] == "idle" and w["running"] == 0 for w in rows)

    wait_until(all_idle, 10, message="both workers to be idle after the cancel")
    assert cluster.job(job_id)["progress"]["running"] == 0
    assert not any(c["state"] == "running" for c in cluster.chunks(job_id))

    # The workers really are free: a small job runs to the end on them.
    params = {"samples": 2_000_000, "seed": 8}
    view = cluster.wait_job(cluster.submit("montecarlo", **params), 30)
    assert view["result"] == reference_result(**params)


def test_cancel_hands_the_slots_to_a_waiting_job(cluster: Cluster) -> None:
    """The freed slots go to the next job at once: its chunks reach the workers together with the cancel."""
    def post(priority: int, **params: Any) -> str:
        response = cluster.api.post("/api/v1/jobs", json={"kind": "montecarlo", "params": params,
                                                          "priority": priority})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    blocker = post(10, samples=10**11, chunk_samples=10**7)  # ~0.2 s chunks, for many minutes
    wait_until(lambda: cluster.job(blocker)["progress"]["running"] == 2, 30, message="both slots busy")
    params = {"samples": 3_000_000, "seed": 6}
    waiting = post(0, **params)
    assert cluster.job(waiting)["state"] == "queued"  # a lower priority waits for free slots

    assert cluster.api.post(f"/api/v1/jobs/{blocker}/cancel").status_code == 200
    view = cluster.wait_job(waiting, 30)
    assert view["state"] == "succeeded" and view["result"] == reference_result(**params)


# ---------------------------------------------------------------- faults (a cluster each)


def test_kill_9_of_a_worker_mid_job_keeps_the_result_exact(procs: Processes, tmp_path: Path) -> None:
    cluster = start_cluster(procs, tmp_path / "data")
    victim_name = "w1"
    victim = cluster.workers[victim_name]
    victim_id = cluster.workers_by_name()[victim_name]["id"]

    job_id = cluster.submit("montecarlo", **LONG)
    wait_until(lambda: _running_with_progress(cluster, job_id, LONG_CHUNKS // 20), 60,
               interval=0.02, message="the job to get going")
    chunk_procs = psutil.Process(victim.pid).children(recursive=True)
    assert chunk_procs, "a one-slot worker runs its chunks in a child process"
    kill9(victim)

    wait_until(lambda: cluster.workers_by_name()[victim_name]["state"] == "lost", 20,
               message="the killed worker to be declared lost")
    view = cluster.wait_job(job_id)
    assert view["state"] == "succeeded", view
    assert view["result"] == reference_result(**LONG)

    chunks = cluster.chunks(job_id)
    assert len(chunks) == LONG_CHUNKS
    assert all(c["state"] == "done" for c in chunks)
    assert sum(view["workers"].values()) == LONG_CHUNKS
    rows = {w["id"]: w for w in cluster.api.get("/api/v1/workers").json()}
    assert rows[victim_id]["state"] == "lost"
    wait_until(lambda: cluster.workers_by_name()["w2"]["state"] == "idle", 10, message="the survivor to be idle")

    # The chunk processes die with their worker.
    wait_until(lambda: not any(_alive(p) for p in chunk_procs), 10,
               message="the killed worker's chunk processes to exit")


def test_kill_9_of_the_master_mid_job_resumes_where_it_was(procs: Processes, tmp_path: Path) -> None:
    cluster = start_cluster(procs, tmp_path / "data")
    db = tmp_path / "data" / "rvidia.db"
    ids_before = {name: w["id"] for name, w in cluster.workers_by_name().items()}

    job_id = cluster.submit("montecarlo", **LONG)

    def a_tenth_committed() -> set[int] | None:
        done = _committed_done(db, job_id)
        return done if len(done) >= LONG_CHUNKS // 10 else None

    committed = wait_until(a_tenth_committed, 60, interval=0.02, message="a tenth of the chunks to be committed")
    assert len(committed) < LONG_CHUNKS, "the job should still be running when the master dies"
    old_port = cluster.master.port
    assert cluster.master.proc is not None
    kill9(cluster.master.proc)

    cluster.master.start()  # same data dir, same port
    assert cluster.master.port == old_port
    # The workers come back on their own, with backoff; nobody restarts them.
    wait_for_workers(cluster.api, list(cluster.workers), timeout=30)
    assert all(proc.poll() is None for proc in cluster.workers.values())

    view = cluster.wait_job(job_id)
    assert view["state"] == "succeeded", view
    assert view["result"] == reference_result(**LONG)

    chunks = {c["index"]: c for c in cluster.chunks(job_id)}
    assert len(chunks) == LONG_CHUNKS and all(c["state"] == "done" for c in chunks.values())
    rerun = sorted(i for i in committed if chunks[i]["attempts"] != 1)
    assert not rerun, f"chunks committed before the kill ran again: {rerun[:20]}"
    first_time = sum(1 for c in chunks.values() if c["attempts"] == 1)
    assert first_time > LONG_CHUNKS // 2, f"only {first_time} of {LONG_CHUNKS} chunks ran once"
    assert set(view["workers"]) <= set(ids_before.values()), "reconnected workers keep their ids"
