"""Packing a function and its items for the ``map`` kind (the submitter's side)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import cloudpickle
import msgspec

from rvidia.protocol import oob


Upload = Callable[[list[Any]], str]  # the parts of one blob -> its id
BATCH_INLINE_LIMIT = 1024 * 1024  # a larger pickled batch travels as its own blob


def _pack(batches: list[list[Any]], upload: Upload | None) -> bytes:
    """The items blob: a msgpack list with, per chunk, the pickled batch or the blob id holding it.

    Large batches (array arguments) become blobs, so the master never holds them and workers fetch
    each one straight from the blob store into their cache. Each batch is a list of parts (see
    ``_pickle``), written one after the other without being joined first.
    """
    entries: list[bytes | str] = []
    for parts in batches:
        size = sum(memoryview(p).nbytes for p in parts)
        if upload is not None and size > BATCH_INLINE_LIMIT:
            entries.append(upload(parts))
        else:
            entries.append(parts[0] if len(parts) == 1 else b"".join(parts))
    return msgspec.msgpack.encode(entries)


def _pickle(batch: list[Any]) -> list[Any]:
    """A batch as parts: one plain pickle, or, with array arguments, an out-of-band pickle whose
    arrays are never copied here and are mapped, not read, on the worker (protocol/oob.py)."""
    body, raws = oob.dumps(batch, cloudpickle.dumps)
    return oob.frame(body, raws) if raws else [body]


def pack_map(fn: Callable[..., Any], items: list[Any], chunksize: int,
             upload: Upload | None = None) -> tuple[bytes, bytes]:
    """The function blob, and the items blob (see ``_pack``); only workers unpickle either."""
    _ship_module_by_value(fn)
    batches = [_pickle(items[i : i + chunksize]) for i in range(0, len(items), chunksize)]
    return cloudpickle.dumps(fn), _pack(batches, upload)


def pack_calls(calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]], chunksize: int,
               upload: Upload | None = None) -> bytes:
    """The items blob of a ``calls`` map job: each item carries its own function."""
    for fn, _, _ in calls:
        _ship_module_by_value(fn)
    batches = [_pickle(calls[i : i + chunksize]) for i in range(0, len(calls), chunksize)]
    return _pack(batches, upload)


_decided: set[str] = set()  # modules already looked at: the path checks cost ~0.2 ms a call


def _ship_module_by_value(fn: Callable[..., Any]) -> None:
    """Pickle the function's own module by value when workers could not import it.

    cloudpickle pickles functions of importable modules by reference; a user's project module (a
    script's helper file, a test module) is not installed on the workers, so it travels by value.
    """
    name = getattr(fn, "__module__", "") or ""
    if name in _decided:
        return
    _decided.add(name)
    module = sys.modules.get(name)
    if module is None or module.__name__ == "__main__" or module.__name__.split(".")[0] == "rvidia":
        return
    origin = getattr(module, "__file__", None)
    if not origin:
        return
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    where = Path(origin).resolve()
    if any(root in where.parents for root in installed) or "site-packages" in where.parts:
        return
    cloudpickle.register_pickle_by_value(module)
