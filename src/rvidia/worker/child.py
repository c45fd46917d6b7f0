"""The chunk process: receives tasks as frames on stdin, runs the kind's ``run``, sends outcomes back.

``python -m rvidia.worker.child`` is started by the pool from a command line, plainly or inside a
sandbox (``bwrap ...``, ``docker run -i ...``: see ``sandbox``), and reused between chunks, so imports
and a map job's unpickled function are paid once per process, not once per chunk. It needs no network
and no token: what it prints, its blob reads and its uploads all travel as frames (``childwire``)
that the agent serves.
"""

from __future__ import annotations

import argparse
import io
import os
import queue
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import msgspec

from rvidia.worker.childwire import (FrameReader, FrameWriter, Log, Outcome, Put, ReadRange, Reply, Run,
                                     ToChild, decode_to_child, open_fd)

LOG_LIMIT = 64 * 1024  # bytes of a chunk's stdout+stderr kept; the tail when it prints more


class TailLog(io.TextIOBase):
    """A text stream that keeps the last ``limit`` bytes written to it.

    The pool keeps one per slot and feeds it the text a chunk prints (``Log`` frames, sent as they
    come), so the output of a chunk whose process crashes or is killed can still be reported. It
    never holds more than twice the limit.
    """

    def __init__(self, limit: int = LOG_LIMIT) -> None:
        self.limit = limit
        self._mem = bytearray()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def reset(self) -> None:
        self._mem.clear()

    def write(self, text: str) -> int:
        self._mem += str(text).encode("utf-8", "replace")
        if len(self._mem) > 2 * self.limit:
            del self._mem[: len(self._mem) - self.limit]
        return len(text)

    def tail(self) -> str:
        return bytes(self._mem[-self.limit:]).decode("utf-8", "replace")


