"""What chunks print: captured per chunk in the chunk process, stored by the master, read back with
``GET /api/v1/jobs/{id}/chunks/{index}/log`` and ``rvidia logs`` (docs/operations.md, "Reading chunk logs")."""

from __future__ import annotations

from typing import Iterator

import pytest

import rvidia
from harness import run_cli

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def local() -> Iterator[rvidia.LocalCluster]:
    with rvidia.LocalCluster(workers=1, slots=2) as cluster:
        yield cluster


def test_chunk_output_is_read_back_through_the_cli(local: rvidia.LocalCluster) -> None:
    def printing(x: int) -> int:
        import sys

        print(f"item {x} on stdout")
        print(f"item {x} on stderr", file=sys.stderr)
        return x * 2

    job = local.map(printing, range(4), chunksize=1)
    assert job.result(timeout=60) == [0, 2, 4, 6]

    one = run_cli("logs", job.id, "--chunk", "2", "--master", local.url, token=local.token)
    assert one.code == 0, one.stderr
    assert "item 2 on stdout" in one.stdout and "item 2 on stderr" in one.stdout
    assert "item 1" not in one.stdout

    every = run_cli("logs", job.id, "--master", local.url, token=local.token)
    assert every.code == 0, every.stderr
    for i in range(4):
        assert f"==> chunk {i} (stage 0, done) <==" in every.stdout
        assert f"item {i} on stdout" in every.stdout
    assert every.stdout.index("==> chunk 1 ") < every.stdout.index("item 1 on stdout")

    http = local.http
    assert http.get(f"/api/v1/jobs/{job.id}/chunks/3/log").text.count("item 3") == 2
    assert http.get(f"/api/v1/jobs/{job.id}/chunks/99/log").status_code == 404
    assert http.get("/api/v1/jobs/jnosuchjob/chunks/0/log").status_code == 404
    missing = run_cli("logs", job.id, "--chunk", "99", "--master", local.url, token=local.token)
    assert missing.code == 2 and "no chunk 99" in missing.stderr


def test_output_of_a_crashing_chunk_is_kept(local: rvidia.LocalCluster) -> None:
    def crash(x: int) -> int:
        import os

        print("last words before the crash")
        os._exit(3)

    job = local.map(crash, [1], chunksize=1, max_attempts=1)
    with pytest.raises(rvidia.JobFailed):
        job.result(timeout=60)
    text = local.http.get(f"/api/v1/jobs/{job.id}/chunks/0/log").text
    assert "last words before the crash" in text


def test_output_of_a_raising_chunk_is_kept(local: rvidia.LocalCluster) -> None:
    def fail(x: int) -> int:
        print("about to raise")
        raise ValueError("boom")

    job = local.map(fail, [1], chunksize=1, max_attempts=1)
    with pytest.raises(rvidia.JobFailed):
        job.result(timeout=60)
    assert "about to raise" in local.http.get(f"/api/v1/jobs/{job.id}/chunks/0/log").text


def test_long_output_keeps_its_tail_within_64_kib(local: rvidia.LocalCluster) -> None:
    def chatty(x: int) -> int:
        for i in range(20000):
            print(f"line {i:06d} " + "x" * 20)
        print("THE END")
        return x

    job = local.map(chatty, [7], chunksize=1)
    assert job.result(timeout=60) == [7]
    text = local.http.get(f"/api/v1/jobs/{job.id}/chunks/0/log").text
    assert len(text.encode()) <= 64 * 1024
    assert text.endswith("THE END\n") and "line 019999" in text and "line 000000" not in text
