"""The REST routes of ``/api/v1``: thin translations between HTTP and the runtime."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from rvidia import __version__
from rvidia.kinds.base import ParamError
from rvidia.kinds.registry import all_kinds
from rvidia.master.auth import Principal
from rvidia.master.blobs import BlobTooLarge, DiskFull, valid_blob_id
from rvidia.master.jobspec import parse_request
from rvidia.master.throttle import FailureThrottle
from rvidia.master.runtime import Runtime

SESSION_COOKIE = "rvidia_session"


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def caller(request: Request) -> Principal:
    """Who is calling: a Bearer token or the dashboard's session cookie, else 401."""
    auth = request.app.state.auth
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        principal = auth.check(header[7:].strip())
    else:
        principal = auth.session(request.cookies.get(SESSION_COOKIE))
    if principal is None:
        raise HTTPException(401, "missing or wrong token")
    return principal  # type: ignore[no-any-return]


def user(principal: Principal = Depends(caller)) -> Principal:
    if not principal.may("submit"):
        raise HTTPException(403, f"a {principal.role} token may not do this")
    return principal


def admin(principal: Principal = Depends(caller)) -> Principal:
    if not principal.may("admin"):
        raise HTTPException(403, "an admin token is needed")
    return principal


router = APIRouter(prefix="/api/v1")


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/workers", dependencies=[Depends(user)])
async def workers(request: Request) -> list[dict[str, Any]]:
    rt = runtime_of(request)
    return [rt.worker_view(wid) for wid in rt.workers]


def _find_worker(rt: Runtime, ref: str) -> str:
    if ref in rt.workers:
        return ref
    named = [wid for wid, info in rt.workers.items() if info.name == ref and info.lost_at is None]
    if not named:
        raise HTTPException(404, f"no worker named or numbered {ref!r}")
    return named[0]


