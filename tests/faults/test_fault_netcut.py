"""A real network cut between one worker and the master, and its healing.

The test builds its own little network (root only): a network namespace and a veth pair in a private
/30 (10.213.0.x by default), the master listening on the host side's address, one worker ("far")
inside the namespace and one ("near") on the host. iptables then drops every packet on the veth, both
ways: no FIN, no RST, just silence, as when a cable is pulled. The master must declare "far" lost
after ``--worker-timeout``, run its chunks on "near" (the result exact), and take "far" back under its
old id once the rules are removed. Nothing outside the namespace and loopback is ever contacted;
namespace, veth and rules are removed afterwards even when the test fails.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

import faultkit as fk
from harness import Cluster, Master, Processes, clean_env, start_worker, stop, wait_for_workers, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

WORKER_TIMEOUT = 3.0
SUBNETS = [f"10.213.{i}.0/30" for i in range(0, 8)]


@dataclass
class Netns:
    """A namespace joined to the host by a veth pair; ``cut()``/``heal()`` drop or pass its packets."""

    name: str
    host_if: str
    host_ip: str
    inner_ip: str
    log_dir: Path
    rules: list[list[str]] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def spawn(self, args: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[str]:
        """``python -m rvidia ARGS`` inside the namespace."""
        log = open(self.log_dir / f"{log_name}.log", "a")
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, sys.executable, "-m", "rvidia", *args],
                                env=env, text=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def cut(self) -> None:
        for rule in (["INPUT", "-i", self.host_if, "-j", "DROP"], ["OUTPUT", "-o", self.host_if, "-j", "DROP"]):
            fk.sh("iptables", "-I", *rule)
            self.rules.append(rule)

    def heal(self) -> None:
        while self.rules:
            fk.sh("iptables", "-D", *self.rules.pop(), check=False)

    def close(self) -> None:
        self.heal()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            stop(proc, timeout=5)
        fk.sh("ip", "link", "del", self.host_if, check=False)  # its peer goes with it
        fk.sh("ip", "netns", "del", self.name, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """The first candidate /30 no interface of this host uses (a leftover must not be touched)."""
    used = fk.sh("ip", "-o", "-4", "addr", "show").stdout
    for text in SUBNETS:
        net = ipaddress.ip_network(text)
        if not any(str(host) in used for host in net.hosts()):
            return net
    pytest.fail(f"every candidate subnet ({SUBNETS[0]}...) is in use on this host")


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Netns]:
    fk.need_root("a network cut (ip netns, veth, iptables)")
    fk.need_tools("ip", "iptables")
    tag = f"{os.getpid() % 100000}"
    net = _free_subnet()
    host_ip, inner_ip = (str(h) for h in net.hosts())
    made = Netns(f"rvft{tag}", f"rvh{tag}", host_ip, inner_ip, tmp_path)
    try:
        fk.sh("ip", "netns", "add", made.name)
        fk.sh("ip", "link", "add", made.host_if, "type", "veth", "peer", "name", f"rvn{tag}")
        fk.sh("ip", "link", "set", f"rvn{tag}", "netns", made.name)
        fk.sh("ip", "addr", "add", f"{host_ip}/30", "dev", made.host_if)
        fk.sh("ip", "link", "set", made.host_if, "up")
        inside = ["ip", "netns", "exec", made.name]
        fk.sh(*inside, "ip", "addr", "add", f"{inner_ip}/30", "dev", f"rvn{tag}")
        fk.sh(*inside, "ip", "link", "set", f"rvn{tag}", "up")
        fk.sh(*inside, "ip", "link", "set", "lo", "up")
        yield made
    finally:
        made.close()


def test_a_cut_worker_is_lost_its_chunks_rerun_and_it_rejoins_after_healing(
        procs: Processes, netns: Netns, tmp_path: Path) -> None:
    master = Master(procs, tmp_path / "data", host=netns.host_ip,
                    extra=["--worker-timeout", str(WORKER_TIMEOUT), "--no-advertise"]).start()
    assert master.url.startswith(f"http://{netns.host_ip}:")
    api = master.client()
    near = start_worker(procs, master.url, master.token, "near")
    netns.spawn(["worker", "--master", master.url, "--slots", "1", "--name", "far", "--grace", "1",
                 "--no-owner-first"], clean_env(RVIDIA_TOKEN=master.token), "worker-far")
    rows = wait_for_workers(api, ["near", "far"], timeout=60)
    cluster = Cluster(master, procs, {"near": near}, api)
    far_id, near_id = rows["far"]["id"], rows["near"]["id"]

    case = fk.montecarlo(samples=48_000_000, seed=31)
    job_id = case.submit(cluster)
    assert fk.wait_progress(cluster, job_id, 0.1), "the job ended before the cut"
    wait_until(lambda: cluster.workers_by_name()["far"]["running"] > 0, 10, interval=0.02,
               message="far to hold a chunk")

    netns.cut()
    cut_at = time.monotonic()
    held = {c["index"]: c["attempts"] for c in cluster.chunks(job_id)
            if c["state"] == "running" and c["worker"] == far_id}
    wait_until(lambda: fk.worker_state(cluster, "far") == "lost", WORKER_TIMEOUT + 10, interval=0.05,
               message="the cut-off worker to be declared lost")
    lost_after = time.monotonic() - cut_at
    assert lost_after >= WORKER_TIMEOUT * 0.8, f"declared lost after only {lost_after:.1f} s"

    view = cluster.wait_job(job_id, timeout=90)  # near alone finishes it, far's chunks included
    fk.assert_exact(cluster, job_id, case, view)
    assert view["workers"].get(near_id, 0) > 0
    chunks = {c["index"]: c for c in cluster.chunks(job_id)}
    assert held, "far held no chunk when it was cut off"
    won = [i for i, attempt in held.items() if (chunks[i]["worker"], chunks[i]["attempts"]) == (far_id, attempt)]
    assert not won, f"results from behind the cut were accepted for chunks {won}"

    netns.heal()
    wait_until(lambda: fk.worker_state(cluster, "far") in ("idle", "busy"), 60, interval=0.2,
               message="the healed worker to rejoin")
    assert cluster.workers_by_name()["far"]["id"] == far_id, "it rejoins under its old id"
    again = fk.montecarlo(samples=8_000_000, seed=32, chunk_samples=50_000)
    second = again.submit(cluster)
    view = cluster.wait_job(second, timeout=60)
    fk.assert_exact(cluster, second, again, view)
    assert view["workers"].get(far_id, 0) > 0, f"far ran nothing after rejoining: {view['workers']}"
