"""The agent's side of chunks' blob access: ranged reads and uploads over the master's REST API.

Chunks ask for them in frames (``childwire.ReadRange`` / ``Put``) instead of calling the master
themselves, so a sandboxed chunk needs no network and never sees the worker's token. The pool's
reader threads call ``serve``; each takes an HTTP client from a small free list (one per thread at a
time, reused across chunks).
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

from rvidia.master.blobs import valid_blob_id

from rvidia.worker.childwire import Put, ReadRange, Reply


class HttpBlobs:
    """``RemoteBlobs`` over the master's REST API, for the agent to serve its chunks' requests."""

    def __init__(self, master: str, token: str) -> None:
        self.master, self.token = master, token
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._all: list[Any] = []
        # The master's blob store when this worker shares its file system (worker/cache.py proves it
        # after each Welcome): ranges are then read from the file, not over HTTP.
        self.store: Path | None = None

    def _client(self) -> Any:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            import httpx

            from rvidia import tls

            client = httpx.Client(base_url=self.master, timeout=120, verify=tls.httpx_verify(tls.ca_file(None)),
                                  headers={"Authorization": f"Bearer {self.token}"})  # the agent's --ca
            self._all.append(client)
            return client

    def read_range(self, blob_id: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        if self.store is not None:
            local = read_from_store(self.store, blob_id, start, length)
            if local is not None:
                return local
        client = self._client()
        try:
            response = client.get(f"/api/v1/blobs/{blob_id}",
                                  headers={"Range": f"bytes={start}-{start + length - 1}"})
        finally:
            self._free.put(client)
        if response.status_code == 416:
            return b""
        if response.status_code not in (200, 206):
            raise RuntimeError(f"reading blob {blob_id[:12]} failed: HTTP {response.status_code}")
        data = response.content
        return data[start : start + length] if response.status_code == 200 else data

    def put(self, data: bytes) -> str:
        client = self._client()
        try:
            response = client.post("/api/v1/blobs", content=data)
        finally:
            self._free.put(client)
        if response.status_code != 201:
            raise RuntimeError(f"uploading a result blob failed: HTTP {response.status_code}")
        return str(response.json()["id"])

    def serve(self, request: ReadRange | Put) -> Reply:
        """Carry out one chunk's request; a failure goes back as the reply's error (the chunk raises it)."""
        try:
            if isinstance(request, ReadRange):
                return Reply(data=self.read_range(request.blob_id, request.start, request.length))
            return Reply(blob_id=self.put(request.data))
        except Exception as exc:
            return Reply(error=f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError) else str(exc))

    def close(self) -> None:
        for client in self._all:
            client.close()
        self._all.clear()


class NoBlobs:
    """What a pool without a master answers (tests, a pool used on its own)."""

    def serve(self, request: ReadRange | Put) -> Reply:
        return Reply(error="this chunk pool has no blob store (no master)")

    def close(self) -> None:
        pass


def read_from_store(store: Path, blob_id: str, start: int, length: int) -> bytes | None:
    """Bytes of a blob read straight from the master's store on this machine; None when the id is
    not a blob id or the file is gone or unreadable (then ask the master)."""
    if not valid_blob_id(blob_id):
        return None
    try:
        with open(store / blob_id[:2] / blob_id, "rb") as f:  # the store's layout (master/blobs.py)
            f.seek(start)
            return f.read(length)
    except OSError:
        return None
