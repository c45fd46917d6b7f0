"""The chunk process pool: one reusable child process per slot, killed and replaced on demand.

A chunk process that crashes, segfaults, is killed or runs past its timeout fails only its own
chunk; the slot gets a fresh process. Processes are started from a command line by a launcher
(``sandbox``: plainly, under bubblewrap, in a container) and speak frames (``childwire``) on their
stdin/stdout. One reader thread per process waits on its stdout (portable, unlike ``add_reader`` on
Windows), keeps what the chunk prints, serves its blob requests (``blobproxy``) and hands outcomes to
the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import msgspec

from rvidia.protocol.messages import ChunkOutcome, ChunkRef, ChunkTask
from rvidia.worker import child, oscompat
from rvidia.worker.blobproxy import HttpBlobs, NoBlobs
from rvidia.worker.childwire import FrameReader, FrameWriter, Log, Outcome, Put, ReadRange, Run, decode_from_child
from rvidia.worker.sandbox import Launcher, Started

log = logging.getLogger("rvidia.worker")

QUICK_DEATH_SECONDS = 2.0
# A chunk the master sent ahead (prefetch) and still waiting for a slot after this long is handed back
# to run elsewhere: the chunk in front of it turned out long (a straggler, a frozen process), and a
# short chunk must not wait behind it while other workers are free.
HOLD_LIMIT = 0.5  # prefetch is for chunks shorter than this (core.scheduler.PREFETCH_BELOW)
MAX_RESPAWN_DELAY = 30.0


def _ref(task: ChunkTask) -> tuple[str, int, int, int]:
    return (task.job_id, task.stage, task.index, task.attempt)


@dataclass
class _Slot:
    number: int
    proc: Started | None = None
    conn: FrameWriter | None = None  # frames to the process's stdin
    generation: int = 0
    task: ChunkTask | None = None
    started: float = 0.0
    timer: asyncio.TimerHandle | None = None
    spawned_at: float = 0.0
    quick_deaths: int = 0  # idle deaths in a row soon after start (a broken environment)
    respawn: asyncio.TimerHandle | None = None
    stopped: bool = False  # its process is suspended (owner-first): SIGSTOP, resumed with SIGCONT
    time_left: float | None = None  # the chunk's timeout left while its process is stopped
    log: child.TailLog = field(default_factory=child.TailLog)  # what the running chunk printed
    log_lock: threading.Lock = field(default_factory=threading.Lock)  # the reader thread writes it


class ChunkPool:
    """``slots`` chunk processes started by ``launcher`` (plain by default), fed tasks one at a time;
    each outcome goes to ``on_outcome``. ``master`` and ``token`` let chunks read and upload blobs
    through the pool."""

    def __init__(self, slots: int, on_outcome: Callable[[ChunkOutcome], None], nice: int = 0,
                 master: str = "", token: str = "", launcher: Launcher | None = None,
                 entry: Sequence[str] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.launcher = launcher or Launcher(nice=nice)
        self.entry = entry  # the chunk process's command instead of rvidia's child (tests: one that dies at start)
        self.on_outcome = on_outcome
        self.blobs: HttpBlobs | NoBlobs = HttpBlobs(master, token) if master else NoBlobs()  # chunks' blob I/O
        self.slots = [_Slot(i) for i in range(slots)]
        self.waiting: deque[tuple[ChunkTask, dict[str, str]]] = deque()
        self.closed = False
        self.suspended = False  # owner-first: running chunks are kept stopped until resume()
        self.hold_limit = HOLD_LIMIT
        self.store = ""  # the master's blob store, for uncontained chunks on its machine (worker/directblobs.py)

    # ------------------------------------------------------------ processes

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        slot.generation += 1
        slot.stopped = False
        slot.spawned_at = time.monotonic()
        try:
            started = self.launcher.start(slot.number, self.entry)
        except OSError as exc:  # the launcher itself is missing: like a process that died at once
            log.warning("could not start a chunk process: %s", exc)
            slot.proc = slot.conn = None
            self._call(self._on_death, slot, slot.generation, 127)
            return
        assert started.proc.stdin is not None and started.proc.stdout is not None
        slot.proc, slot.conn = started, FrameWriter(started.proc.stdin)  # type: ignore[arg-type]
        threading.Thread(target=self._reader, args=(slot, slot.generation, started, slot.conn), daemon=True,
                         name=f"rvidia-pipe-{slot.number}").start()

    def _reader(self, slot: _Slot, generation: int, started: Started, conn: FrameWriter) -> None:
        """The process's stdout until it ends: keep the chunk's text, serve its blob requests, report
        its outcome; at the end, its death. Only this thread reads (and closes) that stdout."""
        assert started.proc.stdout is not None
        reader = FrameReader(started.proc.stdout)  # type: ignore[arg-type]
        while True:
            try:
                data = reader.read()
                message = decode_from_child(data) if data is not None else None
            except (OSError, ValueError, msgspec.DecodeError):  # a garbled stream: treat it as a death
                message = None
            if message is None:
                break
            if isinstance(message, Log):
                with slot.log_lock:
                    if slot.generation == generation:
                        slot.log.write(message.text)
            elif isinstance(message, (ReadRange, Put)):
                try:
                    conn.send(self.blobs.serve(message))
                except (OSError, ValueError):
                    pass  # it died meanwhile: the end of its stdout says so
            elif isinstance(message, Outcome):
                self._call(self._on_result, slot, generation, message)
        conn.close()
        try:
            started.proc.stdout.close()
        except OSError:
            pass
        code = _wait(started.proc)
        self.launcher.release(started)
        self._call(self._on_death, slot, generation, self.launcher.exit_code(code))

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop is closed: the worker is exiting

    def _kill(self, slot: _Slot) -> None:
        if slot.proc is not None:
            self.launcher.kill(slot.proc)
        # Its pipes are left for the reader thread, which sees the end of stdout, closes them and
        # reports the death (ignored then: the slot has moved on to a new generation).
        slot.proc = slot.conn = None

    def _printed(self, slot: _Slot) -> str:
        with slot.log_lock:
            return slot.log.tail()

    # ------------------------------------------------------------ tasks

    @property
    def running(self) -> int:
        return sum(1 for s in self.slots if s.task is not None) + len(self.waiting)

    def submit(self, task: ChunkTask, input_paths: dict[str, str]) -> None:
        slot = next((s for s in self.slots if s.task is None), None)
        if slot is None:
            self.waiting.append((task, input_paths))
            self.loop.call_later(self.hold_limit, self._held_too_long, task)
            return
        self._start(slot, task, input_paths)

    def _held_too_long(self, task: ChunkTask) -> None:
        if self.closed or not any(w[0] is task for w in self.waiting):
            return  # started, cancelled or handed back meanwhile
        self.waiting = deque(w for w in self.waiting if w[0] is not task)
        self.on_outcome(ChunkOutcome(job_id=task.job_id, stage=task.stage, index=task.index, attempt=task.attempt,
                                     ok=False, handed_back=True, unstarted=True,
                                     error=f"handed back: waited {self.hold_limit:g} s behind a long-running chunk"))

    def _start(self, slot: _Slot, task: ChunkTask, input_paths: dict[str, str]) -> None:
        if slot.proc is None:
            if slot.respawn is not None:
                slot.respawn.cancel()
                slot.respawn = None
            self._spawn(slot)
        slot.task, slot.started = task, time.perf_counter()
        with slot.log_lock:
            slot.log.reset()
        if slot.conn is None:
            return  # it could not even be started: its death is on the way
        try:
            slot.conn.send(Run(task, input_paths, store=self.store))
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

    def _on_result(self, slot: _Slot, generation: int, res: Outcome) -> None:
        task = slot.task
        if generation != slot.generation or task is None:
            return
        outcome = ChunkOutcome(job_id=task.job_id, stage=task.stage, index=task.index, attempt=task.attempt,
                               ok=res.ok, result=res.result, error=res.error, seconds=res.seconds,
                               log=self._printed(slot))
        if self.launcher.recycle(res.cpu_seconds) and not self.closed:
            self._kill(slot)  # most of its CPU-time limit is used up: the next chunk gets a fresh process
            self._spawn(slot)
        self._finish(slot, outcome)

    def _on_death(self, slot: _Slot, generation: int, exitcode: int | None) -> None:
        if generation != slot.generation or self.closed:
            return
        task = slot.task
        slot.proc = slot.conn = None
        printed = self._printed(slot) if task is not None else ""
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
            error = f"chunk process died ({_describe(exitcode, self.launcher)})"
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
        printed = self._printed(slot)
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
            if slot.proc is not None:
                self.launcher.resume(slot.proc)
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
        if slot.stopped or slot.proc is None:
            return
        if not self.launcher.suspend(slot.proc):
            return  # it just died: its reader thread reports that
        slot.stopped = True
        if slot.timer is not None:
            slot.time_left = max(0.0, slot.timer.when() - self.loop.time())
            slot.timer.cancel()
            slot.timer = None

    def close(self) -> None:
        self.closed = True
        for slot in self.slots:
            if slot.respawn is not None:
                slot.respawn.cancel()
            self._kill(slot)
        self.launcher.close()
        self.blobs.close()


def _wait(proc: subprocess.Popen[bytes]) -> int | None:
    """Its exit status once its stdout has ended (a killed docker client may take a moment)."""
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _describe(code: int | None, launcher: Launcher) -> str:
    text = oscompat.describe_exit(code)
    sigxcpu = getattr(signal, "SIGXCPU", None)
    if sigxcpu is not None and code == -sigxcpu and launcher.limits is not None:
        text += f": it used its {launcher.limits.cpu_seconds} s of CPU time (--chunk-cpu-seconds)"
    return text
