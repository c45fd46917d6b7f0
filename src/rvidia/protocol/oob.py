"""Pickles whose large buffers travel beside the pickle, not inside it (pickle protocol 5).

A numpy array argument pickled the ordinary way is copied into the pickle, then copied again out of
it on the worker. Here the submitter's side hands the array's own memory to the writer (no copy), and
the worker maps the blob file and builds the arrays straight on the mapping: a 32 MiB argument is
never copied by Python on either side, and pages the function does not touch are never read.

Layout (every section starts at a multiple of ``ALIGN`` bytes, so mapped arrays are aligned)::

    MAGIC | u32 n | u64 pickle_len | n x u64 buffer_len | pad | pickle | pad | buffer 1 | pad | ...
"""

from __future__ import annotations

import mmap
import pickle
import struct
from pathlib import Path
from typing import Any, Callable

MAGIC = b"RVOOB1\x00\x00"
ALIGN = 64
_COUNT = struct.Struct("<IQ")


def _pad(n: int) -> bytes:
    return b"\x00" * (-n % ALIGN)


def dumps(obj: Any, dump: Callable[..., bytes] = pickle.dumps) -> tuple[bytes, list[memoryview]]:
    """The pickle and the large buffers it leaves out (the objects' own memory, uncopied).

    ``dump`` is ``pickle.dumps`` or ``cloudpickle.dumps``. With no buffer left out, the pickle is an
    ordinary one. Buffers that are not contiguous are pickled in-band by their owners, as usual.
    """
    buffers: list[pickle.PickleBuffer] = []
    body = dump(obj, protocol=5, buffer_callback=buffers.append)
    return body, [b.raw() for b in buffers]


def frame(body: bytes, raws: list[memoryview]) -> list[Any]:
    """The parts of the layout above, to be written one after the other."""
    head = MAGIC + _COUNT.pack(len(raws), len(body)) + b"".join(struct.pack("<Q", r.nbytes) for r in raws)
    parts: list[Any] = [head, _pad(len(head)), body, _pad(len(body))]
    for raw in raws:
        parts += [raw, _pad(raw.nbytes)]
    return [p for p in parts if len(p)]


def is_oob(data: bytes | memoryview) -> bool:
    return bytes(data[: len(MAGIC)]) == MAGIC


def loads(data: bytes | memoryview | mmap.mmap) -> Any:
    """Unpickle ``dumps``' layout; the buffers are views of ``data`` (arrays share its memory)."""
    view = memoryview(data)
    if not is_oob(view):
        raise ValueError("not an out-of-band pickle")
    at = len(MAGIC)
    n, body_len = _COUNT.unpack_from(view, at)
    at += _COUNT.size
    lengths = struct.unpack_from(f"<{n}Q", view, at)
    at += 8 * n
    at += -at % ALIGN
    body = view[at : at + body_len]
    at += body_len + (-body_len % ALIGN)
    buffers = []
    for length in lengths:
        if at + length > len(view):
            raise ValueError("out-of-band pickle is truncated")
        buffers.append(view[at : at + length])
        at += length + (-length % ALIGN)
    return pickle.loads(body, buffers=buffers)


def load_file(path: Path) -> Any:
    """Map the file copy-on-write: arrays are writable, and writes never reach the file."""
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    return loads(mapped)
