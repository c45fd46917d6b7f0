"""The chunk process: receives a task over a pipe, runs the kind's ``run``, sends the outcome back.

It is started with ``spawn`` (the same on Linux, macOS and Windows) and reused between chunks, so
imports and a map job's unpickled function are paid once per process, not once per chunk.
"""

from __future__ import annotations

import signal
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from rvidia.protocol.messages import ChunkTask


class ChildTask(msgspec.Struct):
    task: ChunkTask
    input_paths: dict[str, str]


class ChildOutcome(msgspec.Struct):
    ok: bool
    result: bytes = b""
    error: str | None = None
    seconds: float = 0.0


_encode = msgspec.msgpack.Encoder().encode
_decode_task = msgspec.msgpack.Decoder(ChildTask).decode


def main(conn: Connection, nice: int) -> None:
    """Entry point of a chunk process (the target of ``multiprocessing.Process``)."""
    from rvidia.worker import oscompat

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the agent, which decides
    oscompat.die_with_parent()
    oscompat.lower_priority(nice)
    cache: dict[Any, Any] = {}
    params_memo: dict[tuple[str, str], Any] = {}
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the agent went away
        started = time.perf_counter()
        try:
            outcome = _run(_decode_task(data), cache, params_memo)
        except MemoryError:
            outcome = ChildOutcome(ok=False, error="MemoryError: the chunk ran out of memory")
        except BaseException:  # the chunk's own error (SystemExit too), with its traceback, goes back
            outcome = ChildOutcome(ok=False, error=traceback.format_exc(limit=20))
        outcome.seconds = time.perf_counter() - started
        try:
            conn.send_bytes(_encode(outcome))
        except (EOFError, OSError):
            return


def _run(ct: ChildTask, cache: dict[Any, Any], params_memo: dict[tuple[str, str], Any]) -> ChildOutcome:
    from rvidia.kinds.base import RunContext
    from rvidia.kinds.registry import get_kind

    task = ct.task
    kind = get_kind(task.kind)
    if kind is None:
        return ChildOutcome(ok=False, error=f"this worker does not know the job kind {task.kind!r}")
    key = (task.job_id, task.kind)
    params = params_memo.get(key)
    if params is None:
        params_memo.clear()
        params = params_memo[key] = kind.parse_params(task.params)
    ctx = RunContext(job_id=task.job_id, stage=task.stage, index=task.index,
                     input_paths={k: Path(v) for k, v in ct.input_paths.items()}, cache=cache)
    result = kind.run(params, task.payload, ctx)
    return ChildOutcome(ok=True, result=result)
