"""The montecarlo kind: parameter checks, chunking, and results equal to a direct computation."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from rvidia.kinds import montecarlo
from rvidia.kinds.base import Done, JobContext, ParamError, RunContext
from rvidia.kinds.montecarlo import KIND, count_inside
from rvidia.kinds.registry import get_kind


class NoInputs:
    def names(self) -> list[str]:
        return []

    def blob_id(self, name: str) -> str:
        raise KeyError(name)

    def size(self, name: str) -> int:
        raise KeyError(name)

    def open(self, name: str) -> io.BytesIO:
        raise KeyError(name)


class NoOutputs:
    def write(self, name: str, parts: Any) -> str:
        raise AssertionError("montecarlo writes no outputs")


def context(**params: Any) -> JobContext:
    ctx = JobContext(job_id="jtest", params=KIND.parse_params(params), inputs=NoInputs(), outputs=NoOutputs(),
                     results=lambda: iter(()))
    ctx.state = KIND.plan(ctx).state
    return ctx


def run_ctx(index: int) -> RunContext:
    return RunContext(job_id="jtest", stage=0, index=index, input_paths={}, cache={})


def direct_inside(seed: int, samples: int, chunk: int) -> int:
    """The reference: each chunk's own PCG64 stream, x then y, points with x^2 + y^2 <= 1."""
    inside = 0
    for i in range(-(-samples // chunk)):
        n = min(chunk, samples - i * chunk)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(i,))))
        x, y = rng.random(n), rng.random(n)
        inside += int(np.count_nonzero(x * x + y * y <= 1.0))
    return inside


def execute(ctx: JobContext, order: list[int] | None = None) -> Done:
    """Plan, run every chunk (in ``order``), merge as results arrive, finish."""
    plan = KIND.plan(ctx)
    indices = order if order is not None else list(range(plan.n_chunks))
    assert sorted(indices) == list(range(plan.n_chunks))
    acc = KIND.new_acc(ctx)
    for index in indices:
        result = KIND.run(ctx.params, KIND.chunk(ctx, index), run_ctx(index))
        acc = KIND.merge(ctx, acc, index, result)
    done = KIND.finish_stage(ctx, acc)
    assert isinstance(done, Done)
    return done


# ---------------------------------------------------------------- parameters


def test_registered_with_a_schema() -> None:
    assert get_kind("montecarlo") is KIND
    schema = KIND.schema()
    assert schema["required"] == ["samples"] and schema["additionalProperties"] is False
    assert schema["properties"]["chunk_samples"]["default"] == 1_000_000
    assert schema["x-inputs"] == {"required": [], "optional": []}


def test_defaults() -> None:
    p = KIND.parse_params({"samples": 10})
    assert (p.samples, p.seed, p.chunk_samples) == (10, 0, 1_000_000)


@pytest.mark.parametrize("params", [
    {"samples": 1}, {"samples": 10**13}, {"samples": 5, "seed": 2**40, "chunk_samples": 1000},
    {"samples": 5, "chunk_samples": 10**10},
], ids=repr)
def test_valid_boundaries(params: dict[str, Any]) -> None:
    KIND.parse_params(params)


@pytest.mark.parametrize("params, field", [
    ({"samples": 0}, "samples"), ({"samples": -5}, "samples"), ({"samples": 10**13 + 1}, "samples"),
    ({}, "samples"), ({"samples": "lots"}, "samples"), ({"samples": True}, "samples"), ({"samples": 1.5}, "samples"),
    ({"samples": 10, "seed": -1}, "seed"), ({"samples": 10, "chunk_samples": 999}, "chunk_samples"),
    ({"samples": 10, "chunk_samples": 10**10 + 1}, "chunk_samples"), ({"samples": 10, "sampels": 10}, "sampels"),
    ({"samples": 10, "workers": 4}, "workers"),
], ids=repr)
def test_invalid_params_give_param_error_with_reason(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ParamError) as info:
        KIND.parse_params(params)
    reason = str(info.value)
    assert reason.startswith("invalid parameters for montecarlo: ")
    assert field in reason and "\n" not in reason


# ---------------------------------------------------------------- planning


@pytest.mark.parametrize("samples, chunk, n_chunks", [
    (1, 1000, 1), (999, 1000, 1), (1000, 1000, 1), (1001, 1000, 2), (3000, 1000, 3), (2500, 1000, 3),
    (10**6, 10**6, 1), (10**13, 10**10, 1000), (10**13, 1000, 10**10),
])
def test_plan_chunk_counts(samples: int, chunk: int, n_chunks: int) -> None:
    ctx = context(samples=samples, chunk_samples=chunk)
    assert KIND.plan(ctx).n_chunks == n_chunks


