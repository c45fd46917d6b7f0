"""The Python API against a real LocalCluster: connect, submit, results, errors, ``map``."""

from __future__ import annotations

import socket
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import pytest

import rvidia
from rvidia.client.api import ApiError
from rvidia.kinds.montecarlo import count_inside

pytestmark = pytest.mark.timeout(120)

JOB_FIELDS = {"id", "kind", "state", "reason", "params", "progress", "created_at", "started_at",
              "finished_at", "error", "result", "outputs", "workers"}


@pytest.fixture(scope="module")
def local() -> Iterator[rvidia.LocalCluster]:
    with rvidia.LocalCluster(workers=2) as cluster:
        yield cluster


@pytest.fixture()
def cluster(local: rvidia.LocalCluster) -> Iterator[rvidia.Cluster]:
    """A plain client connected to the local master, as a remote user would be."""
    with rvidia.connect(local.url, token=local.token) as client:
        yield client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timezone.utc.utcoffset(None), text
    return moment


def _point_class() -> type:
    """A result type msgpack cannot carry (it needs allow_pickle_results).

    Defined in a function so that cloudpickle ships it by value: workers cannot import this test
    module, just as they cannot import a user's script.
    """

    class Point:
        def __init__(self, x: int) -> None:
            self.x = x

    return Point


# ------------------------------------------------------------ connect and submit


def test_connect_and_montecarlo_exact(cluster: rvidia.Cluster) -> None:
    samples, seed, chunk = 2_500_000, 7, 1_000_000
    job = cluster.submit("montecarlo", samples=samples, seed=seed, chunk_samples=chunk)
    result = job.result(timeout=60)
    sizes = [min(chunk, samples - start) for start in range(0, samples, chunk)]
    inside = sum(count_inside(seed, i, n) for i, n in enumerate(sizes))
    assert result == {"pi": 4.0 * inside / samples, "samples": samples, "inside": inside}


def test_health_and_kinds(cluster: rvidia.Cluster) -> None:
    assert cluster.health()["status"] == "ok"
    names = {k["name"] for k in cluster.kinds()}
    assert "montecarlo" in names


def test_status_fields_match_contract(cluster: rvidia.Cluster) -> None:
    job = cluster.submit("montecarlo", samples=3000, seed=1, chunk_samples=1000)
    job.result(timeout=60)
    view = job.status()
    assert JOB_FIELDS <= set(view)
    assert view["id"] == job.id and view["kind"] == "montecarlo" and view["state"] == "succeeded"
    assert view["reason"] is None and view["error"] is None
    assert view["params"] == {"samples": 3000, "seed": 1, "chunk_samples": 1000}
    assert view["progress"] == {"total": 3, "done": 3, "running": 0, "failed": 0}
    created, started, finished = (_utc(view[k]) for k in ("created_at", "started_at", "finished_at"))
    assert created <= started <= finished
    assert view["result"]["samples"] == 3000
    assert view["outputs"] == {}
    assert sum(view["workers"].values()) == 3
    live = {w["id"] for w in cluster.workers()}
    assert set(view["workers"]) <= live
    # The same job appears in the list, newest first.
    assert cluster.jobs(limit=1)[0]["id"] == job.id
    assert cluster.job(job.id).id == job.id


def test_cancelled_job_raises_job_failed(cluster: rvidia.Cluster) -> None:
    job = cluster.submit("montecarlo", samples=10**9, chunk_samples=10**8)
    view = job.cancel()
    assert view["state"] == "cancelled"
    with pytest.raises(rvidia.JobFailed) as info:
        job.result(timeout=30)
    assert info.value.state == "cancelled"
    assert info.value.job_id == job.id
    assert "cancelled" in str(info.value)
    with pytest.raises(ApiError) as again:  # a finished job cannot be cancelled again
        job.cancel()
    assert again.value.status == 409


# ------------------------------------------------------------ errors


def test_connect_to_nothing_is_unreachable() -> None:
    with rvidia.connect(f"http://127.0.0.1:{_free_port()}", token="x") as client:
        with pytest.raises(rvidia.MasterUnreachable):
            client.jobs()
        with pytest.raises(rvidia.MasterUnreachable):
            client.health()


def test_wrong_token_is_unreachable(local: rvidia.LocalCluster) -> None:
    with rvidia.connect(local.url, token="not-the-token") as client:
        assert client.health()["status"] == "ok"  # health needs no token
        with pytest.raises(rvidia.MasterUnreachable, match="token"):
            client.workers()


