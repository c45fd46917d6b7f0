"""Revoking a worker token disconnects the workers that joined with it, and keeps them out."""

from __future__ import annotations

import subprocess
import sys

import rvidia


def test_revoking_a_worker_token_disconnects_its_workers() -> None:
    with rvidia.LocalCluster(workers=0) as cluster:
        made = cluster.request("POST", "/api/v1/tokens", json={"role": "worker", "name": "lab"}).json()
        proc = subprocess.Popen([sys.executable, "-m", "rvidia", "worker", "--master", cluster.url,
                                 "--token", made["token"], "--slots", "1", "--name", "revocable"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            cluster.wait_for_workers(1, timeout=60)
            answer = cluster.request("DELETE", "/api/v1/tokens/lab").json()
            assert len(answer["disconnected_workers"]) == 1
            code = proc.wait(timeout=30)  # it tries again, is refused with 401 and gives up
            assert code == 3
            assert "refused the token" in proc.stderr.read()
            states = {w["name"]: w["state"] for w in cluster.workers()}
            assert states["revocable"] == "lost"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
