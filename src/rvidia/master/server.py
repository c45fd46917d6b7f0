"""Starting the master: data dir, database, token, and uvicorn serving the app."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from rvidia import __version__, discovery
from rvidia.addresses import is_loopback
from rvidia.loops import loop_factory
from rvidia.master.app import create_app
from rvidia.master.auth import Auth
from rvidia.master.blobs import BlobStore
from rvidia.master.runtime import Runtime
from rvidia.master.store import Store
from rvidia.protocol.messages import MAX_FRAME_BYTES

log = logging.getLogger("rvidia.master")


@dataclass
class MasterSettings:
    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = Path("~/.rvidia").expanduser()
    token: str | None = None
    worker_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    max_upload_bytes: int = 64 * 1024**3
    tls_cert: str | None = None
    tls_key: str | None = None
    log_level: str = "warning"
    retention: float = 7 * 86400.0  # seconds finished jobs and their blobs are kept
    gc_interval: float = 3600.0  # seconds between automatic retention runs (0: only `rvidia gc`)
    min_free_disk: int = 1024**3  # uploads are refused (507) when free disk falls under this
    max_running_per_user: int = 0  # most chunks one user's jobs run at once (0: no limit)
    advertise: bool = True  # mDNS (_rvidia._tcp) on the bound interface, for `rvidia worker --discover`
    advertise_name: str | None = None  # the mDNS instance name [default "rvidia on HOST:PORT"]
    speculation: float = 2.0  # backup copies of stragglers past this many typical chunks (0: off)
    speculation_min: float = 1.0  # seconds a chunk must have run before it may be backed up


def build(settings: MasterSettings) -> tuple[Runtime, Auth, str | None]:
    """Open the data dir and make the runtime; also return a newly created token to print once."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.data_dir / "rvidia.db")
    blobs = BlobStore(settings.data_dir / "blobs", settings.max_upload_bytes)
    auth = Auth(store)
    new_token = auth.ensure_admin(settings.data_dir, settings.token)
    runtime = Runtime(store, blobs, worker_timeout=settings.worker_timeout,
                      heartbeat_interval=settings.heartbeat_interval, version=__version__,
                      user_limit=settings.max_running_per_user)
    runtime.scheduler.speculation = settings.speculation
    runtime.scheduler.speculation_min = settings.speculation_min
    runtime.retention, runtime.gc_interval = settings.retention, settings.gc_interval
    blobs.min_free = settings.min_free_disk
    return runtime, auth, new_token


def serve(settings: MasterSettings) -> None:
    """Run the master until SIGINT or SIGTERM; state stays in the data dir."""
    runtime, auth, new_token = build(settings)
    if new_token:
        print(f"rvidia: created the admin token (also saved in {settings.data_dir / 'token'}):\n"
              f"{new_token}", file=sys.stderr, flush=True)
    tls = bool(settings.tls_cert and settings.tls_key)
    if not is_loopback(settings.host) and not tls:
        print(f"rvidia: warning: listening on {settings.host} without TLS: tokens cross the network "
              "in clear; use --tls-cert/--tls-key on untrusted networks", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        create_app(runtime, auth), host=settings.host, port=settings.port, log_level=settings.log_level,
        ws_max_size=MAX_FRAME_BYTES, ws_ping_interval=None, ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key, access_log=False, lifespan="on",
        loop="auto", ws="websockets-sansio", timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_run(server, "https" if tls else "http", settings))




class _Server(uvicorn.Server):
    """uvicorn's server, unregistering the mDNS advertisement as its shutdown begins: after SIGINT or
    SIGTERM uvicorn re-raises the signal once serve() returns, so later would be too late."""

    advertiser: discovery.Advertiser | None = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.advertiser is not None:
            advertiser, self.advertiser = self.advertiser, None
            await asyncio.to_thread(advertiser.stop)  # goodbye packets, bounded
        await super().shutdown(sockets)


async def _run(server: uvicorn.Server, scheme: str, settings: MasterSettings | None = None) -> None:
    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.02)
        sock = server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"rvidia master listening on {scheme}://{shown}:{port}", flush=True)
        if settings is not None and settings.advertise and isinstance(server, _Server):
            server.advertiser = discovery.advertise(host, port, scheme, settings.advertise_name)

    task = asyncio.create_task(announce())
    await server.serve()
    task.cancel()
    if not server.started:
        raise SystemExit(1)