@pytest.mark.parametrize("samples, chunk", [(2500, 1000), (3000, 1000), (1, 1000), (10**13, 10**10 - 7)])
def test_chunk_payloads_cover_samples_exactly(samples: int, chunk: int) -> None:
    ctx = context(samples=samples, chunk_samples=chunk)
    n = KIND.plan(ctx).n_chunks
    sizes = []
    for index in range(n):
        i, size = msgspec.msgpack.decode(KIND.chunk(ctx, index), type=tuple[int, int])
        assert i == index and 1 <= size <= chunk
        sizes.append(size)
    assert sum(sizes) == samples
    assert all(s == chunk for s in sizes[:-1])


def test_chunk_payloads_are_deterministic() -> None:
    a, b = context(samples=2500, chunk_samples=1000), context(samples=2500, chunk_samples=1000)
    assert [KIND.chunk(a, i) for i in range(3)] == [KIND.chunk(b, i) for i in range(3)]
    assert msgspec.msgpack.decode(KIND.chunk(a, 2)) == [2, 500]


def test_requirement_needs_no_code() -> None:
    assert not KIND.requirement(KIND.parse_params({"samples": 1})).needs_code


# ---------------------------------------------------------------- running and merging


@pytest.mark.parametrize("seed, samples, chunk", [(0, 3000, 1000), (7, 2500, 1000), (123, 1, 1000),
                                                  (2**32 + 5, 10_000, 3000)])
def test_result_equals_direct_computation(seed: int, samples: int, chunk: int) -> None:
    done = execute(context(samples=samples, chunk_samples=chunk, seed=seed))
    inside = direct_inside(seed, samples, chunk)
    assert done.result == {"pi": 4.0 * inside / samples, "samples": samples, "inside": inside}
    assert done.outputs == {}


def test_run_result_is_msgpack_int_of_count_inside() -> None:
    ctx = context(samples=2500, chunk_samples=1000, seed=9)
    for index in range(3):
        raw = KIND.run(ctx.params, KIND.chunk(ctx, index), run_ctx(index))
        n = 500 if index == 2 else 1000
        assert msgspec.msgpack.decode(raw, type=int) == count_inside(9, index, n) == direct_inside_one(9, index, n)


def direct_inside_one(seed: int, index: int, n: int) -> int:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))
    x, y = rng.random(n), rng.random(n)
    return int(np.count_nonzero(x * x + y * y <= 1.0))


def test_independent_of_execution_order() -> None:
    ctx = context(samples=20_000, chunk_samples=1000, seed=3)
    first = execute(ctx)
    rng = random.Random(5)
    for _ in range(5):
        order = list(range(20))
        rng.shuffle(order)
        assert execute(context(samples=20_000, chunk_samples=1000, seed=3), order).result == first.result


def test_merge_folds_results_in_any_order() -> None:
    ctx = context(samples=5000, chunk_samples=1000)
    results = {i: msgspec.msgpack.encode(v) for i, v in enumerate([10, 20, 30, 40, 50])}
    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        acc = KIND.new_acc(ctx)
        for i in order:
            acc = KIND.merge(ctx, acc, i, results[i])
        assert acc == 150
        assert KIND.finish_stage(ctx, acc).result == {"pi": 4.0 * 150 / 5000, "samples": 5000, "inside": 150}


def test_merge_refuses_a_result_that_is_not_an_int() -> None:
    ctx = context(samples=5000, chunk_samples=1000)
    with pytest.raises(msgspec.ValidationError):
        KIND.merge(ctx, 0, 0, msgspec.msgpack.encode("ten"))


def test_chunk_streams_differ_by_index_and_seed() -> None:
    counts = {count_inside(seed, index, 1000) for seed in (0, 1) for index in range(4)}
    assert len(counts) > 4  # not one stream reused
    assert count_inside(0, 0, 1000) == count_inside(0, 0, 1000)


def test_batched_drawing_matches_a_direct_batched_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(montecarlo, "_BATCH", 7)
    seed, index, n = 11, 2, 30
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))
    inside = 0
    for start in range(0, n, 7):
        m = min(7, n - start)
        x, y = rng.random(m), rng.random(m)
        inside += int(np.count_nonzero(x * x + y * y <= 1.0))
    assert count_inside(seed, index, n) == inside


def test_estimate_is_close_to_pi() -> None:
    done = execute(context(samples=2_000_000, chunk_samples=500_000, seed=1))
    assert abs(done.result["pi"] - np.pi) < 0.005  # about 4 standard deviations


def test_run_does_not_touch_the_run_context(tmp_path: Path) -> None:
    ctx = context(samples=1000, chunk_samples=1000)
    rc = RunContext(job_id="other", stage=5, index=99, input_paths={"x": tmp_path / "missing"}, cache={})
    assert KIND.run(ctx.params, KIND.chunk(ctx, 0), rc) == KIND.run(ctx.params, KIND.chunk(ctx, 0), run_ctx(0))
    assert rc.cache == {}
