"""Retention: finished jobs older than ``--retention`` go, with their chunks and the blobs nobody keeps.

Mark and sweep, all on the master's event loop (so no job can be submitted in between):

- mark: every blob a kept job names (its inputs and outputs) or that a kept job's chunk results
  name (blob ids inside chunk results, found as 64-hex-digit strings, e.g. the blocks a compress
  job's chunks upload);
- delete the expired jobs' rows and chunks;
- sweep: every blob file not marked and not written (or re-uploaded) within the retention period.
  The age guard keeps an upload that is not yet part of a job.

Partial writes left in ``tmp/`` by a process killed mid-write (an upload, a chunk or a client on the
master's machine writing into the store, worker/directblobs.py) go once nothing has written to them
for ``ABANDONED_AFTER``: a live writer touches its file with every piece, so an idle hour means dead.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any

from rvidia.master.blobs import BlobStore, valid_blob_id
from rvidia.master.store import Store

DEFAULT_RETENTION = 7 * 86400.0
ABANDONED_AFTER = 3600.0  # seconds without a write after which a tmp/ file is a dead writer's
_BLOB_REF = re.compile(rb"[0-9a-f]{64}")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def collect(store: Store, blobs: BlobStore, retention: float, now: float | None = None) -> dict[str, Any]:
    """Apply retention now; return what was freed: ``{"jobs", "chunks", "blobs", "bytes"}``."""
    now = time.time() if now is None else now
    cutoff = now - retention
    expired = store.expired_jobs(_iso(cutoff))
    chunks = store.delete_jobs(expired)
    if not store.commit():  # the deletions are not on disk yet (a full disk): keep every blob until they are
        return {"jobs": len(expired), "chunks": chunks, "blobs": 0, "bytes": 0, "retention": retention}
    marked: set[str] = set()
    for inputs, outputs in store.job_blob_refs():
        marked.update(v for v in inputs.values() if isinstance(v, str))
        marked.update(v for v in outputs.values() if isinstance(v, str))
    for result in store.all_chunk_results():
        if result:
            marked.update(m.decode() for m in _BLOB_REF.findall(bytes(result)))
    n_blobs = n_bytes = 0
    partial, partial_bytes = _sweep_partial(blobs, now - ABANDONED_AFTER)
    for sub in blobs.root.iterdir():
        if not sub.is_dir() or len(sub.name) != 2:
            continue  # tmp/ and anything else that is not a blob directory
        for path in sub.iterdir():
            if not valid_blob_id(path.name) or path.name in marked:
                continue
            try:
                stat = path.stat()
                if stat.st_mtime >= cutoff:
                    continue
                path.unlink()
            except OSError:
                continue
            n_blobs += 1
            n_bytes += stat.st_size
    return {"jobs": len(expired), "chunks": chunks, "blobs": n_blobs, "bytes": n_bytes + partial_bytes,
            "partial": partial, "retention": retention}


def _sweep_partial(blobs: BlobStore, cutoff: float) -> tuple[int, int]:
    """Remove files in tmp/ last written before ``cutoff``: (how many, their bytes)."""
    n = size = 0
    for path in blobs.tmp.iterdir():
        try:
            stat = path.stat()
            if not path.is_file() or stat.st_mtime >= cutoff:
                continue
            path.unlink()
        except OSError:
            continue
        n += 1
        size += stat.st_size
    return n, size
