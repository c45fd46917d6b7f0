"""The blob store on disk: content-addressed, never a half-written blob under its name."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rvidia.master.blobs import BlobStore


def test_put_bytes_names_by_content_and_writes_a_blob_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", 1 << 20)
    data = b"the function, sent with every call"
    blob_id = store.put_bytes(data)
    assert blob_id == hashlib.sha256(data).hexdigest() and store.open(blob_id).read() == data
    path = store.path(blob_id)
    os.utime(path, (1, 1))
    inode = path.stat().st_ino
    assert store.put_bytes(data) == blob_id
    assert path.stat().st_ino == inode and path.stat().st_mtime > 1  # not rewritten, but young again
    assert store.put_bytes(b"") == hashlib.sha256(b"").hexdigest()
    assert list(store.tmp.iterdir()) == []  # no temporary file left behind


def test_two_stores_on_one_dir_never_share_a_temporary_name(tmp_path: Path) -> None:
    a, b = BlobStore(tmp_path / "blobs", 1 << 20), BlobStore(tmp_path / "blobs", 1 << 20)
    ids = {a.put_bytes(b"one"), b.put_bytes(b"two"), a.put_bytes(b"three"), b.put_bytes(b"four")}
    assert len(ids) == 4 and all(a.exists(i) for i in ids)
