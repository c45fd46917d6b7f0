"""Smoke test of ``benchmarks/engine.py``: RVIDIA's side of the engine benchmark in a tiny configuration.

It checks that every workload still runs and gives correct results (no-op and tiny results in order,
the arrays' first values, Monte Carlo pi's exact count of points inside) and that every figure is
positive. It never asserts a speed: CI machines are shared, so speed is for the benchmark itself.
It needs neither Dask nor Ray; ProcessPoolExecutor and the raw TCP limit are cheap, so they run too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repository root, for the benchmarks package
_saved_env = dict(os.environ)
from benchmarks import engine  # noqa: E402  (sets BLAS and PYTHONPATH variables for the benchmark)

os.environ.clear()  # the rest of the suite keeps the environment it had
os.environ.update(_saved_env)

pytestmark = pytest.mark.timeout(120)

SIZES = engine.TINY


@pytest.fixture(scope="module")
def rvidia_engine() -> Iterator[engine.RvidiaEngine]:
    rv = engine.RvidiaEngine()
    rv.start()
    try:
        rv.warm_up()
        yield rv
    finally:
        rv.stop()


def _positive(figures: dict[str, float]) -> None:
    assert figures, "no figures"
    for key, value in figures.items():
        assert value > 0, (key, value)


def test_rvidia_no_op_tasks(rvidia_engine: engine.RvidiaEngine) -> None:
    _positive(engine.bench_noop(rvidia_engine, SIZES))  # raises unless results are in order


def test_rvidia_round_trips(rvidia_engine: engine.RvidiaEngine) -> None:
    figures = engine.bench_round_trip(rvidia_engine, SIZES)
    _positive(figures)
    assert figures["p99_ms"] >= figures["p50_ms"]


def test_rvidia_array_arguments(rvidia_engine: engine.RvidiaEngine) -> None:
    arrays = engine._arrays(SIZES)
    assert len(arrays) == SIZES.arrays and arrays[0].nbytes == SIZES.array_mib << 20
    _positive(engine.bench_payload(rvidia_engine, SIZES, arrays))


def test_rvidia_monte_carlo_pi(rvidia_engine: engine.RvidiaEngine) -> None:
    inside, seconds = engine.single_process_pi(SIZES)
    assert 0.75 < inside / SIZES.pi_samples < 0.82  # pi/4
    _positive(engine.bench_pi(rvidia_engine, SIZES, (inside, seconds)))  # raises unless the count is exact


def test_raw_tcp_limit() -> None:
    figures = engine.bench_tcp(SIZES)
    _positive(figures)


def test_whole_run_and_report(tmp_path: Path) -> None:
    """The runner itself, as ``python benchmarks/engine.py`` drives it: table, targets, doc block."""
    before = set(engine._leftovers())  # the module's own cluster, if its fixture has started it
    results, meta = engine.run(SIZES, 1, ["rvidia", "ppe"], "abcde")
    assert results.errors == {}
    for name, metrics in (("rvidia", ["a_tasks_per_s", "b_p50_ms", "b_p99_ms", "c_mb_per_s", "d_speedup"]),
                          ("ppe", ["a_tasks_per_s", "b_p50_ms", "c_mb_per_s", "d_speedup"]),
                          ("tcp", ["e_mb_per_s", "e_p50_ms"])):
        for metric in metrics:
            value: Any = results.median(name, metric)
            assert value is not None and value > 0, (name, metric, value)
    text = engine.report(results, meta, ["rvidia", "ppe"], SIZES, 1, quick=True)
    assert "| ProcessPoolExecutor(2) |" in text and "| target (issue 6) |" in text
    assert "Load average" in text

    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written notes.\n")
    engine.write_doc(doc, text)
    engine.write_doc(doc, text)  # a second run replaces the block, keeps the notes
    written = doc.read_text()
    assert written.count(engine.BEGIN) == 1 and "Hand-written notes." in written
    assert set(engine._leftovers()) <= before, "the run left processes behind"
