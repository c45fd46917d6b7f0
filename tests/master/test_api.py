"""The REST API of a real master served by uvicorn in-process, spoken to over HTTP with httpx."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, Iterator

import cloudpickle
import httpx
import msgspec
import pytest
from websockets.sync.client import connect as ws_connect

import rvidia
from .live_master import LiveMaster
from rvidia.protocol import messages as m

MAX_UPLOAD = 4096
JOB_FIELDS = {"id", "kind", "state", "reason", "params", "progress", "created_at", "started_at", "finished_at",
              "error", "result", "outputs", "workers"}


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMaster]:
    live = LiveMaster(tmp_path_factory.mktemp("api-master"), max_upload_bytes=MAX_UPLOAD).start()
    yield live
    live.stop()


@pytest.fixture
def api(master: LiveMaster) -> Iterator[httpx.Client]:
    with master.client() as client:
        yield client


@pytest.fixture(scope="module")
def blob(master: LiveMaster) -> dict[str, Any]:
    data = bytes(range(256)) * 4
    with master.client() as client:
        r = client.post("/api/v1/blobs", content=data)
    assert r.status_code == 201, r.text
    return {"data": data, **r.json()}


def is_error(r: httpx.Response, status: int) -> str:
    """Assert a JSON error answer with that status and no traceback; return its message."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body["error"]


