"""What goes into the scheduler (events) and what comes out (instructions).

Both are small frozen dataclasses so that a test can build them by hand and compare them with ``==``;
the master's adapters translate frames and requests into events and carry out the instructions.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a worker must offer to run a job's chunks."""

    needs_code: bool = False
    python: str = ""  # "3.11": the submitter's minor version, for code jobs
    resources: tuple[tuple[str, float], ...] = ()


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class WorkerJoined:
    worker_id: str
    slots: int
    allow_code: bool = False
    python: str = ""
    resources: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerLeft:
    """The worker's connection closed (or it said goodbye)."""

    worker_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class WorkerSeen:
    """Any sign of life from a worker: a heartbeat or any other message."""

    worker_id: str


@dataclass(frozen=True, slots=True)
class CapacityChanged:
    worker_id: str
    slots: int
    paused: bool = False


@dataclass(frozen=True, slots=True)
class DrainWorker:
    worker_id: str
    drain: bool = True


@dataclass(frozen=True, slots=True)
class JobSubmitted:
    """A job (new, or reloaded after a restart) enters the queue at ``stage``.

    ``done`` lists chunk indices of that stage already finished (after a restart) and ``attempts``
    how many times each chunk was started before, so retries keep counting.
    """

    job_id: str
    n_chunks: int
    priority: int = 0
    max_attempts: int = 3
    requirement: Requirement = Requirement()
    stage: int = 0
    done: frozenset[int] = frozenset()
    attempts: dict[int, int] = field(default_factory=dict)
    failures: dict[int, int] = field(default_factory=dict)
    # Who submitted it (the token's name): free slots are shared between users first, then between
    # each user's jobs, within one priority.
    user: str = ""
    # Each chunk runs on this many different workers and their results vote (rvidia.core.replicas).
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class StageStarted:
    """The previous stage merged; the job continues with ``n_chunks`` new chunks."""

    job_id: str
    stage: int
    n_chunks: int


@dataclass(frozen=True, slots=True)
class ChunkSucceeded:
    worker_id: str
    job_id: str
    stage: int
    index: int
    attempt: int
    vote: str = ""  # replicated jobs: the master's label of this result (equal results, equal labels)


@dataclass(frozen=True, slots=True)
class ChunkFailed:
    worker_id: str
    job_id: str
    stage: int
    index: int
    attempt: int
    error: str


@dataclass(frozen=True, slots=True)
class ChunkHandedBack:
    """The worker gave the attempt back unfinished (its owner needs the machine): run it elsewhere,
    as if its worker had been lost; not a failed attempt."""

    worker_id: str
    job_id: str
    stage: int
    index: int
    attempt: int
    reason: str = "handed back by its worker"
    unstarted: bool = False  # it never ran there (held behind another chunk): not counted as a loss


@dataclass(frozen=True, slots=True)
class CancelJob:
    job_id: str


@dataclass(frozen=True, slots=True)
class FinishJob:
    """The master merged the last stage (or gave up on the job): forget it."""

    job_id: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: look for workers whose heartbeats stopped, and for stragglers to back up."""


Event = (
    WorkerJoined | WorkerLeft | WorkerSeen | CapacityChanged | DrainWorker | JobSubmitted
    | StageStarted | ChunkSucceeded | ChunkFailed | ChunkHandedBack | CancelJob | FinishJob | Tick
)

# ---------------------------------------------------------------- instructions


@dataclass(frozen=True, slots=True)
class Assign:
    worker_id: str
    job_id: str
    stage: int
    index: int
    attempt: int
    backup: bool = False  # a speculative copy of a chunk that still runs elsewhere


@dataclass(frozen=True, slots=True)
class CancelChunk:
    worker_id: str
    job_id: str
    stage: int
    index: int
    attempt: int


@dataclass(frozen=True, slots=True)
class AcceptResult:
    """This result counts: merge it (exactly once per chunk)."""

    worker_id: str
    job_id: str
    stage: int
    index: int
    attempt: int


@dataclass(frozen=True, slots=True)
class DropResult:
    """A late or duplicate outcome (the chunk was re-assigned, finished or cancelled)."""

    worker_id: str
    job_id: str
    stage: int
    index: int
    attempt: int
    why: str


@dataclass(frozen=True, slots=True)
class RetryChunk:
    """An attempt failed (or its worker was lost) and the chunk goes back in the queue."""

    job_id: str
    stage: int
    index: int
    error: str
    lost: bool = False  # the worker went away; not counted as a failed attempt


@dataclass(frozen=True, slots=True)
class StageComplete:
    job_id: str
    stage: int


@dataclass(frozen=True, slots=True)
class JobFailed:
    job_id: str
    error: str
    index: int | None = None  # the chunk whose failures (or losses) ended the job, if one did


@dataclass(frozen=True, slots=True)
class Outvoted:
    """A copy of a replicated chunk disagreed with the majority: flag its worker."""

    worker_id: str
    job_id: str
    stage: int
    index: int
    attempt: int
    winner: str  # the worker whose result was accepted


@dataclass(frozen=True, slots=True)
class WorkerLost:
    worker_id: str
    reason: str


Instruction = (
    Assign | CancelChunk | AcceptResult | DropResult | RetryChunk | StageComplete | JobFailed | WorkerLost
    | Outvoted
)
