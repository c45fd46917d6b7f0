"""Lab sharing with real processes: stragglers backed up, owners first, nice levels, resources.

Every montecarlo result is compared with the single-process reference, exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from harness import (Cluster, Processes, clean_env, reference_result, start_cluster, start_worker,
                     wait_for_workers, wait_until)

pytestmark = pytest.mark.timeout(180)


def chunk_processes(worker: subprocess.Popen[str]) -> list[psutil.Process]:
    """Every process below a worker agent (its chunk processes and whatever wraps them), but
    multiprocessing's resource tracker, which is no chunk's."""
    found = []
    for proc in psutil.Process(worker.pid).children(recursive=True):
        try:
            if not any("resource_tracker" in arg for arg in proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def freeze(procs: list[psutil.Process], stop: bool) -> None:
    for proc in procs:
        try:
            proc.suspend() if stop else proc.resume()
        except psutil.NoSuchProcess:
            pass


def on_worker(cluster: Cluster, job_id: str, worker_id: str) -> list[dict[str, Any]]:
    return [c for c in cluster.chunks(job_id) if c["worker"] == worker_id]


def test_frozen_chunk_processes_do_not_stall_a_job_and_their_worker_is_not_lost(procs: Processes,
                                                                                tmp_path: Path) -> None:
    """One worker's chunk processes are stopped (SIGSTOP) while its agent heartbeats on: at the job's
    tail its chunk gets a backup copy on the healthy worker, the job finishes exactly, and the frozen
    worker is never declared lost (the worker timeout is short, so a missed heartbeat would show)."""
    cluster = start_cluster(procs, tmp_path / "data", workers=0, master_extra=("--worker-timeout", "3"))
    frozen = start_worker(procs, cluster.url, cluster.token, "frozen")
    wait_for_workers(cluster.api, ["frozen"])
    samples, chunk = 12 * 4_000_000, 4_000_000  # 12 chunks of well under a second each
    job_id = cluster.submit("montecarlo", samples=samples, seed=21, chunk_samples=chunk)
    frozen_id = cluster.workers_by_name()["frozen"]["id"]
    wait_until(lambda: any(c["state"] == "running" for c in on_worker(cluster, job_id, frozen_id)), 30,
               message="a chunk running on 'frozen'")
    stopped = chunk_processes(frozen)
    assert stopped
    freeze(stopped, True)
    time.sleep(0.5)  # a result the agent had already read still arrives
    stuck = {c["index"] for c in on_worker(cluster, job_id, frozen_id) if c["state"] == "running"}
    assert stuck
    try:
        start_worker(procs, cluster.url, cluster.token, "healthy")
        states: set[str] = set()

        def finished() -> bool:
            states.add(cluster.workers_by_name()["frozen"]["state"])
            return cluster.job(job_id)["state"] in ("succeeded", "failed", "cancelled")

        wait_until(finished, 120, interval=0.2, message="the job to finish around the frozen worker")
        view = cluster.job(job_id)
        assert view["state"] == "succeeded", view
        assert view["result"] == reference_result(samples, 21, chunk)
        assert "lost" not in states, states
        assert cluster.workers_by_name()["frozen"]["state"] != "lost"
        healthy_id = cluster.workers_by_name()["healthy"]["id"]
        chunks = cluster.chunks(job_id)
        assert len(chunks) == 12 and all(c["state"] == "done" for c in chunks)
        # The stuck chunk was finished by its backup copy on the healthy worker (the frozen copy lost
        # the race and was killed, after which the frozen worker's fresh chunk process may help again).
        by_index = {c["index"]: c for c in chunks}
        assert all(by_index[i]["worker"] == healthy_id and by_index[i]["attempts"] > 1 for i in stuck), \
            ([(c["index"], c["worker"], c["attempts"]) for c in chunks], stuck, frozen_id)
    finally:
        freeze(stopped, False)


def _hog() -> subprocess.Popen[bytes]:
    """A program of the machine's owner: one core at 100%, nothing to do with RVIDIA."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)


