"""The typed messages that cross the worker WebSocket, and their msgpack encoding.

Every frame is one binary msgpack message whose tag names its type. Bulk data (chunk payloads and
results) travels as raw ``bytes`` fields, never as base64 or lists. Tasks and results are batched
(``Assign.tasks``, ``Results.items``) so that a deep queue costs one frame, not one per chunk.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

PROTOCOL_VERSION = 1
# Largest frame either side accepts; bigger data goes through the blob store.
MAX_FRAME_BYTES = 64 * 1024 * 1024

# WebSocket close codes used by both sides (RFC 6455 section 7.4.1, 4000+ for private use).
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_VERSION = 4000
CLOSE_AUTH = 4001
CLOSE_REPLACED = 4002


class Hello(msgspec.Struct, tag="hello", forbid_unknown_fields=True):
    """First message of a worker: who it is and what it offers."""

    version: int
    name: str
    host: str
    os: str
    python: str
    cores: int
    memory_bytes: int
    slots: int
    allow_code: bool = False
    speed: float = 0.0
    resources: dict[str, float] = {}
    # Set when a worker reconnects, so the master can keep its identity.
    worker_id: str | None = None


class Welcome(msgspec.Struct, tag="welcome", forbid_unknown_fields=True):
    """The master's answer to a Hello: the worker's id and the heartbeat period to keep."""

    worker_id: str
    heartbeat_interval: float
    master_version: str


class Refused(msgspec.Struct, tag="refused", forbid_unknown_fields=True):
    """Sent just before the master closes a connection it will not serve."""

    reason: str


class Heartbeat(msgspec.Struct, tag="heartbeat", forbid_unknown_fields=True):
    """Either side says it is alive; the worker also reports its load."""

    sent_at: float
    running: int = 0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0


class Capacity(msgspec.Struct, tag="capacity", forbid_unknown_fields=True):
    """The worker changes how many chunks it will run at once (0 while paused)."""

    slots: int
    paused: bool = False


class ChunkTask(msgspec.Struct, forbid_unknown_fields=True):
    """One chunk attempt to run. ``inputs`` maps input names to blob ids the chunk may read."""

    job_id: str
    stage: int
    index: int
    attempt: int
    kind: str
    params: dict[str, Any]
    payload: bytes
    inputs: dict[str, str] = {}
    timeout: float | None = None


class Assign(msgspec.Struct, tag="assign", forbid_unknown_fields=True):
    """The master hands chunks to a worker; never more than its free slots."""

    tasks: list[ChunkTask]


class ChunkOutcome(msgspec.Struct, forbid_unknown_fields=True):
    """How one chunk attempt ended. ``result`` is msgpack produced by the kind's ``run``."""

    job_id: str
    stage: int
    index: int
    attempt: int
    ok: bool
    result: bytes = b""
    error: str | None = None
    seconds: float = 0.0
    # The tail of what the chunk printed to stdout and stderr (bounded by the worker, 64 KiB).
    log: str = ""


class Results(msgspec.Struct, tag="results", forbid_unknown_fields=True):
    """A worker reports finished chunks, batched."""

    items: list[ChunkOutcome]


class ChunkRef(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    job_id: str
    stage: int
    index: int
    attempt: int


class Cancel(msgspec.Struct, tag="cancel", forbid_unknown_fields=True):
    """The master asks a worker to kill these chunk attempts; no outcome is expected back."""

    chunks: list[ChunkRef]


class Bye(msgspec.Struct, tag="bye", forbid_unknown_fields=True):
    """A worker leaves on purpose; chunks it still holds are handed back."""

    reason: str = ""


Message = Union[Hello, Welcome, Refused, Heartbeat, Capacity, Assign, Results, Cancel, Bye]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


class ProtocolError(ValueError):
    """A frame that is not a valid message; the connection that sent it is closed."""


def encode(message: Message) -> bytes:
    """Serialise a message into one binary frame."""
    return _encoder.encode(message)


def decode(frame: bytes) -> Message:
    """Parse and validate a frame; raise ProtocolError with a reason a person can read."""
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME_BYTES} limit")
    try:
        return _decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"invalid message: {exc}") from None
