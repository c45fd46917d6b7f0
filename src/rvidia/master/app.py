"""The master's ASGI application: REST routes, the two WebSockets, /metrics and the dashboard."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import sqlite3
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, HTTPException, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from rvidia.kinds.base import ParamError
from rvidia.master import api
from rvidia.master.auth import Auth, Principal
from rvidia.master.metrics import render_metrics
from rvidia.master.runtime import Runtime
from rvidia.master.throttle import FailureThrottle
from rvidia.master.ws_client import serve_client
from rvidia.master.ws_worker import serve_worker

log = logging.getLogger("rvidia.master")

# The dashboard is plain files: no inline script, data shown only as text, so a strict policy fits.
DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag) so an upgraded master serves its new files
}


class DashboardFiles(StaticFiles):
    """The dashboard's static files, with its security and caching headers."""

    def file_response(self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(DASHBOARD_HEADERS)
        return response


_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]+)?|\[[0-9A-Fa-f:.]+\](:[0-9]+)?")


def _dashboard_dir() -> Path:
    return Path(str(resources.files("rvidia.dashboard")))


def _error(status: int, message: str) -> JSONResponse:
    """Every error answer: one line, whatever the message quotes back (a field name, a path) holds."""
    one_line = message.strip().replace("\r", "\\r").replace("\n", "\\n")
    return JSONResponse({"error": one_line}, status_code=status)


def _ws_principal(ws: WebSocket, auth: Auth) -> Principal | None:
    header = ws.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return auth.check(header[7:].strip())
    return auth.session(ws.cookies.get(api.SESSION_COOKIE))


async def _deny(ws: WebSocket) -> None:
    """Refuse the upgrade with HTTP 401 before any message is read."""
    try:
        await ws.send_denial_response(_error(401, "missing or wrong token"))
    except RuntimeError:  # server without the denial-response extension
        await ws.close(code=1008, reason="missing or wrong token")


def create_app(runtime: Runtime, auth: Auth) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="RVIDIA master", lifespan=lifespan, docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.runtime = runtime
    app.state.auth = auth
    app.state.throttle = FailureThrottle()
    app.include_router(api.router)
    _add_error_handlers(app)

    async def admitted(ws: WebSocket, action: str) -> Principal | None:
        """The caller if its token allows ``action``; else the upgrade is refused with 401."""
        principal = _ws_principal(ws, auth)
        if principal is None or not principal.may(action):
            await _deny(ws)
            return None
        return principal

    @app.websocket("/ws/worker")
    async def ws_worker(ws: WebSocket) -> None:
        if (principal := await admitted(ws, "work")) is not None:
            await serve_worker(ws, runtime, principal.name)

    @app.websocket("/ws/client")
    async def ws_client(ws: WebSocket) -> None:
        if (principal := await admitted(ws, "submit")) is not None:
            await serve_client(ws, runtime, principal.name)

    @app.websocket("/ws/events")
    async def ws_events(ws: WebSocket) -> None:
        if await admitted(ws, "submit") is not None:
            await _stream_events(ws, runtime)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        api.caller(request)
        return PlainTextResponse(render_metrics(runtime), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> HTMLResponse:
        page = (_dashboard_dir() / "index.html").read_text(encoding="utf-8")
        headers = dict(DASHBOARD_HEADERS)
        host = request.headers.get("host", "")
        if _HOST.fullmatch(host):  # browsers that do not count ws: as 'self' get the socket by name
            headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
                "connect-src 'self'", f"connect-src 'self' ws://{host} wss://{host}")
        return HTMLResponse(page, headers=headers)

    app.mount("/static", DashboardFiles(directory=_dashboard_dir() / "static"), name="static")

    return app


async def _stream_events(ws: WebSocket, runtime: Runtime) -> None:
    await ws.accept()
    queue = runtime.bus.subscribe()
    receiver = asyncio.create_task(ws.receive())  # notices the client going away
    try:
        while True:
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                getter.cancel()
                msg = receiver.result()
                if msg["type"] == "websocket.disconnect":
                    return
                receiver = asyncio.create_task(ws.receive())
                continue
            text = getter.result()
            if text is None:
                await ws.close(code=1013, reason="too slow: reload the state and reconnect")
                return
            await ws.send_text(text)
    except Exception:
        return
    finally:
        receiver.cancel()
        runtime.bus.unsubscribe(queue)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def storage_failure(exc: BaseException) -> str | None:
    """Why the master could not write its data dir (full disk, read-only or unwritable), as one line
    for a 507 answer; None for any other error. SQLite says it in words, the OS in errno."""
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        if "full" in text:
            return f"the master's disk is full ({exc}): free space or run `rvidia gc`, then retry"
        if "readonly" in text or "read-only" in text or "disk i/o error" in text:
            return f"the master cannot write its database ({exc}): check its data dir, then retry"
        return None
    if not isinstance(exc, OSError):
        return None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the master's disk is full (no space left for its data dir): free space or run `rvidia gc`, then retry"
    if exc.errno == errno.EROFS:
        return "the master's data dir is on a read-only file system: make it writable, then retry"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"the master may not write its data dir ({exc.strerror}): fix its permissions, then retry"
    return None


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return _error(exc.status_code, detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(ParamError)
    async def param_error(request: Request, exc: ParamError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(OSError)
    @app.exception_handler(sqlite3.Error)
    async def storage_error(request: Request, exc: Exception) -> JSONResponse | None:
        reason = storage_failure(exc)
        if request.scope["type"] != "http":  # a WebSocket: no answer to give, only a log line
            log.error("%s: %s", request.url.path, reason or _describe(exc), exc_info=reason is None)
            return None
        if reason is None:
            return await internal_error(request, exc)
        log.error("%s %s: %s", request.method, request.url.path, reason)
        return _error(507, reason)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the master's log")


__all__ = ["create_app", "HTTPException"]
