"""Local copies of input blobs, fetched once per worker and kept by content hash.

A matrix every chunk of a job needs reaches each worker once, not once per chunk. Downloads stream
to disk and are checked against their SHA-256 name before use.

A worker on the master's own machine (``rvidia up``, ``LocalCluster``) copies blobs straight from the
master's store instead: a file copy in the page cache, not an HTTP download. It does so only when it
can read the store's ``.host-key`` file and finds there the secret the master sent in its Welcome, so
the store is provably the master's (same file system, same user); anything else, or any error, falls
back to the download. Contained chunk processes (bwrap, docker) get a copy, not a hard link, so that
nothing they do to their input file can reach the master's store; uncontained ones (``--isolation
none``) run as this user with every file it can reach anyway, so they read the store's file itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import shutil
import tempfile
from pathlib import Path

import httpx

log = logging.getLogger("rvidia.worker")


class BlobCache:
    def __init__(self, root: Path, http: httpx.AsyncClient, direct: bool = False) -> None:
        self.root = root
        self.direct = direct  # read the store's files in place (uncontained chunk processes only)
        self.root.mkdir(parents=True, exist_ok=True)
        self.http = http
        self._fetching: dict[str, asyncio.Future[Path]] = {}
        self.store: Path | None = None  # the master's blob store, when this worker shares its file system

    def use_store(self, blob_dir: str, host_key: str) -> None:
        """After each Welcome: copy from the master's store if it is provably readable here."""
        self.store = None
        if not blob_dir or not host_key:
            return
        try:
            found = (Path(blob_dir) / ".host-key").read_text().strip()
        except (OSError, UnicodeDecodeError):
            return  # another machine, or another user: download
        if hmac.compare_digest(found, host_key):
            self.store = Path(blob_dir)
            log.info("the master's blob store %s is on this machine: input blobs are copied from it", blob_dir)

    async def ensure(self, blob_id: str) -> Path:
        path = self.root / blob_id
        if path.exists():
            return path
        if self.direct and self.store is not None and _hex64(blob_id):
            stored = self.store / blob_id[:2] / blob_id  # the store's layout (master/blobs.py)
            if stored.is_file():
                return stored
        pending = self._fetching.get(blob_id)
        if pending is None:
            pending = asyncio.ensure_future(self._download(blob_id, path))
            self._fetching[blob_id] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(blob_id, None))
        return await asyncio.shield(pending)

    async def _download(self, blob_id: str, path: Path) -> Path:
        if self.store is not None and _hex64(blob_id):
            try:
                return await asyncio.to_thread(self._copy_from_store, blob_id, path)
            except OSError as exc:  # gone from the store, unreadable, disk full: download it instead
                log.info("could not copy blob %s from the master's store (%s); downloading it", blob_id[:12], exc)
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".part-")
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                async with self.http.stream("GET", f"/api/v1/blobs/{blob_id}") as response:
                    if response.status_code != 200:
                        raise RuntimeError(f"could not fetch input blob {blob_id[:12]}: HTTP {response.status_code}")
                    async for part in response.aiter_bytes(1 << 20):
                        h.update(part)
                        f.write(part)
            if h.hexdigest() != blob_id:
                raise RuntimeError(f"input blob {blob_id[:12]} arrived corrupted (hash mismatch)")
            os.chmod(tmp_name, 0o640)  # group-readable: a docker-contained chunk reads it by the agent's group
            os.replace(tmp_name, path)
            return path
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _copy_from_store(self, blob_id: str, path: Path) -> Path:
        assert self.store is not None
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".part-")
        os.close(fd)
        try:
            shutil.copyfile(self.store / blob_id[:2] / blob_id, tmp_name)  # the store's layout (master/blobs.py)
            os.chmod(tmp_name, 0o640)
            os.replace(tmp_name, path)
            return path
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


def _hex64(blob_id: str) -> bool:
    return len(blob_id) == 64 and all(c in "0123456789abcdef" for c in blob_id)
