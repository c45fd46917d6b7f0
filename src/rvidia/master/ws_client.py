"""The ``/ws/client`` endpoint: submit jobs and receive their chunk results pushed, on one socket.

The executor uses it so that a future resolves one network hop after its chunk is accepted, with no
HTTP request per job and no polling. Everything pushed is batched: one frame per event-loop turn.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from rvidia.kinds.base import ParamError
from rvidia.master.jobspec import JobRequest
from rvidia.master.runtime import Runtime
from rvidia.protocol import client as c
from rvidia.protocol.messages import CLOSE_PROTOCOL_ERROR, CLOSE_UNSUPPORTED

log = logging.getLogger("rvidia.master")


class ClientLink:
    """Pushes results of the jobs this connection submitted; the runtime calls it as a listener."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.jobs: set[str] = set()
        self._pending: list[c.ToClient] = []
        self._ready = asyncio.Event()
        self._sender = asyncio.create_task(self._send_loop())

    def push(self, message: c.ToClient) -> None:
        self._pending.append(message)
        self._ready.set()

    # ------------------------------------------------------------ the runtime's listener calls

    def on_result(self, job_id: str, index: int, result: bytes) -> None:
        self.push(c.ChunkDone(job_id, index, result))

    def on_end(self, job_id: str, state: str, error: str | None) -> None:
        self.jobs.discard(job_id)
        self.push(c.JobEnded(job_id=job_id, state=state, error=error))

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                batch, self._pending = self._pending, []
                if batch:
                    await self.ws.send_bytes(c.encode_batch(batch))
        except Exception:
            pass  # the socket is gone; the receive side notices

    async def close(self) -> None:
        self._sender.cancel()
        try:
            await self._sender
        except (asyncio.CancelledError, Exception):
            pass


def _submit(runtime: Runtime, link: ClientLink, msg: c.SubmitJob, submitter: str) -> None:
    inputs = dict(msg.inputs)
    try:
        for name, data in msg.inline.items():
            if len(data) > c.MAX_INLINE_BYTES:
                raise ParamError(f"inline input {name!r} is over {c.MAX_INLINE_BYTES} bytes: upload it")
            inputs[name] = runtime.blobs.put_bytes(data)
        req = JobRequest(kind=msg.kind, params=msg.params, inputs=inputs, priority=msg.priority,
                         max_attempts=msg.max_attempts, timeout=msg.timeout)
        def accepted(job_id: str) -> None:  # before any result of the job can be pushed
            link.jobs.add(job_id)
            link.push(c.Accepted(ref=msg.ref, job_id=job_id))

        runtime.submit(req, submitter, listener=link, on_created=accepted)
    except (ParamError, ValueError) as exc:
        link.push(c.Rejected(ref=msg.ref, error=str(exc)))
    except Exception as exc:  # a bug must cost this submission, not the connection
        log.exception("submission %d failed", msg.ref)
        link.push(c.Rejected(ref=msg.ref, error=f"internal error ({type(exc).__name__}); see the master's log"))


async def serve_client(ws: WebSocket, runtime: Runtime, submitter: str) -> None:
    """Run one client connection (the caller has checked the token's right to submit)."""
    await ws.accept()
    link = ClientLink(ws)
    try:
        while True:
            frame: dict[str, Any] = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                break
            data = frame.get("bytes")
            if data is None:
                await ws.close(code=CLOSE_UNSUPPORTED, reason="frames must be binary msgpack")
                break
            try:
                msg = c.decode_to_master(data)
            except c.ClientProtocolError as exc:
                await ws.close(code=CLOSE_PROTOCOL_ERROR, reason=str(exc)[:120])
                break
            if isinstance(msg, c.SubmitJob):
                _submit(runtime, link, msg, submitter)
            else:
                try:
                    runtime.cancel(msg.job_id)
                except LookupError:
                    pass  # already finished: its JobEnded was pushed
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        for job_id in link.jobs:
            runtime.listeners.pop(job_id, None)
        await link.close()
