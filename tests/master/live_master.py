"""A real master (uvicorn + the FastAPI app) served from a background thread, for the master tests.

The uvicorn settings mirror ``rvidia.master.server.serve``; the port is chosen by the OS.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import uvicorn

from rvidia.master.app import create_app
from rvidia.master.server import MasterSettings, build
from rvidia.protocol.messages import MAX_FRAME_BYTES


class LiveMaster:
    """Start with ``start()``, stop with ``stop()``; ``url``, ``ws_url`` and ``token`` say how to reach it."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.token = "admin-" + secrets.token_urlsafe(16)
        self.settings = MasterSettings(host="127.0.0.1", port=0, data_dir=data_dir, token=self.token,
                                       **settings)
        self.runtime, self.auth, _ = build(self.settings)
        self.app = create_app(self.runtime, self.auth)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", ws_max_size=MAX_FRAME_BYTES,
            ws_ping_interval=None, access_log=False, lifespan="on", loop="asyncio", ws="websockets-sansio",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-master", daemon=True)
        self.url = ""

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws/worker"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 15.0) -> "LiveMaster":
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), timeout, "the master to start")
        if not self.server.started:
            raise RuntimeError("the test master did not start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "the test master did not stop"
        self.runtime.store.close()

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("headers", self.headers)
        return httpx.Client(base_url=self.url, timeout=10.0, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("headers", self.headers)
        return httpx.AsyncClient(base_url=self.url, timeout=10.0, **kwargs)


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(condition: Callable[[], Any], timeout: float, what: str,
                           interval: float = 0.02) -> Any:
    """``wait_until`` for coroutines: ``condition`` may be sync or return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
