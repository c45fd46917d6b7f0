"""Prometheus text exposition of the master's counters and gauges."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rvidia.master.runtime import Runtime


def render_metrics(rt: "Runtime") -> str:
    states = Counter(rt.worker_view(wid)["state"] for wid in rt.workers)
    job_states = Counter(job.row["state"] for job in rt.active.values())
    lines = [
        "# HELP rvidia_workers Workers known to the master, by state.",
        "# TYPE rvidia_workers gauge",
        *(f'rvidia_workers{{state="{s}"}} {states.get(s, 0)}' for s in ("idle", "busy", "paused", "lost")),
        "# HELP rvidia_slots Chunk slots offered by connected workers.",
        "# TYPE rvidia_slots gauge",
        f"rvidia_slots {sum(w.slots for w in rt.scheduler.workers.values())}",
        "# HELP rvidia_chunks_running Chunks running now.",
        "# TYPE rvidia_chunks_running gauge",
        f"rvidia_chunks_running {sum(len(w.running) for w in rt.scheduler.workers.values())}",
        "# HELP rvidia_active_jobs Jobs queued or running.",
        "# TYPE rvidia_active_jobs gauge",
        *(f'rvidia_active_jobs{{state="{s}"}} {job_states.get(s, 0)}' for s in ("queued", "running")),
        "# HELP rvidia_chunks_finished_total Chunk results accepted since the master started.",
        "# TYPE rvidia_chunks_finished_total counter",
        f"rvidia_chunks_finished_total {rt.chunks_finished}",
        "# HELP rvidia_chunks_failed_total Chunk attempts that failed since the master started.",
        "# TYPE rvidia_chunks_failed_total counter",
        f"rvidia_chunks_failed_total {rt.chunks_failed}",
    ]
    return "\n".join(lines) + "\n"
