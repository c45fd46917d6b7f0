"""Upgrades: a data dir written by schema version 1 is migrated in place (docs/operations.md, "Upgrades")."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rvidia.master.store import SCHEMA_VERSION, Store, StoreError

# The schema text of version 1, frozen here as RVIDIA 0.1 wrote it (store.py's _SCHEMA at the time).
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, role TEXT NOT NULL, name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, state TEXT NOT NULL,
    params TEXT NOT NULL, inputs TEXT NOT NULL,
    priority INTEGER NOT NULL, max_attempts INTEGER NOT NULL, timeout REAL,
    replicas INTEGER NOT NULL, resources TEXT NOT NULL,
    created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
    reason TEXT, error TEXT, result TEXT, outputs TEXT NOT NULL DEFAULT '{}',
    stage INTEGER NOT NULL DEFAULT 0, n_chunks INTEGER NOT NULL DEFAULT 0, stage_state BLOB,
    done INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    idem_key TEXT UNIQUE, submitter TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    job_id TEXT NOT NULL, stage INTEGER NOT NULL, idx INTEGER NOT NULL,
    state TEXT NOT NULL, worker TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, started_at TEXT, finished_at TEXT,
    error TEXT, result BLOB, seq INTEGER,
    PRIMARY KEY (job_id, stage, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_seq ON chunks (job_id, seq);
"""


def make_v1_database(path: Path) -> None:
    """A version-1 database holding one finished montecarlo job with one done chunk, and a token."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1)
    db.execute("INSERT INTO meta VALUES ('schema', '1')")
    db.execute("INSERT INTO tokens (hash, role, name, created_at) VALUES ('h', 'admin', 'admin', '2024-01-01')")
    db.execute(
        "INSERT INTO jobs (id, kind, state, params, inputs, priority, max_attempts, timeout, replicas, resources,"
        " created_at, finished_at, result, outputs, n_chunks, done, submitter) VALUES "
        "('jold', 'montecarlo', 'succeeded', '{\"samples\": 10}', '{}', 0, 3, NULL, 1, '{}',"
        " '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:01.000Z', '{\"pi\": 3.2}', '{}', 1, 1, 'admin')")
    db.execute("INSERT INTO chunks (job_id, stage, idx, state, worker, attempts, result, seq) "
               "VALUES ('jold', 0, 0, 'done', 'w1', 1, x'0102', 1)")
    db.commit()
    db.close()


def test_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "rvidia.db"
    make_v1_database(path)
    store = Store(path)
    try:
        version = store.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
        assert version == str(SCHEMA_VERSION) == "2"
        columns = {row[1] for row in store.db.execute("PRAGMA table_info(chunks)")}
        assert "log" in columns
        assert "deadline" in {row[1] for row in store.db.execute("PRAGMA table_info(jobs)")}
        job = store.get_job("jold")
        assert job is not None and job["state"] == "succeeded" and job["result"] == {"pi": 3.2}
        assert list(store.chunk_results("jold", 0)) == [(0, b"\x01\x02")]
        assert store.tokens()[0]["name"] == "admin"
        assert store.get_chunk_log("jold", 0) == ""  # migrated chunks have no output yet
        store.chunk_log("jold", 0, 0, 1, "hello\n")
        store.commit()
        assert store.get_chunk_log("jold", 0) == "hello\n"
        assert store.get_chunk_log("jold", 1) is None
    finally:
        store.close()
    again = Store(path)  # a migrated database opens again without migrating twice
    try:
        assert again.get_chunk_log("jold", 0) == "hello\n"
    finally:
        again.close()


def test_new_database_has_the_current_schema(tmp_path: Path) -> None:
    store = Store(tmp_path / "rvidia.db")
    try:
        assert store.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(SCHEMA_VERSION)
        assert "log" in {row[1] for row in store.db.execute("PRAGMA table_info(chunks)")}
    finally:
        store.close()


def test_a_failed_migration_leaves_version_1(tmp_path: Path) -> None:
    path = tmp_path / "rvidia.db"
    make_v1_database(path)
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE jobs ADD COLUMN deadline REAL")  # makes the migration's second ALTER fail
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="could not upgrade .* from schema 1 to 2"):
        Store(path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "1"
    assert "log" not in {row[1] for row in db.execute("PRAGMA table_info(chunks)")}  # first ALTER undone
    db.close()
