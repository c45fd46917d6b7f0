"""A chunk's blob access straight through the master's store, when the worker shares its machine.

Through the agent, a 4 MiB block of a matrix is read by the agent, sent down the chunk's pipe and
copied again on arrival; a block of the product goes up the pipe, then over HTTP into the master's
event loop, which hashes and writes it. An uncontained chunk process (``--isolation none``) on the
master's machine may read and write the store itself: the agent proved the store is the master's
(``.host-key``, worker/cache.py) and names it in ``Run.store``. It reads ranges with one ``pread``
and stores blobs as a same-host client does (client/localstore.py). Anything that fails goes the
usual way, through the agent.
"""

from __future__ import annotations

import os
from pathlib import Path

from rvidia.client.localstore import LocalStore
from rvidia.kinds.base import RemoteBlobs


class DirectBlobs:
    def __init__(self, store: Path, through_agent: RemoteBlobs) -> None:
        self.store = LocalStore(store)
        self.through_agent = through_agent

    def read_range(self, blob_id: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        if len(blob_id) == 64 and all(c in "0123456789abcdef" for c in blob_id):
            try:
                fd = os.open(self.store.root / blob_id[:2] / blob_id, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                try:
                    return _pread_all(fd, start, length)
                finally:
                    os.close(fd)
            except OSError:
                pass  # not there (yet), or unreadable: ask the agent
        return self.through_agent.read_range(blob_id, start, length)

    def put(self, data: bytes) -> str:
        try:
            return self.store.put([data])
        except OSError:
            return self.through_agent.put(data)


def _pread_all(fd: int, start: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``start`` (fewer at the end of the file); portable where pread is not."""
    if hasattr(os, "pread"):
        first = os.pread(fd, length, start)
        if len(first) in (0, length):
            return first
        parts, got = [first], len(first)
        while got < length:
            more = os.pread(fd, length - got, start + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)
    os.lseek(fd, start, os.SEEK_SET)
    with os.fdopen(os.dup(fd), "rb") as f:
        return f.read(length)
