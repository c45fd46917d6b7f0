"""The chunk process pool: one reusable child process per slot, killed and replaced on demand.

A chunk process that crashes, segfaults, is killed or runs past its timeout fails only its own
chunk; the slot gets a fresh process. One reader thread per process waits on its pipe (portable,
unlike ``add_reader`` on Windows) and hands outcomes to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Callable

import msgspec

from rvidia.protocol.messages import ChunkOutcome, ChunkRef, ChunkTask
from rvidia.worker import child, oscompat

log = logging.getLogger("rvidia.worker")

_ctx = multiprocessing.get_context("spawn")
QUICK_DEATH_SECONDS = 2.0
MAX_RESPAWN_DELAY = 30.0
_decode_outcome = msgspec.msgpack.Decoder(child.ChildOutcome).decode


def _ref(task: ChunkTask) -> tuple[str, int, int, int]:
    return (task.job_id, task.stage, task.index, task.attempt)


@dataclass
class _Slot:
    number: int
    proc: multiprocessing.process.BaseProcess | None = None
    conn: Connection | None = None
    generation: int = 0
    task: ChunkTask | None = None
    started: float = 0.0
    timer: asyncio.TimerHandle | None = None
    spawned_at: float = 0.0
    quick_deaths: int = 0  # idle deaths in a row soon after start (a broken environment)
    respawn: asyncio.TimerHandle | None = None
    stopped: bool = False  # its process is suspended (owner-first): SIGSTOP, resumed with SIGCONT
    time_left: float | None = None  # the chunk's timeout left while its process is stopped


class ChunkPool:
    def __init__(self, slots: int, on_outcome: Callable[[ChunkOutcome], None], nice: int = 0,
                 master: str = "", token: str = "", target: Callable[..., None] = child.main) -> None:
        self.loop = asyncio.get_running_loop()
        self.target = target  # the chunk process's entry point (tests give one that dies at start)
        self.on_outcome = on_outcome
        self.nice = nice
        self.master, self.token = master, token  # for chunks' ranged reads and result uploads
        self.slots = [_Slot(i) for i in range(slots)]
        self.waiting: deque[tuple[ChunkTask, dict[str, str]]] = deque()
        self.closed = False
        self.suspended = False  # owner-first: running chunks are kept stopped until resume()
        # One file per slot where its chunk process keeps the tail of what the chunk prints, so the
        # output of a chunk whose process crashes or is killed can still be reported.
        self.log_dir = tempfile.mkdtemp(prefix="rvidia-chunklogs-")

    # ------------------------------------------------------------ processes

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        parent, child_end = _ctx.Pipe()
        proc = _ctx.Process(target=self.target, args=(child_end, self.nice, self.master, self.token,
                                                      self._log_path(slot)), daemon=True,
                            name=f"rvidia-chunk-{slot.number}")
        proc.start()
        child_end.close()
        slot.generation += 1
        slot.proc, slot.conn = proc, parent
        slot.stopped = False
        slot.spawned_at = time.monotonic()
        threading.Thread(target=self._reader, args=(slot, slot.generation, parent, proc), daemon=True,
                         name=f"rvidia-pipe-{slot.number}").start()

    def _log_path(self, slot: _Slot) -> str:
        return os.path.join(self.log_dir, f"slot-{slot.number}.log")

    def _reader(self, slot: _Slot, generation: int, conn: Connection,
                proc: multiprocessing.process.BaseProcess) -> None:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                conn.close()  # only this thread closes the pipe: see _kill
                proc.join(timeout=5)
                self._call(self._on_death, slot, generation, proc.exitcode)
                return
            self._call(self._on_result, slot, generation, data)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop is closed: the worker is exiting

    def _kill(self, slot: _Slot) -> None:
        if slot.proc is not None and slot.proc.is_alive():
            slot.proc.kill()
        # The pipe is left for the reader thread to close when it sees EOF. Closing it here would free
        # its fd number for the next spawn's pipe while the reader may be about to read that number:
        # it would then swallow the new process's first result and that chunk would hang.
        slot.proc = slot.conn = None

    # ------------------------------------------------------------ tasks

    @property
    def running(self) -> int:
        return sum(1 for s in self.slots if s.task is not None) + len(self.waiting)

    def submit(self, task: ChunkTask, input_paths: dict[str, str]) -> None:
        slot = next((s for s in self.slots if s.task is None), None)
        if slot is None:
            self.waiting.append((task, input_paths))
            return
        self._start(slot, task, input_paths)

    def _start(self, slot: _Slot, task: ChunkTask, input_paths: dict[str, str]) -> None:
        if slot.proc is None:
            if slot.respawn is not None:
                slot.respawn.cancel()
                slot.respawn = None
            self._spawn(slot)
        slot.task, slot.started = task, time.perf_counter()
        assert slot.conn is not None
        try:
            slot.conn.send_bytes(msgspec.msgpack.encode(child.ChildTask(task, input_paths)))
        except (OSError, ValueError):
            pass  # the process died already; its reader thread reports it
        if task.timeout:
            slot.timer = self.loop.call_later(task.timeout, self._timed_out, slot, slot.generation)
        if self.suspended:
            self._stop(slot)

    def _finish(self, slot: _Slot, outcome: ChunkOutcome) -> None:
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        slot.task, slot.time_left = None, None
        if not self.closed:
            self.on_outcome(outcome)
        if self.waiting and not self.closed:
            self._start(slot, *self.waiting.popleft())

    def _on_result(self, slot: _Slot, generation: int, data: bytes) -> None:
        task = slot.task
        if generation != slot.generation or task is None:
            return
        res = _decode_outcome(data)
        self._finish(slot, ChunkOutcome(job_id=task.job_id, stage=task.stage, index=task.index,
                                        attempt=task.attempt, ok=res.ok, result=res.result,
                                        error=res.error, seconds=res.seconds, log=res.log))

    def _on_death(self, slot: _Slot, generation: int, exitcode: int | None) -> None:
        if generation != slot.generation or self.closed:
            return
        task = slot.task
        slot.proc = slot.conn = None
        printed = child.read_log_tail(self._log_path(slot)) if task is not None else ""
        quick = time.monotonic() - slot.spawned_at < QUICK_DEATH_SECONDS
        if task is None and quick:  # died at start with nothing to run: do not spin, back off
            slot.quick_deaths += 1
            delay = min(MAX_RESPAWN_DELAY, 0.5 * 2 ** (slot.quick_deaths - 1))
            log.warning("chunk process %d exited at start (%s); starting another in %.1f s",
                        slot.number, oscompat.describe_exit(exitcode), delay)
            slot.respawn = self.loop.call_later(delay, self._respawn_idle, slot)
            return
        slot.quick_deaths = 0
        self._spawn(slot)
        if task is not None:
            error = f"chunk process died ({oscompat.describe_exit(exitcode)})"
            self._finish(slot, self._failure(task, error, slot, printed))

    def _respawn_idle(self, slot: _Slot) -> None:
        slot.respawn = None
        if slot.proc is None and not self.closed:
            self._spawn(slot)

    def _timed_out(self, slot: _Slot, generation: int) -> None:
        task = slot.task
        if generation != slot.generation or task is None:
            return
        slot.timer = None
        self._kill(slot)
        printed = child.read_log_tail(self._log_path(slot))
        self._spawn(slot)
        self._finish(slot, self._failure(task, f"timed out after {task.timeout:g} s", slot, printed))

    @staticmethod
    def _failure(task: ChunkTask, error: str, slot: _Slot, log: str = "") -> ChunkOutcome:
        return ChunkOutcome(job_id=task.job_id, stage=task.stage, index=task.index, attempt=task.attempt,
                            ok=False, error=error, seconds=time.perf_counter() - slot.started, log=log)

    def cancel(self, refs: list[ChunkRef]) -> None:
        """Kill these chunk attempts; no outcome is reported for them."""
        wanted = {(r.job_id, r.stage, r.index, r.attempt) for r in refs}
        self.waiting = deque(w for w in self.waiting if _ref(w[0]) not in wanted)
        for slot in self.slots:
            if slot.task is not None and _ref(slot.task) in wanted:
                self._drop(slot)

    def cancel_all(self) -> None:
        self.waiting.clear()
        for slot in self.slots:
            if slot.task is not None:
                self._drop(slot)

    def _drop(self, slot: _Slot) -> None:
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        slot.task, slot.time_left = None, None
        self._kill(slot)
        if not self.closed:
            self._spawn(slot)
            if self.waiting:  # a task queued behind the dropped one takes the freed slot
                self._start(slot, *self.waiting.popleft())

    # ------------------------------------------------------------ owner-first

    def suspend(self) -> None:
        """Stop the running chunks' processes: the owner gets the CPU back at once and the work done
        so far is kept. Their timeouts stop counting too (a stopped chunk is not slow)."""
        self.suspended = True
        for slot in self.slots:
            if slot.task is not None:
                self._stop(slot)

    def resume(self) -> None:
        """Let every stopped process run again, with the timeout it had left."""
        self.suspended = False
        for slot in self.slots:
            if not slot.stopped:
                continue
            slot.stopped = False
            if slot.proc is not None and slot.proc.pid is not None:
                oscompat.resume_process(slot.proc.pid)
            if slot.time_left is not None and slot.task is not None:
                slot.timer = self.loop.call_later(slot.time_left, self._timed_out, slot, slot.generation)
            slot.time_left = None

    def hand_back_all(self) -> list[ChunkTask]:
        """Kill every running and waiting chunk (no outcome) and return their tasks, so that the
        agent can report them handed back: the master re-queues them without counting a failure."""
        tasks = [w[0] for w in self.waiting] + [s.task for s in self.slots if s.task is not None]
        self.cancel_all()
        return tasks

    def _stop(self, slot: _Slot) -> None:
        if slot.stopped or slot.proc is None or slot.proc.pid is None:
            return
        if not oscompat.suspend_process(slot.proc.pid):
            return  # it just died: its reader thread reports that
        slot.stopped = True
        if slot.timer is not None:
            slot.time_left = max(0.0, slot.timer.when() - self.loop.time())
            slot.timer.cancel()
            slot.timer = None

    def close(self) -> None:
        self.closed = True
        for slot in self.slots:
            self._kill(slot)
        shutil.rmtree(self.log_dir, ignore_errors=True)
