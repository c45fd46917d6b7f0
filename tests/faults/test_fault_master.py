"""``kill -9`` of the master in the middle of a compress job, then a restart on the same data dir.

The job's input blob, its plan and every chunk committed as done before the kill survive in the data
dir; the workers reconnect by themselves, the remaining chunks run, and the gzip the job writes
decompresses to the input byte for byte. (test_cluster.py does the same for montecarlo.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import faultkit as fk
from harness import Processes, kill9, start_cluster, wait_for_workers, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _committed_done(db: Path, job_id: str) -> set[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, timeout=5)
    try:
        return {i for (i,) in conn.execute("SELECT idx FROM chunks WHERE job_id=? AND state='done'", (job_id,))}
    finally:
        conn.close()


def test_master_killed_mid_compress_resumes_and_the_gzip_is_exact(procs: Processes, tmp_path: Path) -> None:
    case = fk.compress(size=24 << 20, block_size=64 << 10, level=9, seed=4)
    cluster = start_cluster(procs, tmp_path / "data", workers=2)
    db = tmp_path / "data" / "rvidia.db"
    ids_before = {name: w["id"] for name, w in cluster.workers_by_name().items()}
    job_id = case.submit(cluster)
    total = cluster.job(job_id)["progress"]["total"]

    def some_committed() -> set[int] | None:
        done = _committed_done(db, job_id)
        return done if len(done) >= total // 8 else None

    committed = wait_until(some_committed, 60, interval=0.02, message="an eighth of the blocks to be committed")
    assert len(committed) < total, "the job should still be running when the master dies"
    assert cluster.master.proc is not None
    kill9(cluster.master.proc)

    cluster.master.start()  # the same data dir and port
    wait_for_workers(cluster.api, list(cluster.workers), timeout=30)
    view = cluster.wait_job(job_id, timeout=90)
    fk.assert_exact(cluster, job_id, case, view)

    chunks = {c["index"]: c for c in cluster.chunks(job_id)}
    rerun = sorted(i for i in committed if chunks[i]["attempts"] != 1)
    assert not rerun, f"blocks committed before the kill ran again: {rerun[:20]}"
    assert set(view["workers"]) <= set(ids_before.values()), "reconnected workers keep their ids"
    # The restarted master's database is sound.
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
