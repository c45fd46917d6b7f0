"""Property-based tests of the REST API against a live master: over 10,000 generated requests.

Whatever arrives (JSON of any shape, near-valid job bodies, raw bytes, odd ids and queries, wrong
credentials), the answer is a JSON error with a 4xx status and a one-line reason, or a success; never a
500 and never a traceback. Afterwards the master is alive and still runs a job exactly.
"""

from __future__ import annotations

import string
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .live_master import LiveMaster
from .test_ws_worker import FakeWorker, expected_inside, run_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


CLIENT_ERRORS = {400, 401, 403, 404, 405, 409, 413, 415, 422}


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMaster]:
    live = LiveMaster(tmp_path_factory.mktemp("fuzz-master"), heartbeat_interval=0.5).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def api(master: LiveMaster) -> Iterator[httpx.Client]:
    with master.client() as client:
        yield client


def check(r: httpx.Response, allowed: set[int] = CLIENT_ERRORS | {200, 201}) -> None:
    assert r.status_code in allowed, (r.status_code, r.text[:300])
    assert "Traceback" not in r.text and 'File "' not in r.text, r.text[:300]
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body.get("error"), str) and body["error"], body
        assert "\n" not in body["error"].strip(), body["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
kinds = st.sampled_from(["montecarlo", "matmul", "compress", "render", "analytics", "train", "map"]) | st.text(max_size=12)
param_names = st.sampled_from(["samples", "seed", "chunk_samples", "width", "height", "scene", "max_iter", "level",
                               "block_size", "group_by", "aggregates", "rounds", "shards", "model", "dataset",
                               "block_rows"]) | st.text(max_size=8)
blob_ids = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64) | st.text(max_size=70)
job_bodies = st.fixed_dictionaries({"kind": kinds}, optional={
    "params": st.dictionaries(param_names, json_values, max_size=5),
    "inputs": st.dictionaries(st.sampled_from(["a", "b", "data", "table"]) | st.text(max_size=5), blob_ids, max_size=3),
    "priority": st.integers(-10**6, 10**6) | json_values,
    "max_attempts": st.integers(-5, 200) | json_values,
    "timeout": st.floats(-10, 1e6, allow_nan=False) | st.none() | json_values,
    "replicas": st.integers(-2, 12) | json_values,
    "resources": st.dictionaries(st.text(max_size=6), st.floats(-5, 100, allow_nan=False) | json_values, max_size=3),
    "deadline": st.floats(-10, 1e6, allow_nan=False) | st.none(),
    "bogus": json_values,
})
# Ids that name nothing. "." and ".." are left out: clients normalise them away, naming another path.
ids = st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=80).filter(
    lambda x: x not in (".", ".."))


def _cancel_if_created(api: httpx.Client, r: httpx.Response) -> None:
    if r.status_code == 201:  # no worker runs it; cancel to keep the queue small
        check(api.post(f"/api/v1/jobs/{r.json()['id']}/cancel"))


@fuzz(4000)
@given(body=job_bodies)
def test_job_bodies(api: httpx.Client, body: dict[str, Any]) -> None:
    r = api.post("/api/v1/jobs", json=body)
    check(r)
    _cancel_if_created(api, r)


@fuzz(1500)
@given(body=json_values)
def test_any_json_as_a_job(api: httpx.Client, body: Any) -> None:
    r = api.post("/api/v1/jobs", json=body)
    check(r)
    _cancel_if_created(api, r)


@fuzz(1000)
@given(raw=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain", "", "x/y"]))
def test_raw_bytes_as_a_job(api: httpx.Client, raw: bytes, content_type: str) -> None:
    r = api.post("/api/v1/jobs", content=raw, headers={"Content-Type": content_type} if content_type else {})
    check(r)
    _cancel_if_created(api, r)


@fuzz(2500)
@given(ident=ids, index=st.integers(-5, 10**12) | ids, which=st.integers(0, 6))
def test_odd_ids_in_paths(api: httpx.Client, ident: str, index: Any, which: int) -> None:
    path = [f"/api/v1/jobs/{ident}", f"/api/v1/jobs/{ident}/chunks", f"/api/v1/blobs/{ident}",
            f"/api/v1/jobs/{ident}/chunks/{index}/log", f"/api/v1/jobs/{ident}/logs",
            f"/api/v1/jobs/{ident}/results", f"/api/v1/jobs/{ident}/cancel"][which]
    r = api.post(path) if path.endswith("/cancel") else api.get(path)
    check(r, CLIENT_ERRORS)


@fuzz(800)
@given(limit=st.integers(-10, 10**6) | st.text(max_size=6), before=st.none() | ids)
def test_job_list_queries(api: httpx.Client, limit: Any, before: str | None) -> None:
    params: dict[str, Any] = {"limit": limit}
    if before is not None:
        params["before"] = before
    check(api.get("/api/v1/jobs", params=params))


@fuzz(700)
@given(header=st.text(alphabet=string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "")
                      .replace("\x0c", ""), max_size=60).map(str.strip),  # what HTTP clients can send
       path=st.sampled_from(["/api/v1/workers", "/api/v1/jobs", "/api/v1/kinds", "/metrics", "/api/v1/tokens"]))
def test_wrong_credentials_are_401(master: LiveMaster, header: str, path: str) -> None:
    if master.token in header:
        return
    r = httpx.get(master.url + path, headers={"Authorization": header}, timeout=10)
    check(r, {401})


async def test_the_master_is_alive_and_correct_afterwards(master: LiveMaster) -> None:
    async with master.async_client() as client:
        assert (await client.get("/api/v1/health")).json()["status"] == "ok"
    worker = await FakeWorker(master, name="after-fuzz").start()
    try:
        view = await run_job(master, seed=99)
        assert view["state"] == "succeeded" and view["result"]["inside"] == expected_inside(99)
    finally:
        await worker.stop()
