"""Two people share two workers (real processes): slots go to users first, then to each user's jobs,
and a per-user limit caps one user's running chunks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import Cluster, Processes, reference_result, start_cluster, wait_until

pytestmark = pytest.mark.timeout(180)
SAMPLES, CHUNK = 40 * 2_000_000, 2_000_000  # 40 chunks of a few tens of milliseconds


def user(cluster: Cluster, name: str) -> httpx.Client:
    made = cluster.api.post("/api/v1/tokens", json={"role": "user", "name": name})
    assert made.status_code == 201, made.text
    return httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {made.json()['token']}"},
                        timeout=30)


def submit(api: httpx.Client, seed: int) -> str:
    r = api.post("/api/v1/jobs", json={"kind": "montecarlo",
                                       "params": {"samples": SAMPLES, "seed": seed, "chunk_samples": CHUNK}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def done_per_job(cluster: Cluster, jobs: list[str]) -> dict[str, int]:
    return {j: cluster.job(j)["progress"]["done"] for j in jobs}


def test_two_users_share_two_workers_user_first(procs: Processes, tmp_path: Path) -> None:
    """alice queues three jobs, bob one: while all four have work, bob gets about half the chunks
    finished, not a quarter; every result is exact."""
    cluster = start_cluster(procs, tmp_path / "data", workers=2)
    alice, bob = user(cluster, "alice"), user(cluster, "bob")
    mine = [submit(alice, seed) for seed in (1, 2, 3)]
    theirs = submit(bob, 4)
    # Look while every job still has chunks left: bob's share of what has been finished so far.
    snapshot = wait_until(lambda: (d := done_per_job(cluster, [*mine, theirs]))[theirs] >= 16 and d, 120,
                          interval=0.02, message="bob's job to make progress")
    alice_done = sum(snapshot[j] for j in mine)
    assert alice_done > 0 and all(snapshot[j] < 40 for j in mine), snapshot
    share = snapshot[theirs] / (snapshot[theirs] + alice_done)
    assert 0.35 <= share <= 0.65, snapshot  # about half; round-robin between jobs would give bob 1/4
    for seed, job_id in zip((1, 2, 3, 4), [*mine, theirs]):
        assert cluster.wait_job(job_id, 120)["result"] == reference_result(SAMPLES, seed, CHUNK)


def test_a_per_user_limit_leaves_room_for_others(procs: Processes, tmp_path: Path) -> None:
    cluster = start_cluster(procs, tmp_path / "data", workers=2, master_extra=("--max-running-per-user", "1"))
    alice = user(cluster, "alice")
    job_id = submit(alice, 9)
    seen: Counter[int] = Counter()

    def finished() -> bool:
        view: dict[str, Any] = cluster.job(job_id)
        seen[view["progress"]["running"]] += 1
        return view["state"] == "succeeded"

    wait_until(finished, 120, interval=0.02, message="alice's job to finish")
    assert max(seen) == 1, seen  # two free slots, never more than one of hers at once
    assert cluster.job(job_id)["result"] == reference_result(SAMPLES, 9, CHUNK)
