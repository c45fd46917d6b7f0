"""SQLite storage of jobs, chunks, chunk results and tokens (WAL, group commits).

Durability: a job submission is committed before the master answers it. Chunk progress is written
as it happens and committed at least every ``FLUSH_INTERVAL`` seconds (see ``Runtime``), so a
``kill -9`` of the master loses at most that window of finished chunks, which then run again;
a chunk whose completion was committed never runs again. See docs/architecture.md.

A full or failing disk: a group commit that fails keeps its writes (SQLite may roll the transaction
back; they are then written again, uncommitted, so reads still see them) and the next commit tries
again, so the master goes on in memory and catches up when space returns. A write whose caller
answers only once it is on disk (a submission, a token) is undone instead and its error raised.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any, Iterator

SCHEMA_VERSION = 2

# The tables as schema version 1 made them; later versions are reached by the MIGRATIONS below, so a
# new database and an upgraded one go through the same steps.
_SCHEMA = """
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

# version -> the statements that take a database from version - 1 to it, run in one transaction.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE chunks ADD COLUMN log TEXT",  # what each chunk printed (stdout and stderr)
        "ALTER TABLE jobs ADD COLUMN deadline REAL"),  # seconds after submission the job may run
}

_JSON_FIELDS = ("params", "inputs", "resources", "result", "outputs")
UNFINISHED = ("queued", "running")

log = logging.getLogger("rvidia.master")


class StoreError(RuntimeError):
    """The database cannot be used (a newer schema, a corrupt file, a full disk)."""


