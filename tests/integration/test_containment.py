"""Containment end to end: real ``rvidia worker --isolation bwrap|docker`` processes run real jobs.

Sandboxed chunks have no network, so a compress job (ranged reads of its input, result blobs
uploaded) works only through the agent; the results must be exact. A worker killed with -9 takes its
sandboxed chunk processes (and containers) with it. Without bubblewrap the default is no sandbox, said
in one warning line; an isolation that cannot work is exit 2 with the reason.
"""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness import Master, Processes, clean_env, kill9, reference_result, start_worker, wait_for_workers, wait_until
from rvidia.worker import sandbox

pytestmark = pytest.mark.timeout(180)


def _require(isolation: str) -> None:
    if isolation == "bwrap":
        unshare, reason = sandbox.probe_bwrap()
        ok = unshare is not None
    else:
        from rvidia.worker import dockerbox

        try:
            dockerbox.check(dockerbox.DEFAULT_IMAGE)
            ok, reason = True, ""
        except sandbox.SandboxUnavailable as exc:
            ok, reason = False, str(exc)
    if not ok:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the containment tests: {reason}")
        pytest.skip(reason)


@pytest.fixture(params=["bwrap", "docker"])
def isolation(request: pytest.FixtureRequest) -> str:
    _require(request.param)
    return str(request.param)


def _data(size: int) -> bytes:
    rng = random.Random(5)
    parts = [rng.randbytes(3000) if rng.random() < 0.5 else b"contained %d " % rng.randrange(50) * 200
             for _ in range(size // 2000 + 1)]
    return b"".join(parts)[:size]


def test_montecarlo_and_compress_are_exact_in_a_sandbox(procs: Processes, tmp_path: Path, isolation: str) -> None:
    master = Master(procs, tmp_path / "data").start()
    api = master.client()
    worker = start_worker(procs, master.url, master.token, "boxed", slots=2, extra=("--isolation", isolation))
    wait_for_workers(api, ["boxed"])
    tree = " ".join(" ".join(p.cmdline()) for p in psutil.Process(worker.pid).children(recursive=True))
    assert ("bwrap --die-with-parent" if isolation == "bwrap" else "docker run -i") in tree

    job = api.post("/api/v1/jobs", json={"kind": "montecarlo",
                                         "params": {"samples": 3_000_000, "seed": 7, "chunk_samples": 500_000}})
    assert job.status_code == 201, job.text
    data = _data(700_000)
    blob = api.post("/api/v1/blobs", content=data).json()["id"]
    packed = api.post("/api/v1/jobs", json={"kind": "compress", "inputs": {"data": blob},
                                            "params": {"block_size": 65536}})
    assert packed.status_code == 201, packed.text

    def ended(job_id: str) -> dict | None:
        view = api.get(f"/api/v1/jobs/{job_id}").json()
        return view if view["state"] in ("succeeded", "failed", "cancelled") else None

    done = wait_until(lambda: ended(job.json()["id"]), 120, message="the montecarlo job")
    assert done["state"] == "succeeded", done["error"]
    assert done["result"] == reference_result(3_000_000, 7, 500_000)
    done = wait_until(lambda: ended(packed.json()["id"]), 120, message="the compress job")
    assert done["state"] == "succeeded", done["error"]
    gz = api.get(f"/api/v1/blobs/{done['outputs']['data.gz']}").content
    (tmp_path / "data.gz").write_bytes(gz)
    assert subprocess.run(["gzip", "-dc", str(tmp_path / "data.gz")], capture_output=True, check=True).stdout == data
    assert gzip.decompress(gz) == data


def test_sandboxed_chunk_processes_die_with_a_killed_worker(procs: Processes, tmp_path: Path, isolation: str) -> None:
    master = Master(procs, tmp_path / "data").start()
    api = master.client()
    worker = start_worker(procs, master.url, master.token, "doomed", slots=1, extra=("--isolation", isolation))
    wait_for_workers(api, ["doomed"])
    job = api.post("/api/v1/jobs", json={"kind": "montecarlo",
                                         "params": {"samples": 10**11, "chunk_samples": 10**10}})
    assert job.status_code == 201, job.text
    wait_until(lambda: api.get(f"/api/v1/jobs/{job.json()['id']}").json()["progress"]["running"], 60,
               message="a running chunk")
    below = psutil.Process(worker.pid).children(recursive=True)
    assert below
    kill9(worker)

    def gone() -> bool:
        alive = [p for p in below if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        return not alive

    wait_until(gone, 30, message="the chunk processes to die with the worker")
    if isolation == "docker":
        def no_containers() -> bool:
            ps = subprocess.run(["docker", "ps", "-q", "--filter", f"name=rvidia-chunk-{worker.pid}-"],
                                capture_output=True, text=True)
            return ps.returncode == 0 and not ps.stdout.strip()

        wait_until(no_containers, 30, message="the chunk containers to go")


def test_without_bubblewrap_the_default_is_no_sandbox_with_one_warning(procs: Processes, tmp_path: Path) -> None:
    master = Master(procs, tmp_path / "data").start()
    env = clean_env(RVIDIA_TOKEN=master.token, PATH="/nonexistent")  # no bwrap to be found
    proc = subprocess.Popen([sys.executable, "-m", "rvidia", "worker", "--master", master.url, "--name", "plain",
                             "--no-owner-first"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    procs.procs.append(proc)  # type: ignore[arg-type]
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("rvidia worker: warning: bubblewrap (bwrap) is not installed"), first
    assert "--isolation none" in first
    wait_for_workers(master.client(), ["plain"])


def test_an_isolation_that_cannot_work_is_exit_2_with_the_reason(tmp_path: Path) -> None:
    env = clean_env(RVIDIA_TOKEN="t", PATH="/nonexistent")
    for args, reason in ((["--isolation", "bwrap"], "bubblewrap"), (["--isolation", "docker"], "docker")):
        done = subprocess.run([sys.executable, "-m", "rvidia", "worker", "--master", "http://127.0.0.1:9", *args],
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and reason in done.stderr and "Traceback" not in done.stderr