def submit(api: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("kind", "montecarlo")
    body.setdefault("params", {"samples": 3000, "chunk_samples": 1000})
    return api.post("/api/v1/jobs", json=body)


# ---------------------------------------------------------------- auth


def test_health_needs_no_token(master: LiveMaster) -> None:
    r = httpx.get(master.url + "/api/v1/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": rvidia.__version__}


PROTECTED = [("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs"), ("GET", "/api/v1/jobs/jnothing"),
             ("GET", "/api/v1/jobs/jnothing/chunks"), ("POST", "/api/v1/jobs/jnothing/cancel"),
             ("GET", "/api/v1/workers"), ("GET", "/api/v1/kinds"), ("POST", "/api/v1/blobs"),
             ("GET", "/api/v1/blobs/BLOB"), ("GET", "/metrics"), ("GET", "/api/v1/tokens")]
BAD_AUTH = {"none": {}, "wrong": {"Authorization": "Bearer not-the-token"},
            "bare bearer": {"Authorization": "Bearer"}, "basic": {"Authorization": "Basic YWRtaW46eA=="},
            "wrong cookie": {"Cookie": "rvidia_session=forged"}}


@pytest.mark.parametrize("auth", list(BAD_AUTH))
@pytest.mark.parametrize("method, path", PROTECTED, ids=[f"{m_} {p}" for m_, p in PROTECTED])
def test_missing_or_wrong_credentials_get_401_json(master: LiveMaster, blob: dict[str, Any], method: str,
                                                   path: str, auth: str) -> None:
    with httpx.Client(base_url=master.url, headers=BAD_AUTH[auth]) as client:
        r = client.request(method, path.replace("BLOB", blob["id"]), content=b'{"kind": "montecarlo"}')
    is_error(r, 401)
    assert blob["data"] not in r.content


def test_worker_token_may_not_submit(api: httpx.Client, master: LiveMaster) -> None:
    r = api.post("/api/v1/tokens", json={"role": "worker", "name": "api-test-worker"})
    assert r.status_code == 201, r.text
    worker_token = r.json()["token"]
    r = httpx.post(master.url + "/api/v1/jobs", json={"kind": "montecarlo", "params": {"samples": 10}},
                   headers={"Authorization": f"Bearer {worker_token}"})
    assert "worker" in is_error(r, 403)


# ---------------------------------------------------------------- blobs


def test_blob_upload_and_download(api: httpx.Client, blob: dict[str, Any]) -> None:
    assert blob["id"] == hashlib.sha256(blob["data"]).hexdigest()
    assert blob["size"] == len(blob["data"])
    r = api.get(f"/api/v1/blobs/{blob['id']}")
    assert r.status_code == 200 and r.content == blob["data"]
    again = api.post("/api/v1/blobs", content=blob["data"])  # content-addressed: same id
    assert again.status_code == 201 and again.json() == {"id": blob["id"], "size": blob["size"]}


def test_empty_and_streamed_uploads(api: httpx.Client) -> None:
    r = api.post("/api/v1/blobs", content=b"")
    assert r.status_code == 201 and r.json() == {"id": hashlib.sha256(b"").hexdigest(), "size": 0}
    parts = [b"a" * 1000, b"b" * 1000, b"c"]
    r = api.post("/api/v1/blobs", content=iter(parts))  # chunked: no Content-Length
    assert r.status_code == 201
    assert r.json() == {"id": hashlib.sha256(b"".join(parts)).hexdigest(), "size": 2001}
    assert api.get(f"/api/v1/blobs/{r.json()['id']}").content == b"".join(parts)


def test_blob_range_request(api: httpx.Client, blob: dict[str, Any]) -> None:
    r = api.get(f"/api/v1/blobs/{blob['id']}", headers={"Range": "bytes=2-5"})
    assert r.status_code == 206
    assert r.content == blob["data"][2:6]
    assert r.headers["content-range"] == f"bytes 2-5/{blob['size']}"
    r = api.get(f"/api/v1/blobs/{blob['id']}", headers={"Range": "bytes=-3"})
    assert r.status_code == 206 and r.content == blob["data"][-3:]


@pytest.mark.parametrize("blob_id", ["xyz", "..%2F..%2Fetc%2Fpasswd", "..%2Fetc%2Fpasswd", "0" * 64, "g" * 64,
                                     "%2E%2E", "0" * 65])
def test_invalid_or_unknown_blob_id_is_404(api: httpx.Client, blob_id: str) -> None:
    is_error(api.get(f"/api/v1/blobs/{blob_id}"), 404)


def test_upper_case_blob_id_is_404(api: httpx.Client, blob: dict[str, Any]) -> None:
    is_error(api.get(f"/api/v1/blobs/{blob['id'].upper()}"), 404)


def test_upload_over_the_limit_is_413(api: httpx.Client, master: LiveMaster) -> None:
    r = api.post("/api/v1/blobs", content=b"x" * MAX_UPLOAD)
    assert r.status_code == 201
    assert str(MAX_UPLOAD) in is_error(api.post("/api/v1/blobs", content=b"x" * (MAX_UPLOAD + 1)), 413)
    # Streamed without a Content-Length: refused when the limit is crossed, nothing left behind.
    r = api.post("/api/v1/blobs", content=iter([b"y" * 3000, b"y" * 3000]))
    is_error(r, 413)
    assert list((master.settings.data_dir / "blobs" / "tmp").iterdir()) == []
    is_error(api.get(f"/api/v1/blobs/{hashlib.sha256(b'y' * 6000).hexdigest()}"), 404)
    is_error(api.get(f"/api/v1/blobs/{hashlib.sha256(b'y' * 3000).hexdigest()}"), 404)


# ---------------------------------------------------------------- submitting jobs


BAD_JOBS: dict[str, tuple[Any, str]] = {
    "unknown kind": ({"kind": "nope", "params": {}}, "unknown kind 'nope'"),
    "samples zero": ({"kind": "montecarlo", "params": {"samples": 0}}, "samples"),
    "samples too large": ({"kind": "montecarlo", "params": {"samples": 10**13 + 1}}, "samples"),
    "samples missing": ({"kind": "montecarlo", "params": {}}, "samples"),
    "samples not a number": ({"kind": "montecarlo", "params": {"samples": "many"}}, "samples"),
    "unknown param": ({"kind": "montecarlo", "params": {"samples": 10, "sampels": 1}}, "sampels"),
    "missing input": ({"kind": "map", "params": {"python": "3.11"}}, "needs input 'items'"),
    "input names no blob": ({"kind": "map", "params": {"python": "3.11"},
                             "inputs": {"function": "0" * 64, "items": "1" * 64}}, "no uploaded blob"),
    "input id not hex": ({"kind": "map", "params": {"python": "3.11"},
                          "inputs": {"function": "../../etc/passwd", "items": "x"}}, "no uploaded blob"),
    "input the kind does not take": ({"kind": "montecarlo", "params": {"samples": 10},
                                      "inputs": {"data": "0" * 64}}, "no input named 'data'"),
    "unknown top-level field": ({"kind": "montecarlo", "params": {"samples": 10}, "colour": "red"}, "colour"),
    "kind missing": ({"params": {"samples": 10}}, "kind"),
    "priority out of range": ({"kind": "montecarlo", "params": {"samples": 10}, "priority": 10**6}, "priority"),
    "max_attempts zero": ({"kind": "montecarlo", "params": {"samples": 10}, "max_attempts": 0}, "max_attempts"),
    "negative timeout": ({"kind": "montecarlo", "params": {"samples": 10}, "timeout": -1}, "timeout"),
    "replicas": ({"kind": "montecarlo", "params": {"samples": 10}, "replicas": 10}, "replicas"),
    "params not an object": ({"kind": "montecarlo", "params": [1, 2]}, "params"),
    "body a list": ([1, 2], "invalid job"),
}


@pytest.mark.parametrize("name", list(BAD_JOBS))
def test_bad_submissions_are_422_with_a_reason(api: httpx.Client, name: str) -> None:
    body, hint = BAD_JOBS[name]
    assert hint in is_error(api.post("/api/v1/jobs", json=body), 422)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b'{"kind": "montecarlo"'])
