"""Uncontained chunks on the master's machine read and write its blob store themselves; whatever the
store cannot answer goes through the agent as before."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rvidia.master.blobs import BlobStore
from rvidia.worker.directblobs import DirectBlobs


class Agent:
    """The through-the-agent route, recording what reached it."""

    def __init__(self, served: dict[str, bytes]) -> None:
        self.served, self.calls = served, []  # type: ignore[var-annotated]

    def read_range(self, blob_id: str, start: int, length: int) -> bytes:
        self.calls.append(("read", blob_id))
        return self.served[blob_id][start:start + length]

    def put(self, data: bytes) -> str:
        self.calls.append(("put", len(data)))
        return hashlib.sha256(data).hexdigest()


def test_ranges_come_from_the_store_file_without_the_agent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", 1 << 30)
    data = bytes(range(256)) * 4000
    blob_id = store.put_parts([data])
    agent = Agent({})
    blobs = DirectBlobs(store.root, agent)
    assert blobs.read_range(blob_id, 1000, 50_000) == data[1000:51_000]
    assert blobs.read_range(blob_id, len(data) - 10, 100) == data[-10:]  # short at the end
    assert blobs.read_range(blob_id, 5, 0) == b""
    assert agent.calls == []


def test_a_blob_not_in_the_store_and_a_bad_id_go_through_the_agent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", 1 << 30)
    missing = b"elsewhere" * 10
    missing_id = hashlib.sha256(missing).hexdigest()
    agent = Agent({missing_id: missing, "../../etc/passwd": b"refused by the master"})
    blobs = DirectBlobs(store.root, agent)
    assert blobs.read_range(missing_id, 0, 9) == b"elsewhere"
    blobs.read_range("../../etc/passwd", 0, 5)  # never opened as a path here; the master refuses it
    assert agent.calls == [("read", missing_id), ("read", "../../etc/passwd")]


def test_results_are_stored_where_the_master_finds_them(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", 1 << 30)
    agent = Agent({})
    blobs = DirectBlobs(store.root, agent)
    data = b"product block" * 10_000
    blob_id = blobs.put(data)
    assert blob_id == hashlib.sha256(data).hexdigest()
    assert store.path(blob_id).read_bytes() == data and agent.calls == []
    assert not list((store.root / "tmp").iterdir())  # nothing half-written left behind


def test_a_store_that_cannot_be_written_hands_the_result_to_the_agent(tmp_path: Path) -> None:
    agent = Agent({})
    blobs = DirectBlobs(tmp_path / "gone", agent)
    assert blobs.put(b"result") == hashlib.sha256(b"result").hexdigest()
    assert agent.calls == [("put", 6)]
