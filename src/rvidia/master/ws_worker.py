"""The ``/ws/worker`` endpoint: a thin adapter between a worker's socket and the runtime.

Authentication happens on the upgrade request, before any message is read. Each connection has a
sender task draining an unbounded queue of encoded frames, so the runtime never awaits a slow socket.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from rvidia import __version__
from rvidia.master.runtime import Runtime
from rvidia.protocol import messages as m

log = logging.getLogger("rvidia.master")

HELLO_TIMEOUT = 10.0


class SocketLink:
    """A worker connection as the runtime sees it (``WorkerLink``)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._queue: asyncio.Queue[bytes | tuple[int, str]] = asyncio.Queue()
        self._sender = asyncio.create_task(self._send_loop())
        self.closed = asyncio.Event()
        self.closing = False

    def send(self, message: m.Message) -> None:
        if not self.closed.is_set():
            self._queue.put_nowait(m.encode(message))

    def close(self, code: int, reason: str) -> None:
        if not self.closed.is_set() and not self.closing:
            self.closing = True
            self._queue.put_nowait((code, reason[:120]))

    async def _send_loop(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, tuple):
                    await self.ws.close(code=item[0], reason=item[1])
                    break
                await self.ws.send_bytes(item)
        except Exception:
            pass  # the socket is gone; the receive side notices and reports it
        finally:
            self.closed.set()

    async def finish(self) -> None:
        self.closed.set()
        self._sender.cancel()
        try:
            await self._sender
        except (asyncio.CancelledError, Exception):
            pass


async def _refuse(ws: WebSocket, code: int, reason: str) -> None:
    try:
        await ws.send_bytes(m.encode(m.Refused(reason=reason)))
        await ws.close(code=code, reason=reason[:120])
    except Exception:
        pass


async def _read_hello(ws: WebSocket) -> m.Hello | None:
    try:
        frame = await asyncio.wait_for(ws.receive(), HELLO_TIMEOUT)
    except asyncio.TimeoutError:
        await _refuse(ws, m.CLOSE_POLICY, f"no hello within {HELLO_TIMEOUT:g} s")
        return None
    data = frame.get("bytes")
    if data is None:
        await _refuse(ws, m.CLOSE_UNSUPPORTED, "frames must be binary msgpack")
        return None
    try:
        hello = m.decode(data)
    except m.ProtocolError as exc:
        await _refuse(ws, m.CLOSE_PROTOCOL_ERROR, str(exc))
        return None
    if not isinstance(hello, m.Hello):
        await _refuse(ws, m.CLOSE_PROTOCOL_ERROR, "the first message must be a hello")
        return None
    if hello.version != m.PROTOCOL_VERSION:
        await _refuse(ws, m.CLOSE_VERSION, f"protocol version {hello.version} is not supported; "
                      f"this master speaks version {m.PROTOCOL_VERSION}: install the same RVIDIA version")
        return None
    gap = m.version_gap(__version__, hello.package_version)
    if gap is not None:
        await _refuse(ws, m.CLOSE_VERSION, gap)
        return None
    if hello.slots < 0 or hello.cores < 0:
        await _refuse(ws, m.CLOSE_PROTOCOL_ERROR, "slots and cores must not be negative")
        return None
    return hello


async def serve_worker(ws: WebSocket, runtime: Runtime, token_name: str = "") -> None:
    """Run one worker connection from hello to close (the caller has checked the token)."""
    await ws.accept()
    hello = await _read_hello(ws)
    if hello is None:
        return
    link = SocketLink(ws)
    host = ws.client.host if ws.client else ""
    wid = runtime.worker_joined(link, hello, host, token_name)
    reason = "connection closed"
    try:
        while not link.closed.is_set():
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                reason = f"connection closed (code {frame.get('code')})"
                break
            data = frame.get("bytes")
            if data is None:
                reason = "sent a text frame"
                link.close(m.CLOSE_UNSUPPORTED, "frames must be binary msgpack")
                break
            try:
                runtime.worker_message(wid, link, m.decode(data))
            except m.ProtocolError as exc:
                reason = f"protocol error: {exc}"
                log.warning("worker %s: %s", wid, reason)
                link.close(m.CLOSE_PROTOCOL_ERROR, str(exc))
                break
    except (WebSocketDisconnect, RuntimeError) as exc:
        reason = f"connection closed ({exc.__class__.__name__})"
    finally:
        runtime.worker_closed(wid, link, reason)
        if link.closing:  # let the queued close frame go out
            try:
                await asyncio.wait_for(link.closed.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        await link.finish()
