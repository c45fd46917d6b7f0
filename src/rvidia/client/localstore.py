"""Writing blobs straight into the master's store when the client shares its file system.

An HTTP upload moves every byte through the master's event loop (about 400 MB/s here). A client on
the master's own machine (``LocalCluster``, ``rvidia up``) writes the file itself and tells the master
only its id. It does so only when it reads, in the store's ``.host-key``, the key whose hash the master
sent: the store is then provably the master's and writable by this user, who could change the
master's data dir anyway, so nothing new is trusted. Any error falls back to the HTTP upload, which
also enforces the master's size and free-disk limits.

The id is the SHA-256 of the content, as for an upload; the hash runs in a second thread while the
file is written, so each byte costs about one memory pass on each of two cores.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

_hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rvidia-hash")


class LocalStore:
    def __init__(self, root: Path, max_size: int | None = None) -> None:
        self.root = root
        self.max_size = max_size

    @classmethod
    def find(cls, answer: dict[str, Any]) -> "LocalStore | None":
        """The store named by ``GET /api/v1/blobstore``, if this process can prove it reads it."""
        where, expected = answer.get("dir"), answer.get("key_sha256")
        if not isinstance(where, str) or not isinstance(expected, str) or not where or not expected:
            return None
        root = Path(where)
        try:
            key = (root / ".host-key").read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None  # another machine, or another user
        if not hmac.compare_digest(hashlib.sha256(key.encode()).hexdigest(), expected):
            return None
        if not os.access(root / "tmp", os.W_OK):
            return None
        return cls(root)

    def put(self, parts: Sequence[Any]) -> str:
        """Store the concatenation of ``parts`` (bytes-like); return its blob id."""
        hashing = _hasher.submit(_sha256, parts)
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix="local-")
        tmp = Path(name)
        try:
            with open(fd, "wb") as f:
                for part in parts:
                    f.write(part)
            digest = hashing.result()
            final = self.root / digest[:2] / digest  # the store's layout (master/blobs.py)
            final.parent.mkdir(exist_ok=True)
            if final.exists():
                tmp.unlink()
                os.utime(final)  # young again for retention, as an upload of a stored blob is
            else:
                os.replace(tmp, final)
            return digest
        except BaseException:
            hashing.cancel()
            tmp.unlink(missing_ok=True)
            raise


def _sha256(parts: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()