def test_invalid_json_is_422(api: httpx.Client, raw: bytes) -> None:
    is_error(api.post("/api/v1/jobs", content=raw, headers={"Content-Type": "application/json"}), 422)


def test_valid_submit_is_queued_without_workers(api: httpx.Client) -> None:
    r = submit(api, params={"samples": 3000, "chunk_samples": 1000, "seed": 4})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["state"] == "queued" and created["id"]
    view = api.get(f"/api/v1/jobs/{created['id']}").json()
    assert JOB_FIELDS <= set(view)
    assert view["state"] == "queued"
    assert view["reason"] == "no workers connected"
    assert view["params"] == {"samples": 3000, "chunk_samples": 1000, "seed": 4}
    assert view["progress"] == {"total": 3, "done": 0, "running": 0, "failed": 0}
    assert view["created_at"].endswith("Z") and view["started_at"] is None and view["result"] is None
    assert api.get(f"/api/v1/jobs/{created['id']}/chunks").json() == []


def test_idempotency_key_returns_the_first_job(api: httpx.Client) -> None:
    key = {"Idempotency-Key": "api-test-key-1"}
    first = api.post("/api/v1/jobs", json={"kind": "montecarlo", "params": {"samples": 10}}, headers=key)
    second = api.post("/api/v1/jobs", json={"kind": "montecarlo", "params": {"samples": 10}}, headers=key)
    assert first.status_code == 201 and second.status_code in (200, 201)
    assert first.json()["id"] == second.json()["id"]
    other = api.post("/api/v1/jobs", json={"kind": "montecarlo", "params": {"samples": 10}},
                     headers={"Idempotency-Key": "api-test-key-2"})
    assert other.json()["id"] != first.json()["id"]
    ids = [j["id"] for j in api.get("/api/v1/jobs", params={"limit": 1000}).json()]
    assert ids.count(first.json()["id"]) == 1


def test_job_list_paging(api: httpx.Client) -> None:
    made = [submit(api).json()["id"] for _ in range(5)]
    everything = api.get("/api/v1/jobs", params={"limit": 1000}).json()
    ids = [j["id"] for j in everything]
    assert ids[:5] == made[::-1]  # newest first
    for job in everything:
        assert {"id", "kind", "state", "progress", "created_at"} <= set(job)
    page1 = api.get("/api/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page1] == ids[:2]
    page2 = api.get("/api/v1/jobs", params={"limit": 2, "before": page1[-1]["id"]}).json()
    assert [j["id"] for j in page2] == ids[2:4]
    rest = api.get("/api/v1/jobs", params={"limit": 1000, "before": ids[-1]}).json()
    assert rest == []
    for bad in ({"limit": 0}, {"limit": 100000}, {"limit": "x"}):
        is_error(api.get("/api/v1/jobs", params=bad), 422)


@pytest.mark.parametrize("method, suffix", [("GET", ""), ("GET", "/chunks"), ("POST", "/cancel")])
def test_unknown_job_is_404(api: httpx.Client, method: str, suffix: str) -> None:
    is_error(api.request(method, f"/api/v1/jobs/jdoesnotexist{suffix}"), 404)


def test_cancel_then_cancel_again_is_409(api: httpx.Client) -> None:
    job_id = submit(api).json()["id"]
    r = api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200
    assert r.json()["state"] == "cancelled" and r.json()["finished_at"]
    assert "cancelled" in is_error(api.post(f"/api/v1/jobs/{job_id}/cancel"), 409)
    view = api.get(f"/api/v1/jobs/{job_id}").json()
    assert view["state"] == "cancelled" and view["reason"] is None


# ---------------------------------------------------------------- kinds, metrics, session


def test_kinds_list_json_schema_params(api: httpx.Client) -> None:
    kinds = {k["name"]: k for k in api.get("/api/v1/kinds").json()}
    assert {"montecarlo", "map"} <= set(kinds)
    mc = kinds["montecarlo"]
    assert mc["description"]
    schema = mc["params"]
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"samples", "seed", "chunk_samples"}
    assert schema["required"] == ["samples"]
    assert schema["properties"]["samples"]["minimum"] == 1
    assert schema["properties"]["samples"]["maximum"] == 10**13
    assert kinds["map"]["params"]["type"] == "object" and "python" in kinds["map"]["params"]["properties"]
    assert kinds["map"]["inputs"] == ["items"] and kinds["map"]["optional_inputs"] == ["function"]


