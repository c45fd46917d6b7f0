"""``kill -9`` of workers at random moments, over jobs of every bulk kind: the result stays exact.

Each job runs on three one-slot workers; twice during it, at a random point of its progress (from
before the first chunk ends, while inputs are still being fetched, to well past half), a random live
worker is killed with SIGKILL and a fresh one joins in its place. The master must notice each loss,
run the lost chunks elsewhere and merge every chunk exactly once. The schedule comes from a printed
seed (``RVIDIA_FAULT_SEED`` replays it).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable

import pytest

import faultkit as fk
from harness import Processes, kill9, start_cluster, start_worker, wait_for_workers, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CASES: dict[str, Callable[[], fk.Case]] = {
    "montecarlo": lambda: fk.montecarlo(samples=48_000_000),
    "compress": lambda: fk.compress(size=12 << 20),
    "matmul": lambda: fk.matmul(m=3000, block_rows=25),
    "analytics": lambda: fk.analytics(rows=150_000),
    "render": lambda: fk.render(width=480, height=360, tile_rows=3),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_workers_killed_at_random_moments_lose_nothing(procs: Processes, tmp_path: Path, kind: str) -> None:
    rng = random.Random(fk.seed())
    case = CASES[kind]()
    cluster = start_cluster(procs, tmp_path / "data", workers=3)
    live = dict(cluster.workers)
    killed: list[str] = []
    started = time.monotonic()
    job_id = case.submit(cluster)

    first = rng.uniform(0.0, 0.4)
    for point in (first, rng.uniform(first + 0.1, 0.8)):
        if not fk.wait_progress(cluster, job_id, point):
            break  # it finished before this point: the remaining kills have nothing to hit
        time.sleep(rng.uniform(0, 0.05))  # not always right after a chunk ended
        joined = fk.live_names(cluster)
        name = rng.choice(sorted(n for n in live if n in joined))  # one that holds chunks, not one starting
        kill9(live.pop(name))
        killed.append(name)
        replacement = f"r{len(killed)}"
        live[replacement] = start_worker(procs, cluster.url, cluster.token, replacement)
    print(f"{kind}: killed {killed} by {time.monotonic() - started:.1f} s")
    assert killed, "the job ended before the first kill: make it longer"

    view = cluster.wait_job(job_id, timeout=90)
    fk.assert_exact(cluster, job_id, case, view)
    for name in killed:
        wait_until(lambda: fk.worker_state(cluster, name) == "lost", 15, message=f"{name} to be declared lost")
    # The replacements joined and the survivors are still fine: the cluster is whole again.
    wait_for_workers(cluster.api, sorted(live), timeout=30)
    assert all(proc.poll() is None for proc in live.values())


def test_a_worker_killed_mid_training_changes_nothing_in_the_model(procs: Processes, tmp_path: Path) -> None:
    """``train`` runs one stage per round: a worker killed in a middle round loses only that round's
    running shards, which run again elsewhere; the final model is train_reference's, bit for bit."""
    case = fk.train(rounds=8, shards=6)
    cluster = start_cluster(procs, tmp_path / "data", workers=3)
    job_id = case.submit(cluster)

    def round_reached() -> bool:
        detail = cluster.job(job_id)["progress"].get("detail") or {}
        return int(detail.get("round", 0)) >= 3

    wait_until(round_reached, 60, message="round 3 of the training")
    kill9(cluster.workers["w2"])
    view = cluster.wait_job(job_id, timeout=90)
    assert view["state"] == "succeeded", view["error"]
    case.check(cluster, view)
    wait_until(lambda: fk.worker_state(cluster, "w2") == "lost", 15, message="w2 to be declared lost")
