"""The master's glue: feeds the scheduler, carries out its instructions, persists and publishes.

Everything runs on the event loop thread; the WebSocket and HTTP adapters call in here. The kinds'
``chunk``/``merge``/``finish_stage`` run here too, so they must stay quick (bulk data goes through
the blob store, not through merge).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import traceback
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import msgspec

from rvidia.core import events as ev
from rvidia.core.events import Requirement
from rvidia.core.scheduler import Scheduler
from rvidia.kinds.base import Done, JobContext, Kind, ParamError, Plan
from rvidia.kinds.registry import get_kind
from rvidia.master.auth import now_iso
from rvidia.master.blobs import BlobStore
from rvidia.master.copies import RunningCopies
from rvidia.master.votes import ResultLabels
from rvidia.master.eventbus import EventBus
from rvidia.master.jobio import JobInputs, JobOutputs
from rvidia.master.jobspec import JobRequest, resolve
from rvidia.master.store import Store
from rvidia.master.workers import WorkerInfo
from rvidia.protocol import messages as m
from rvidia.protocol import values

log = logging.getLogger("rvidia.master")

FLUSH_INTERVAL = 0.1  # seconds between group commits; the durability window of finished chunks
TICK_INTERVAL = 0.5
LOST_KEPT_SECONDS = 15 * 60
RATE_SECONDS = 600  # how far back the chunks-finished-per-second series goes (the dashboard's chart)


class JobListener(Protocol):
    """Told of each accepted chunk result and of the end of a job it submitted (``/ws/client``)."""

    def on_result(self, job_id: str, index: int, result: bytes) -> None: ...

    def on_end(self, job_id: str, state: str, error: str | None) -> None: ...


class WorkerLink(Protocol):
    """A worker's connection as the runtime sees it: queue a message, or close it."""

    def send(self, message: m.Message) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


@dataclass
class ActiveJob:
    row: dict[str, Any]
    kind: Kind
    ctx: JobContext
    acc: Any
    requirement: Requirement
    done: int = 0
    failed: int = 0
    seq: int = 0
    outvoted: dict[str, int] = field(default_factory=dict)  # replicated jobs: worker -> results outvoted
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set once, when the job ends (long polls)


