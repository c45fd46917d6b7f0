"""The map kind: parameters, slicing the items blob, running a real function file, decoding results."""

from __future__ import annotations

import hashlib
import io
import random
import sys
from pathlib import Path
from typing import Any, Callable

import msgspec
import numpy as np
import pytest

from rvidia.client.mapjob import pack_map
from rvidia.core.events import Requirement
from rvidia.kinds.base import Done, JobContext, ParamError, RunContext
from rvidia.kinds.map import KIND, decode_results
from rvidia.kinds.registry import get_kind
from rvidia.protocol.values import PickledResultRefused

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"


class Blobs:
    """In-memory stand-ins for a job's inputs and outputs on the master."""

    def __init__(self, inputs: dict[str, bytes]) -> None:
        self.data = {name: data for name, data in inputs.items()}
        self.written: dict[str, bytes] = {}
        self.opened: list[str] = []

    # Inputs
    def names(self) -> list[str]:
        return list(self.data)

    def blob_id(self, name: str) -> str:
        return hashlib.sha256(self.data[name]).hexdigest()

    def size(self, name: str) -> int:
        return len(self.data[name])

    def open(self, name: str) -> io.BytesIO:
        self.opened.append(name)
        return io.BytesIO(self.data[name])

    # Outputs
    def write(self, name: str, parts: Any) -> str:
        data = b"".join(parts)
        self.written[name] = data
        return hashlib.sha256(data).hexdigest()


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


def make_job(fn: Callable[..., Any], items: list[Any], chunksize: int, tmp_path: Path,
             **params: Any) -> tuple[JobContext, Blobs, Path]:
    fn_blob, items_blob = pack_map(fn, items, chunksize)
    blobs = Blobs({"function": fn_blob, "items": items_blob})
    fn_path = tmp_path / f"fn-{hashlib.sha256(fn_blob).hexdigest()[:12]}.pkl"
    fn_path.write_bytes(fn_blob)
    ctx = JobContext(job_id="jmap", params=KIND.parse_params({"python": PY, "items": len(items), **params}),
                     inputs=blobs, outputs=blobs, results=lambda: iter(()))
    return ctx, blobs, fn_path


def run_ctx(fn_path: Path, index: int = 0, cache: dict[Any, Any] | None = None) -> RunContext:
    return RunContext(job_id="jmap", stage=0, index=index, input_paths={"function": fn_path},
                      cache={} if cache is None else cache)


def execute(ctx: JobContext, blobs: Blobs, fn_path: Path, order: list[int] | None = None) -> Done:
    """What master and workers do together: plan, run chunks (any order), store, finish."""
    KIND.check(ctx)
    n = KIND.plan(ctx).n_chunks
    stored: dict[int, bytes] = {}
    cache: dict[Any, Any] = {}
    for index in order if order is not None else range(n):
        stored[index] = KIND.run(ctx.params, KIND.chunk(ctx, index), run_ctx(fn_path, index, cache))
    ctx.results = lambda: iter(sorted(stored.items()))  # the store yields index order
    done = KIND.finish_stage(ctx, KIND.new_acc(ctx))
    assert isinstance(done, Done)
    return done


# ---------------------------------------------------------------- parameters


def test_registered_hidden_with_inputs() -> None:
    assert get_kind("map") is KIND
    assert KIND.hidden and KIND.inputs == ("items",) and KIND.optional_inputs == ("function",)
    assert "python" in KIND.schema()["required"]


def test_defaults_and_requirement() -> None:
    p = KIND.parse_params({"python": "3.12"})
    assert (p.items, p.star, p.allow_pickle_results) == (0, False, False)
    assert KIND.requirement(p) == Requirement(needs_code=True, python="3.12")


@pytest.mark.parametrize("params, field", [
    ({}, "python"), ({"python": "3"}, "python"), ({"python": "3.11.2"}, "python"), ({"python": "three"}, "python"),
    ({"python": 3.11}, "python"), ({"python": "3.11", "items": -1}, "items"), ({"python": "3.11", "star": [1]}, "star"),
    ({"python": "3.11", "function": "x"}, "function"),
], ids=repr)
def test_invalid_params(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ParamError, match=rf"^invalid parameters for map: .*{field}"):
        KIND.parse_params(params)


# ---------------------------------------------------------------- master side


@pytest.mark.parametrize("n_items, chunksize, n_chunks", [(10, 3, 4), (9, 3, 3), (1, 5, 1), (0, 4, 0), (7, 1, 7)])
def test_plan_and_chunks_slice_the_items_blob(tmp_path: Path, n_items: int, chunksize: int, n_chunks: int) -> None:
    ctx, blobs, _ = make_job(lambda x: x, list(range(n_items)), chunksize, tmp_path)
    KIND.check(ctx)
    assert KIND.plan(ctx).n_chunks == n_chunks
    batches = msgspec.msgpack.decode(blobs.data["items"], type=list[bytes])
    for index in range(n_chunks):
        assert KIND.chunk(ctx, index) == batches[index]  # passed through, never unpickled
        assert KIND.chunk_inputs(ctx, index) == {"function": blobs.blob_id("function")}
    assert blobs.opened == ["items"]  # read once per job, then cached


@pytest.mark.parametrize("items_blob", [b"", b"\xc1", msgspec.msgpack.encode([1, 2]),
                                        msgspec.msgpack.encode({"a": b"x"}), b"not msgpack at all"])
