"""Local copies of input blobs, fetched once per worker and kept by content hash.

A matrix every chunk of a job needs reaches each worker once, not once per chunk. Downloads stream
to disk and are checked against their SHA-256 name before use.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path

import httpx


class BlobCache:
    def __init__(self, root: Path, http: httpx.AsyncClient) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.http = http
        self._fetching: dict[str, asyncio.Future[Path]] = {}

    async def ensure(self, blob_id: str) -> Path:
        path = self.root / blob_id
        if path.exists():
            return path
        pending = self._fetching.get(blob_id)
        if pending is None:
            pending = asyncio.ensure_future(self._download(blob_id, path))
            self._fetching[blob_id] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(blob_id, None))
        return await asyncio.shield(pending)

    async def _download(self, blob_id: str, path: Path) -> Path:
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
