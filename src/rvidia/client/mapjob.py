"""Packing a function and its items for the ``map`` kind (the submitter's side)."""

from __future__ import annotations

from typing import Any, Callable

import cloudpickle
import msgspec


def pack_map(fn: Callable[..., Any], items: list[Any], chunksize: int) -> tuple[bytes, bytes]:
    """The function blob, and the items blob: a msgpack list of pickled batches, one per chunk.

    Only workers unpickle these; the master slices the list without looking inside.
    """
    batches = [cloudpickle.dumps(items[i : i + chunksize]) for i in range(0, len(items), chunksize)]
    return cloudpickle.dumps(fn), msgspec.msgpack.encode(batches)