def test_check_rejects_a_bad_items_blob(items_blob: bytes) -> None:
    blobs = Blobs({"function": b"f", "items": items_blob})
    ctx = JobContext(job_id="j", params=KIND.parse_params({"python": PY}), inputs=blobs, outputs=blobs,
                     results=lambda: iter(()))
    with pytest.raises(ParamError, match="msgpack list of pickled batches"):
        KIND.check(ctx)


def test_master_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    ctx, blobs, _ = make_job(lambda x: x, [1, 2, 3], 2, tmp_path)

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the master unpickled something")

    monkeypatch.setattr(pickle, "loads", forbidden)
    KIND.check(ctx)
    KIND.plan(ctx)
    KIND.chunk(ctx, 1)
    ctx.results = lambda: iter([(0, b"\x90"), (1, b"\x90")])
    KIND.finish_stage(ctx, None)


# ---------------------------------------------------------------- worker side


def test_run_applies_a_real_function_file(tmp_path: Path) -> None:
    offset = 100
    ctx, _, fn_path = make_job(lambda x: x * x + offset, [1, 2, 3, 4, 5], 2, tmp_path)
    raw = KIND.run(ctx.params, KIND.chunk(ctx, 1), run_ctx(fn_path, 1))
    assert decode_results(msgspec.msgpack.encode([raw])) == [109, 116]


def test_star_items(tmp_path: Path) -> None:
    items = [((1, 2), {}), ((3,), {"b": 10}), ((), {"a": 5, "b": 6})]
    ctx, blobs, fn_path = make_job(lambda a, b=1: (a, b, a * b), items, 2, tmp_path, star=True)
    done = execute(ctx, blobs, fn_path)
    assert decode_results(blobs.written["results"]) == [(1, 2, 2), (3, 10, 30), (5, 6, 30)]
    assert done.result == {"items": 3, "chunks": 2}


def test_function_is_cached_per_process_and_replaced_per_job(tmp_path: Path) -> None:
    cache: dict[Any, Any] = {}
    ctx, _, fn_path = make_job(lambda x: x + 1, [1, 2], 1, tmp_path)
    KIND.run(ctx.params, KIND.chunk(ctx, 0), run_ctx(fn_path, 0, cache))
    fn_path.unlink()  # the second chunk of the same job runs from the cache
    raw = KIND.run(ctx.params, KIND.chunk(ctx, 1), run_ctx(fn_path, 1, cache))
    assert decode_results(msgspec.msgpack.encode([raw])) == [3]
    other, _, other_path = make_job(lambda x: -x, [4], 1, tmp_path)
    raw = KIND.run(other.params, KIND.chunk(other, 0), run_ctx(other_path, 0, cache))
    assert decode_results(msgspec.msgpack.encode([raw])) == [-4]
    assert list(cache) == [("map-fn", str(other_path))]  # one job's function at a time


def test_function_errors_propagate(tmp_path: Path) -> None:
    ctx, _, fn_path = make_job(lambda x: 1 // x, [1, 0], 2, tmp_path)
    with pytest.raises(ZeroDivisionError):
        KIND.run(ctx.params, KIND.chunk(ctx, 0), run_ctx(fn_path))


# ---------------------------------------------------------------- the whole job


def test_results_in_order_whatever_the_execution_order(tmp_path: Path) -> None:
    items = list(range(23))
    ctx, blobs, fn_path = make_job(lambda x: {"x": x, "sq": (x, x * x)}, items, 4, tmp_path)
    expected = [{"x": x, "sq": (x, x * x)} for x in items]
    rng = random.Random(1)
    for _ in range(3):
        order = list(range(6))
        rng.shuffle(order)
        done = execute(ctx, blobs, fn_path, order)
        assert done.result == {"items": 23, "chunks": 6}
        assert done.outputs == {"results": hashlib.sha256(blobs.written["results"]).hexdigest()}
        assert decode_results(blobs.written["results"]) == expected


def test_empty_map(tmp_path: Path) -> None:
    ctx, blobs, fn_path = make_job(lambda x: x, [], 3, tmp_path)
    done = execute(ctx, blobs, fn_path)
    assert done.result == {"items": 0, "chunks": 0}
    assert decode_results(blobs.written["results"]) == []


def test_numpy_results_come_back_bit_identical(tmp_path: Path) -> None:
    ctx, blobs, fn_path = make_job(lambda n: np.arange(n, dtype=np.float32) / 3, [0, 1, 5], 2, tmp_path)
    execute(ctx, blobs, fn_path)
    out = decode_results(blobs.written["results"])
    for n, arr in zip([0, 1, 5], out):
        ref = np.arange(n, dtype=np.float32) / 3
        assert arr.dtype == ref.dtype and arr.tobytes() == ref.tobytes()


def test_pickled_results_need_permission(tmp_path: Path) -> None:
    ctx, blobs, fn_path = make_job(Point, [1, 2], 1, tmp_path)
    with pytest.raises(TypeError, match="allow_pickle_results=True"):
        KIND.run(ctx.params, KIND.chunk(ctx, 0), run_ctx(fn_path))
    ctx, blobs, fn_path = make_job(Point, [1, 2], 1, tmp_path, allow_pickle_results=True)
    execute(ctx, blobs, fn_path)
    with pytest.raises(PickledResultRefused):
        decode_results(blobs.written["results"])
    assert decode_results(blobs.written["results"], allow_pickle=True) == [Point(1), Point(2)]


def test_decode_results_rejects_a_blob_that_is_not_a_list_of_chunks() -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        decode_results(msgspec.msgpack.encode({"not": "a list"}))
