"""Retention and the disk floor with real processes (docs/operations.md, "Retention and disk space")."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from harness import Master, Processes, run_cli, start_cluster


def _upload(api: httpx.Client, data: bytes) -> str:
    response = api.post("/api/v1/blobs", content=data)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _compress(cluster, blob_id: str, level: int) -> dict:  # type: ignore[no-untyped-def]
    response = cluster.api.post("/api/v1/jobs", json={"kind": "compress", "params": {"level": level},
                                                      "inputs": {"data": blob_id}})
    assert response.status_code == 201, response.text
    view = cluster.wait_job(response.json()["id"])
    assert view["state"] == "succeeded", view
    return view


def test_gc_removes_old_jobs_and_unreferenced_blobs_keeps_shared(procs: Processes, tmp_path: Path) -> None:
    cluster = start_cluster(procs, tmp_path / "data", workers=1)
    shared = _upload(cluster.api, b"shared between an old and a kept job\n" * 1000)
    own = _upload(cluster.api, b"only the old job uses this\n" * 1000)
    old_a = _compress(cluster, shared, 1)
    old_b = _compress(cluster, own, 1)
    time.sleep(4.0)  # the first two jobs are now older than the 3 s retention given to gc below
    kept = _compress(cluster, shared, 9)  # names the shared blob by id: not uploaded again

    done = run_cli("gc", "--older-than", "3", "--json", "--master", cluster.url, token=cluster.token)
    assert done.code == 0, done.stderr
    freed = done.json()
    assert freed["jobs"] == 2 and freed["blobs"] >= 3 and freed["bytes"] > 0
    for job in (old_a, old_b):
        assert cluster.api.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    assert cluster.api.get(f"/api/v1/jobs/{kept['id']}").status_code == 200

    def exists(blob_id: str) -> bool:
        return cluster.api.get(f"/api/v1/blobs/{blob_id}", headers={"Range": "bytes=0-0"}).status_code in (200, 206)

    assert exists(shared) and exists(kept["outputs"]["data.gz"])
    assert not exists(own)
    assert not exists(old_a["outputs"]["data.gz"]) and not exists(old_b["outputs"]["data.gz"])

    again = run_cli("gc", "--master", cluster.url, token=cluster.token)  # default retention: nothing to free
    assert again.code == 0 and again.stdout.startswith("removed 0 jobs"), again


def test_uploads_refused_with_507_under_the_disk_floor(procs: Processes, tmp_path: Path) -> None:
    master = Master(procs, tmp_path / "data", extra=["--min-free-disk", "1000000TiB"]).start()
    with master.client() as api:
        response = api.post("/api/v1/blobs", content=b"x" * 100)
        assert response.status_code == 507
        assert "--min-free-disk" in response.json()["error"]
        assert api.get("/api/v1/health").status_code == 200
    data = tmp_path / "in.txt"
    data.write_text("hello\n")
    result = run_cli("submit", "compress", "-i", f"data={data}", "--master", master.url, token=master.token)
    assert result.code != 0 and "nearly full" in result.stderr and "Traceback" not in result.stderr
