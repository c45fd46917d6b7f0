"""The SQLite store: jobs, chunk progress and results, tokens, schema versions, durability."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from rvidia.master.store import SCHEMA_VERSION, Store, StoreError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "rvidia.db")
    yield s
    s.close()


def job(job_id: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": job_id, "kind": "montecarlo", "state": "queued", "params": {"samples": 3000, "nested": [1, {"a": None}]},
        "inputs": {}, "priority": 0, "max_attempts": 3, "timeout": None, "replicas": 1, "resources": {},
        "created_at": "2024-01-01T00:00:00.000Z", "stage": 0, "n_chunks": 3, "stage_state": None,
        "idem_key": None, "submitter": "admin", "started_at": None, "finished_at": None, "reason": None,
        "error": None, "result": None, "outputs": {}, "done": 0, "failed": 0,
    }
    row.update(changes)
    return row


# ---------------------------------------------------------------- jobs


def test_insert_and_get_round_trip(store: Store) -> None:
    row = job("j1", inputs={"a": "ab" * 32}, resources={"gpu": 1.0}, stage_state=b"\x92\x01\x02",
              idem_key="k1", timeout=2.5, priority=-4)
    store.insert_job(row)
    got = store.get_job("j1")
    assert got is not None
    for key, value in row.items():
        assert got[key] == value, key
    assert store.get_job("jmissing") is None


def test_update_job(store: Store) -> None:
    store.insert_job(job("j1"))
    store.update_job("j1", state="succeeded", result={"pi": 3.14, "inside": 7}, outputs={"c.npy": "f" * 64},
                     finished_at="2024-01-01T00:01:00.000Z", done=3)
    got = store.get_job("j1")
    assert got is not None
    assert (got["state"], got["done"], got["finished_at"]) == ("succeeded", 3, "2024-01-01T00:01:00.000Z")
    assert got["result"] == {"pi": 3.14, "inside": 7} and got["outputs"] == {"c.npy": "f" * 64}
    assert got["params"] == job("j1")["params"]  # untouched fields stay
    store.update_job("j1", result=None)
    assert store.get_job("j1")["result"] is None  # type: ignore[index]


def test_idempotency_key_lookup_and_uniqueness(store: Store) -> None:
    store.insert_job(job("j1", idem_key="key"))
    store.insert_job(job("j2"))
    store.insert_job(job("j3"))  # many jobs without a key are fine
    assert store.job_by_idem_key("key")["id"] == "j1"  # type: ignore[index]
    assert store.job_by_idem_key("other") is None
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_job(job("j4", idem_key="key"))
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_job(job("j1"))


def test_list_jobs_newest_first_with_paging(store: Store) -> None:
    ids = [f"j{i:02d}" for i in range(12)]
    for job_id in ids:
        store.insert_job(job(job_id))
    newest = ids[::-1]
    assert [r["id"] for r in store.list_jobs(100)] == newest
    assert [r["id"] for r in store.list_jobs(5)] == newest[:5]
    seen: list[str] = []
    before = None
    while True:
        page = store.list_jobs(5, before)
        if not page:
            break
        seen += [r["id"] for r in page]
        before = page[-1]["id"]
    assert seen == newest
    assert store.list_jobs(5, "jnone") == []
    assert store.list_jobs(3)[0]["params"] == job("x")["params"]  # rows come decoded


def test_unfinished_jobs_oldest_first(store: Store) -> None:
    for job_id, state in [("a", "queued"), ("b", "succeeded"), ("c", "running"), ("d", "failed"),
                          ("e", "cancelled"), ("f", "queued")]:
        store.insert_job(job(job_id, state=state))
    assert [r["id"] for r in store.unfinished_jobs()] == ["a", "c", "f"]


# ---------------------------------------------------------------- chunks


def test_chunk_progress_and_results_round_trip(store: Store) -> None:
    store.insert_job(job("j"))
    for idx in range(4):
        store.chunk_started("j", 0, idx, "w1", 1, f"t{idx}")
    store.chunk_done("j", 0, 2, b"\x00result-2\xff", "t5", 1)
    store.chunk_done("j", 0, 0, b"result-0", "t6", 2)
    store.chunk_retry("j", 0, 1, "worker w1 lost", False, "t7")  # a loss: no failure counted
    store.chunk_started("j", 0, 1, "w2", 2, "t8")
    store.chunk_retry("j", 0, 1, "Traceback ...\nValueError: x", True, "t9")
    store.chunk_started("j", 0, 1, "w2", 3, "t10")
    store.chunk_done("j", 0, 1, b"result-1", "t11", 3)

    done, attempts, failures = store.chunk_progress("j", 0)
    assert done == {0, 1, 2}
    assert attempts == {0: 1, 1: 3, 2: 1, 3: 1}
    assert failures == {0: 0, 1: 1, 2: 0, 3: 0}
    assert list(store.chunk_results("j", 0)) == [(0, b"result-0"), (1, b"result-1"), (2, b"\x00result-2\xff")]
    assert store.results_since("j", 0, 0, 100) == [(1, 2, b"\x00result-2\xff"), (2, 0, b"result-0"),
                                                   (3, 1, b"result-1")]
    assert store.results_since("j", 0, 2, 100) == [(3, 1, b"result-1")]
    assert store.results_since("j", 0, 0, 1) == [(1, 2, b"\x00result-2\xff")]
    assert store.done_by_worker("j") == {"w1": 2, "w2": 1}

    rows = store.chunks("j", 100, 0)
    assert [(r["index"], r["state"], r["worker"], r["attempts"]) for r in rows] == [
        (0, "done", "w1", 1), (1, "done", "w2", 3), (2, "done", "w1", 1), (3, "running", "w1", 1)]
    assert rows[1]["error"] is None and rows[1]["failures"] == 1 and rows[1]["finished_at"] == "t11"
    assert rows[3]["finished_at"] is None and rows[3]["started_at"] == "t3"
    assert [r["index"] for r in store.chunks("j", 2, 1)] == [1, 2]


def test_chunk_failed_and_cancelled(store: Store) -> None:
    store.insert_job(job("j"))
    for idx in range(3):
        store.chunk_started("j", 0, idx, "w", 1, "t")
    store.chunk_done("j", 0, 0, b"ok", "t", 1)
    store.chunk_failed("j", 0, 1, "boom", "t")
    store.chunk_cancelled("j")
    states = {r["index"]: (r["state"], r["error"]) for r in store.chunks("j", 10, 0)}
    assert states == {0: ("done", None), 1: ("failed", "boom"), 2: ("cancelled", None)}
    assert store.chunk_progress("j", 0)[2][1] == 1


def test_stages_are_kept_apart(store: Store) -> None:
    store.insert_job(job("j"))
    store.chunk_started("j", 0, 0, "w", 1, "t")
    store.chunk_done("j", 0, 0, b"stage0", "t", 1)
    store.chunk_started("j", 1, 0, "w", 1, "t")
    store.chunk_done("j", 1, 0, b"stage1", "t", 2)
    assert list(store.chunk_results("j", 0)) == [(0, b"stage0")]
    assert list(store.chunk_results("j", 1)) == [(0, b"stage1")]
    assert store.chunk_progress("j", 1)[0] == {0}
    assert [(r["stage"], r["index"]) for r in store.chunks("j", 10, 0)] == [(0, 0), (1, 0)]


def test_jobs_do_not_see_each_others_chunks(store: Store) -> None:
    for job_id in ("a", "b"):
        store.insert_job(job(job_id))
        store.chunk_started(job_id, 0, 0, "w", 1, "t")
        store.chunk_done(job_id, 0, 0, job_id.encode(), "t", 1)
    store.chunk_cancelled("a")
    assert list(store.chunk_results("b", 0)) == [(0, b"b")]
    assert store.chunks("nope", 10, 0) == [] and store.chunk_progress("nope", 0) == (set(), {}, {})


# ---------------------------------------------------------------- tokens


def test_tokens(store: Store) -> None:
    store.add_token("h1", "admin", "admin", "2024-01-01")
    store.add_token("h2", "worker", "lab", "2024-01-02")
    assert [(t["name"], t["role"]) for t in store.tokens()] == [("admin", "admin"), ("lab", "worker")]
    assert store.revoke_token("lab") is True
    assert store.revoke_token("lab") is False
    assert [t["name"] for t in store.tokens()] == ["admin"]
    assert [t["revoked"] for t in store.tokens(include_revoked=True)] == [0, 1]


# ---------------------------------------------------------------- durability and versions


def test_committed_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "rvidia.db"
    first = Store(path)
    first.insert_job(job("j"))
    first.chunk_started("j", 0, 0, "w", 1, "t")
    first.chunk_done("j", 0, 0, b"r0", "t", 1)
    other = Store(path)  # a second reader, as after a kill -9
    assert other.get_job("j") is not None  # submissions are committed at once
    assert other.chunk_progress("j", 0)[0] == set()  # chunk progress waits for the group commit
    first.commit()
    assert other.chunk_progress("j", 0)[0] == {0}
    other.close()
    first.close()
    again = Store(path)
    try:
        assert list(again.chunk_results("j", 0)) == [(0, b"r0")]
        assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        again.close()


def test_newer_schema_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "rvidia.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError) as info:
        Store(path)
    reason = str(info.value)
    assert f"schema {SCHEMA_VERSION + 1}" in reason
    assert f"knows {SCHEMA_VERSION}" in reason and "upgrade" in reason


def test_same_schema_reopens(tmp_path: Path) -> None:
    path = tmp_path / "rvidia.db"
    Store(path).close()
    store = Store(path)
    try:
        assert store.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(SCHEMA_VERSION)
    finally:
        store.close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rvidia.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the database"):
        Store(path)
