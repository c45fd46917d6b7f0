"""The store on a full disk, simulated without root: ``PRAGMA max_page_count`` makes SQLite answer
SQLITE_FULL ("database or disk is full") exactly as a full file system does.

Group commits that fail keep their writes (and reads still see them) until a later commit succeeds;
a write a client is answered on (a submission) is undone and its error raised, and never reaches the
disk later. tests/faults/test_fault_disk.py does the same with a real tmpfs and a running master.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from rvidia.master.store import Store

AT = "2024-01-01T00:00:00.000Z"


def job(job_id: str) -> dict[str, Any]:
    return {"id": job_id, "kind": "montecarlo", "state": "queued", "params": {}, "inputs": {}, "priority": 0,
            "max_attempts": 3, "timeout": None, "replicas": 1, "resources": {}, "created_at": AT, "stage": 0,
            "n_chunks": 40, "stage_state": None, "idem_key": None, "submitter": "admin", "started_at": None,
            "finished_at": None, "reason": None, "error": None, "result": None, "outputs": {}, "done": 0,
            "failed": 0}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "rvidia.db")
    yield s
    s.close()


def _fill(store: Store) -> None:
    """No page more: the next write that needs one fails with SQLITE_FULL."""
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")


def _free(store: Store) -> None:
    store.db.execute("PRAGMA max_page_count = 1073741823")


def _on_disk(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_failed_group_commits_keep_their_writes_until_space_returns(store: Store) -> None:
    store.insert_job(job("j1"))
    _fill(store)
    for i in range(40):  # large results need new pages: the disk is "full"
        store.chunk_started("j1", 0, i, "w1", 1, AT)
        store.chunk_done("j1", 0, i, bytes([i]) * 20_000, AT, i + 1, "w1", 1)
    store.update_job("j1", state="succeeded", result={"n": 40}, finished_at=AT, done=40)
    assert store.commit() is False
    assert store.commit() is False  # and again: nothing is dropped by retrying
    # (Here even the uncommitted writes find no page, so reads meanwhile see the old rows; on a real
    # full disk SQLite keeps them in memory and reads see them: tests/faults/test_fault_disk.py.)
    assert _on_disk(store.path, "SELECT state FROM jobs WHERE id='j1'") == [("queued",)]

    _free(store)
    assert store.commit() is True
    assert _on_disk(store.path, "SELECT state FROM jobs WHERE id='j1'") == [("succeeded",)]
    done = _on_disk(store.path, "SELECT idx, length(result) FROM chunks WHERE job_id='j1' AND state='done'")
    assert sorted(done) == [(i, 20_000) for i in range(40)]
    assert _on_disk(store.path, "PRAGMA integrity_check") == [("ok",)]


def test_a_submission_on_a_full_disk_is_refused_and_never_saved_later(store: Store) -> None:
    store.insert_job(job("j1"))
    big = job("j2")
    big["params"] = {"blob": "x" * 200_000}  # needs new pages
    _fill(store)
    store.update_job("j1", state="running", started_at=AT)  # a pending group write, kept
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.insert_job(big)
    assert store.get_job("j2") is None
    assert store.get_job("j1")["state"] == "running"  # type: ignore[index]

    _free(store)
    assert store.commit() is True
    assert _on_disk(store.path, "SELECT id, state FROM jobs ORDER BY id") == [("j1", "running")]
    store.insert_job(big)  # with space, the same submission goes through
    assert _on_disk(store.path, "SELECT id FROM jobs ORDER BY id") == [("j1",), ("j2",)]


def test_a_bad_statement_is_its_callers_error_and_is_not_retried(store: Store) -> None:
    store.insert_job(job("j1"))
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_job(job("j1"))  # the same id twice
    store.update_job("j1", state="running")
    assert store.commit() is True
    assert _on_disk(store.path, "SELECT state FROM jobs") == [("running",)]
