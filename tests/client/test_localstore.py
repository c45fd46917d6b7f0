"""Blobs written straight into the master's store by a client on its machine, and arrays that travel
out of band through it; any doubt falls back to the HTTP upload."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

import rvidia
from rvidia.client.localstore import LocalStore

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[rvidia.LocalCluster]:
    with rvidia.LocalCluster(workers=2, slots=1) as local:
        yield local


def _answer(root: Path, key: str) -> dict[str, str]:
    return {"dir": str(root), "key_sha256": hashlib.sha256(key.encode()).hexdigest()}


def test_a_store_is_used_only_when_its_key_is_read_back(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    (root / "tmp").mkdir(parents=True)
    (root / ".host-key").write_text("secret")
    assert LocalStore.find(_answer(root, "secret")) is not None
    assert LocalStore.find(_answer(root, "another")) is None  # another machine's store at the same path
    assert LocalStore.find(_answer(tmp_path / "missing", "secret")) is None
    assert LocalStore.find({"dir": "", "key_sha256": ""}) is None  # a master that could not write a key
    assert LocalStore.find({}) is None


def test_put_stores_the_joined_parts_under_their_sha256(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    (root / "tmp").mkdir(parents=True)
    store = LocalStore(root)
    parts = [b"head", memoryview(np.arange(1000, dtype=np.int64)).cast("B"), bytearray(b"tail")]
    joined = b"".join(bytes(p) for p in parts)
    blob_id = store.put(parts)
    assert blob_id == hashlib.sha256(joined).hexdigest()
    assert (root / blob_id[:2] / blob_id).read_bytes() == joined
    assert store.put([joined]) == blob_id and list((root / "tmp").iterdir()) == []  # stored once


def test_the_master_tells_only_token_holders_where_its_store_is(cluster: rvidia.LocalCluster) -> None:
    assert httpx.get(f"{cluster.url}/api/v1/blobstore").status_code == 401
    answer = cluster.get("/api/v1/blobstore")
    key = (cluster.data_dir / "blobs" / ".host-key").read_text().strip()
    assert Path(answer["dir"]) == cluster.data_dir / "blobs"
    assert answer["key_sha256"] == hashlib.sha256(key.encode()).hexdigest() and key not in str(answer)


def test_an_upload_on_the_masters_machine_lands_in_its_store(cluster: rvidia.LocalCluster) -> None:
    assert cluster._local_store() is not None
    data = np.random.default_rng(3).bytes(3 << 20)
    blob_id = cluster.upload(data)
    assert blob_id == hashlib.sha256(data).hexdigest()
    assert cluster.fetch(blob_id) == data  # the master serves it like any upload


def test_without_the_store_uploads_go_over_http(cluster: rvidia.LocalCluster) -> None:
    remote = rvidia.connect(cluster.url, token=cluster.token)
    remote._store = None  # as on another machine
    data = b"over the wire" * 100_000
    assert remote.upload([data[:7], memoryview(data)[7:]]) == hashlib.sha256(data).hexdigest()
    assert cluster.fetch(hashlib.sha256(data).hexdigest()) == data


def test_array_arguments_arrive_exact_and_writable_and_their_blob_unchanged(cluster: rvidia.LocalCluster) -> None:
    arrays = [np.full((1 << 20) + i, float(i)) for i in range(4)]  # 8 MiB each: blobs, not inline

    def bump(a: np.ndarray) -> float:
        a += 1.0  # changes the chunk's own copy only
        return float(a.sum())

    with cluster.executor() as ex:
        got = list(ex.map(bump, arrays))
        assert got == [float(a.size * (i + 1)) for i, a in enumerate(arrays)]
        assert list(ex.map(bump, arrays)) == got  # the same blobs again: nothing changed them
    blobs = cluster.data_dir / "blobs"
    for path in blobs.glob("??/*"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def test_small_array_arguments_travel_inline(cluster: rvidia.LocalCluster) -> None:
    def bump(a: np.ndarray) -> list[float]:
        a[0] = 7.0
        return a.tolist()

    with cluster.executor() as ex:
        assert list(ex.map(bump, [np.zeros(3), np.ones(2)])) == [[7.0, 0.0, 0.0], [7.0, 1.0]]