@router.post("/workers/{ref}/drain", dependencies=[Depends(admin)])
async def drain(ref: str, request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    wid = _find_worker(rt, ref)
    rt.drain(wid, True)
    return rt.worker_view(wid)


@router.post("/workers/{ref}/undrain", dependencies=[Depends(admin)])
async def undrain(ref: str, request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    wid = _find_worker(rt, ref)
    rt.drain(wid, False)
    return rt.worker_view(wid)


@router.get("/kinds", dependencies=[Depends(user)])
async def kinds() -> list[dict[str, Any]]:
    return [{"name": k.name, "description": k.description, "params": k.schema(),
             "inputs": list(k.inputs), "optional_inputs": list(k.optional_inputs), "hidden": k.hidden}
            for k in all_kinds().values()]


@router.post("/blobs", status_code=201, dependencies=[Depends(user)])
async def upload(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > rt.blobs.max_size:
        raise HTTPException(413, f"upload larger than the {rt.blobs.max_size} byte limit")
    try:
        rt.blobs.check_space(int(declared) if declared and declared.isdigit() else 0)
        blob_id, size = await rt.blobs.put_stream(request.stream())
    except BlobTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except DiskFull as exc:
        raise HTTPException(507, str(exc)) from None
    return {"id": blob_id, "size": size}


@router.get("/blobstore", dependencies=[Depends(user)])
async def blob_store(request: Request) -> dict[str, Any]:
    """Where the store is, and a hash of its ``.host-key``: a client that reads the same key there
    shares this file system and may write blobs straight into the store (client/localstore.py)."""
    rt = runtime_of(request)
    key = rt.blobs.host_key
    return {"dir": str(rt.blobs.root), "key_sha256": hashlib.sha256(key.encode()).hexdigest() if key else ""}


@router.get("/blobs/{blob_id}", dependencies=[Depends(caller)])
async def download(blob_id: str, request: Request) -> Response:
    rt = runtime_of(request)
    if not rt.blobs.exists(blob_id):
        raise HTTPException(404, "no such blob" if valid_blob_id(blob_id) else "a blob id is 64 hex digits")
    return FileResponse(rt.blobs.path(blob_id), media_type="application/octet-stream")


@router.post("/jobs", status_code=201)
async def submit(request: Request, principal: Principal = Depends(user)) -> dict[str, Any]:
    req = parse_request(await request.body())
    return runtime_of(request).submit(req, principal.name, request.headers.get("idempotency-key"))


@router.get("/jobs", dependencies=[Depends(user)])
async def jobs(request: Request, limit: int = 50, before: str | None = None) -> list[dict[str, Any]]:
    if not 1 <= limit <= 1000:
        raise HTTPException(422, "limit must be between 1 and 1000")
    return runtime_of(request).list_jobs(limit, before)


def _job_or_404(rt: Runtime, job_id: str) -> dict[str, Any]:
    view = rt.job_view(job_id)
    if view is None:
        raise HTTPException(404, f"no job {job_id[:80]}")
    return view


@router.get("/jobs/{job_id}", dependencies=[Depends(user)])
async def job(job_id: str, request: Request, wait: float = 0.0) -> dict[str, Any]:
    """The job's view; with ``wait`` (seconds, at most 60), answered as soon as the job ends, or when
    that time is up, so a client learns of the end at once without polling."""
    if not 0 <= wait <= 60:
        raise HTTPException(422, "wait must be between 0 and 60 seconds")
    rt = runtime_of(request)
    _job_or_404(rt, job_id)
    await rt.wait_end(job_id, wait)
    return _job_or_404(rt, job_id)


@router.get("/jobs/{job_id}/chunks", dependencies=[Depends(user)])
async def chunks(job_id: str, request: Request, limit: int = 10000, offset: int = 0) -> list[dict[str, Any]]:
    rt = runtime_of(request)
    _job_or_404(rt, job_id)
    if limit < 1 or offset < 0:
        raise HTTPException(422, "limit must be positive and offset not negative")
    return rt.store.chunks(job_id, limit, offset)


@router.get("/jobs/{job_id}/chunks/{index}/log", dependencies=[Depends(user)])
async def chunk_log(job_id: str, index: int, request: Request, stage: int | None = None) -> Response:
    """What one chunk printed (stdout and stderr, the tail past 64 KiB), as text."""
    rt = runtime_of(request)
    _job_or_404(rt, job_id)
    text = rt.store.get_chunk_log(job_id, index, stage)
    if text is None:
        raise HTTPException(404, f"job {job_id[:80]} has no chunk {index}")
    return Response(text, media_type="text/plain; charset=utf-8")


@router.get("/jobs/{job_id}/logs", dependencies=[Depends(user)])
async def job_logs(job_id: str, request: Request) -> list[dict[str, Any]]:
    """Every chunk of the job that printed something: ``{"stage", "index", "state", "log"}``."""
    rt = runtime_of(request)
    _job_or_404(rt, job_id)
    return rt.store.chunk_logs(job_id)


@router.post("/jobs/{job_id}/cancel", dependencies=[Depends(user)])
async def cancel(job_id: str, request: Request) -> dict[str, Any]:
    try:
        view = runtime_of(request).cancel(job_id)
    except LookupError as exc:
        raise HTTPException(409, str(exc)) from None
    if view is None:
        raise HTTPException(404, f"no job {job_id[:80]}")
    return view


@router.get("/stats", dependencies=[Depends(user)])
async def stats(request: Request, seconds: int = 300) -> dict[str, Any]:
    """Totals for the dashboard's overview: jobs by state, chunks finished per second lately."""
    rt = runtime_of(request)
    return {"jobs": rt.store.job_counts(), "chunks_finished": rt.chunks_finished,
            "chunks_failed": rt.chunks_failed, "finished_per_second": rt.finished_per_second(seconds)}


class ResultsPage(msgspec.Struct):
    state: str
    stage: int
    seq: int
    items: list[tuple[int, bytes]]


@router.get("/jobs/{job_id}/results", dependencies=[Depends(user)])
async def results(job_id: str, request: Request, after: int = 0, wait: float = 0.0) -> Response:
    """Chunk results accepted after ``after`` (msgpack), waiting up to ``wait`` s for new ones.

    The executor streams with this, so its futures resolve as their chunks finish.
    """
    rt = runtime_of(request)
    view = _job_or_404(rt, job_id)
    active = rt.active.get(job_id)
    if active is not None and active.seq <= after and wait > 0:
        active.changed.clear()
        try:
            await asyncio.wait_for(active.changed.wait(), min(wait, 30.0))
        except asyncio.TimeoutError:
            pass
        view = _job_or_404(rt, job_id)
    rows = rt.store.results_since(job_id, view["stage"], after, 5000)
    seq = rows[-1][0] if rows else after
    page = ResultsPage(state=view["state"], stage=view["stage"], seq=seq, items=[(i, r) for _, i, r in rows])
    return Response(msgspec.msgpack.encode(page), media_type="application/msgpack")


@router.post("/gc", dependencies=[Depends(admin)])
async def gc(request: Request, retention: float | None = None) -> dict[str, Any]:
    """Apply retention now (``?retention=SECONDS`` overrides the master's ``--retention`` once)."""
    from rvidia.master.retention import collect

    rt = runtime_of(request)
    if retention is not None and retention < 0:
        raise HTTPException(422, "retention must not be negative")
    return collect(rt.store, rt.blobs, rt.retention if retention is None else retention)


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    name: str | None = None


@router.post("/tokens", status_code=201, dependencies=[Depends(admin)])
async def create_token(request: Request) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(await request.body(), type=TokenRequest)
        name, token = request.app.state.auth.create(body.role, body.name)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise ParamError(str(exc)) from None
    return {"name": name, "role": body.role, "token": token}


@router.get("/tokens", dependencies=[Depends(admin)])
async def list_tokens(request: Request) -> list[dict[str, Any]]:
    return request.app.state.auth.list()  # type: ignore[no-any-return]


@router.delete("/tokens/{name}", dependencies=[Depends(admin)])
async def revoke_token(name: str, request: Request) -> dict[str, Any]:
    if not request.app.state.auth.revoke(name):
        raise HTTPException(404, f"no active token named {name[:80]!r}")
    workers = runtime_of(request).disconnect_token(name)
    return {"name": name, "revoked": True, "disconnected_workers": workers}


class SessionRequest(msgspec.Struct):
    token: str


@router.post("/session")
async def sign_in(request: Request) -> Response:
    """Exchange a token for the dashboard's HttpOnly, SameSite=Strict session cookie."""
    auth = request.app.state.auth
    try:
        body = msgspec.json.decode(await request.body(), type=SessionRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ParamError(f"invalid sign-in: {exc}") from None
    principal = auth.check(body.token)
    if principal is None or not principal.may("submit"):
        throttle: FailureThrottle = request.app.state.throttle
        delay = throttle.failed(request.client.host if request.client else "")
        if delay:
            await asyncio.sleep(delay)  # a source that keeps failing is slowed, never locked out
        raise HTTPException(401, "wrong token")
    response = JSONResponse({"name": principal.name, "role": principal.role})
    response.set_cookie(SESSION_COOKIE, auth.new_session(principal), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.get("/session")
async def session_status(request: Request) -> dict[str, Any]:
    """Whether the dashboard's cookie is signed in (200 either way: the page asks before sign-in)."""
    principal = request.app.state.auth.session(request.cookies.get(SESSION_COOKIE))
    if principal is None:
        return {"signed_in": False}
    return {"signed_in": True, "name": principal.name, "role": principal.role}


@router.delete("/session")
async def sign_out(request: Request) -> Response:
    request.app.state.auth.end_session(request.cookies.get(SESSION_COOKIE))
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(SESSION_COOKIE)
    return response
