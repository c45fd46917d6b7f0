"""Deadlines: a job still running ``deadline`` seconds after submission is cancelled with that reason
(docs/operations.md, "Deadlines")."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

import rvidia
from harness import run_cli

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def local() -> Iterator[rvidia.LocalCluster]:
    with rvidia.LocalCluster(workers=1, slots=1) as cluster:
        yield cluster


def test_short_deadline_cancels_a_running_job(local: rvidia.LocalCluster) -> None:
    started = time.monotonic()
    job = local.submit("montecarlo", samples=10**12, deadline=1.5)
    view = job.wait(timeout=30)
    assert view["state"] == "cancelled"
    assert view["error"] == "deadline of 1.5 s passed"
    assert view["deadline"] == 1.5
    assert 1.4 <= time.monotonic() - started < 15
    with pytest.raises(rvidia.JobFailed, match="deadline of 1.5 s passed"):
        job.result(timeout=5)


def test_job_within_its_deadline_succeeds(local: rvidia.LocalCluster) -> None:
    job = local.submit("montecarlo", samples=1000, deadline=60)
    assert job.result(timeout=30)["samples"] == 1000


def test_cli_submit_with_deadline(local: rvidia.LocalCluster) -> None:
    result = run_cli("submit", "montecarlo", "-p", "samples=1000000000000", "--deadline", "2s", "--wait",
                     "--master", local.url, token=local.token)
    assert result.code == 1 and "deadline of 2 s passed" in result.stderr, result.stderr
    bad = run_cli("submit", "montecarlo", "-p", "samples=10", "--deadline", "soon",
                  "--master", local.url, token=local.token)
    assert bad.code == 2


def test_bad_deadline_is_422(local: rvidia.LocalCluster) -> None:
    response = local.http.post("/api/v1/jobs", json={"kind": "montecarlo", "params": {"samples": 10},
                                                     "deadline": -1})
    assert response.status_code == 422 and "deadline" in response.json()["error"]
