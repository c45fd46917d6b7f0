"""The ``rvidia`` command line against real masters: output shapes, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest

from harness import Cluster, CliResult, assert_one_line_error, reference_result, run_cli
from rvidia.cli import parse_params


def cli(cluster: Cluster, *args: str, cwd: Path | None = None) -> CliResult:
    """A command against the module's cluster, with its admin token in RVIDIA_TOKEN."""
    return run_cli(*args, "--master", cluster.url, token=cluster.token, cwd=cwd)


@pytest.fixture(scope="module")
def finished_job(cluster: Cluster) -> str:
    """A montecarlo job that ran to the end, submitted with ``rvidia submit --wait``."""
    result = cli(cluster, "submit", "montecarlo", "-p", "samples=2000000", "-p", "seed=4", "--wait")
    assert result.code == 0, result.stderr
    assert result.json() == reference_result(2_000_000, 4)
    job_id = result.stderr.split("submitted ", 1)[1].split()[0]
    assert cluster.job(job_id)["state"] == "succeeded"
    return job_id


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize("pair, expected", [
    ("samples=1000000", 1_000_000),
    ("ratio=1.5", 1.5),
    ("flag=true", True),
    ("nothing=null", None),
    ('group_by=["a", "b"]', ["a", "b"]),
    ('aggregates={"x": ["sum"]}', {"x": ["sum"]}),
    ('quoted="42"', "42"),
    ("scene=mandelbrot", "mandelbrot"),
    ("empty=", ""),
    ("expr=a=b", "a=b"),
    ("broken=[1, 2", "[1, 2"),
])
def test_parse_params_takes_json_where_it_parses_else_a_string(pair: str, expected: Any) -> None:
    key = pair.split("=", 1)[0]
    assert parse_params((pair,)) == {key: expected}


def test_parse_params_merges_pairs_and_refuses_a_pair_without_equals() -> None:
    assert parse_params(("samples=10", "seed=2")) == {"samples": 10, "seed": 2}
    assert parse_params(()) == {}
    for bad in ("samples", "=5"):
        with pytest.raises(click.BadParameter):
            parse_params((bad,))


# ---------------------------------------------------------------- one-shot run


def test_run_prints_exactly_the_reference_result(tmp_path: Path) -> None:
    result = run_cli("run", "montecarlo", "-p", "samples=3000000", "-p", "seed=5", cwd=tmp_path, timeout=120)
    assert result.code == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.endswith("\n")
    assert result.json() == reference_result(3_000_000, 5)
    assert list(tmp_path.iterdir()) == []  # montecarlo has no output files


def test_run_with_bad_params_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("run", "montecarlo", "-p", "samples=-1", cwd=tmp_path, timeout=120), 2)


# ---------------------------------------------------------------- submit and friends


@pytest.mark.parametrize("args", [
    ("montecarlo", "-p", "samples=0"),
    ("montecarlo", "-p", "samples=lots"),
    ("montecarlo",),
    ("montecarlo", "-p", "samples=1000", "-p", "colour=blue"),
    ("nosuchkind",),
    ("nosuchkind", "-p", "samples=1000"),
])
def test_submit_with_bad_params_or_kind_exits_2_with_one_line(cluster: Cluster, args: tuple[str, ...]) -> None:
    result = cli(cluster, "submit", *args)
    assert_one_line_error(result, 2)
    assert result.stderr.startswith("rvidia: ")


def test_submit_with_a_malformed_pair_exits_2(cluster: Cluster) -> None:
    result = cli(cluster, "submit", "montecarlo", "-p", "samples")
    assert result.code == 2 and "Traceback" not in result.stderr and result.stdout == ""


def test_submit_without_wait_prints_the_job_id(cluster: Cluster) -> None:
    result = cli(cluster, "submit", "montecarlo", "-p", "samples=1000000", "-p", "seed=9")
    assert result.code == 0, result.stderr
    job_id = result.stdout.strip()
    assert result.stdout == job_id + "\n"
    view = cluster.wait_job(job_id)
    assert view["params"]["samples"] == 1_000_000 and view["params"]["seed"] == 9
    assert view["result"] == reference_result(1_000_000, 9)


def test_status_shows_one_job(cluster: Cluster, finished_job: str) -> None:
    plain = cli(cluster, "status", finished_job)
    assert plain.code == 0, plain.stderr
    assert finished_job in plain.stdout and "succeeded" in plain.stdout
    as_json = cli(cluster, "status", finished_job, "--json").json()
    assert as_json["id"] == finished_job and as_json["state"] == "succeeded"
    assert as_json["result"] == reference_result(2_000_000, 4)
    assert as_json["progress"]["done"] == as_json["progress"]["total"] == 2


