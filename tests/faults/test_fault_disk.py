"""The master's data dir runs out of space, or turns read-only, under a running master.

The data dir is a small tmpfs the test mounts (root only). With ``--min-free-disk 0`` the master's own
floor is off, so the writes really hit ENOSPC (or EROFS): uploads and submissions must be refused with
a JSON error that says why (507 Insufficient Storage), never a traceback; the master must keep
serving; once space is freed everything works again, the earlier jobs and outputs are intact and
SQLite's ``PRAGMA integrity_check`` is ``ok``.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

import faultkit as fk
from harness import Cluster, Processes, kill9, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs, unmounted afterwards whatever happens (the processes using it stop first)."""
    fk.need_root("mounting a tmpfs")
    fk.need_tools("mount", "umount")
    where = tmp_path / "small"
    where.mkdir()
    fk.sh("mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(where))
    try:
        yield where
    finally:
        if fk.sh("umount", "-R", str(where), check=False).returncode != 0:
            fk.sh("umount", "-R", "-l", str(where), check=False)


def _fill(folder: Path) -> Path:
    """Write a file until the filesystem has no byte left; return it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1 << 10, 1):  # big writes, then the last few bytes too
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(str(db), timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _assert_refused_with_reason(response: object, words: tuple[str, ...]) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status == 507, (status, response.text)  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert "Traceback" not in body["error"] and any(w in body["error"].lower() for w in words), body


def _healthy(cluster: Cluster) -> None:
    assert cluster.master.proc is not None and cluster.master.proc.poll() is None, "the master died"
    assert cluster.api.get("/api/v1/health").json()["status"] == "ok"


def test_a_full_data_dir_refuses_writes_clearly_and_recovers(procs: Processes, small_disk: Path) -> None:
    data = small_disk / "data"
    cluster = start_cluster(procs, data, workers=1, master_extra=("--min-free-disk", "0"))
    earlier = fk.compress(size=300_000, block_size=64 << 10, seed=7)
    earlier_id = earlier.submit(cluster)
    earlier_view = cluster.wait_job(earlier_id)
    fk.assert_exact(cluster, earlier_id, earlier, earlier_view)

    running = fk.montecarlo(samples=40_000_000, seed=12, chunk_samples=10_000)
    running_id = running.submit(cluster)
    assert fk.wait_progress(cluster, running_id, 0.05), "the job ended before the disk filled"
    worker_id = cluster.workers_by_name()["w1"]["id"]
    filler = _fill(small_disk)
    try:
        # The job that was running goes on and ends right, from memory, while nothing can be saved.
        view = cluster.wait_job(running_id, timeout=60)
        fk.assert_exact(cluster, running_id, running, view)
        rows = cluster.workers_by_name()
        assert rows["w1"]["id"] == worker_id and rows["w1"]["state"] == "idle", "the worker was dropped"
        big = os.urandom(1 << 20)
        for attempt in range(3):  # refused every time, and the master stays up
            _assert_refused_with_reason(cluster.api.post("/api/v1/blobs", content=big), ("space", "full"))
            _healthy(cluster)
        # Reading still works while the disk is full.
        assert cluster.job(earlier_id)["result"] == earlier_view["result"]
        assert fk.output(cluster, earlier_view, "data.gz") == fk.output(cluster, earlier_view, "data.gz")
        # A submission needs the database to grow: refused the same way, or accepted if SQLite had room.
        response = cluster.api.post("/api/v1/jobs", json={"kind": "montecarlo", "params": {"samples": 1000}})
        if response.status_code != 201:
            _assert_refused_with_reason(response, ("space", "full"))
        _healthy(cluster)
    finally:
        filler.unlink()

    # Space again: uploads and jobs work, and nothing from before was damaged.
    after = fk.compress(size=400_000, block_size=64 << 10, seed=8)
    after_id = after.submit(cluster)
    fk.assert_exact(cluster, after_id, after, cluster.wait_job(after_id))
    mc = fk.montecarlo(samples=2_000_000, seed=9, chunk_samples=100_000)
    mc_id = mc.submit(cluster)
    fk.assert_exact(cluster, mc_id, mc, cluster.wait_job(mc_id))
    fk.assert_exact(cluster, earlier_id, earlier, cluster.job(earlier_id))
    assert _integrity(data / "rvidia.db") == "ok"
    # What the master kept in memory while the disk was full reached the disk: a restarted master
    # (kill -9, no clean shutdown) knows the job that ended then.
    assert cluster.master.proc is not None
    kill9(cluster.master.proc)
    assert _integrity(data / "rvidia.db") == "ok"
    cluster.master.start()
    fk.assert_exact(cluster, running_id, running, cluster.job(running_id))
    fk.assert_exact(cluster, earlier_id, earlier, cluster.job(earlier_id))


def test_a_read_only_blob_dir_refuses_writes_clearly_and_recovers(procs: Processes, small_disk: Path) -> None:
    """The blob dir turns read-only under the master (a read-only bind mount over it: a busy file
    system cannot be remounted read-only as a whole, and root ignores permission bits)."""
    data = small_disk / "data"
    cluster = start_cluster(procs, data, workers=1, master_extra=("--min-free-disk", "0"))
    earlier = fk.montecarlo(samples=1_000_000, seed=3, chunk_samples=100_000)
    earlier_id = earlier.submit(cluster)
    earlier_view = cluster.wait_job(earlier_id)
    fk.assert_exact(cluster, earlier_id, earlier, earlier_view)

    blobs = data / "blobs"
    fk.sh("mount", "--bind", str(blobs), str(blobs))
    fk.sh("mount", "-o", "remount,bind,ro", str(blobs))
    try:
        response = cluster.api.post("/api/v1/blobs", content=b"x" * 1000)
        _assert_refused_with_reason(response, ("read-only", "not writable", "read only"))
        _healthy(cluster)
        assert cluster.job(earlier_id)["result"] == earlier_view["result"]
    finally:
        fk.sh("umount", str(blobs))

    after = fk.compress(size=200_000, block_size=64 << 10, seed=5)
    after_id = after.submit(cluster)
    fk.assert_exact(cluster, after_id, after, cluster.wait_job(after_id))
    assert _integrity(data / "rvidia.db") == "ok"


def test_the_small_disk_is_a_real_tmpfs(small_disk: Path) -> None:
    """The fixture really mounted a tmpfs (so the tests above test what they say)."""
    out = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", str(small_disk)], capture_output=True, text=True)
    assert out.stdout.strip() == "tmpfs"
