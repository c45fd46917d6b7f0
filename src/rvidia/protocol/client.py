"""The messages of ``/ws/client``: a submitter's fast path for many small jobs (the executor).

Over one persistent connection a client submits jobs with their small inputs inline and the master
pushes each chunk's result as soon as it is accepted, so a future resolves without any polling or
per-job HTTP requests. Large inputs still go through ``POST /blobs``.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

# Inline inputs above this size belong in the blob store.
MAX_INLINE_BYTES = 16 * 1024 * 1024


class SubmitJob(msgspec.Struct, tag="submit"):
    ref: int  # the client's number for this submission, echoed in the answer
    kind: str
    params: dict[str, Any] = {}
    inline: dict[str, bytes] = {}  # input name -> bytes, stored in the blob store by the master
    inputs: dict[str, str] = {}  # input name -> existing blob id
    priority: int = 0
    max_attempts: int = 3
    timeout: float | None = None


class CancelJob(msgspec.Struct, tag="cancel"):
    job_id: str


class Accepted(msgspec.Struct, tag="accepted"):
    ref: int
    job_id: str


class Rejected(msgspec.Struct, tag="rejected"):
    ref: int
    error: str


class ChunkDone(msgspec.Struct, tag="chunk"):
    """One accepted chunk result of a job this connection submitted (msgpack from the kind)."""

    job_id: str
    index: int
    result: bytes


class JobEnded(msgspec.Struct, tag="ended"):
    job_id: str
    state: str
    error: str | None = None


ToMaster = Union[SubmitJob, CancelJob]
ToClient = Union[Accepted, Rejected, ChunkDone, JobEnded]

_encoder = msgspec.msgpack.Encoder()
_to_master = msgspec.msgpack.Decoder(ToMaster)
_to_client = msgspec.msgpack.Decoder(list[ToClient])


class ClientProtocolError(ValueError):
    """A frame on /ws/client that is not a valid message."""


def encode(message: ToMaster) -> bytes:
    return _encoder.encode(message)


def encode_batch(messages: list[ToClient]) -> bytes:
    """The master batches what it pushes: one frame carries every message ready at that moment."""
    return _encoder.encode(messages)


def decode_to_master(frame: bytes) -> ToMaster:
    try:
        return _to_master.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ClientProtocolError(f"invalid message: {exc}") from None


def decode_to_client(frame: bytes) -> list[ToClient]:
    return _to_client.decode(frame)
