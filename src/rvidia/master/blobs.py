"""Content-addressed blob store on disk: inputs and outputs, named by their SHA-256.

Uploads stream into a temporary file while being hashed, then move into place, so a half-written
blob is never visible under its name and the master never holds a whole file in memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import AsyncIterator, BinaryIO, Iterable

_BLOB_ID = re.compile(r"^[0-9a-f]{64}$")


class BlobTooLarge(ValueError):
    """An upload went past the size limit."""


class DiskFull(OSError):
    """Free disk under the data dir is below the master's floor (``--min-free-disk``): 507."""


def valid_blob_id(blob_id: str) -> bool:
    """Only lowercase hex of the right length: no path can ever escape the store."""
    return bool(_BLOB_ID.match(blob_id))


class BlobStore:
    def __init__(self, root: Path, max_size: int) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.max_size = max_size
        self.min_free = 0  # bytes of free disk to keep; uploads are refused (507) below it
        self.host_key = self._write_host_key()
        # Names of put_bytes' temporary files: unique to this store object, then a counter.
        self._tmp_prefix, self._tmp_serial = f"mem-{secrets.token_hex(6)}-", 0

    def _write_host_key(self) -> str:
        """A new secret in ``.host-key``, readable by this user only: a worker that reads it back
        shares this file system and may copy blobs straight from the store (Welcome.blob_dir)."""
        key = secrets.token_hex(16)
        path = self.root / ".host-key"
        try:
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key)
        except OSError:  # a full or read-only disk: workers download instead
            return ""
        return key

    def check_space(self, incoming: int = 0) -> None:
        """Raise DiskFull if an upload of ``incoming`` bytes would leave less than ``min_free`` free."""
        if self.min_free <= 0:
            return
        free = shutil.disk_usage(self.root).free
        if free - incoming < self.min_free:
            raise DiskFull(f"the master's disk is nearly full: {free} bytes free, "
                           f"{incoming} more asked, and the floor is {self.min_free} bytes (--min-free-disk); "
                           "free space or run `rvidia gc`")

    def path(self, blob_id: str) -> Path:
        if not valid_blob_id(blob_id):
            raise KeyError(blob_id)
        return self.root / blob_id[:2] / blob_id

    def exists(self, blob_id: str) -> bool:
        return valid_blob_id(blob_id) and self.path(blob_id).is_file()

    def size(self, blob_id: str) -> int:
        return self.path(blob_id).stat().st_size

    def open(self, blob_id: str) -> BinaryIO:
        return open(self.path(blob_id), "rb")

    def _new_tmp(self) -> tuple[BinaryIO, Path]:
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="up-")
        return os.fdopen(fd, "wb"), Path(name)

    def _commit(self, tmp: Path, digest: str) -> str:
        final = self.path(digest)
        final.parent.mkdir(exist_ok=True)
        if final.exists():
            tmp.unlink()
            os.utime(final)  # uploaded again: young again for retention (master/retention.py)
        else:
            os.replace(tmp, final)
        return digest

    async def put_stream(self, parts: AsyncIterator[bytes]) -> tuple[str, int]:
        """Store an upload; raise BlobTooLarge past the limit (the partial file is removed)."""
        f, tmp = self._new_tmp()
        h = hashlib.sha256()
        size = 0
        try:
            with f:
                next_check = 64 * 1024 * 1024
                async for part in parts:
                    size += len(part)
                    if size > self.max_size:
                        raise BlobTooLarge(f"upload larger than the {self.max_size} byte limit")
                    if size >= next_check:  # a long upload stops before it fills the disk
                        self.check_space()
                        next_check += 64 * 1024 * 1024
                    h.update(part)
                    f.write(part)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._commit(tmp, h.hexdigest()), size

    def put_bytes(self, data: bytes) -> str:
        """Store a small blob held in memory (inline inputs, small outputs). Hashed first: a blob
        already stored (an executor's function, sent with every call) costs no write at all."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        try:
            os.utime(final)  # stored already: young again for retention (master/retention.py)
            return digest
        except FileNotFoundError:
            pass
        self._tmp_serial += 1
        tmp = self.tmp / f"{self._tmp_prefix}{self._tmp_serial}"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._commit(tmp, digest)

    def writer(self) -> "BlobWriter":
        """A blob written piece by piece over time (an output assembled as chunk results arrive)."""
        f, tmp = self._new_tmp()
        return BlobWriter(self, f, tmp)

    def put_parts(self, parts: Iterable[bytes]) -> str:
        """Store output written piece by piece (kinds' outputs)."""
        f, tmp = self._new_tmp()
        h = hashlib.sha256()
        try:
            with f:
                for part in parts:
                    h.update(part)
                    f.write(part)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._commit(tmp, h.hexdigest())


class BlobWriter:
    """An output being written: pieces are hashed as they go, ``commit`` stores it under its hash.

    A writer dropped without ``commit`` (its job cancelled or failed, its master state replayed
    after a restart) removes its partial file when it is garbage-collected.
    """

    def __init__(self, store: BlobStore, f: BinaryIO, tmp: Path) -> None:
        self._store, self._f, self._tmp = store, f, tmp
        self._hash = hashlib.sha256()
        self.size = 0
        self._cleanup = weakref.finalize(self, _discard, f, tmp)

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._f.write(data)
        self.size += len(data)

    def commit(self) -> str:
        self._cleanup.detach()
        self._f.close()
        return self._store._commit(self._tmp, self._hash.hexdigest())


def _discard(f: BinaryIO, tmp: Path) -> None:
    f.close()
    tmp.unlink(missing_ok=True)
