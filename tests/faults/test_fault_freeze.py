"""A worker agent frozen with SIGSTOP: its socket stays open but it sends nothing, not even heartbeats.

The master must declare it ``lost`` after ``--worker-timeout`` (not wait for a socket that never
closes) and run its chunks on the other worker. When SIGCONT wakes it while the job still runs, what
it sends about its old chunks is late and must be ignored; it reconnects by itself under its old id,
is shown idle or busy again and takes chunks again. Results stay exact.

The job is a ``map`` of a function that mostly sleeps: it lasts long enough for the freeze, the loss
and the wake-up to all happen while it runs, whatever the machine's speed, without loading its cores.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

import faultkit as fk
import rvidia
from harness import Cluster, Master, Processes, start_worker, wait_for_workers, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKER_TIMEOUT = 2.0
ITEMS = list(range(400))
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this module


def _slow_square(x: int) -> int:
    time.sleep(0.03)
    return x * x


def test_a_frozen_worker_is_lost_its_chunks_rerun_and_it_rejoins(procs: Processes, tmp_path: Path) -> None:
    master = Master(procs, tmp_path / "data", extra=["--worker-timeout", str(WORKER_TIMEOUT)]).start()
    workers = {name: start_worker(procs, master.url, master.token, name, extra=("--allow-code",))
               for name in ("w1", "w2")}
    before = wait_for_workers(master.client(), ["w1", "w2"])
    cluster = Cluster(master, procs, workers, master.client())
    w1, w2 = before["w1"]["id"], before["w2"]["id"]
    frozen = workers["w1"]

    with rvidia.connect(master.url, token=master.token) as client:
        job = client.map(_slow_square, ITEMS, chunksize=1)
        assert fk.wait_progress(cluster, job.id, 0.05), "the job ended before the freeze"
        wait_until(lambda: cluster.workers_by_name()["w1"]["running"] > 0, 10, interval=0.02,
                   message="w1 to hold a chunk")

        frozen.send_signal(signal.SIGSTOP)  # the agent only: its chunk processes go on, unheard
        stopped_at = time.monotonic()
        held = {c["index"]: c["attempts"] for c in cluster.chunks(job.id)
                if c["state"] == "running" and c["worker"] == w1}
        try:
            wait_until(lambda: fk.worker_state(cluster, "w1") == "lost", WORKER_TIMEOUT + 10, interval=0.05,
                       message="the frozen worker to be declared lost")
            lost_after = time.monotonic() - stopped_at
            assert lost_after >= WORKER_TIMEOUT * 0.8, f"declared lost after only {lost_after:.1f} s"
            done_at_loss = fk.progress(cluster, job.id)[1]
            wait_until(lambda: fk.progress(cluster, job.id)[1] > done_at_loss + 5, 20,
                       message="w2 to carry on alone")
        finally:
            frozen.send_signal(signal.SIGCONT)
        assert cluster.job(job.id)["state"] == "running", "the job should still run when w1 wakes"

        wait_until(lambda: fk.worker_state(cluster, "w1") in ("idle", "busy"), 30,
                   message="the woken worker to rejoin")
        assert cluster.workers_by_name()["w1"]["id"] == w1, "it rejoins under its old id"
        assert job.result(timeout=90) == [x * x for x in ITEMS]
    assert frozen.poll() is None

    view = cluster.job(job.id)
    assert view["state"] == "succeeded" and sum(view["workers"].values()) == len(ITEMS), view["workers"]
    assert view["workers"].get(w2, 0) > 0
    assert view["workers"].get(w1, 0) > 0, "the rejoined worker took chunks of the running job again"
    # What the frozen worker computed for the chunks it held was dropped: another attempt won each.
    chunks = {c["index"]: c for c in cluster.chunks(job.id)}
    assert len(chunks) == len(ITEMS) and all(c["state"] == "done" for c in chunks.values())
    assert held, "w1 held no chunk when it froze"
    late = [i for i, attempt in held.items() if (chunks[i]["worker"], chunks[i]["attempts"]) == (w1, attempt)]
    assert not late, f"late results of the frozen worker were accepted for chunks {late}"
    wait_until(lambda: all(w["state"] == "idle" for w in cluster.workers_by_name().values()), 15,
               message="both workers idle after the job")
