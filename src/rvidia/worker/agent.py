"""The worker agent: holds the WebSocket to the master, runs chunks in the pool, reports outcomes.

Heartbeats and messages are handled on this event loop while chunks compute in child processes, so
a busy worker never looks dead. When the connection drops, running chunks are abandoned (the master
re-queues them) and the agent reconnects with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rvidia import __version__, tls
from rvidia.addresses import ws_url
from rvidia.loops import loop_factory
from rvidia.protocol import messages as m
from rvidia.worker import facts, gpu, oscompat, owner, sandbox
from rvidia.worker.blobproxy import HttpBlobs
from rvidia.worker.cache import BlobCache
from rvidia.worker.pool import ChunkPool

log = logging.getLogger("rvidia.worker")


class WorkerRefused(Exception):
    """The master will not take this worker (wrong token, other protocol version): do not retry."""

    def __init__(self, reason: str, exit_code: int) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


@dataclass
class WorkerSettings:
    master: str
    token: str
    slots: int = field(default_factory=facts.cores)
    name: str = field(default_factory=facts.hostname)
    allow_code: bool = False
    resources: dict[str, float] = field(default_factory=dict)
    nice: int = 0
    grace: float = 10.0  # seconds SIGTERM waits for running chunks before handing them back
    # Owners first (docs/operations.md): `rvidia worker` turns it on, LocalCluster's workers keep it off.
    owner_first: bool = False
    owner_cpu: float = 50.0  # percent of the machine the owner may use before the worker pauses
    vacate_after: float = 60.0  # seconds paused for the owner before running chunks are handed back
    hours: list[tuple[int, int]] = field(default_factory=list)  # lending hours (owner.parse_hours); [] = always
    windows: owner.Windows = field(default_factory=owner.Windows)
    master_timeout: float = 15.0  # silence from the master after which the agent reconnects
    ca: str | None = None  # PEM CA an https:// master's certificate must chain to (--ca); None: system store
    # How chunk processes are contained (--isolation, --chunk-*); the CLI resolves the default to a working one.
    containment: sandbox.SandboxSettings = field(default_factory=sandbox.SandboxSettings)
    max_backoff: float = 30.0


class Agent:
    def __init__(self, settings: WorkerSettings) -> None:
        self.s = settings
        self.worker_id: str | None = None
        self.stopping = asyncio.Event()
        self.outbox: list[m.ChunkOutcome] = []
        self.outbox_ready = asyncio.Event()
        self.pool: ChunkPool | None = None
        self.cache_dir = Path(tempfile.mkdtemp(prefix="rvidia-worker-"))
        self.speed = 0.0
        self.gpus: list[m.Gpu] = []
        self.policy = owner.OwnerPolicy(settings.owner_cpu, settings.vacate_after, settings.windows)
        self.plan = self.policy.step(time.monotonic(), None, owner.lending_now(settings.hours))
        self.ws: websockets.ClientConnection | None = None  # the live connection, for Capacity changes

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve until stopped; raise WorkerRefused when retrying cannot help."""
        oscompat.install_term_handler(asyncio.get_running_loop(), self.stopping.set)
        self.speed = facts.speed_score()
        self.gpus = await asyncio.to_thread(gpu.detect)
        if self.gpus and "gpu" not in self.s.resources:  # what jobs asking resources={"gpu": 1} need
            self.s.resources["gpu"] = float(len(self.gpus))
        if self.s.ca:  # chunk processes read and write blobs over https too: they inherit the CA
            os.environ[tls.ENV] = self.s.ca
        launcher = sandbox.make_launcher(self.s.containment, self.s.slots, self.s.nice, [str(self.cache_dir)])
        log.info("chunk isolation: %s", launcher.describe())
        self.pool = ChunkPool(self.s.slots, self._on_outcome, nice=self.s.nice, master=self.s.master,
                              token=self.s.token, launcher=launcher)
        self.pool.start()
        watch = asyncio.create_task(self._watch_owner()) if self.s.owner_first or self.s.hours else None
        headers = {"Authorization": f"Bearer {self.s.token}"}
        async with httpx.AsyncClient(base_url=self.s.master, headers=headers, timeout=60,
                                     verify=tls.httpx_verify(self.s.ca)) as http:
            self.cache = BlobCache(self.cache_dir, http, direct=self.s.containment.isolation == "none")
            try:
                await self._connect_forever()
            finally:
                if watch is not None:
                    watch.cancel()
                self.pool.close()
                shutil.rmtree(self.cache_dir, ignore_errors=True)

    async def _connect_forever(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                await self._session()
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise WorkerRefused(f"the master refused the token (HTTP {status})", 3) from None
                log.warning("master answered HTTP %s; retrying", status)
            except WorkerRefused:
                raise
            except ssl.SSLCertVerificationError as exc:  # no retry makes an untrusted certificate trusted
                raise WorkerRefused(tls.explain(self.s.master, exc, self.s.ca), 3) from None
            except (OSError, ConnectionClosed, asyncio.TimeoutError, m.ProtocolError) as exc:
                log.warning("connection to %s lost: %s", self.s.master, exc or type(exc).__name__)
            if self.stopping.is_set():
                return
            if self.pool is not None:
                self.pool.cancel_all()  # the master re-queues whatever this connection held
            self.outbox.clear()
            if time.monotonic() - started > 10:
                backoff = 0.5
            delay = backoff * (0.5 + random.random())
            backoff = min(backoff * 2, self.s.max_backoff)
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass

    def _hello(self) -> m.Hello:
        return m.Hello(version=m.PROTOCOL_VERSION, name=self.s.name, host=facts.hostname(), os=facts.os_name(),
                       python=facts.python_version(), cores=facts.cores(), memory_bytes=facts.memory_bytes(),
                       slots=self.s.slots, allow_code=self.s.allow_code, speed=self.speed,
                       resources=self.s.resources, worker_id=self.worker_id, package_version=__version__,
                       gpus=self.gpus)

    async def _session(self) -> None:
        url = ws_url(self.s.master, "/ws/worker")
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {self.s.token}"},
                                      ssl=tls.ws_ssl(url, self.s.ca), max_size=m.MAX_FRAME_BYTES,
                                      ping_interval=None, compression=None, open_timeout=10,
                                      close_timeout=2) as ws:
            await ws.send(m.encode(self._hello()))
            welcome = m.decode(await asyncio.wait_for(ws.recv(), 10))
            if isinstance(welcome, m.Refused):
                raise WorkerRefused(f"the master refused this worker: {welcome.reason}", 2)
            if not isinstance(welcome, m.Welcome):
                raise m.ProtocolError(f"expected a welcome, got {type(welcome).__name__}")
            self.worker_id = welcome.worker_id
            self.cache.use_store(welcome.blob_dir, welcome.host_key)
            if self.pool is not None:
                self.pool.store = str(self.cache.store) if self.cache.direct and self.cache.store else ""
            if self.pool is not None and isinstance(self.pool.blobs, HttpBlobs):
                self.pool.blobs.store = self.cache.store
            log.info("joined %s as %s", self.s.master, self.worker_id)
            print(f"rvidia worker {self.s.name} joined {self.s.master} as {self.worker_id} "
                  f"with {self.s.slots} slots", file=sys.stderr, flush=True)
            self.ws = ws
            if self.plan.paused:  # still paused from before this connection: say so at once
                await ws.send(m.encode(self._capacity()))
            tasks = [asyncio.create_task(self._receive(ws)), asyncio.create_task(self._send_results(ws)),
                     asyncio.create_task(self._heartbeat(ws, welcome.heartbeat_interval)),
                     asyncio.create_task(self.stopping.wait())]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.ws = None
                for task in tasks:
                    task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if self.stopping.is_set():
                await self._leave(ws)

    async def _leave(self, ws: websockets.ClientConnection) -> None:
        """SIGTERM: take no more chunks, let running ones finish for a while, hand back the rest."""
        assert self.pool is not None
        try:
            await ws.send(m.encode(m.Capacity(slots=0, leaving=True)))
            deadline = time.monotonic() + self.s.grace
            while self.pool.running and not self.pool.suspended and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await self._flush(ws)
            await ws.send(m.encode(m.Bye(reason="worker stopping")))
            await ws.close()
        except ConnectionClosed:
            pass

    # ------------------------------------------------------------ traffic

    async def _receive(self, ws: websockets.ClientConnection) -> None:
        assert self.pool is not None
        while True:
            frame = await asyncio.wait_for(ws.recv(), self.s.master_timeout)
            if isinstance(frame, str):
                raise m.ProtocolError("the master sent a text frame")
            msg = m.decode(frame)
            if isinstance(msg, m.Assign) and self.plan.suspended:
                self._hand_back(msg.tasks)  # sent before the master saw our pause: not now
            elif isinstance(msg, m.Assign):
                for task in msg.tasks:
                    asyncio.create_task(self._start(task))
            elif isinstance(msg, m.Cancel):
                self.pool.cancel(msg.chunks)
            elif isinstance(msg, m.Refused):
                raise WorkerRefused(f"the master closed the connection: {msg.reason}", 2)

    async def _start(self, task: m.ChunkTask) -> None:
        assert self.pool is not None
        try:
            paths = {name: str(await self.cache.ensure(blob)) for name, blob in task.inputs.items()}
        except Exception as exc:
            self._on_outcome(m.ChunkOutcome(job_id=task.job_id, stage=task.stage, index=task.index,
                                            attempt=task.attempt, ok=False, error=f"inputs: {exc}"))
            return
        self.pool.submit(task, paths)

    def _on_outcome(self, outcome: m.ChunkOutcome) -> None:
        self.outbox.append(outcome)
        self.outbox_ready.set()

    async def _flush(self, ws: websockets.ClientConnection) -> None:
        if self.outbox:
            items, self.outbox = self.outbox, []
            await ws.send(m.encode(m.Results(items=items)))

    async def _send_results(self, ws: websockets.ClientConnection) -> None:
        while True:
            await self.outbox_ready.wait()
            self.outbox_ready.clear()
            await self._flush(ws)

    async def _heartbeat(self, ws: websockets.ClientConnection, interval: float) -> None:
        assert self.pool is not None
        psutil.cpu_percent(None)
        while True:
            await ws.send(m.encode(m.Heartbeat(sent_at=time.time(), running=self.pool.running,
                                               cpu_percent=psutil.cpu_percent(None),
                                               memory_percent=psutil.virtual_memory().percent)))
            await asyncio.sleep(interval)

    # ------------------------------------------------------------ owner-first

    async def _watch_owner(self) -> None:
        """Sample the owner's CPU use (owner-first) and the lending hours; do what the policy says."""
        sampler = await asyncio.to_thread(owner.OwnerCpu) if self.s.owner_first else None
        while True:
            await asyncio.sleep(self.s.windows.sample)
            cpu = await self._owner_cpu(sampler)
            await self._follow(self.policy.step(time.monotonic(), cpu, owner.lending_now(self.s.hours)))

    @staticmethod
    async def _owner_cpu(sampler: owner.OwnerCpu | None) -> float | None:
        """One sample, off the event loop (it walks the process table); None if it cannot be had."""
        if sampler is None:
            return None
        try:
            return await asyncio.to_thread(sampler.sample)
        except Exception as exc:  # an odd platform or a psutil error must not stop the worker
            log.warning("could not measure the owner's CPU use: %s", exc)
            return None

    async def _follow(self, plan: owner.Plan) -> None:
        """Carry out the changes from the previous plan: stop or resume chunks, hand them back, and
        tell the master how many chunks this worker takes now."""
        assert self.pool is not None
        before, self.plan = self.plan, plan
        if plan.suspended and not before.suspended:
            self.pool.suspend()
        elif before.suspended and not plan.suspended:
            self.pool.resume()
        if plan.vacate:
            tasks = self.pool.hand_back_all()
            if tasks:
                self._say(f"handed {len(tasks)} chunks back after {self.s.vacate_after:g} s paused")
            self._hand_back(tasks)
        if plan.paused != before.paused or plan.reason != before.reason:
            if plan.paused:
                running = "stopped" if plan.suspended else "left to finish"
                self._say(f"paused: {plan.reason} (running chunks {running})")
            else:
                self._say(f"lending again with {self.s.slots} slots")
            await self._send(self._capacity())

    def _capacity(self) -> m.Capacity:
        return m.Capacity(slots=0, paused=True) if self.plan.paused else m.Capacity(slots=self.s.slots)

    async def _send(self, message: m.Message) -> None:
        ws = self.ws
        if ws is None:
            return  # not connected: the next session announces the state after its welcome
        try:
            await ws.send(m.encode(message))
        except ConnectionClosed:
            pass

    def _hand_back(self, tasks: list[m.ChunkTask]) -> None:
        """Report chunks given back unfinished; the master runs them elsewhere, no failure counted."""
        for task in tasks:
            self._on_outcome(m.ChunkOutcome(job_id=task.job_id, stage=task.stage, index=task.index,
                                            attempt=task.attempt, ok=False, handed_back=True,
                                            error="handed back: the machine's owner needs it"))

    def _say(self, text: str) -> None:
        log.info("%s", text)
        print(f"rvidia worker {self.s.name}: {text}", file=sys.stderr, flush=True)


def run_worker(settings: WorkerSettings) -> int:
    """Run a worker until SIGTERM/SIGINT; return the process exit code."""
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(Agent(settings).run())
    except WorkerRefused as exc:
        print(f"rvidia worker: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    return 0