@pytest.fixture
def hogs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def test_owner_first_pauses_while_the_owner_is_busy_then_lends_again(procs: Processes, tmp_path: Path,
                                                                     hogs: list[subprocess.Popen[bytes]]) -> None:
    """CPU-hog processes of the owner: the worker reports `paused`, its running chunk is stopped, then
    handed back after --vacate-after and finished elsewhere; with the hogs gone it is `idle` again.
    The busy and calm windows are shortened (5 s and 30 s by default) through the environment."""
    cluster = start_cluster(procs, tmp_path / "data", workers=0)
    env = clean_env(RVIDIA_TOKEN=cluster.token, RVIDIA_OWNER_BUSY_SECONDS="1", RVIDIA_OWNER_CALM_SECONDS="2",
                    RVIDIA_OWNER_SAMPLE_SECONDS="0.25")
    args = ["worker", "--master", cluster.url, "--slots", "1", "--name", "lender", "--grace", "1",
            "--owner-first", "--owner-cpu", "40", "--vacate-after", "2"]
    lender = procs.spawn(args, env, "worker-lender")
    wait_for_workers(cluster.api, ["lender"])
    samples, chunk = 16 * 30_000_000, 30_000_000  # chunks of about half a second: one is running at the pause
    job_id = cluster.submit("montecarlo", samples=samples, seed=8, chunk_samples=chunk)
    lender_id = cluster.workers_by_name()["lender"]["id"]
    wait_until(lambda: any(c["state"] == "running" for c in on_worker(cluster, job_id, lender_id)), 30,
               message="a chunk running on 'lender'")
    for _ in range(os.cpu_count() or 2):
        hogs.append(_hog())
    wait_until(lambda: cluster.workers_by_name()["lender"]["state"] == "paused", 30,
               message="'lender' to pause for its owner")
    nice = [p.nice() for p in chunk_processes(lender)]
    assert nice and all(n == 19 for n in nice), nice  # owner-first: chunk processes at nice 19

    def stopped() -> bool:
        try:
            return any(p.status() == psutil.STATUS_STOPPED for p in chunk_processes(lender))
        except psutil.NoSuchProcess:
            return False

    wait_until(stopped, 10, message="the running chunk's processes to be stopped")
    # Handed back after --vacate-after: a second worker (owner-first off) finishes the job exactly.
    start_worker(procs, cluster.url, cluster.token, "spare")
    view = cluster.wait_job(job_id, 150)
    assert view["state"] == "succeeded" and view["result"] == reference_result(samples, 8, chunk)
    assert cluster.workers_by_name()["lender"]["state"] == "paused"
    for proc in hogs:
        proc.kill()
    wait_until(lambda: cluster.workers_by_name()["lender"]["state"] == "idle", 30,
               message="'lender' to lend again once its owner is calm")
    assert lender.poll() is None


def test_nice_level_of_chunk_processes_without_owner_first(procs: Processes, tmp_path: Path) -> None:
    cluster = start_cluster(procs, tmp_path / "data", workers=0)
    worker = start_worker(procs, cluster.url, cluster.token, "nice5", extra=("--nice", "5"))
    wait_for_workers(cluster.api, ["nice5"])
    seen: list[list[int]] = []

    def lowered() -> bool:  # a chunk process lowers its own priority as it starts
        seen.append([p.nice() for p in chunk_processes(worker)])
        return bool(seen[-1]) and all(level == 5 for level in seen[-1])

    wait_until(lowered, 30, message=f"chunk processes at nice 5 (seen {seen[-1:]})")


