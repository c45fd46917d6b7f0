"""A chunk's blob access straight through the master's store, when the worker shares its machine.

Through the agent, a 4 MiB block of a matrix is read by the agent, sent down the chunk's pipe and
copied again on arrival; a block of the product goes up the pipe, then over HTTP into the master's
event loop, which hashes and writes it. An uncontained chunk process (``--isolation none``) on the
master's machine may read and write the store itself: the agent proved the store is the master's
(``.host-key``, worker/cache.py) and names it in ``Run.store``. It reads ranges from the store file
and stores blobs as a same-host client does (client/localstore.py). Anything that fails goes the
usual way, through the agent.
"""

from __future__ import annotations

from pathlib import Path

from rvidia.client.localstore import LocalStore
from rvidia.kinds.base import RemoteBlobs
from rvidia.worker.blobproxy import read_from_store


class DirectBlobs:
    def __init__(self, store: Path, through_agent: RemoteBlobs) -> None:
        self.store = LocalStore(store)
        self.through_agent = through_agent

    def read_range(self, blob_id: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        local = read_from_store(self.store.root, blob_id, start, length)
        return local if local is not None else self.through_agent.read_range(blob_id, start, length)

    def put(self, data: bytes) -> str:
        try:
            return self.store.put([data])
        except OSError:
            return self.through_agent.put(data)
