"""Smoke test of the scale benchmarks' pieces: the scheduler simulation at a tiny size (correctness
only: every chunk decided once, the stage complete; never a speed)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.scheduler_sim import simulate  # noqa: E402


def test_scheduler_simulation_decides_every_chunk_once() -> None:
    for workers, slots in ((50, 1), (7, 3)):
        row = simulate(workers, 2_000, slots)
        assert row["chunks"] == 2_000 and row["decisions_per_s"] > 0 and row["events_per_s"] > 0