def test_resources_place_chunks_and_an_unservable_job_says_why(procs: Processes, tmp_path: Path) -> None:
    cluster = start_cluster(procs, tmp_path / "data", workers=1)  # w1 offers nothing special
    start_worker(procs, cluster.url, cluster.token, "gpu", extra=("--resources", "gpu=1,ram_gb=16"))
    wait_for_workers(cluster.api, ["w1", "gpu"])
    gpu_id = cluster.workers_by_name()["gpu"]["id"]
    samples, chunk = 8 * 1_000_000, 1_000_000
    body = {"kind": "montecarlo", "params": {"samples": samples, "seed": 3, "chunk_samples": chunk},
            "resources": {"gpu": 1}}
    placed = cluster.api.post("/api/v1/jobs", json=body).json()["id"]
    body["resources"] = {"gpu": 2}
    stuck = cluster.api.post("/api/v1/jobs", json=body).json()["id"]
    view = cluster.wait_job(placed)
    assert view["result"] == reference_result(samples, 3, chunk)
    assert all(c["worker"] == gpu_id for c in cluster.chunks(placed))
    waiting = wait_until(lambda: (v := cluster.job(stuck))["reason"] and v, 10)
    assert waiting["state"] == "queued" and "resources" in waiting["reason"] and "gpu=2" in waiting["reason"]


def test_lending_hours_and_max_slots(procs: Processes, tmp_path: Path) -> None:
    """A worker outside its lending hours joins paused and takes nothing; --max-slots caps --slots."""
    cluster = start_cluster(procs, tmp_path / "data", workers=0)
    now = time.localtime()
    later = f"{(now.tm_hour + 2) % 24:02d}:00-{(now.tm_hour + 3) % 24:02d}:00"  # excludes the present
    start_worker(procs, cluster.url, cluster.token, "night", extra=("--hours", later))
    start_worker(procs, cluster.url, cluster.token, "capped", slots=4, extra=("--max-slots", "2"))
    wait_for_workers(cluster.api, ["night", "capped"])
    assert cluster.workers_by_name()["capped"]["slots"] == 2
    wait_until(lambda: cluster.workers_by_name()["night"]["state"] == "paused", 15,
               message="'night' to show paused outside its hours")
    samples, chunk = 6 * 1_000_000, 1_000_000
    job_id = cluster.submit("montecarlo", samples=samples, seed=4, chunk_samples=chunk)
    assert cluster.wait_job(job_id)["result"] == reference_result(samples, 4, chunk)
    night_id = cluster.workers_by_name()["night"]["id"]
    assert not on_worker(cluster, job_id, night_id)


def test_bad_hours_are_refused_with_a_reason() -> None:
    from harness import assert_one_line_error, run_cli

    result = run_cli("worker", "--master", "http://127.0.0.1:9", "--token", "x", "--hours", "25:00-26:00")
    assert_one_line_error(result, 2)
    assert "--hours" in result.stderr


def test_a_worker_reports_its_gpus_and_offers_them_as_a_resource(procs: Processes, tmp_path: Path) -> None:
    """The facts a worker reports include its GPUs (here from a stand-in nvidia-smi on PATH); a job
    asking resources={"gpu": 1} is placed there, and jobs run there on the CPU path when no CUDA
    library is installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200, 143771, 570.86.15'\n")
    smi.chmod(0o755)
    cluster = start_cluster(procs, tmp_path / "data", workers=0)
    env = clean_env(RVIDIA_TOKEN=cluster.token, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    procs.spawn(["worker", "--master", cluster.url, "--slots", "1", "--name", "gpubox", "--no-owner-first"],
                env, "worker-gpubox")
    shown = wait_for_workers(cluster.api, ["gpubox"])["gpubox"]
    assert shown["gpus"] == [{"name": "NVIDIA H200", "memory_bytes": 143771 * 1024 * 1024, "driver": "570.86.15"}]
    assert shown["resources"] == {"gpu": 1.0}
    assert shown["speed"] > 0 and shown["cores"] >= 1 and shown["memory_bytes"] > 0 and shown["os"]
    body = {"kind": "montecarlo", "params": {"samples": 2_000_000, "seed": 1}, "resources": {"gpu": 1}}
    job_id = cluster.api.post("/api/v1/jobs", json=body).json()["id"]
    assert cluster.wait_job(job_id)["result"] == reference_result(2_000_000, 1)
