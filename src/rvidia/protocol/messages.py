"""The typed messages that cross the worker WebSocket, and their msgpack encoding.

Every frame is one binary msgpack message whose tag names its type. Bulk data (chunk payloads and
results) travels as raw ``bytes`` fields, never as base64 or lists. Tasks and results are batched
(``Assign.tasks``, ``Results.items``) so that a deep queue costs one frame, not one per chunk.

Compatibility: within one ``PROTOCOL_VERSION``, a release may only add fields with defaults, and a
receiver ignores fields it does not know, so a master and workers one minor release apart understand
each other (``version_gap`` says whether two releases may meet at all).
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


def version_gap(mine: str, theirs: str) -> str | None:
    """Why releases ``mine`` and ``theirs`` cannot work together, or None when they can.

    Same major release and at most one minor release apart: they share the protocol, and the newer
    side only sends optional fields the older one ignores. An empty ``theirs`` (a peer too old to say)
    is let in on the protocol version alone.
    """
    if not theirs:
        return None
    try:
        a, b = (tuple(int(p) for p in v.split(".")[:2]) for v in (mine, theirs))
    except ValueError:
        return f"cannot read the version {theirs!r}"
    if a[0] != b[0] or abs(a[1] - b[1]) > 1:
        return (f"RVIDIA {theirs} is more than one minor version away from {mine}: "
                f"install {'.'.join(map(str, a))}.x on both")
    return None


class Gpu(msgspec.Struct, frozen=True):
    """One GPU of a worker's machine, as NVML or nvidia-smi describe it."""

    name: str
    memory_bytes: int = 0
    driver: str = ""


class Hello(msgspec.Struct, tag="hello"):
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
    # The worker's RVIDIA release ("0.1.0"): the master refuses one more than a minor version away.
    package_version: str = ""
    gpus: list[Gpu] = []


class Welcome(msgspec.Struct, tag="welcome"):
    """The master's answer to a Hello: the worker's id and the heartbeat period to keep."""

    worker_id: str
    heartbeat_interval: float
    master_version: str
    # Where the master keeps its blobs, and the secret in the ``.host-key`` file there: a worker that
    # can read that file holding that secret shares the master's file system (the same machine, the
    # same user) and copies input blobs from the store instead of downloading them (worker/cache.py).
    blob_dir: str = ""
    host_key: str = ""


class Refused(msgspec.Struct, tag="refused"):
    """Sent just before the master closes a connection it will not serve."""

    reason: str


class Heartbeat(msgspec.Struct, tag="heartbeat"):
    """Either side says it is alive; the worker also reports its load."""

    sent_at: float
    running: int = 0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0


class Capacity(msgspec.Struct, tag="capacity"):
    """The worker changes how many chunks it will run at once (0 while paused)."""

    slots: int
    paused: bool = False
    # The worker is going away (SIGTERM): the master shows it drained while its chunks finish.
    leaving: bool = False


class ChunkTask(msgspec.Struct):
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


class Assign(msgspec.Struct, tag="assign"):
    """The master hands chunks to a worker; never more than its free slots."""

    tasks: list[ChunkTask]


class ChunkOutcome(msgspec.Struct):
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
    # The worker gave the chunk back unfinished (owner-first: the machine's owner needed it). The
    # master re-queues it without counting a failed attempt. A master that predates this field
    # sees ok=False and counts one failure, which still re-queues the chunk.
    handed_back: bool = False
    # Handed back before it ever started (a prefetched chunk that waited too long behind another):
    # no work was lost, so it does not count toward the chunk's losses either.
    unstarted: bool = False


class Results(msgspec.Struct, tag="results"):
    """A worker reports finished chunks, batched."""

    items: list[ChunkOutcome]


class ChunkRef(msgspec.Struct, array_like=True):
    job_id: str
    stage: int
    index: int
    attempt: int


class Cancel(msgspec.Struct, tag="cancel"):
    """The master asks a worker to kill these chunk attempts; no outcome is expected back."""

    chunks: list[ChunkRef]


class Bye(msgspec.Struct, tag="bye"):
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
