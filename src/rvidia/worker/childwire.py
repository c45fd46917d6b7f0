"""The wire between the agent and a chunk process: length-prefixed msgpack frames over its stdin/stdout.

A chunk process may run inside bubblewrap or a container, started from a command line; all it shares
with the agent is its standard streams (``docker run -i`` forwards nothing else). So every exchange
travels as frames on them: the task in, what the chunk prints and its outcome out, and the chunk's
blob reads and uploads as requests the agent serves (a sandboxed chunk has no network of its own).

A frame is a 4-byte big-endian length and that many bytes of msgpack, one tagged message.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import BinaryIO, Union

import msgspec

from rvidia.protocol.messages import ChunkTask

HEADER = struct.Struct(">I")
MAX_FRAME = (1 << 32) - 1


# ---------------------------------------------------------------- agent -> chunk process


class Run(msgspec.Struct, tag="run"):
    """Run this chunk; whole inputs are local files at ``input_paths``."""

    task: ChunkTask
    input_paths: dict[str, str]
    store: str = ""  # the master's blob store, when this uncontained chunk may use it directly


class Reply(msgspec.Struct, tag="reply"):
    """The answer to the chunk's last blob request: the bytes read, the id of the blob stored, or why not."""

    data: bytes = b""
    blob_id: str = ""
    error: str | None = None


# ---------------------------------------------------------------- chunk process -> agent


class Outcome(msgspec.Struct, tag="outcome"):
    """The chunk's end. ``cpu_seconds`` is the process's CPU time so far (the pool recycles a
    process whose CPU-time limit is getting used up)."""

    ok: bool
    result: bytes = b""
    error: str | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0


class Log(msgspec.Struct, tag="log"):
    """Text the chunk printed (stdout and stderr), sent as it comes so a crash keeps it."""

    text: str


class ReadRange(msgspec.Struct, tag="read"):
    """Please read bytes ``start`` to ``start + length`` of a blob on the master for me."""

    blob_id: str
    start: int
    length: int


class Put(msgspec.Struct, tag="put"):
    """Please store these bytes on the master as a blob and tell me its id."""

    data: bytes


ToChild = Union[Run, Reply]
FromChild = Union[Outcome, Log, ReadRange, Put]

encode = msgspec.msgpack.Encoder().encode
decode_to_child = msgspec.msgpack.Decoder(ToChild).decode
decode_from_child = msgspec.msgpack.Decoder(FromChild).decode


class FrameReader:
    """Reads whole frames from a binary stream; ``read`` returns None at the end of the stream."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def read(self) -> bytes | None:
        head = self._exactly(HEADER.size)
        if head is None:
            return None
        (size,) = HEADER.unpack(head)
        return self._exactly(size) if size else b""

    def _exactly(self, n: int) -> bytes | None:
        data = self.stream.read(n)  # a buffered stream returns fewer bytes only at the end
        if data is None or len(data) < n:
            return None
        return bytes(data)


class FrameWriter:
    """Writes whole frames to a binary stream from any thread (one lock, so frames never interleave).

    After ``close`` (or a broken pipe) writes raise OSError, which callers treat as "the other side
    is gone".
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._closed = False

    def send(self, message: msgspec.Struct) -> None:
        self.send_bytes(encode(message))

    def send_bytes(self, body: bytes) -> None:
        if len(body) > MAX_FRAME:
            raise ValueError(f"a frame of {len(body)} bytes is over the 4 GiB limit")
        with self._lock:
            if self._closed:
                raise BrokenPipeError("the frame stream is closed")
            try:
                self.stream.write(HEADER.pack(len(body)))
                self.stream.write(body)
                self.stream.flush()
            except ValueError:  # the stream was closed under us
                raise BrokenPipeError("the frame stream is closed") from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            try:
                self.stream.close()
            except OSError:
                pass


def open_fd(fd: int, mode: str) -> BinaryIO:
    """A buffered binary stream on a pipe's file descriptor (``mode`` "rb" or "wb")."""
    return os.fdopen(fd, mode, buffering=1 << 16)