class Runtime:
    def __init__(self, store: Store, blobs: BlobStore, worker_timeout: float = 10.0,
                 heartbeat_interval: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 version: str = "", user_limit: int = 0) -> None:
        self.store = store
        self.blobs = blobs
        self.heartbeat_interval = heartbeat_interval
        self.version = version
        self.scheduler = Scheduler(clock, worker_timeout, user_limit)
        self.bus = EventBus()
        self.links: dict[str, WorkerLink] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.active: dict[str, ActiveJob] = {}
        self.listeners: dict[str, JobListener] = {}
        self._staged: dict[tuple[str, int, int, int], bytes] = {}
        self._dirty_jobs: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.chunks_finished = 0
        self.chunks_failed = 0
        self._rate: deque[list[int]] = deque()  # [epoch second, chunks finished in it], oldest first
        self._copies = RunningCopies()
        self._labels = ResultLabels()
        self.retention = 7 * 86400.0  # seconds finished jobs are kept (--retention; master/retention.py)
        self.gc_interval = 3600.0  # seconds between automatic retention runs; 0: never

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._resume()
        self._tasks = [asyncio.create_task(self._ticker()), asyncio.create_task(self._flusher())]
        if self.gc_interval > 0:
            self._tasks.append(asyncio.create_task(self._collector()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        for link in list(self.links.values()):
            link.close(1001, "master shutting down")
        self.store.commit()

    async def _ticker(self) -> None:
        last_beat = 0.0
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            self._apply(self.scheduler.handle(ev.Tick()))
            self._check_deadlines()
            now = time.monotonic()
            if now - last_beat >= self.heartbeat_interval:
                last_beat = now
                beat = m.Heartbeat(sent_at=time.time())
                for link in list(self.links.values()):
                    link.send(beat)
            self._forget_old_workers()

    async def _collector(self) -> None:
        from rvidia.master.retention import collect

        while True:
            try:
                freed = collect(self.store, self.blobs, self.retention)
                if freed["jobs"] or freed["blobs"]:
                    log.info("retention removed %(jobs)d jobs and %(blobs)d blobs (%(bytes)d bytes)", freed)
            except Exception:
                log.exception("retention failed")
            await asyncio.sleep(self.gc_interval)

    def _check_deadlines(self) -> None:
        """Cancel the jobs whose ``deadline`` (seconds after submission) has passed."""
        now = time.time()
        for job in [j for j in self.active.values() if j.row.get("deadline")]:
            deadline = float(job.row["deadline"])
            if _epoch(job.row["created_at"]) + deadline <= now:
                log.info("job %s passed its deadline of %g s", job.row["id"], deadline)
                self._end_job(job, "cancelled", error=f"deadline of {deadline:g} s passed")
                self._apply(self.scheduler.handle(ev.CancelJob(job.row["id"])))

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.flush()

    def flush(self) -> None:
        """Group commit, then publish the jobs whose progress changed since the last flush."""
        try:
            self.store.commit()
        except Exception:
            log.exception("could not commit to the database")
        dirty, self._dirty_jobs = self._dirty_jobs, set()
        for job_id in dirty:
            job = self.active.get(job_id)
            if job is not None:
                self.bus.publish({"type": "job", **self.summary(job.row, job)})

    def _forget_old_workers(self) -> None:
        cutoff = time.time() - LOST_KEPT_SECONDS
        for wid in [w for w, info in self.workers.items() if info.lost_at and info.lost_at < cutoff]:
            del self.workers[wid]

    # ------------------------------------------------------------ jobs

    def submit(self, req: JobRequest, submitter: str, idem_key: str | None = None,
               listener: JobListener | None = None,
               on_created: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Validate, store and queue a job. ``on_created`` hears its id before any chunk can run."""
        if idem_key:
            existing = self.store.job_by_idem_key(idem_key)
            if existing is not None:
                return self.job_view(existing["id"])  # type: ignore[return-value]
        kind, params = resolve(req, self.blobs)
        job_id = "j" + secrets.token_hex(6)
        ctx = self._context(job_id, params, req.inputs, stage=0, state=None)
        kind.check(ctx)
        plan = kind.plan(ctx)
        if plan.n_chunks < 0:
            raise ParamError(f"{kind.name}: the plan has a negative number of chunks")
        ctx.state = plan.state
        row: dict[str, Any] = {
            "id": job_id, "kind": kind.name, "state": "queued", "params": msgspec.to_builtins(params),
            "inputs": req.inputs, "priority": req.priority, "max_attempts": req.max_attempts,
            "timeout": req.timeout, "replicas": req.replicas, "resources": req.resources,
            "created_at": now_iso(), "stage": 0, "n_chunks": plan.n_chunks,
            "stage_state": values.dumps(plan.state), "idem_key": idem_key, "submitter": submitter,
            "started_at": None, "finished_at": None, "reason": None, "error": None, "result": None,
            "outputs": {}, "done": 0, "failed": 0, "deadline": req.deadline,
        }
        self.store.insert_job(row)
        if listener is not None:
            self.listeners[job_id] = listener
        if on_created is not None:
            on_created(job_id)
        self._activate(row, kind, ctx, done=frozenset(), attempts={}, failures={})
        return self.job_view(job_id)  # type: ignore[return-value]

    def _context(self, job_id: str, params: Any, inputs: dict[str, str], stage: int, state: Any) -> JobContext:
        ctx = JobContext(job_id=job_id, params=params, inputs=JobInputs(self.blobs, inputs),
                         outputs=JobOutputs(self.blobs), results=lambda: iter(()), blobs=self.blobs,
                         stage=stage, state=state)
        ctx.results = lambda: self.store.chunk_results(job_id, ctx.stage)
        return ctx

    def _activate(self, row: dict[str, Any], kind: Kind, ctx: JobContext, done: frozenset[int],
                  attempts: dict[int, int], failures: dict[int, int]) -> None:
        resources = tuple(sorted(row["resources"].items()))
        base = kind.requirement(ctx.params)
        requirement = Requirement(base.needs_code, base.python, tuple(sorted({*base.resources, *resources})))
        acc = kind.new_acc(ctx)
        for index, result in self.store.chunk_results(row["id"], ctx.stage):
            acc = kind.merge(ctx, acc, index, result)
        job = ActiveJob(row=row, kind=kind, ctx=ctx, acc=acc, requirement=requirement, done=len(done))
        self.active[row["id"]] = job
        self.bus.publish({"type": "job", **self.summary(row, job)})
        self._apply(self.scheduler.handle(ev.JobSubmitted(
            job_id=row["id"], n_chunks=row["n_chunks"], priority=row["priority"],
            max_attempts=row["max_attempts"], requirement=requirement, stage=ctx.stage,
            done=done, attempts=attempts, failures=failures, user=row.get("submitter") or "",
            replicas=row["replicas"])))

    def _resume(self) -> None:
        """Reload unfinished jobs after a restart: done chunks are merged again, not re-run."""
        for row in self.store.unfinished_jobs():
            kind = get_kind(row["kind"])
            try:
                if kind is None:
                    raise ParamError(f"job kind {row['kind']!r} is not installed on this master")
                params = kind.parse_params(row["params"])
                state = values.loads(row["stage_state"]) if row["stage_state"] else None
                ctx = self._context(row["id"], params, row["inputs"], row["stage"], state)
                done, attempts, failures = self.store.chunk_progress(row["id"], row["stage"])
                self._activate(row, kind, ctx, frozenset(done), attempts, failures)
            except Exception as exc:  # a job that cannot resume fails alone, with its reason
                self.store.update_job(row["id"], state="failed", error=f"could not resume: {exc}",
                                      finished_at=now_iso())
        self.store.commit()

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Cancel a queued or running job. None if unknown; raises LookupError if finished."""
        job = self.active.get(job_id)
        if job is None:
            row = self.store.get_job(job_id)
            if row is None:
                return None
            raise LookupError(f"job {job_id} is already {row['state']}")
        self._end_job(job, "cancelled", error=None)
        self._apply(self.scheduler.handle(ev.CancelJob(job_id)))
        return self.job_view(job_id)

    def _end_job(self, job: ActiveJob, state: str, error: str | None, **fields: Any) -> None:
        job_id = job.row["id"]
        self.active.pop(job_id, None)
        self._set(job, state=state, error=error, finished_at=now_iso(), reason=None,
                  done=job.done, failed=job.failed, **fields)
        if state != "succeeded":
            self.store.chunk_cancelled(job_id)
        self._copies.drop_job(job_id)
        self._labels.drop_job(job_id, job.outvoted)
        self.store.commit()
        job.changed.set()
        job.ended.set()
        listener = self.listeners.pop(job_id, None)
        if listener is not None:
            listener.on_end(job_id, state, error)
        self.bus.publish({"type": "job", **self.summary(job.row, None)})

    def _set(self, job: ActiveJob, **fields: Any) -> None:
        job.row.update(fields)
        self.store.update_job(job.row["id"], **fields)

    # ------------------------------------------------------------ workers

    def worker_joined(self, link: WorkerLink, hello: m.Hello, host: str, token_name: str = "") -> str:
        wid = hello.worker_id if hello.worker_id and len(hello.worker_id) <= 64 else "w" + secrets.token_hex(4)
        old = self.links.pop(wid, None)
        if old is not None:
            old.close(m.CLOSE_REPLACED, "replaced by a new connection of the same worker")
        if wid in self.scheduler.workers:
            # Retire the old connection before the new link is registered: the scheduler's own
            # "worker reconnected" loss would otherwise close the new link and leave a ghost entry.
            self._apply(self.scheduler.handle(ev.WorkerLeft(wid, "replaced by a new connection")))
        self.links[wid] = link
        self.workers[wid] = WorkerInfo.from_hello(wid, hello, host)
        self.workers[wid].token_name = token_name
        link.send(m.Welcome(worker_id=wid, heartbeat_interval=self.heartbeat_interval,
                            master_version=self.version, blob_dir=str(self.blobs.root),
                            host_key=self.blobs.host_key))
        self._apply(self.scheduler.handle(ev.WorkerJoined(
            wid, hello.slots, hello.allow_code, _minor(hello.python), tuple(sorted(hello.resources.items())))))
        self._publish_worker(wid)
        log.info("worker %s (%s) joined with %d slots", wid, hello.name, hello.slots)
        return wid

    def worker_message(self, wid: str, link: WorkerLink, msg: m.Message) -> None:
        """Handle one decoded frame; raise ProtocolError for a message a worker must not send."""
        if self.links.get(wid) is not link:
            return  # a replaced or lost connection still talking
        info = self.workers[wid]
        info.seen()
        events: list[ev.Event] = [ev.WorkerSeen(wid)]
        if isinstance(msg, m.Results):
            for item in msg.items:
                if item.log:  # what the chunk printed, kept for its latest attempt only
                    self.store.chunk_log(item.job_id, item.stage, item.index, item.attempt, item.log)
                if item.handed_back:
                    events.append(ev.ChunkHandedBack(wid, item.job_id, item.stage, item.index, item.attempt,
                                                     item.error or "handed back by its worker", item.unstarted))
                elif item.ok:
                    self._staged[(item.job_id, item.stage, item.index, item.attempt)] = item.result
                    events.append(ev.ChunkSucceeded(wid, item.job_id, item.stage, item.index, item.attempt,
                                                    self._vote_label(item)))
                else:
                    events.append(ev.ChunkFailed(wid, item.job_id, item.stage, item.index, item.attempt,
                                                 item.error or "chunk failed without a reason"))
        elif isinstance(msg, m.Heartbeat):
            info.cpu_percent, info.memory_percent = msg.cpu_percent, msg.memory_percent
        elif isinstance(msg, m.Capacity):
            info.slots, info.paused = msg.slots, msg.paused
            events.append(ev.CapacityChanged(wid, msg.slots, msg.paused))
            if msg.leaving:
                info.drained = True
                events.append(ev.DrainWorker(wid, True))
        elif isinstance(msg, m.Bye):
            events.append(ev.WorkerLeft(wid, f"worker left ({msg.reason or 'no reason given'})"))
        else:
            raise m.ProtocolError(f"a worker may not send {type(msg).__name__} messages")
        self._apply(self.scheduler.handle(*events))
        self._publish_worker(wid)

    def _vote_label(self, item: m.ChunkOutcome) -> str:
        """Replicated jobs: which earlier result of this chunk this one agrees with ("" otherwise)."""
        job = self.active.get(item.job_id)
        if job is None or job.row["replicas"] < 2:
            return ""
        return self._labels.label((item.job_id, item.stage, item.index), item.result,
                                  lambda a, b: job.kind.agree(job.ctx, a, b))

    def worker_closed(self, wid: str, link: WorkerLink, reason: str) -> None:
        if self.links.get(wid) is link:
            del self.links[wid]
            self._apply(self.scheduler.handle(ev.WorkerLeft(wid, reason)))

    def disconnect_token(self, token_name: str) -> list[str]:
        """A revoked token's workers are cut off at once; they cannot come back with it."""
        cut = [wid for wid, info in self.workers.items() if info.token_name == token_name and wid in self.links]
        for wid in cut:
            self.links.pop(wid).close(m.CLOSE_AUTH, "the worker's token was revoked")
            self._apply(self.scheduler.handle(ev.WorkerLeft(wid, "its token was revoked")))
        return cut

    def drain(self, wid: str, drain: bool) -> None:
        self.workers[wid].drained = drain
        self._apply(self.scheduler.handle(ev.DrainWorker(wid, drain)))
        self._publish_worker(wid)

    def _publish_worker(self, wid: str) -> None:
        if self.bus.active and wid in self.workers:
            self.bus.publish({"type": "worker", **self.worker_view(wid)})

    def _publish_chunk(self, job_id: str, stage: int, index: int, state: str, worker: str | None,
                       attempts: int, started_at: str | None, finished_at: str | None = None,
                       error: str | None = None) -> None:
        """A chunk changed (started, done, back in the queue): the fields of ``/jobs/{id}/chunks``."""
        if self.bus.active:
            self.bus.publish({"type": "chunk", "job_id": job_id, "stage": stage, "index": index,
                              "state": state, "worker": worker, "attempts": attempts,
                              "started_at": started_at, "finished_at": finished_at, "error": error})

    def _count_finished(self) -> None:
        second = int(time.time())
        if self._rate and self._rate[-1][0] == second:
            self._rate[-1][1] += 1
            return
        self._rate.append([second, 1])
        while self._rate[0][0] <= second - RATE_SECONDS:
            self._rate.popleft()

    def finished_per_second(self, seconds: int = 300) -> dict[str, Any]:
        """Chunks finished in each of the last ``seconds`` whole seconds (the current one last)."""
        seconds = max(1, min(seconds, RATE_SECONDS))
        end = int(time.time())
        start = end - seconds + 1
        counts = [0] * seconds
        for second, n in self._rate:
            if second >= start:
                counts[second - start] = n
        return {"start": start, "interval": 1, "counts": counts}

    # ------------------------------------------------------------ instructions

    def _apply(self, instructions: list[ev.Instruction]) -> None:
        assigns: dict[str, list[m.ChunkTask]] = defaultdict(list)
        cancels: dict[str, list[m.ChunkRef]] = defaultdict(list)
        follow: list[ev.Event] = []
        for ins in instructions:
            if isinstance(ins, ev.Assign):
                task = self._task(ins, follow)
                if task is not None:
                    assigns[ins.worker_id].append(task)
            elif isinstance(ins, ev.AcceptResult):
                self._accept(ins, follow)
            elif isinstance(ins, ev.DropResult):
                self._staged.pop((ins.job_id, ins.stage, ins.index, ins.attempt), None)
            elif isinstance(ins, ev.CancelChunk):
                cancels[ins.worker_id].append(m.ChunkRef(ins.job_id, ins.stage, ins.index, ins.attempt))
                self._copies.end((ins.job_id, ins.stage, ins.index), ins.attempt)
            elif isinstance(ins, ev.RetryChunk):
                self._retry(ins)
            elif isinstance(ins, ev.StageComplete):
                self._finish_stage(ins.job_id, follow)
            elif isinstance(ins, ev.JobFailed):
                job = self.active.get(ins.job_id)
                if job is not None:
                    self.chunks_failed += 1
                    if ins.index is not None:  # the timeline shows which chunk failed the job, and why
                        self._chunk_failed(job, ins.index, ins.error)
                    self._end_job(job, "failed", ins.error)
            elif isinstance(ins, ev.WorkerLost):
                self._lost(ins)
            elif isinstance(ins, ev.Outvoted):
                self._outvoted(ins)
        for wid, refs in cancels.items():  # cancels first: they free the slots the assigns fill
            self._send(wid, m.Cancel(chunks=refs))
        for wid, tasks in assigns.items():
            self._send(wid, m.Assign(tasks=tasks))
        if follow:
            self._apply(self.scheduler.handle(*follow))

    def _send(self, wid: str, message: m.Message) -> None:
        link = self.links.get(wid)
        if link is not None:
            link.send(message)

    def _task(self, ins: ev.Assign, follow: list[ev.Event]) -> m.ChunkTask | None:
        job = self.active[ins.job_id]
        try:
            payload = job.kind.chunk(job.ctx, ins.index)
            inputs = job.kind.chunk_inputs(job.ctx, ins.index)
        except Exception as exc:
            self._fail_from_master(job, f"could not prepare chunk {ins.index}: {_describe(exc)}", follow)
            return None
        now = now_iso()
        self.store.chunk_started(ins.job_id, ins.stage, ins.index, ins.worker_id, ins.attempt, now)
        self._copies.start((ins.job_id, ins.stage, ins.index), ins.attempt, ins.worker_id, now)
        self._publish_chunk(ins.job_id, ins.stage, ins.index, "running", ins.worker_id, ins.attempt, now)
        if job.row["state"] == "queued":
            self._set(job, state="running", started_at=job.row.get("started_at") or now)
        if ins.backup:
            log.info("job %s chunk %d is a straggler: backup copy (attempt %d) on worker %s",
                     ins.job_id, ins.index, ins.attempt, ins.worker_id)
        self._dirty_jobs.add(ins.job_id)
        return m.ChunkTask(job_id=ins.job_id, stage=ins.stage, index=ins.index, attempt=ins.attempt,
                           kind=job.kind.name, params=job.row["params"], payload=payload, inputs=inputs,
                           timeout=job.row["timeout"])

    def _accept(self, ins: ev.AcceptResult, follow: list[ev.Event]) -> None:
        result = self._staged.pop((ins.job_id, ins.stage, ins.index, ins.attempt), b"")
        job = self.active.get(ins.job_id)
        if job is None:
            return
        try:
            job.acc = job.kind.merge(job.ctx, job.acc, ins.index, result)
        except Exception as exc:
            self._fail_from_master(job, f"result of chunk {ins.index} from worker {ins.worker_id} "
                                        f"could not be merged: {_describe(exc)}", follow)
            return
        listener = self.listeners.get(ins.job_id)
        if listener is not None:
            listener.on_result(ins.job_id, ins.index, result)
        job.done += 1
        job.seq += 1
        self.chunks_finished += 1
        self._count_finished()
        finished_at = now_iso()
        self.store.chunk_done(ins.job_id, ins.stage, ins.index, result, finished_at, job.seq, ins.worker_id,
                              ins.attempt)
        _, attempt, started_at = self._copies.end((ins.job_id, ins.stage, ins.index), ins.attempt)
        self._labels.forget((ins.job_id, ins.stage, ins.index))
        self._publish_chunk(ins.job_id, ins.stage, ins.index, "done", ins.worker_id, attempt, started_at,
                            finished_at)
        info = self.workers.get(ins.worker_id)
        if info is not None:
            info.chunks_done += 1
        job.changed.set()
        self._dirty_jobs.add(ins.job_id)

    def _retry(self, ins: ev.RetryChunk) -> None:
        job = self.active.get(ins.job_id)
        if job is None:
            return
        if not ins.lost:
            job.failed += 1
            self.chunks_failed += 1
        at = now_iso()
        self.store.chunk_retry(ins.job_id, ins.stage, ins.index, ins.error, not ins.lost, at)
        worker, attempt, started_at = self._copies.end((ins.job_id, ins.stage, ins.index))
        self._publish_chunk(ins.job_id, ins.stage, ins.index, "pending", worker, attempt, started_at, at, ins.error)
        self._dirty_jobs.add(ins.job_id)
        log.info("job %s chunk %d will run again: %s", ins.job_id, ins.index, ins.error.splitlines()[-1:])

    def _chunk_failed(self, job: ActiveJob, index: int, error: str) -> None:
        key = (job.row["id"], job.ctx.stage, index)
        at = now_iso()
        self.store.chunk_failed(*key, error, at)
        worker, attempt, started_at = self._copies.end(key)
        self._publish_chunk(*key, "failed", worker, attempt, started_at, at, error)

    def _finish_stage(self, job_id: str, follow: list[ev.Event]) -> None:
        job = self.active.get(job_id)
        if job is None:
            return
        try:
            outcome = job.kind.finish_stage(job.ctx, job.acc)
        except Exception as exc:
            self._fail_from_master(job, f"could not merge stage {job.ctx.stage}: {_describe(exc)}", follow)
            return
        if isinstance(outcome, Plan):
            job.ctx.stage += 1
            job.ctx.state = outcome.state
            job.acc = job.kind.new_acc(job.ctx)
            job.done = job.failed = 0
            self._set(job, stage=job.ctx.stage, n_chunks=outcome.n_chunks,
                      stage_state=values.dumps(outcome.state))
            self.store.commit()
            follow.append(ev.StageStarted(job_id, job.ctx.stage, outcome.n_chunks))
            return
        assert isinstance(outcome, Done)
        self._end_job(job, "succeeded", None, result=outcome.result, outputs=outcome.outputs)
        follow.append(ev.FinishJob(job_id))

    def _fail_from_master(self, job: ActiveJob, error: str, follow: list[ev.Event]) -> None:
        self._end_job(job, "failed", error)
        follow.append(ev.CancelJob(job.row["id"]))

    def _outvoted(self, ins: ev.Outvoted) -> None:
        """A worker's result disagreed with the majority of a replicated chunk: flag it for people
        to see (API, dashboard, log); the scheduler has already taken the majority's result."""
        info = self.workers.get(ins.worker_id)
        if info is not None:
            info.outvoted += 1
            self._publish_worker(ins.worker_id)
        job = self.active.get(ins.job_id)
        if job is not None:
            job.outvoted[ins.worker_id] = job.outvoted.get(ins.worker_id, 0) + 1
        log.warning("worker %s was outvoted on job %s chunk %d: its result disagreed with %s's and the majority's",
                    ins.worker_id, ins.job_id, ins.index, ins.winner)

    def _lost(self, ins: ev.WorkerLost) -> None:
        info = self.workers.get(ins.worker_id)
        if info is not None:
            info.mark_lost(ins.reason)
        link = self.links.pop(ins.worker_id, None)
        if link is not None:
            link.close(m.CLOSE_POLICY, f"declared lost: {ins.reason}")
        level = logging.INFO if ins.reason.startswith("worker left") else logging.WARNING
        log.log(level, "worker %s lost: %s", ins.worker_id, ins.reason)
        self._publish_worker(ins.worker_id)

    # ------------------------------------------------------------ views

    def worker_view(self, wid: str) -> dict[str, Any]:
        return self.workers[wid].view(self.scheduler.running_on(wid))

    def summary(self, row: dict[str, Any], job: ActiveJob | None) -> dict[str, Any]:
        if job is not None:
            progress = {"total": row["n_chunks"], "done": job.done, "running": self.scheduler.running_chunks(row["id"]),
                        "failed": job.failed}
            extra = job.kind.progress(job.ctx, job.acc)
            if extra:
                progress["detail"] = extra
        else:
            progress = {"total": row["n_chunks"], "done": row["done"], "running": 0, "failed": row["failed"]}
        return {"id": row["id"], "kind": row["kind"], "state": row["state"], "progress": progress,
                "stage": row["stage"], "priority": row["priority"], "created_at": row["created_at"],
                "started_at": row["started_at"], "finished_at": row["finished_at"]}

    async def wait_end(self, job_id: str, seconds: float) -> None:
        """Return when the job ends or after ``seconds``, whichever comes first (a job that is not
        running returns at once)."""
        job = self.active.get(job_id)
        if job is None or seconds <= 0:
            return
        try:
            await asyncio.wait_for(job.ended.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def job_view(self, job_id: str) -> dict[str, Any] | None:
        job = self.active.get(job_id)
        row = job.row if job is not None else self.store.get_job(job_id)
        if row is None:
            return None
        view = self.summary(row, job)
        view.update({
            "reason": self.scheduler.reason(job_id) if job is not None else None,
            "params": row["params"], "inputs": row["inputs"], "max_attempts": row["max_attempts"],
            "timeout": row["timeout"], "replicas": row["replicas"], "resources": row["resources"],
            "error": row["error"], "result": row["result"], "outputs": row["outputs"] or {},
            "workers": self.store.done_by_worker(job_id), "deadline": row.get("deadline"),
            "outvoted": dict(job.outvoted) if job is not None else self._labels.outvoted.get(job_id, {}),
        })
        return view

    def list_jobs(self, limit: int, before: str | None) -> list[dict[str, Any]]:
        rows = self.store.list_jobs(limit, before)
        return [self.summary(self.active[r["id"]].row if r["id"] in self.active else r,
                             self.active.get(r["id"])) for r in rows]


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _minor(python: str) -> str:
    return ".".join(python.split(".")[:2])


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