def test_status_of_an_unknown_job_exits_2(cluster: Cluster) -> None:
    assert_one_line_error(cli(cluster, "status", "j-does-not-exist"), 2)


def test_jobs_workers_kinds_print_json(cluster: Cluster, finished_job: str) -> None:
    jobs = cli(cluster, "jobs", "--json").json()
    assert isinstance(jobs, list)
    mine = [j for j in jobs if j["id"] == finished_job]
    assert mine and mine[0]["state"] == "succeeded" and mine[0]["kind"] == "montecarlo"
    assert {"id", "kind", "state", "progress", "created_at"} <= set(mine[0])

    workers = cli(cluster, "workers", "--json").json()
    assert sorted(w["name"] for w in workers) == ["w1", "w2"]
    assert all(w["state"] in ("idle", "busy") and w["slots"] == 1 for w in workers)

    kinds = {k["name"]: k for k in cli(cluster, "kinds", "--json").json()}
    assert "montecarlo" in kinds
    schema = kinds["montecarlo"]["params"]
    assert "samples" in schema["properties"] and "samples" in schema["required"]


def test_tables_go_to_stdout_without_json(cluster: Cluster, finished_job: str) -> None:
    for command in ("jobs", "workers", "kinds"):
        result = cli(cluster, command)
        assert result.code == 0, result.stderr
        assert result.stdout.strip(), command
    assert finished_job in cli(cluster, "jobs").stdout  # whole, even on an 80-column pipe


def test_cancel_of_a_finished_job_exits_2(cluster: Cluster, finished_job: str) -> None:
    result = cli(cluster, "cancel", finished_job)
    assert_one_line_error(result, 2)
    assert "succeeded" in result.stderr
    assert cluster.job(finished_job)["state"] == "succeeded"


def test_cancel_of_a_running_job_exits_0(cluster: Cluster) -> None:
    job_id = cluster.submit("montecarlo", samples=10**11)
    result = cli(cluster, "cancel", job_id)
    assert result.code == 0, result.stderr
    assert result.stdout == "" and "cancelled" in result.stderr
    assert cluster.job(job_id)["state"] == "cancelled"
    failed = cli(cluster, "result", job_id)
    assert_one_line_error(failed, 1)  # the contract: 1 when the job was cancelled


def test_result_prints_the_result_and_writes_outputs(cluster: Cluster, finished_job: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli(cluster, "result", finished_job, "-o", str(out))
    assert result.code == 0, result.stderr
    assert result.json() == reference_result(2_000_000, 4)
    assert result.stdout == json.dumps(result.json(), separators=(",", ":")) + "\n"


# ---------------------------------------------------------------- REST errors


@pytest.mark.parametrize("body", [
    {"kind": "montecarlo", "params": {"samples": 0}},
    {"kind": "montecarlo", "params": {"samples": "many"}},
    {"kind": "montecarlo", "params": {}},
    {"kind": "montecarlo", "params": {"samples": 10, "unknown": 1}},
    {"kind": "montecarlo", "params": {"samples": 10**14}},
    {"kind": "montecarlo", "params": {"samples": 10, "chunk_samples": 1}},
    {"kind": "nosuchkind", "params": {}},
    {"params": {"samples": 10}},
    {"kind": "montecarlo", "params": {"samples": 10}, "inputs": {"data": "0" * 64}},
    {"kind": "montecarlo", "params": {"samples": 10}, "max_attempts": 0},
])
def test_rest_submit_with_bad_params_is_422_with_a_reason(cluster: Cluster, body: dict[str, Any]) -> None:
    response = cluster.api.post("/api/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and error and "Traceback" not in error


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'"montecarlo"'])
def test_rest_submit_with_a_malformed_body_is_a_4xx_json_error(cluster: Cluster, raw: bytes) -> None:
    response = cluster.api.post("/api/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert "Traceback" not in response.json()["error"]


def test_rest_unknown_ids_are_404(cluster: Cluster) -> None:
    for method, path in [("GET", "/api/v1/jobs/nope"), ("GET", "/api/v1/jobs/nope/chunks"),
                         ("POST", "/api/v1/jobs/nope/cancel"), ("GET", "/api/v1/blobs/" + "0" * 64)]:
        response = cluster.api.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert isinstance(response.json()["error"], str)
