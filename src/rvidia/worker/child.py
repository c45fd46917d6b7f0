"""The chunk process: receives a task over a pipe, runs the kind's ``run``, sends the outcome back.

It is started with ``spawn`` (the same on Linux, macOS and Windows) and reused between chunks, so
imports and a map job's unpickled function are paid once per process, not once per chunk.
"""

from __future__ import annotations

import io
import os
import signal
import sys
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
    log: str = ""


LOG_LIMIT = 64 * 1024  # bytes of a chunk's stdout+stderr kept; the tail when it prints more


class TailLog(io.TextIOBase):
    """A text stream that keeps the last ``limit`` bytes written to it, in a file when given one.

    A chunk's ``sys.stdout`` and ``sys.stderr`` both point here while it runs. With a file (the
    pool gives each slot one), the text survives a chunk process that crashes or is killed: the
    pool reads the tail back. The file never grows past twice the limit.
    """

    def __init__(self, path: str = "", limit: int = LOG_LIMIT) -> None:
        self.limit = limit
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) if path else -1
        self._mem = bytearray()
        self._size = 0

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def reset(self) -> None:
        self._mem.clear()
        self._size = 0
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)

    def write(self, text: str) -> int:
        data = str(text).encode("utf-8", "replace")
        if self._fd < 0:
            self._mem += data
            if len(self._mem) > 2 * self.limit:
                del self._mem[: len(self._mem) - self.limit]
            return len(text)
        os.write(self._fd, data)
        self._size += len(data)
        if self._size > 2 * self.limit:
            tail = os.pread(self._fd, self.limit, self._size - self.limit)
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, tail, 0)
            os.lseek(self._fd, len(tail), os.SEEK_SET)
            self._size = len(tail)
        return len(text)

    def tail(self) -> str:
        if self._fd < 0:
            data = bytes(self._mem[-self.limit:])
        else:
            data = os.pread(self._fd, self.limit, max(0, self._size - self.limit))
        return data.decode("utf-8", "replace")


def read_log_tail(path: str, limit: int = LOG_LIMIT) -> str:
    """What a dead chunk process had printed (its slot's log file), for the pool."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


_encode = msgspec.msgpack.Encoder().encode
_decode_task = msgspec.msgpack.Decoder(ChildTask).decode


class HttpBlobs:
    """``RemoteBlobs`` over the master's REST API, with one HTTP client per chunk process."""

    def __init__(self, master: str, token: str) -> None:
        self.master, self.token = master, token
        self._http: Any = None

    def _client(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.Client(base_url=self.master, timeout=120,
                                      headers={"Authorization": f"Bearer {self.token}"})
        return self._http

    def read_range(self, blob_id: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        response = self._client().get(f"/api/v1/blobs/{blob_id}",
                                      headers={"Range": f"bytes={start}-{start + length - 1}"})
        if response.status_code == 416:
            return b""
        if response.status_code not in (200, 206):
            raise RuntimeError(f"reading blob {blob_id[:12]} failed: HTTP {response.status_code}")
        data = response.content
        return data[start : start + length] if response.status_code == 200 else data

    def put(self, data: bytes) -> str:
        response = self._client().post("/api/v1/blobs", content=data)
        if response.status_code != 201:
            raise RuntimeError(f"uploading a result blob failed: HTTP {response.status_code}")
        return str(response.json()["id"])


def main(conn: Connection, nice: int, master: str = "", token: str = "", log_path: str = "") -> None:
    """Entry point of a chunk process (the target of ``multiprocessing.Process``)."""
    from rvidia.worker import oscompat

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the agent, which decides
    oscompat.die_with_parent()
    oscompat.lower_priority(nice)
    cache: dict[Any, Any] = {}
    params_memo: dict[tuple[str, str], Any] = {}
    blobs = HttpBlobs(master, token) if master else None
    try:
        out = TailLog(log_path)
    except OSError:
        out = TailLog()
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the agent went away
        started = time.perf_counter()
        out.reset()
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = out  # what the chunk prints goes back with its outcome
        try:
            outcome = _run(_decode_task(data), cache, params_memo, blobs)
        except MemoryError:
            outcome = ChildOutcome(ok=False, error="MemoryError: the chunk ran out of memory")
        except BaseException:  # the chunk's own error (SystemExit too), with its traceback, goes back
            outcome = ChildOutcome(ok=False, error=traceback.format_exc(limit=20))
        finally:
            sys.stdout, sys.stderr = saved
        outcome.seconds = time.perf_counter() - started
        outcome.log = out.tail()
        try:
            conn.send_bytes(_encode(outcome))
        except (EOFError, OSError):
            return


def _run(ct: ChildTask, cache: dict[Any, Any], params_memo: dict[tuple[str, str], Any],
         blobs: HttpBlobs | None) -> ChildOutcome:
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
                     input_paths={k: Path(v) for k, v in ct.input_paths.items()}, cache=cache, blobs=blobs)
    result = kind.run(params, task.payload, ctx)
    return ChildOutcome(ok=True, result=result)