@pytest.mark.parametrize("params", [
    {"samples": 0},
    {"samples": 10**14},
    {"samples": 1000, "colour": "blue"},
    {"seed": 1},
    {"samples": "many"},
])
def test_bad_params_are_422(cluster: rvidia.Cluster, params: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as info:
        cluster.submit("montecarlo", **params)
    assert info.value.status == 422
    assert str(info.value)


def test_unknown_kind_and_job(cluster: rvidia.Cluster) -> None:
    with pytest.raises(ApiError) as info:
        cluster.submit("no-such-kind", samples=1)
    assert info.value.status == 422
    with pytest.raises(ApiError) as missing:
        cluster.job("jdoesnotexist")
    assert missing.value.status == 404


# ------------------------------------------------------------ map


def test_map_lambda_in_order(local: rvidia.LocalCluster) -> None:
    items = list(range(50))
    assert local.map(lambda x: x * 3 - 1, items, chunksize=7).result(timeout=60) == [x * 3 - 1 for x in items]


def test_map_closure(local: rvidia.LocalCluster) -> None:
    offset, table = 100, {"a": 1, "b": 2}

    def add(key: str) -> int:
        return table[key] + offset

    assert local.map(add, ["a", "b", "a"], chunksize=1).result(timeout=60) == [101, 102, 101]


def test_map_value_types(local: rvidia.LocalCluster) -> None:
    def shape(x: int) -> Any:
        return [None, "text é", (x, "t", (1.5,)), np.arange(6, dtype=np.float32).reshape(2, 3) * x,
                {"k": [x, None]}, b"\x00raw", True, np.int64(x)][x]

    out = local.map(shape, range(8), chunksize=3).result(timeout=60)
    assert out[0] is None
    assert out[1] == "text é"
    assert out[2] == (2, "t", (1.5,)) and type(out[2]) is tuple and type(out[2][2]) is tuple
    assert isinstance(out[3], np.ndarray) and out[3].dtype == np.float32 and out[3].shape == (2, 3)
    np.testing.assert_array_equal(out[3], np.arange(6, dtype=np.float32).reshape(2, 3) * 3)
    assert out[4] == {"k": [4, None]}
    assert out[5] == b"\x00raw"
    assert out[6] is True
    assert out[7] == 7


def test_map_empty(local: rvidia.LocalCluster) -> None:
    assert local.map(lambda x: x, []).result(timeout=60) == []


def test_map_pickled_result_refused_without_permission(local: rvidia.LocalCluster) -> None:
    job = local.map(_point_class(), [1, 2])
    with pytest.raises(rvidia.JobFailed) as info:
        job.result(timeout=60)
    assert info.value.state == "failed"
    assert "allow_pickle_results" in (info.value.reason or "")
    assert "Point" in (info.value.reason or "")


def test_map_pickled_result_allowed(local: rvidia.LocalCluster) -> None:
    out = local.map(_point_class(), [1, 2, 3], chunksize=2, allow_pickle_results=True).result(timeout=60)
    assert [type(p).__name__ for p in out] == ["Point"] * 3
    assert [p.x for p in out] == [1, 2, 3]


def test_map_via_connect(cluster: rvidia.Cluster) -> None:
    assert cluster.map(str.upper, ["a", "b"]).result(timeout=60) == ["A", "B"]


def test_a_long_poll_answers_when_the_job_ends(cluster: rvidia.Cluster) -> None:
    """``GET /jobs/{id}?wait=S`` holds the answer until the job ends (not S), so ``Job.result`` sees
    the end at once instead of polling."""
    import time

    job = cluster.submit("montecarlo", samples=60_000_000, seed=4, chunk_samples=2_000_000)
    started = time.monotonic()
    view = cluster.get(f"/api/v1/jobs/{job.id}", params={"wait": 50})
    held = time.monotonic() - started
    assert view["state"] == "succeeded" and held < 45, (view["state"], held)
    started = time.monotonic()
    assert cluster.get(f"/api/v1/jobs/{job.id}", params={"wait": 50})["state"] == "succeeded"
    assert time.monotonic() - started < 5  # an ended job is answered at once
    for bad in ("-1", "61", "soon"):
        with pytest.raises(ApiError) as info:
            cluster.get(f"/api/v1/jobs/{job.id}", params={"wait": bad})
        assert info.value.status == 422


def test_a_long_poll_of_a_job_that_cannot_run_ends_after_its_wait() -> None:
    import time

    with rvidia.LocalCluster(workers=0) as empty:
        job = empty.submit("montecarlo", samples=1000)
        started = time.monotonic()
        view = empty.get(f"/api/v1/jobs/{job.id}", params={"wait": 0.5})
        assert view["state"] == "queued" and 0.4 < time.monotonic() - started < 10
        with pytest.raises(TimeoutError):
            job.wait(timeout=0.3)
