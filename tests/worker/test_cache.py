"""The worker's blob cache: downloads checked by hash, and copies from the master's own store when the
worker provably shares its file system (the ``.host-key`` secret of the Welcome)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from rvidia.master.blobs import BlobStore
from rvidia.worker.cache import BlobCache


def _store(tmp_path: Path, data: bytes) -> tuple[BlobStore, str]:
    store = BlobStore(tmp_path / "blobs", 1 << 30)
    blob_id = store.put_parts([data])
    return store, blob_id


def _http(served: dict[str, bytes], calls: list[str]) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        blob_id = request.url.path.rsplit("/", 1)[-1]
        calls.append(blob_id)
        return httpx.Response(200, content=served[blob_id]) if blob_id in served else httpx.Response(404)

    return httpx.AsyncClient(base_url="http://master", transport=httpx.MockTransport(handle))


async def test_a_worker_on_the_masters_machine_copies_from_its_store(tmp_path: Path) -> None:
    data = b"matrix" * 100_000
    store, blob_id = _store(tmp_path, data)
    calls: list[str] = []
    async with _http({}, calls) as http:
        cache = BlobCache(tmp_path / "cache", http)
        cache.use_store(str(store.root), store.host_key)
        path = await cache.ensure(blob_id)
    assert path.read_bytes() == data and not calls  # no download
    assert path.stat().st_ino != store.path(blob_id).stat().st_ino  # a copy: chunks cannot reach the store
    assert (store.root / ".host-key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("case", ["wrong key", "no key", "no dir"])
async def test_without_proof_of_the_same_store_it_downloads(tmp_path: Path, case: str) -> None:
    data = b"table" * 1000
    store, blob_id = _store(tmp_path, data)
    blob_dir, key = {"wrong key": (str(store.root), "0" * 32), "no key": (str(store.root), ""),
                     "no dir": (str(tmp_path / "elsewhere"), store.host_key)}[case]
    calls: list[str] = []
    async with _http({blob_id: data}, calls) as http:
        cache = BlobCache(tmp_path / "cache", http)
        cache.use_store(blob_dir, key)
        assert cache.store is None
        assert (await cache.ensure(blob_id)).read_bytes() == data
    assert calls == [blob_id]


async def test_a_blob_gone_from_the_store_is_downloaded_instead(tmp_path: Path) -> None:
    data = b"x" * 5000
    store, _ = _store(tmp_path, b"other")
    blob_id = hashlib.sha256(data).hexdigest()  # never stored there, but the master serves it
    calls: list[str] = []
    async with _http({blob_id: data}, calls) as http:
        cache = BlobCache(tmp_path / "cache", http)
        cache.use_store(str(store.root), store.host_key)
        assert cache.store is not None
        assert (await cache.ensure(blob_id)).read_bytes() == data
    assert calls == [blob_id]


async def test_a_download_that_does_not_match_its_hash_is_refused(tmp_path: Path) -> None:
    blob_id = hashlib.sha256(b"the real bytes").hexdigest()
    async with _http({blob_id: b"tampered"}, []) as http:
        cache = BlobCache(tmp_path / "cache", http)
        with pytest.raises(RuntimeError, match="hash mismatch"):
            await cache.ensure(blob_id)
    assert not (tmp_path / "cache" / blob_id).exists()


def test_the_agent_reads_ranges_from_the_masters_store_when_it_shares_it(tmp_path: Path) -> None:
    from rvidia.worker.blobproxy import HttpBlobs

    data = bytes(range(256)) * 4096
    store, blob_id = _store(tmp_path, data)
    blobs = HttpBlobs("http://127.0.0.1:9", "token")  # nothing listens there: HTTP would fail
    blobs.store = store.root
    assert blobs.read_range(blob_id, 1000, 5000) == data[1000:6000]
    assert blobs.read_range(blob_id, len(data) - 10, 100) == data[-10:]
    blobs.close()


def test_a_chunk_asks_for_a_large_range_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent serves every chunk of the worker: no single request may be larger than a piece."""
    import queue

    from rvidia.worker import child
    from rvidia.worker.childwire import ReadRange, Reply

    monkeypatch.setattr(child, "READ_PIECE", 1000)
    data = bytes(range(256)) * 20
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    asked: list[int] = []

    class Writer:
        def send(self, request: ReadRange) -> None:
            asked.append(request.length)
            inbox.put(Reply(data=data[request.start : request.start + request.length]))

    blobs = child.PipeBlobs(Writer(), inbox)  # type: ignore[arg-type]
    assert blobs.read_range("b", 100, 3500) == data[100:3600]
    assert asked == [1000, 1000, 1000, 500]
    asked.clear()
    assert blobs.read_range("b", len(data) - 300, 5000) == data[-300:]  # past the end: stops at the end
    assert asked == [1000]


async def test_uncontained_chunks_read_the_stores_file_in_place(tmp_path: Path) -> None:
    """--isolation none: no copy at all; a blob missing from the store is still downloaded."""
    data = b"arrays" * 100_000
    store, blob_id = _store(tmp_path, data)
    other = b"elsewhere"
    other_id = hashlib.sha256(other).hexdigest()
    calls: list[str] = []
    async with _http({other_id: other}, calls) as http:
        cache = BlobCache(tmp_path / "cache", http, direct=True)
        cache.use_store(str(store.root), store.host_key)
        path = await cache.ensure(blob_id)
        fetched = await cache.ensure(other_id)
    assert path == store.path(blob_id) and not (tmp_path / "cache" / blob_id).exists()
    assert fetched.read_bytes() == other and calls == [other_id]


async def test_direct_reading_needs_the_stores_key(tmp_path: Path) -> None:
    data = b"arrays" * 1000
    store, blob_id = _store(tmp_path, data)
    calls: list[str] = []
    async with _http({blob_id: data}, calls) as http:
        cache = BlobCache(tmp_path / "cache", http, direct=True)
        cache.use_store(str(store.root), "not-the-key")
        path = await cache.ensure(blob_id)
    assert path != store.path(blob_id) and path.read_bytes() == data and calls == [blob_id]
