"""Authentication and roles against a real master: REST, /metrics, the worker WebSocket, the CLI."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from harness import (Cluster, Processes, assert_one_line_error, free_port, run_cli, start_worker,
                     wait_for_workers, wait_until)
from rvidia.addresses import ws_url

WRONG = "not-the-token-" + "x" * 30
GUARDED = [("GET", "/api/v1/jobs"), ("GET", "/api/v1/workers"), ("GET", "/api/v1/kinds"),
           ("GET", "/metrics"), ("POST", "/api/v1/jobs"), ("GET", "/api/v1/tokens")]


@pytest.fixture(scope="module")
def tokens(cluster: Cluster) -> dict[str, str]:
    """A user and a worker token, made with ``rvidia token create`` and the admin token."""
    made = {}
    for role in ("user", "worker"):
        result = run_cli("token", "create", "--role", role, "--name", f"it-{role}", "--master", cluster.url,
                         token=cluster.token)
        assert result.code == 0, result.stderr
        made[role] = result.stdout.strip()
        assert len(made[role]) >= 32 and "\n" not in made[role]
    return made


def _bare(cluster: Cluster) -> httpx.Client:
    return httpx.Client(base_url=cluster.url, timeout=30)


# ---------------------------------------------------------------- REST


@pytest.mark.parametrize("header", [None, f"Bearer {WRONG}", "Bearer", "Basic dXNlcjpwYXNz"])
def test_rest_refuses_a_missing_or_wrong_token_with_401_json(cluster: Cluster, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    with _bare(cluster) as http:
        for method, path in GUARDED:
            response = http.request(method, path, headers=headers, json={"kind": "montecarlo"}
                                    if method == "POST" else None)
            assert response.status_code == 401, (method, path, response.status_code)
            body = response.json()
            assert isinstance(body["error"], str) and body["error"], body
            assert "Traceback" not in response.text


def test_health_needs_no_token(cluster: Cluster) -> None:
    with _bare(cluster) as http:
        response = http.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and isinstance(body["version"], str)


def test_the_admin_token_works_and_its_file_is_private(cluster: Cluster) -> None:
    assert cluster.api.get("/api/v1/jobs").status_code == 200
    metrics = cluster.api.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    token_file = cluster.master.data_dir / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_a_wrong_token_does_not_lock_out_the_right_one(cluster: Cluster) -> None:
    with _bare(cluster) as http:
        for _ in range(20):
            assert http.get("/api/v1/jobs", headers={"Authorization": f"Bearer {WRONG}"}).status_code == 401
    assert cluster.api.get("/api/v1/jobs").status_code == 200


# ---------------------------------------------------------------- the worker WebSocket


@pytest.mark.parametrize("token", [None, WRONG])
def test_worker_socket_refuses_a_missing_or_wrong_token(cluster: Cluster, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with pytest.raises(InvalidStatus) as info:
        with ws_connect(ws_url(cluster.url, "/ws/worker"), additional_headers=headers, open_timeout=10):
            pass
    assert info.value.response.status_code == 401


def test_worker_socket_refuses_a_user_token(cluster: Cluster, tokens: dict[str, str]) -> None:
    with pytest.raises(InvalidStatus) as info:
        with ws_connect(ws_url(cluster.url, "/ws/worker"),
                        additional_headers={"Authorization": f"Bearer {tokens['user']}"}, open_timeout=10):
            pass
    assert info.value.response.status_code in (401, 403)


def test_a_worker_with_a_wrong_token_exits_3(cluster: Cluster, procs: Processes) -> None:
    proc = start_worker(procs, cluster.url, WRONG, "intruder")
    assert proc.wait(30) == 3
    assert "intruder" not in cluster.workers_by_name()


def test_a_worker_token_joins_as_a_worker(cluster: Cluster, procs: Processes, tokens: dict[str, str]) -> None:
    proc = start_worker(procs, cluster.url, tokens["worker"], "by-worker-token")
    wait_for_workers(cluster.api, ["by-worker-token"])
    procs.stop_all()
    assert proc.returncode == 0
    wait_until(lambda: cluster.workers_by_name()["by-worker-token"]["state"] == "lost", 15,
               message="the stopped worker to be listed as gone")


# ---------------------------------------------------------------- roles


def test_a_user_token_submits_views_and_cancels_but_makes_no_tokens(cluster: Cluster,
                                                                    tokens: dict[str, str]) -> None:
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {tokens['user']}"},
                      timeout=30) as user:
        submitted = user.post("/api/v1/jobs", json={"kind": "montecarlo", "params": {"samples": 1000}})
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["id"]
        assert user.get(f"/api/v1/jobs/{job_id}").status_code == 200
        assert user.get("/api/v1/workers").status_code == 200
        cancelled = user.post(f"/api/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code in (200, 409)  # 409 if the tiny job won the race

        for method, path, body in [("POST", "/api/v1/tokens", {"role": "user"}), ("GET", "/api/v1/tokens", None),
                                   ("DELETE", "/api/v1/tokens/it-worker", None)]:
            response = user.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.text)
            assert isinstance(response.json()["error"], str)

    result = run_cli("token", "create", "--role", "user", "--master", cluster.url, token=tokens["user"])
    assert_one_line_error(result, 2)


def test_a_worker_token_cannot_list_or_submit(cluster: Cluster, tokens: dict[str, str]) -> None:
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {tokens['worker']}"},
                      timeout=30) as worker:
        for method, path in [("GET", "/api/v1/jobs"), ("GET", "/api/v1/workers"), ("POST", "/api/v1/jobs")]:
            response = worker.request(method, path, json={"kind": "montecarlo", "params": {"samples": 10}}
                                      if method == "POST" else None)
            assert response.status_code == 403, (method, path, response.text)
            assert isinstance(response.json()["error"], str)
    result = run_cli("jobs", "--master", cluster.url, token=tokens["worker"])
    assert_one_line_error(result, 2)


def test_a_revoked_token_is_refused(cluster: Cluster) -> None:
    made = run_cli("token", "create", "--role", "user", "--name", "it-short-lived", "--master", cluster.url,
                   token=cluster.token)
    assert made.code == 0, made.stderr
    token = made.stdout.strip()
    assert run_cli("jobs", "--json", "--master", cluster.url, token=token).code == 0
    revoked = run_cli("token", "revoke", "it-short-lived", "--master", cluster.url, token=cluster.token)
    assert revoked.code == 0, revoked.stderr
    assert_one_line_error(run_cli("jobs", "--master", cluster.url, token=token), 3)


# ---------------------------------------------------------------- the command line


def test_cli_with_a_wrong_token_exits_3(cluster: Cluster) -> None:
    result = run_cli("jobs", "--master", cluster.url, "--token", WRONG)
    assert_one_line_error(result, 3)
    assert "token" in result.stderr


def test_cli_against_a_closed_port_exits_3(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_cli("jobs", "--master", f"http://127.0.0.1:{free_port()}", "--token", WRONG, cwd=tmp_path)
    assert_one_line_error(result, 3)
    assert time.monotonic() - started < 30, "an unreachable master should fail fast"
