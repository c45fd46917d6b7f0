"""The scheduler: a pure state machine that decides which chunk runs where.

It performs no I/O and reads time only through the injected clock, so every rule (bounded in-flight
chunks, fairness, retries, worker loss, late results, cancel) is tested in memory. The master feeds it
events with :meth:`Scheduler.handle` and carries out the instructions it returns.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Collection

from rvidia.core import events as ev
from rvidia.core.records import ChunkKey, FreeWorkers, JobEntry, LastSeen, PendingChunks, WorkerEntry
from rvidia.core.replicas import Vote, decide

# A chunk whose workers keep disappearing is given up on after this many losses: a worker loss is
# not the chunk's fault, so it does not count against max_attempts, but it must not loop forever.
MAX_LOSSES = 10
# Speculative execution: at a job's tail (nothing left to hand out), a chunk that has run longer than
# SPECULATION_FACTOR times the job's typical chunk, and at least SPECULATION_MIN seconds, gets one backup
# copy on another free worker; the first result wins and the other copy is cancelled. This is what
# keeps a slow or stuck machine (frozen chunk processes behind a live agent) from stalling a job.
SPECULATION_FACTOR = 2.0
SPECULATION_MIN = 1.0
# Prefetch: a job whose typical chunk takes less than this many seconds gives each worker one more
# chunk per slot, held behind its running ones, so a slot never waits a round trip to the master
# for its next short chunk. Longer chunks are not held back (that would starve other workers).
PREFETCH_BELOW = 0.5


class Scheduler:
    """Events in, instructions out; see ``rvidia.core.events`` for both."""

    def __init__(self, clock: Callable[[], float], worker_timeout: float = 10.0, user_limit: int = 0,
                 speculation: float = SPECULATION_FACTOR, speculation_min: float = SPECULATION_MIN,
                 prefetch_below: float = PREFETCH_BELOW) -> None:
        self.clock = clock
        self.worker_timeout = worker_timeout
        self.speculation = speculation  # 0 turns backup copies off
        self.speculation_min = speculation_min
        self._speculate_due = False  # set by a Tick: the clock moved, stragglers may have appeared
        # At most this many running chunks per user (0: no limit), so one person cannot fill a pool.
        self.user_limit = user_limit
        self._user_running: dict[str, int] = {}
        self.workers: dict[str, WorkerEntry] = {}
        self.jobs: dict[str, JobEntry] = {}
        # Least recently served job first: iteration order is the round-robin order.
        self._order: OrderedDict[str, None] = OrderedDict()
        self._free = FreeWorkers()  # workers with a free slot, by how many
        self._ahead = FreeWorkers()  # workers with room for a prefetched chunk, by how much
        self.prefetch_below = prefetch_below  # 0 turns prefetch off
        self._pool = self._free  # where placement looks for room: free slots, or prefetch room
        self._last_seen = LastSeen()
        # When each user was last given a chunk (a counter): least recently served user first.
        self._user_served: dict[str, int] = {}
        self._serves = 0
        self._out: list[ev.Instruction] = []

    # ------------------------------------------------------------ entry point

    def handle(self, *events: ev.Event) -> list[ev.Instruction]:
        """Apply events in order, then fill free slots; return what the master must do."""
        for event in events:
            self._dispatch(event)
        self._schedule()
        out, self._out = self._out, []
        return out

    def _dispatch(self, event: ev.Event) -> None:
        handler = _HANDLERS[type(event)]
        handler(self, event)

    # ------------------------------------------------------------ queries

    def reason(self, job_id: str) -> str | None:
        """Why a job with chunks waiting cannot run anywhere, or None if some worker could run it."""
        job = self.jobs.get(job_id)
        if job is None or not job.has_work:
            return None
        live = list(self.workers.values())
        if not live:
            return "no workers connected"
        req = job.requirement
        if req.needs_code and not any(w.allow_code and w.python == req.python for w in live):
            return f"no worker started with --allow-code and Python {req.python}"
        if not any(w.can_serve(req) for w in live):
            wanted = ",".join(f"{k}={v:g}" for k, v in req.resources)
            return f"no worker has the resources asked ({wanted})"
        if not any(w.can_serve(req) and not (w.paused or w.drained) for w in live):
            return "every worker that could run it is paused or drained"
        if self._at_user_limit(job.user):
            return f"its user already runs {self.user_limit} chunks, the per-user limit"
        able = {w.worker_id for w in live if w.can_serve(req)}
        if job.replicas > len(able):
            return f"replicas={job.replicas} needs that many different workers; {len(able)} can run it"
        if job.wanting and not job.pending and all(able <= job.ran_on.get(i, set()) for i in job.wanting):
            return ("the copies of a chunk disagree: the deciding run needs a worker that has not run that "
                    f"chunk yet, and all {len(able)} that can run it have")
        return None

    def running_on(self, worker_id: str) -> int:
        worker = self.workers.get(worker_id)
        return len(worker.running) if worker else 0

    def running_chunks(self, job_id: str) -> int:
        """How many of the job's chunks run now (a chunk with a backup copy counts once)."""
        job = self.jobs.get(job_id)
        return len(job.running) if job else 0

    # ------------------------------------------------------------ workers

    def _on_worker_joined(self, e: ev.WorkerJoined) -> None:
        if e.worker_id in self.workers:
            self._lose_worker(e.worker_id, "worker reconnected")
        self.workers[e.worker_id] = WorkerEntry(
            worker_id=e.worker_id, slots=max(0, e.slots), allow_code=e.allow_code,
            python=e.python, resources=dict(e.resources), last_seen=self.clock(),
        )
        self._last_seen.seen(e.worker_id, self.clock())
        self._refresh_free(e.worker_id)

    def _on_worker_left(self, e: ev.WorkerLeft) -> None:
        if e.worker_id in self.workers:
            self._lose_worker(e.worker_id, e.reason)

    def _on_worker_seen(self, e: ev.WorkerSeen) -> None:
        worker = self.workers.get(e.worker_id)
        if worker is not None:
            worker.last_seen = self.clock()
            self._last_seen.seen(e.worker_id, worker.last_seen)

    def _on_capacity(self, e: ev.CapacityChanged) -> None:
        worker = self.workers.get(e.worker_id)
        if worker is not None:
            worker.slots, worker.paused = max(0, e.slots), e.paused
            worker.last_seen = self.clock()
            self._last_seen.seen(e.worker_id, worker.last_seen)
            self._refresh_free(e.worker_id)

    def _on_drain(self, e: ev.DrainWorker) -> None:
        worker = self.workers.get(e.worker_id)
        if worker is not None:
            worker.drained = e.drain
            self._refresh_free(e.worker_id)

    def _on_tick(self, e: ev.Tick) -> None:
        self._speculate_due = True
        deadline = self.clock() - self.worker_timeout
        for worker_id in self._last_seen.silent_since(deadline):
            self._lose_worker(worker_id, f"no heartbeat for {self.worker_timeout:g} s")

    def _lose_worker(self, worker_id: str, reason: str) -> None:
        worker = self.workers.pop(worker_id)
        self._free.set(worker_id, 0)
        self._ahead.set(worker_id, 0)
        self._last_seen.forget(worker_id)
        self._out.append(ev.WorkerLost(worker_id, reason))
        for (job_id, stage, index), attempt in worker.running.items():
            job = self.jobs.get(job_id)
            if job is None or job.stage != stage or not job.copies(index, worker_id, attempt):
                continue
            if self._end_copy(job, index, attempt) is not None and (index not in job.running or job.replicas > 1):
                self._requeue_lost(job, index, f"worker {worker_id} lost: {reason}", worker_id)

    def _requeue_lost(self, job: JobEntry, index: int, error: str, worker_id: str, count: bool = True) -> None:
        """Run the chunk again elsewhere without counting a failed attempt (its worker went away or
        gave it back); a chunk lost MAX_LOSSES times in a row fails its job instead of looping. A chunk
        given back before it started (``count`` False) lost no work and is not counted."""
        job.losses[index] = job.losses.get(index, 0) + (1 if count else 0)
        if job.losses[index] >= MAX_LOSSES:
            self._fail_job(job, f"chunk {index} was lost with {MAX_LOSSES} workers in a row", index)
            return
        self._again(job, index, worker_id)
        self._out.append(ev.RetryChunk(job.job_id, job.stage, index, error, lost=True))

    def _refresh_free(self, worker_id: str) -> None:
        worker = self.workers.get(worker_id)
        self._free.set(worker_id, worker.free if worker is not None else 0)
        self._ahead.set(worker_id, worker.ahead if worker is not None else 0)

    # ------------------------------------------------------------ jobs

    def _on_job_submitted(self, e: ev.JobSubmitted) -> None:
        job = JobEntry(
            job_id=e.job_id, priority=e.priority, max_attempts=max(1, e.max_attempts),
            requirement=e.requirement, stage=e.stage, n_chunks=e.n_chunks,
            pending=PendingChunks(e.n_chunks, e.done), done=len(e.done),
            attempts=dict(e.attempts), failures=dict(e.failures), user=e.user, replicas=max(1, e.replicas),
        )
        self.jobs[e.job_id] = job
        self._order[e.job_id] = None
        self._check_stage(job)

    def _on_stage_started(self, e: ev.StageStarted) -> None:
        job = self.jobs.get(e.job_id)
        if job is None:
            return
        job.stage, job.n_chunks, job.done = e.stage, e.n_chunks, 0
        job.pending = PendingChunks(e.n_chunks)
        self._count_running(job.user, -self._copies(job))
        job.running.clear()
        job.attempts.clear()
        job.failures.clear()
        job.losses.clear()
        job.forget_durations()
        job.clear_replicas()
        self._check_stage(job)

    def _on_cancel(self, e: ev.CancelJob) -> None:
        job = self.jobs.get(e.job_id)
        if job is not None:
            self._drop_job(job)

    def _on_finish(self, e: ev.FinishJob) -> None:
        job = self.jobs.get(e.job_id)
        if job is not None:
            self._drop_job(job)

    def _drop_job(self, job: JobEntry) -> None:
        """Forget a job, telling workers to kill its running chunks."""
        for index in list(job.running):
            self._cancel_copies(job, index)
        for index, waiting in job.votes.items():  # results held for a vote: the master frees them
            for v in waiting:
                self._out.append(ev.DropResult(v.worker_id, job.job_id, job.stage, index, v.attempt, "job ended"))
        job.clear_replicas()
        job.pending.clear()
        self.jobs.pop(job.job_id, None)
        self._order.pop(job.job_id, None)

    def _fail_job(self, job: JobEntry, error: str, index: int | None = None) -> None:
        self._drop_job(job)
        self._out.append(ev.JobFailed(job.job_id, error, index))

    def _check_stage(self, job: JobEntry) -> None:
        if job.stage_finished:
            self._out.append(ev.StageComplete(job.job_id, job.stage))

    # ------------------------------------------------------------ outcomes

    def _current(self, e: ev.ChunkSucceeded | ev.ChunkFailed | ev.ChunkHandedBack) -> tuple[JobEntry, float] | None:
        """The job and the attempt's start time if this outcome is for a live copy of a running
        chunk (that copy ends here), else None with a DropResult."""
        job = self.jobs.get(e.job_id)
        if job is None or job.stage != e.stage or not job.copies(e.index, e.worker_id, e.attempt):
            why = "job finished or cancelled" if job is None else "chunk re-assigned or already done"
            self._out.append(ev.DropResult(e.worker_id, e.job_id, e.stage, e.index, e.attempt, why))
            return None
        started = self._end_copy(job, e.index, e.attempt)
        assert started is not None
        return job, started

    def _end_copy(self, job: JobEntry, index: int, attempt: int) -> float | None:
        """Forget one running copy of a chunk and free its slot; its start time, None if unknown."""
        copies = job.running.get(index, {})
        copy = copies.pop(attempt, None)
        if not copies:
            job.running.pop(index, None)
        if copy is None:
            return None
        self._count_running(job.user, -1)
        self._release(copy[0], (job.job_id, job.stage, index))
        return copy[1]

    def _cancel_copies(self, job: JobEntry, index: int) -> None:
        """Tell the workers still running copies of a chunk to kill them (the chunk is settled)."""
        for attempt, (worker_id, _) in list(job.running.get(index, {}).items()):
            self._end_copy(job, index, attempt)
            self._out.append(ev.CancelChunk(worker_id, job.job_id, job.stage, index, attempt))

    @staticmethod
    def _copies(job: JobEntry) -> int:
        return sum(len(copies) for copies in job.running.values())

    def _on_chunk_succeeded(self, e: ev.ChunkSucceeded) -> None:
        current = self._current(e)
        if current is None:
            return
        job, started = current
        job.took(max(0.0, self.clock() - started))
        if job.replicas > 1:
            self._vote(job, e)
            return
        self._settled(job, e.index)
        self._out.append(ev.AcceptResult(e.worker_id, e.job_id, e.stage, e.index, e.attempt))
        self._cancel_copies(job, e.index)  # the other copy lost the race: the first result wins
        self._check_stage(job)

    @staticmethod
    def _settled(job: JobEntry, index: int) -> None:
        """A chunk's result is accepted: count it and forget its history, so that the scheduler's
        memory follows the chunks in flight, not the chunks done."""
        job.done += 1
        for table in (job.attempts, job.failures, job.losses):
            table.pop(index, None)

    def _vote(self, job: JobEntry, e: ev.ChunkSucceeded) -> None:
        """A copy of a replicated chunk is in: accept, ask for one more copy, or fail (core.replicas)."""
        votes = job.votes.setdefault(e.index, [])
        votes.append(Vote(e.worker_id, e.attempt, e.vote))
        verdict = decide(votes, job.replicas, job.extra.get(e.index, 0))
        if verdict is None:
            return
        if verdict.run_more:
            job.extra[e.index] = job.extra.get(e.index, 0) + 1
            job.wanting[e.index] = job.wanting.get(e.index, 0) + 1
            return
        if verdict.winner is None:
            self._fail_job(job, f"chunk {e.index}: {verdict.error}", e.index)
            return
        winner = verdict.winner
        self._settled(job, e.index)
        self._out.append(ev.AcceptResult(winner.worker_id, e.job_id, e.stage, e.index, winner.attempt))
        for v in votes:
            if v is not winner:
                self._out.append(ev.DropResult(v.worker_id, e.job_id, e.stage, e.index, v.attempt, "replica"))
        for v in verdict.outvoted:
            self._out.append(ev.Outvoted(v.worker_id, e.job_id, e.stage, e.index, v.attempt, winner.worker_id))
        job.forget_index(e.index)
        self._check_stage(job)

    def _on_chunk_failed(self, e: ev.ChunkFailed) -> None:
        current = self._current(e)
        if current is None:
            return
        job = current[0]
        failures = job.failures.get(e.index, 0) + 1
        job.failures[e.index] = failures
        if e.index in job.running and job.replicas == 1:
            return  # another copy still runs: it decides (it fails the job if it fails too)
        if failures >= job.max_attempts:
            self._fail_job(job, f"chunk {e.index} failed {failures} times; last error: {e.error}", e.index)
            return
        self._again(job, e.index, e.worker_id)
        self._out.append(ev.RetryChunk(e.job_id, e.stage, e.index, e.error))

    def _again(self, job: JobEntry, index: int, worker_id: str) -> None:
        """One more copy of the chunk must run: a replicated chunk wants another copy (``worker_id``,
        whose copy gave no result, may run it), any other chunk goes back in the queue."""
        if job.replicas > 1:
            job.wanting[index] = job.wanting.get(index, 0) + 1
            if not any(v.worker_id == worker_id for v in job.votes.get(index, ())):
                job.ran_on.get(index, set()).discard(worker_id)
        else:
            job.pending.push_retry(index)

    def _at_user_limit(self, user: str) -> bool:
        return 0 < self.user_limit <= self._user_running.get(user, 0)

    def _count_running(self, user: str, delta: int) -> None:
        count = self._user_running.get(user, 0) + delta
        if count > 0:
            self._user_running[user] = count
        else:
            self._user_running.pop(user, None)

    def _on_chunk_handed_back(self, e: ev.ChunkHandedBack) -> None:
        current = self._current(e)
        if current is not None and (e.index not in current[0].running or current[0].replicas > 1):
            self._requeue_lost(current[0], e.index, f"handed back by worker {e.worker_id}: {e.reason}", e.worker_id,
                               count=not e.unstarted)

    def _release(self, worker_id: str, key: ChunkKey) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None and worker.running.pop(key, None) is not None:
            self._refresh_free(worker_id)

    # ------------------------------------------------------------ placement

    def _schedule(self) -> None:
        """Fill free slots: highest priority first, round-robin between jobs of one priority."""
        speculate, self._speculate_due = self._speculate_due, False
        if not self._order:
            return
        if self._free:
            self._fill([self.jobs[j] for j in self._order if self.jobs[j].has_work])
            if speculate and self.speculation > 0 and self._free:
                self._speculate()
        if self._ahead and self.prefetch_below > 0:
            self._prefetch()

    def _prefetch(self) -> None:
        """Hold one more chunk per slot on workers running short chunks (see PREFETCH_BELOW): the
        same placement as for free slots (priority, fair share, round-robin), over the prefetch room."""
        short = [job for job in (self.jobs[j] for j in self._order) if self._short(job)]
        if not short:
            return
        self._pool = self._ahead
        try:
            self._fill(short)
        finally:
            self._pool = self._free

    def _short(self, job: JobEntry) -> bool:
        typical = job.typical() if job.pending and job.replicas == 1 else None
        return typical is not None and typical < self.prefetch_below

    def _fill(self, runnable: list[JobEntry]) -> None:
        if not runnable:
            return
        runnable.sort(key=lambda job: -job.priority)  # stable: keeps round-robin order within a tier
        tiers: dict[int, list[JobEntry]] = {}
        for job in runnable:
            tiers.setdefault(job.priority, []).append(job)
        for tier in tiers.values():
            self._fill_tier(tier)
            if not self._pool:
                return

    def _speculate(self) -> None:
        """Back up stragglers at the tail of each job (see SPECULATION_FACTOR); runs once per Tick,
        after regular placement, and looks only at jobs with nothing left to hand out."""
        now = self.clock()
        for job_id in list(self._order):
            job = self.jobs[job_id]
            typical = job.typical()
            if job.pending or not job.running or typical is None or job.replicas > 1:
                continue  # not at its tail, or nothing to go by; replicated chunks run on several anyway
            limit = max(self.speculation * typical, self.speculation_min)
            for index, copies in list(job.running.items()):
                if len(copies) > 1:
                    continue  # backed up already: one backup per chunk at most
                worker_id, started = next(iter(copies.values()))
                if now - started < limit:
                    continue
                worker = None if self._at_user_limit(job.user) else self._pick_worker(job, avoid=(worker_id,))
                if worker is None:
                    continue  # no free worker other than its own may take a copy
                self._assign(worker, job, index, backup=True)
                if not self._pool:
                    return

    def _fill_tier(self, tier: list[JobEntry]) -> None:
        by_user: dict[str, list[JobEntry]] = {}
        for job in tier:
            by_user.setdefault(job.user, []).append(job)
        if len(by_user) > 1:
            self._fill_between_users(by_user)
            return
        progressed = True
        while progressed and self._pool:
            progressed = False
            for job in tier:
                if self._try_assign(job):
                    progressed = True
                    if not self._pool:
                        return

    def _fill_between_users(self, by_user: dict[str, list[JobEntry]]) -> None:
        """Fair share: one chunk per user per round, least recently served user first; within a
        user, round-robin between that user's jobs (their order in ``by_user`` is ``_order``'s)."""
        progressed = True
        while progressed and self._pool:
            progressed = False
            for user in sorted(by_user, key=lambda u: self._user_served.get(u, 0)):
                jobs = by_user[user]
                for job in jobs:
                    if not self._try_assign(job):
                        continue
                    jobs.remove(job)  # this user's next chunk goes to their next job
                    jobs.append(job)
                    progressed = True
                    break
                if not self._pool:
                    return

    def _try_assign(self, job: JobEntry) -> bool:
        """Give the job's next chunk to the best eligible free worker, if there is one."""
        if not job.has_work or self._at_user_limit(job.user):
            return False
        for index in job.wanting:  # copies of replicated chunks first: they finish a chunk sooner
            worker = self._pick_worker(job, avoid=job.ran_on.get(index, ()))
            if worker is not None:
                self._assign(worker, job, index)
                return True
        if not job.pending:
            return False
        worker = self._pick_worker(job)
        if worker is None:
            return False
        self._assign(worker, job)
        return True

    def _pick_worker(self, job: JobEntry, avoid: Collection[str] = ()) -> WorkerEntry | None:
        """The eligible worker with the most free slots (spreads a job over the pool), other than
        those in ``avoid`` (where a straggler or another copy of the chunk runs)."""
        holding = self._pool is self._ahead
        for worker_id in self._pool.most_free_first():
            if worker_id in avoid:
                continue
            worker = self.workers[worker_id]
            if worker.can_serve(job.requirement) and not (holding and self._held_up(worker)):
                return worker
        return None

    def _held_up(self, worker: WorkerEntry) -> bool:
        """Whether one of the worker's chunks has run past ``speculation_min``: a chunk held behind it
        could wait for long, so none is prefetched there (O(chunks on that worker))."""
        now = self.clock()
        for job_id, stage, index in worker.running:
            job = self.jobs.get(job_id)
            copies = job.running.get(index, {}) if job is not None and job.stage == stage else {}
            for holder, started in copies.values():
                if holder == worker.worker_id and now - started > self.speculation_min:
                    return True
        return False

    def _assign(self, worker: WorkerEntry, job: JobEntry, index: int | None = None, backup: bool = False) -> None:
        if index is None:
            index = job.pending.pop()
            if job.replicas > 1:
                job.wanting[index] = job.replicas
        if job.replicas > 1:
            job.ran_on.setdefault(index, set()).add(worker.worker_id)
            job.wanting[index] -= 1
            if job.wanting[index] <= 0:
                del job.wanting[index]
        attempt = job.attempts.get(index, 0) + 1
        job.attempts[index] = attempt
        job.running.setdefault(index, {})[attempt] = (worker.worker_id, self.clock())
        self._count_running(job.user, 1)
        worker.running[(job.job_id, job.stage, index)] = attempt
        self._refresh_free(worker.worker_id)
        self._order.move_to_end(job.job_id)
        self._serves += 1
        self._user_served[job.user] = self._serves
        self._out.append(ev.Assign(worker.worker_id, job.job_id, job.stage, index, attempt, backup))


_HANDLERS: dict[type, Callable[[Scheduler, ev.Event], None]] = {  # type: ignore[dict-item]
    ev.WorkerJoined: Scheduler._on_worker_joined,
    ev.WorkerLeft: Scheduler._on_worker_left,
    ev.WorkerSeen: Scheduler._on_worker_seen,
    ev.CapacityChanged: Scheduler._on_capacity,
    ev.DrainWorker: Scheduler._on_drain,
    ev.JobSubmitted: Scheduler._on_job_submitted,
    ev.StageStarted: Scheduler._on_stage_started,
    ev.ChunkSucceeded: Scheduler._on_chunk_succeeded,
    ev.ChunkFailed: Scheduler._on_chunk_failed,
    ev.ChunkHandedBack: Scheduler._on_chunk_handed_back,
    ev.CancelJob: Scheduler._on_cancel,
    ev.FinishJob: Scheduler._on_finish,
    ev.Tick: Scheduler._on_tick,
}