def test_metrics(api: httpx.Client) -> None:
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    for name in ("rvidia_workers", "rvidia_slots", "rvidia_chunks_running", "rvidia_active_jobs",
                 "rvidia_chunks_finished_total", "rvidia_chunks_failed_total"):
        assert f"# TYPE {name} " in r.text
    samples = [ln for ln in lines if ln and not ln.startswith("#")]
    assert samples and all(ln.startswith("rvidia_") and float(ln.rsplit(" ", 1)[1]) >= 0 for ln in samples)


def test_session_cookie_sign_in_and_out(master: LiveMaster) -> None:
    with httpx.Client(base_url=master.url) as browser:
        is_error(browser.get("/api/v1/jobs"), 401)
        is_error(browser.post("/api/v1/session", json={"token": "wrong"}), 401)
        is_error(browser.post("/api/v1/session", content=b"nonsense"), 422)
        r = browser.post("/api/v1/session", json={"token": master.token})
        assert r.status_code == 200 and r.json()["role"] == "admin"
        cookie = r.headers["set-cookie"]
        attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")}
        assert "httponly" in attrs
        assert attrs["samesite"].lower() == "samesite=strict"
        session = browser.cookies["rvidia_session"]
        assert session and session != master.token
        assert browser.get("/api/v1/jobs").status_code == 200
        assert browser.get("/metrics").status_code == 200
        r = browser.delete("/api/v1/session")
        assert r.status_code == 200
        assert "rvidia_session" not in browser.cookies
        is_error(browser.get("/api/v1/jobs"), 401)
    # The old session id is dead on the master, not only forgotten by the browser.
    r = httpx.get(master.url + "/api/v1/jobs", cookies={"rvidia_session": session})
    is_error(r, 401)


# ---------------------------------------------------------------- code jobs


def hello(**changes: Any) -> bytes:
    fields: dict[str, Any] = dict(version=m.PROTOCOL_VERSION, name="no-code", host="h", os="linux",
                                  python=f"{sys.version_info[0]}.{sys.version_info[1]}.0", cores=2,
                                  memory_bytes=2**30, slots=2)
    fields.update(changes)
    return m.encode(m.Hello(**fields))


def test_map_job_waits_for_an_allow_code_worker(tmp_path: Path) -> None:
    live = LiveMaster(tmp_path).start()
    try:
        with live.client() as api:
            function = api.post("/api/v1/blobs", content=cloudpickle.dumps(lambda x: x + 1)).json()["id"]
            items = api.post("/api/v1/blobs",
                             content=msgspec.msgpack.encode([cloudpickle.dumps([1, 2]), cloudpickle.dumps([3])]))
            python = f"{sys.version_info[0]}.{sys.version_info[1]}"
            with ws_connect(live.ws_url, additional_headers=live.headers) as plain, \
                    ws_connect(live.ws_url, additional_headers=live.headers) as old:
                plain.send(hello())
                assert isinstance(m.decode(plain.recv(timeout=10)), m.Welcome)
                old.send(hello(name="old-python", allow_code=True, python="2.7.18"))
                assert isinstance(m.decode(old.recv(timeout=10)), m.Welcome)
                r = api.post("/api/v1/jobs", json={"kind": "map", "params": {"python": python, "items": 3},
                                                   "inputs": {"function": function, "items": items.json()["id"]}})
                assert r.status_code == 201, r.text
                job_id = r.json()["id"]
                view = api.get(f"/api/v1/jobs/{job_id}").json()
                assert view["state"] == "queued"
                assert view["progress"]["total"] == 2
                assert "--allow-code" in view["reason"] and python in view["reason"]
                workers = api.get("/api/v1/workers").json()
                assert {w["name"] for w in workers} == {"no-code", "old-python"}
                assert all(w["running"] == 0 for w in workers)
            assert api.post(f"/api/v1/jobs/{job_id}/cancel").json()["state"] == "cancelled"
    finally:
        live.stop()


def test_repeated_wrong_sign_ins_are_slowed_but_the_right_token_still_works(master: LiveMaster) -> None:
    import time

    from rvidia.master.throttle import FREE_FAILURES

    with httpx.Client(base_url=master.url) as client:  # no token: a browser signing in
        for _ in range(FREE_FAILURES):
            assert client.post("/api/v1/session", json={"token": "wrong"}).status_code == 401
        started = time.monotonic()
        assert client.post("/api/v1/session", json={"token": "wrong"}).status_code == 401
        assert time.monotonic() - started >= 0.2
        started = time.monotonic()
        assert client.post("/api/v1/session", json={"token": master.token}).status_code == 200
        assert time.monotonic() - started < 0.2
