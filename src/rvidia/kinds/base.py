"""What a job kind is: parameters declared once, ``split`` and ``merge`` on the master, ``run`` on a worker.

A kind lives in one module of ``rvidia.kinds`` that defines ``KIND = SomeKind()``; the registry finds
it, so adding a kind touches nothing else. A job runs in stages: ``plan`` says how many chunks a stage
has, ``chunk`` makes each chunk's payload, ``merge`` folds each accepted result in as it arrives, and
``finish_stage`` either plans the next stage (training rounds) or returns the job's result.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Generic, Iterable, Iterator, Protocol, TypeVar

import msgspec

from rvidia.core.events import Requirement

T = TypeVar("T")


class ParamError(ValueError):
    """A job's parameters or inputs are invalid; the message is shown to the submitter as is."""


# ---------------------------------------------------------------- master side


class Inputs(Protocol):
    """Read access to a job's input blobs on the master (files, never loaded whole by the engine)."""

    def names(self) -> list[str]: ...

    def blob_id(self, name: str) -> str: ...

    def size(self, name: str) -> int: ...

    def open(self, name: str) -> BinaryIO: ...


class OutputWriter(Protocol):
    """An output written piece by piece across merges (see ``InOrder``)."""

    def write(self, data: bytes | memoryview) -> None: ...

    def commit(self) -> str:
        """Store what was written; return its blob id. A writer never committed leaves nothing."""
        ...


class Outputs(Protocol):
    """Where a kind writes its output files, streamed into the blob store."""

    def write(self, name: str, parts: Iterable[bytes]) -> str: ...

    def begin(self, name: str) -> OutputWriter:
        """An output to write as results arrive, so that finishing costs no second pass."""
        ...


class InOrder(Generic[T]):
    """Chunk results arrive in any order; an output is written in index order. ``add`` holds each
    item until every lower index has come, then hands over all that are ready. Merges replayed after
    a restart come in index order, so the output is rebuilt the same way."""

    def __init__(self) -> None:
        self.next = 0
        self.held: dict[int, T] = {}

    def add(self, index: int, item: T) -> list[tuple[int, T]]:
        self.held[index] = item
        ready = []
        while self.next in self.held:
            ready.append((self.next, self.held.pop(self.next)))
            self.next += 1
        return ready


class Blobs(Protocol):
    """Read access on the master to any blob by id (chunk results uploaded as blobs, say)."""

    def exists(self, blob_id: str) -> bool: ...

    def size(self, blob_id: str) -> int: ...

    def open(self, blob_id: str) -> BinaryIO: ...


class Results(Protocol):
    """The accepted chunk results of the current stage, read back in index order."""

    def __call__(self) -> Iterator[tuple[int, bytes]]: ...


@dataclass
class JobContext:
    """Everything a kind may use on the master for one job."""

    job_id: str
    params: Any  # the kind's Params struct
    inputs: Inputs
    outputs: Outputs
    results: Results
    blobs: Blobs | None = None
    stage: int = 0
    state: Any = None  # msgpack-able, carried from one stage to the next and persisted
    cache: dict[str, Any] = field(default_factory=dict)  # per-job memo, lost on restart


@dataclass
class Plan:
    """A stage of ``n_chunks`` chunks, with the state ``chunk`` and ``merge`` will read."""

    n_chunks: int
    state: Any = None


@dataclass
class Done:
    """The job's end: a small JSON result and output blobs by name."""

    result: Any = None
    outputs: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- worker side


class RemoteBlobs(Protocol):
    """A chunk's access to the master's blob store, for data too large to travel in frames."""

    def read_range(self, blob_id: str, start: int, length: int) -> bytes:
        """Bytes ``start`` to ``start + length`` of a blob (fewer at its end)."""
        ...

    def put(self, data: bytes) -> str:
        """Upload bytes; return their blob id (so a large chunk result travels as an id)."""
        ...


@dataclass
class RunContext:
    """What a chunk sees on the worker: whole inputs as local files (``chunk_inputs``), ranged
    access to any blob, and a per-process memo that outlives the chunk."""

    job_id: str
    stage: int
    index: int
    input_paths: dict[str, Path]
    cache: dict[Any, Any]
    blobs: RemoteBlobs | None = None


# ---------------------------------------------------------------- the kind


class Kind(abc.ABC):
    """Base class of job kinds; subclasses set the class attributes and override the methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[msgspec.Struct]]
    inputs: ClassVar[tuple[str, ...]] = ()
    optional_inputs: ClassVar[tuple[str, ...]] = ()
    hidden: ClassVar[bool] = False  # kinds only the Python API submits (map) stay off forms

    def parse_params(self, raw: dict[str, Any]) -> Any:
        """Validate raw JSON parameters into the Params struct, with a one-line reason on failure."""
        try:
            return msgspec.convert(raw, self.Params, strict=False)
        except msgspec.ValidationError as exc:
            raise ParamError(f"invalid parameters for {self.name}: {exc}") from None

    def schema(self) -> dict[str, Any]:
        """The parameters as a JSON Schema object, for /kinds and generated forms."""
        full = msgspec.json.schema(self.Params)
        defs = full.get("$defs", {})
        body = dict(defs.get(self.Params.__name__, full))
        body["x-inputs"] = {"required": list(self.inputs), "optional": list(self.optional_inputs)}
        return body

    def requirement(self, params: Any) -> Requirement:
        """What a worker must offer to run this job's chunks."""
        return Requirement()

    def check(self, ctx: JobContext) -> None:
        """Checks that need the inputs (shapes, columns); raise ParamError. Runs before any chunk."""

    @abc.abstractmethod
    def plan(self, ctx: JobContext) -> Plan:
        ...

    @abc.abstractmethod
    def chunk(self, ctx: JobContext, index: int) -> bytes:
        ...

    def chunk_inputs(self, ctx: JobContext, index: int) -> dict[str, str]:
        """Input blobs the worker must have locally for this chunk (default: all of them)."""
        return {name: ctx.inputs.blob_id(name) for name in ctx.inputs.names()}

    def new_acc(self, ctx: JobContext) -> Any:
        return None

    def merge(self, ctx: JobContext, acc: Any, index: int, result: bytes) -> Any:
        return acc

    def agree(self, ctx: JobContext, a: bytes, b: bytes) -> bool:
        """Whether two results of one chunk count as the same (replicas >= 2). Bitwise by default;
        a kind whose results may differ in the last bits across machines overrides this with its
        declared tolerance."""
        return a == b

    def progress(self, ctx: JobContext, acc: Any) -> dict[str, Any] | None:
        """Extra live progress for the API and dashboard (training rounds' loss, say), or None."""
        return None

    @abc.abstractmethod
    def finish_stage(self, ctx: JobContext, acc: Any) -> Plan | Done:
        ...

    @abc.abstractmethod
    def run(self, params: Any, payload: bytes, ctx: RunContext) -> bytes:
        ...
