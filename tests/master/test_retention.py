"""Retention's mark and sweep on a store and blob store (docs/operations.md, "Retention")."""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec
import pytest

from rvidia.master.blobs import BlobStore, DiskFull
from rvidia.master.retention import _iso, collect
from rvidia.master.store import Store
from rvidia.units import format_bytes, parse_duration, parse_size

DAY = 86400.0


def _job(job_id: str, state: str, finished: float | None, inputs: dict[str, str],
         outputs: dict[str, str]) -> dict[str, object]:
    return {"id": job_id, "kind": "compress", "state": state, "params": {}, "inputs": inputs, "priority": 0,
            "max_attempts": 3, "timeout": None, "replicas": 1, "resources": {}, "created_at": _iso(0),
            "finished_at": None if finished is None else _iso(finished), "outputs": outputs,
            "n_chunks": 1, "submitter": "admin"}


def _blob(blobs: BlobStore, data: bytes, age: float) -> str:
    blob_id = blobs.put_parts([data])
    past = time.time() - age
    os.utime(blobs.path(blob_id), (past, past))
    return blob_id


def test_old_job_and_its_unreferenced_blobs_go_shared_ones_stay(tmp_path: Path) -> None:
    store = Store(tmp_path / "rvidia.db")
    blobs = BlobStore(tmp_path / "blobs", 1 << 30)
    now = time.time()
    shared = _blob(blobs, b"shared input", 30 * DAY)
    own = _blob(blobs, b"old job's own input", 30 * DAY)
    out = _blob(blobs, b"old job's output", 20 * DAY)
    old_block = _blob(blobs, b"block uploaded by an old chunk", 20 * DAY)
    kept_block = _blob(blobs, b"block uploaded by a kept chunk", 20 * DAY)
    kept_out = _blob(blobs, b"kept job's output", 20 * DAY)
    fresh_upload = _blob(blobs, b"uploaded a minute ago, not yet in a job", 60)
    orphan = _blob(blobs, b"old upload never used", 30 * DAY)
    store.insert_job(_job("jold", "succeeded", now - 10 * DAY, {"data": shared, "extra": own}, {"o": out}))
    store.insert_job(_job("jnew", "succeeded", now - 1 * DAY, {"data": shared}, {"o": kept_out}))
    store.insert_job(_job("jrun", "running", None, {}, {}))
    store.insert_job(_job("jfailed", "failed", now - 8 * DAY, {}, {}))
    for job_id, block in (("jold", old_block), ("jrun", kept_block)):
        store.chunk_started(job_id, 0, 0, "w1", 1, _iso(now))
        store.chunk_done(job_id, 0, 0, msgspec.msgpack.encode({"blob": block, "n": 3}), _iso(now), 1)
    store.commit()

    freed = collect(store, blobs, retention=7 * DAY, now=now)

    assert freed["jobs"] == 2 and freed["chunks"] == 1
    assert store.get_job("jold") is None and store.get_job("jfailed") is None
    assert store.get_job("jnew") is not None and store.get_job("jrun") is not None
    assert list(store.chunk_results("jold", 0)) == []
    gone = {own, out, old_block, orphan}
    kept = {shared, kept_out, kept_block, fresh_upload}
    assert all(not blobs.exists(b) for b in gone)
    assert all(blobs.exists(b) for b in kept)
    assert freed["blobs"] == 4 and freed["bytes"] == sum(len(x) for x in (
        b"old job's own input", b"old job's output", b"block uploaded by an old chunk", b"old upload never used"))
    assert collect(store, blobs, retention=7 * DAY, now=now)["jobs"] == 0  # nothing left to free
    store.close()


def test_partial_writes_abandoned_for_an_hour_go(tmp_path: Path) -> None:
    """A writer killed mid-write (an upload, a chunk writing into the store) leaves a file in tmp/;
    one written to within the hour may still be in progress and stays."""
    store = Store(tmp_path / "rvidia.db")
    blobs = BlobStore(tmp_path / "blobs", 1 << 30)
    dead, live = blobs.tmp / "local-dead", blobs.tmp / "up-live"
    dead.write_bytes(b"x" * 1000)
    live.write_bytes(b"y" * 10)
    past = time.time() - 2 * 3600
    os.utime(dead, (past, past))
    freed = collect(store, blobs, retention=7 * DAY)
    assert not dead.exists() and live.exists()
    assert freed["partial"] == 1 and freed["bytes"] == 1000 and freed["blobs"] == 0
    store.close()


def test_reuploading_an_old_blob_makes_it_young(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs", 1 << 30)
    blob_id = _blob(blobs, b"data", 30 * DAY)
    assert blobs.put_parts([b"data"]) == blob_id
    assert blobs.path(blob_id).stat().st_mtime > time.time() - 60


def test_disk_floor(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs", 1 << 30)
    blobs.check_space(10)  # no floor by default
    blobs.min_free = 1 << 60
    with pytest.raises(DiskFull, match="--min-free-disk"):
        blobs.check_space()


@pytest.mark.parametrize("text, seconds", [("3600", 3600), (90, 90), ("90s", 90), ("30m", 1800), ("12h", 43200),
                                           ("7d", 7 * DAY), ("2w", 14 * DAY), ("1.5d", 1.5 * DAY), ("0", 0)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, size", [("1024", 1024), ("1GiB", 1 << 30), ("500M", 500 << 20), ("2g", 2 << 30),
                                        ("1.5KB", 1536), (0, 0)])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "7 days", "-1", "d7", "1x"])
def test_bad_durations_and_sizes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)
    with pytest.raises(ValueError):
        parse_size(bad)


def test_format_bytes() -> None:
    assert format_bytes(12) == "12 B" and format_bytes(3 << 20) == "3.0 MiB"