class ChunkLog(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` while a chunk runs: its text goes to the agent as ``Log`` frames.

    A frame leaves at each line end (or 8 KiB), so what was printed before a crash has reached the
    agent; a single write longer than the kept tail is cut to that tail first.
    """

    def __init__(self, writer: FrameWriter, limit: int = LOG_LIMIT) -> None:
        self.writer, self.limit = writer, limit
        self._parts: list[str] = []
        self._size = 0
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        text = str(text)
        with self._lock:
            self._parts.append(text[-self.limit:])
            self._size += min(len(text), self.limit)
            if "\n" in text or self._size >= 8192:
                self._send()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._send()

    def _send(self) -> None:
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        try:
            self.writer.send(Log(text))
        except OSError:
            pass  # the agent is gone: the reader thread ends this process


READ_PIECE = 4 << 20


def _sandbox_hint(exc: BaseException) -> str:
    """A file error inside a sandbox is most likely the sandbox: say so, and what to do."""
    if not isinstance(exc, OSError) or not os.environ.get("RVIDIA_SANDBOXED"):
        return ""
    return ("(this chunk ran in the worker's sandbox: it sees none of the users' files and may write only "
            "its scratch dir and /tmp. Send data as arguments or inputs, or start the worker with "
            "--isolation none if it may trust this code with its files; see docs/security.md)\n")


class PipeBlobs:
    """``RemoteBlobs`` through the agent: a request frame out, the ``Reply`` back on stdin.

    A sandboxed chunk has no network; the agent holds the master's address and token and does the
    HTTP. One request at a time (a lock), whichever thread of the chunk asks.
    """

    def __init__(self, writer: FrameWriter, inbox: queue.SimpleQueue[ToChild]) -> None:
        self.writer, self.inbox = writer, inbox
        self._lock = threading.Lock()

    def read_range(self, blob_id: str, start: int, length: int) -> bytes:
        """Asked in pieces of at most READ_PIECE bytes, so that the agent, which serves every chunk of
        the worker, never holds more than a piece per chunk (its memory stays flat under large reads)."""
        if length <= 0:
            return b""
        parts = []
        for offset in range(start, start + length, READ_PIECE):
            part = self._ask(ReadRange(blob_id, offset, min(READ_PIECE, start + length - offset))).data
            parts.append(part)
            if len(part) < min(READ_PIECE, start + length - offset):
                break  # the end of the blob
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def put(self, data: bytes) -> str:
        return self._ask(Put(bytes(data))).blob_id

    def _ask(self, request: msgspec.Struct) -> Reply:
        with self._lock:
            self.writer.send(request)
            reply = self.inbox.get()
        if not isinstance(reply, Reply):
            raise RuntimeError(f"the agent answered a blob request with {type(reply).__name__}")
        if reply.error is not None:
            raise RuntimeError(reply.error)
        return reply


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rvidia.worker.child",
                                     description="An RVIDIA chunk process (started by a worker's pool).")
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--memory", type=int, default=None, help="address-space limit in bytes")
    parser.add_argument("--cpu-seconds", type=int, default=None, help="CPU-time limit per chunk")
    parser.add_argument("--processes", type=int, default=None, help="RLIMIT_NPROC")
    parser.add_argument("--scratch", default=None, help="working directory, emptied before each chunk")
    parser.add_argument("--probe", action="store_true", help="import the kinds and exit (sandbox check)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of a chunk process: frames on stdin and stdout, anything else printed on stderr."""
    from rvidia.worker import oscompat

    args = _parse(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the agent, which decides
    oscompat.die_with_parent()
    if args.probe:
        import rvidia.kinds.registry  # noqa: F401  (the runtime and the packages are all there)
        return
    # The frames get their own descriptors; fd 1 becomes stderr so that C code printing to stdout
    # cannot corrupt them, and fd 0 reads nothing.
    frames_in, frames_out = os.dup(0), os.dup(1)
    for fd in (frames_in, frames_out):
        oscompat.binary_fd(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    oscompat.lower_priority(args.nice)
    oscompat.set_limits(args.memory, args.cpu_seconds, args.processes)
    if args.scratch:
        os.chdir(args.scratch)
    writer = FrameWriter(open_fd(frames_out, "wb"))
    inbox: queue.SimpleQueue[ToChild] = queue.SimpleQueue()
    threading.Thread(target=_read_frames, args=(FrameReader(open_fd(frames_in, "rb")), inbox), daemon=True,
                     name="rvidia-frames").start()
    _serve(writer, inbox, args)


def _read_frames(reader: FrameReader, inbox: queue.SimpleQueue[ToChild]) -> None:
    """Everything the agent sends, in order. Its end means the agent is gone or dropped this process:
    exit at once, mid-chunk too (this is how chunks die with the agent in a container and on every OS)."""
    while True:
        data = reader.read()
        if data is None:
            os._exit(0)
        try:
            inbox.put(decode_to_child(data))
        except msgspec.DecodeError:
            os._exit(2)


def _serve(writer: FrameWriter, inbox: queue.SimpleQueue[ToChild], args: argparse.Namespace) -> None:
    from rvidia.worker import oscompat

    cache: dict[Any, Any] = {}
    params_memo: dict[tuple[str, str], Any] = {}
    blobs = PipeBlobs(writer, inbox)
    out = ChunkLog(writer)
    while True:
        message = inbox.get()
        if not isinstance(message, Run):
            continue  # a reply nobody waits for any more
        started = time.perf_counter()
        if args.scratch:
            _empty(args.scratch)
        oscompat.cpu_budget(args.cpu_seconds, time.process_time())
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = out  # what the chunk prints goes back as it comes
        try:
            outcome = _run(message, cache, params_memo, blobs)
        except MemoryError:
            outcome = Outcome(ok=False, error="MemoryError: the chunk ran out of memory")
        except BaseException as exc:  # the chunk's own error (SystemExit too), with its traceback, goes back
            outcome = Outcome(ok=False, error=traceback.format_exc(limit=20) + _sandbox_hint(exc))
        finally:
            sys.stdout, sys.stderr = saved
        out.flush()
        outcome.seconds = time.perf_counter() - started
        outcome.cpu_seconds = time.process_time()
        try:
            try:
                writer.send(outcome)
            except ValueError as exc:  # a result over the frame limit
                writer.send(Outcome(ok=False, error=f"the chunk's result is too large: {exc}",
                                    seconds=outcome.seconds, cpu_seconds=outcome.cpu_seconds))
        except OSError:
            return


def _empty(scratch: str) -> None:
    """A fresh scratch directory for each chunk: nothing one chunk leaves there reaches the next."""
    try:
        os.chdir(scratch)
        for entry in os.scandir(scratch):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
    except OSError:
        pass


def _run(message: Run, cache: dict[Any, Any], params_memo: dict[tuple[str, str], Any],
         blobs: PipeBlobs) -> Outcome:
    from rvidia.kinds.base import RemoteBlobs, RunContext
    from rvidia.kinds.registry import get_kind

    task = message.task
    kind = get_kind(task.kind)
    if kind is None:
        return Outcome(ok=False, error=f"this worker does not know the job kind {task.kind!r}")
    key = (task.job_id, task.kind)
    params = params_memo.get(key)
    if params is None:
        params_memo.clear()
        params = params_memo[key] = kind.parse_params(task.params)
    chunk_blobs: RemoteBlobs = blobs
    if message.store:
        from rvidia.worker.directblobs import DirectBlobs

        chunk_blobs = DirectBlobs(Path(message.store), blobs)
    ctx = RunContext(job_id=task.job_id, stage=task.stage, index=task.index,
                     input_paths={k: Path(v) for k, v in message.input_paths.items()}, cache=cache,
                     blobs=chunk_blobs)
    result = kind.run(params, task.payload, ctx)
    return Outcome(ok=True, result=result)


if __name__ == "__main__":
    main()