class Store:
    """All SQL lives here; callers use plain dicts. Single-threaded: the master's event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(str(path), isolation_level="DEFERRED", check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from None
        self._check_version()
        self.dirty = False
        self._unsaved: list[tuple[str, tuple[Any, ...]]] = []  # writes since the last commit, to write again
        self._stale = False  # the open transaction lost them (rolled back): the next commit writes them again
        self._failure: sqlite3.Error | None = None  # why the last commit failed; None once one succeeds

    def _check_version(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        # A database without the row was made just now by _SCHEMA, which is version 1.
        version = 1 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the data dir was written by a newer RVIDIA (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade RVIDIA to use it"
            )
        if row is not None and version == SCHEMA_VERSION:
            return
        try:
            self.db.execute("BEGIN")  # every step or none: a failed upgrade leaves the old version
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for sql in MIGRATIONS[target]:
                    self.db.execute(sql)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            self.db.commit()
        except sqlite3.Error as exc:
            self.db.rollback()
            raise StoreError(f"could not upgrade the database {self.path} from schema {version} to "
                             f"{SCHEMA_VERSION}: {exc}") from None

    def commit(self) -> bool:
        """Group commit, best effort: True once every write so far is on disk. If the disk refuses
        (full, read-only, failing), the writes are kept for the next commit and False is returned;
        the master carries on from memory meanwhile."""
        if not self.dirty:
            return True
        try:
            if self._stale:  # stays set until the whole list is written again
                for sql, args in self._unsaved:
                    self.db.execute(sql, args)
                self._stale = False
            self.db.commit()
        except sqlite3.OperationalError as exc:  # disk full, read-only, I/O error: not the data's fault
            self._failed(exc)
            return False
        self._unsaved.clear()
        self.dirty = False
        if self._failure is not None:
            log.warning("the database %s is writable again: every pending write is saved", self.path)
            self._failure = None
        return True

    def commit_now(self, mark: int = 0) -> None:
        """Commit for a caller that answers only once its writes (those from ``mark``, a length of the
        pending list taken before them) are on disk: if they cannot be, undo them and raise."""
        if self.commit():
            return
        assert self._failure is not None
        failure = self._failure
        del self._unsaved[mark:]
        self.dirty = bool(self._unsaved)
        self._rewrite()  # the others stay pending
        raise failure

    def _failed(self, exc: sqlite3.Error) -> None:
        if self._failure is None:
            log.error("could not write the database %s (%s); keeping %d pending writes in memory and "
                      "trying again", self.path, exc, len(self._unsaved))
        self._failure = exc
        if self.db.in_transaction and not self._stale:
            return  # SQLite kept the transaction: committing it again later is enough
        self._rewrite()

    def _rewrite(self) -> None:
        """Start the transaction over from the pending writes, uncommitted, so that reads meanwhile
        still see them; if even that fails, the next commit writes them."""
        self.db.rollback()
        try:
            for sql, args in self._unsaved:
                self.db.execute(sql, args)
            self._stale = False
        except sqlite3.Error:
            self.db.rollback()
            self._stale = True

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.db.close()

    def _write(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> None:
        entry = (sql, tuple(args))
        self._unsaved.append(entry)
        self.dirty = True
        if self._stale:
            return  # the transaction is gone: the next commit writes this with the others
        try:
            self.db.execute(sql, entry[1])
        except sqlite3.OperationalError as exc:
            self._failed(exc)
        except sqlite3.Error:
            self._unsaved.pop()  # a bad statement (a constraint): its caller's error, never retried
            raise

    # ------------------------------------------------------------ tokens

    def add_token(self, hash_: str, role: str, name: str, created_at: str) -> None:
        mark = len(self._unsaved)
        self._write("INSERT INTO tokens (hash, role, name, created_at) VALUES (?,?,?,?)",
                    (hash_, role, name, created_at))
        self.commit_now(mark)

    def tokens(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT hash, role, name, created_at, revoked FROM tokens"
        if not include_revoked:
            sql += " WHERE revoked=0"
        cols = ("hash", "role", "name", "created_at", "revoked")
        return [dict(zip(cols, row)) for row in self.db.execute(sql + " ORDER BY created_at, name")]

    def revoke_token(self, name: str) -> bool:
        found = self.db.execute("SELECT 1 FROM tokens WHERE name=? AND revoked=0", (name,)).fetchone()
        mark = len(self._unsaved)
        self._write("UPDATE tokens SET revoked=1 WHERE name=? AND revoked=0", (name,))
        self.commit_now(mark)
        return found is not None

    # ------------------------------------------------------------ dashboard sessions
    # Rows of ``meta`` (no table of their own, so no schema change): key "session:" plus the SHA-256
    # of the cookie (never the cookie itself, as for tokens), value "EXPIRES NAME". Kept so that a
    # restarted master keeps its signed-in dashboards.

    def add_session(self, hash_: str, name: str, expires: float) -> None:
        mark = len(self._unsaved)
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (f"session:{hash_}", f"{int(expires)} {name}"))
        self.commit_now(mark)

    def sessions(self) -> list[tuple[str, str, float]]:
        """(hash, token name, expiry as a Unix time) of every stored session."""
        out = []
        for key, value in self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'session:%'"):
            expires, _, name = value.partition(" ")
            out.append((key[len("session:"):], name, float(expires)))
        return out

    def delete_sessions(self, hashes: list[str]) -> None:
        for h in hashes:
            self._write("DELETE FROM meta WHERE key=?", (f"session:{h}",))
        self.commit()

    # ------------------------------------------------------------ jobs

    def insert_job(self, job: dict[str, Any]) -> None:
        row = _encode_job(job)
        cols = ",".join(row)
        marks = ",".join("?" * len(row))
        mark = len(self._unsaved)
        self._write(f"INSERT INTO jobs ({cols}) VALUES ({marks})", list(row.values()))
        self.commit_now(mark)  # the submitter is told its job exists only once it does

    def update_job(self, job_id: str, **fields: Any) -> None:
        row = _encode_job(fields)
        sets = ",".join(f"{k}=?" for k in row)
        self._write(f"UPDATE jobs SET {sets} WHERE id=?", [*row.values(), job_id])

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,))
        row = cur.fetchone()
        return _decode_job(cur, row) if row else None

    def job_by_idem_key(self, key: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM jobs WHERE idem_key=?", (key,))
        row = cur.fetchone()
        return _decode_job(cur, row) if row else None

    def list_jobs(self, limit: int, before: str | None = None) -> list[dict[str, Any]]:
        if before is None:
            cur = self.db.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            cur = self.db.execute(
                "SELECT * FROM jobs WHERE seq < (SELECT seq FROM jobs WHERE id=?) ORDER BY seq DESC LIMIT ?",
                (before, limit))
        return [_decode_job(cur, row) for row in cur.fetchall()]

    def job_counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        return dict(self.db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())

    def unfinished_jobs(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM jobs WHERE state IN (?,?) ORDER BY seq", UNFINISHED)
        return [_decode_job(cur, row) for row in cur.fetchall()]

    # ------------------------------------------------------------ retention

    def expired_jobs(self, finished_before: str) -> list[str]:
        """Ids of finished jobs that finished before this ISO time (the ones retention removes)."""
        cur = self.db.execute(
            "SELECT id FROM jobs WHERE state NOT IN (?,?) AND finished_at IS NOT NULL AND finished_at < ?",
            (*UNFINISHED, finished_before))
        return [row[0] for row in cur]

    def delete_jobs(self, job_ids: list[str]) -> int:
        """Remove jobs and their chunks; return how many chunk rows went."""
        chunks = 0
        for job_id in job_ids:
            chunks += self.db.execute("SELECT count(*) FROM chunks WHERE job_id=?", (job_id,)).fetchone()[0]
            self._write("DELETE FROM chunks WHERE job_id=?", (job_id,))
            self._write("DELETE FROM jobs WHERE id=?", (job_id,))
        return chunks

    def job_blob_refs(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(inputs, outputs) of every job still in the database."""
        for inputs, outputs in self.db.execute("SELECT inputs, outputs FROM jobs").fetchall():
            yield json.loads(inputs or "{}"), json.loads(outputs or "{}")

    def all_chunk_results(self) -> Iterator[bytes]:
        for (result,) in self.db.execute("SELECT result FROM chunks WHERE result IS NOT NULL"):
            yield result

    # ------------------------------------------------------------ chunks

    def chunk_started(self, job_id: str, stage: int, idx: int, worker: str, attempt: int, at: str) -> None:
        self._write(
            "INSERT INTO chunks (job_id, stage, idx, state, worker, attempts, started_at) "
            "VALUES (?,?,?,'running',?,?,?) ON CONFLICT (job_id, stage, idx) DO UPDATE SET "
            "state='running', worker=excluded.worker, attempts=excluded.attempts, "
            "started_at=excluded.started_at, finished_at=NULL",
            (job_id, stage, idx, worker, attempt, at))

    def chunk_done(self, job_id: str, stage: int, idx: int, result: bytes, at: str, seq: int,
                   worker: str | None = None, attempt: int | None = None) -> None:
        """The chunk's result; ``worker`` and ``attempt`` name the copy that won, when a backup copy
        started after it (None: the latest started copy)."""
        self._write(
            "UPDATE chunks SET state='done', result=?, finished_at=?, seq=?, error=NULL, "
            "worker=COALESCE(?, worker), attempts=COALESCE(?, attempts) WHERE job_id=? AND stage=? AND idx=?",
            (result, at, seq, worker, attempt, job_id, stage, idx))

    def chunk_retry(self, job_id: str, stage: int, idx: int, error: str, failed: bool, at: str) -> None:
        self._write(
            "UPDATE chunks SET state='pending', error=?, finished_at=?, failures=failures+? "
            "WHERE job_id=? AND stage=? AND idx=?", (error, at, int(failed), job_id, stage, idx))

    def chunk_failed(self, job_id: str, stage: int, idx: int, error: str, at: str) -> None:
        self._write(
            "UPDATE chunks SET state='failed', error=?, finished_at=?, failures=failures+1 "
            "WHERE job_id=? AND stage=? AND idx=?", (error, at, job_id, stage, idx))

    def chunk_cancelled(self, job_id: str) -> None:
        self._write("UPDATE chunks SET state='cancelled' WHERE job_id=? AND state IN ('running','pending')",
                    (job_id,))

    def chunk_log(self, job_id: str, stage: int, idx: int, attempt: int, log: str) -> None:
        """Keep what a chunk attempt printed, if it is still the chunk's latest attempt."""
        self._write("UPDATE chunks SET log=? WHERE job_id=? AND stage=? AND idx=? AND attempts=?",
                    (log, job_id, stage, idx, attempt))

    def get_chunk_log(self, job_id: str, idx: int, stage: int | None = None) -> str | None:
        """A chunk's output ('' if it printed nothing); None if there is no such chunk.

        Without ``stage``, the chunk of that index in the latest stage that has one.
        """
        if stage is None:
            row = self.db.execute("SELECT log FROM chunks WHERE job_id=? AND idx=? ORDER BY stage DESC LIMIT 1",
                                  (job_id, idx)).fetchone()
        else:
            row = self.db.execute("SELECT log FROM chunks WHERE job_id=? AND stage=? AND idx=?",
                                  (job_id, stage, idx)).fetchone()
        return None if row is None else (row[0] or "")

    def chunk_logs(self, job_id: str) -> list[dict[str, Any]]:
        """Every chunk of a job that printed something, in order."""
        cur = self.db.execute(
            "SELECT stage, idx, state, log FROM chunks WHERE job_id=? AND log IS NOT NULL AND log != '' "
            "ORDER BY stage, idx", (job_id,))
        return [{"stage": st, "index": i, "state": state, "log": text} for st, i, state, text in cur]

    def chunk_progress(self, job_id: str, stage: int) -> tuple[set[int], dict[int, int], dict[int, int]]:
        """Done indices, attempts and failures of one stage: what a restart needs to go on."""
        done: set[int] = set()
        attempts: dict[int, int] = {}
        failures: dict[int, int] = {}
        cur = self.db.execute(
            "SELECT idx, state, attempts, failures FROM chunks WHERE job_id=? AND stage=?", (job_id, stage))
        for idx, state, n_attempts, n_failures in cur:
            if state == "done":
                done.add(idx)
            attempts[idx] = n_attempts
            failures[idx] = n_failures
        return done, attempts, failures

    def chunk_results(self, job_id: str, stage: int) -> Iterator[tuple[int, bytes]]:
        cur = self.db.execute(
            "SELECT idx, result FROM chunks WHERE job_id=? AND stage=? AND state='done' ORDER BY idx",
            (job_id, stage))
        yield from cur

    def results_since(self, job_id: str, stage: int, seq: int, limit: int) -> list[tuple[int, int, bytes]]:
        cur = self.db.execute(
            "SELECT seq, idx, result FROM chunks WHERE job_id=? AND stage=? AND state='done' AND seq>? "
            "ORDER BY seq LIMIT ?", (job_id, stage, seq, limit))
        return cur.fetchall()

    def done_by_worker(self, job_id: str) -> dict[str, int]:
        cur = self.db.execute(
            "SELECT worker, count(*) FROM chunks WHERE job_id=? AND state='done' GROUP BY worker", (job_id,))
        return {worker: n for worker, n in cur}

    def chunks(self, job_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT stage, idx, state, worker, attempts, failures, started_at, finished_at, error "
            "FROM chunks WHERE job_id=? ORDER BY stage, idx LIMIT ? OFFSET ?", (job_id, limit, offset))
        cols = ("stage", "index", "state", "worker", "attempts", "failures", "started_at", "finished_at",
                "error")
        return [dict(zip(cols, row)) for row in cur]


def _encode_job(job: dict[str, Any]) -> dict[str, Any]:
    return {k: (json.dumps(v) if k in _JSON_FIELDS and v is not None else v) for k, v in job.items()}


def _decode_job(cur: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    job = {d[0]: v for d, v in zip(cur.description, row)}
    for key in _JSON_FIELDS:
        if job.get(key) is not None:
            job[key] = json.loads(job[key])
    return job
