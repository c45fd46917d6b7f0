"""The ``matmul`` kind: .npy header parsing and offsets, refusals, and end-to-end runs against numpy."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import numpy as np
import pytest

import rvidia
from rvidia.client.api import ApiError
from rvidia.kinds.base import JobContext, ParamError
from rvidia.kinds.matmul import (
    KIND, MatmulParams, auto_block_rows, check_operands, npy_header_bytes, read_npy_header, result_dtype,
)

pytestmark = pytest.mark.timeout(120)


def _npy(arr: Any, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, arr, allow_pickle=True)
    else:
        np.lib.format.write_array(buf, np.asanyarray(arr), version=version, allow_pickle=True)
    return buf.getvalue()


class _Inputs:
    """Inputs held in memory, as the master's JobInputs would serve them from the blob store."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def names(self) -> list[str]:
        return list(self.files)

    def blob_id(self, name: str) -> str:
        return name * 64

    def size(self, name: str) -> int:
        return len(self.files[name])

    def open(self, name: str) -> BinaryIO:
        return io.BytesIO(self.files[name])


def _ctx(files: dict[str, bytes], **params: Any) -> JobContext:
    return JobContext(job_id="j1", params=MatmulParams(**params), inputs=_Inputs(files),
                      outputs=None, results=lambda: iter(()))  # type: ignore[arg-type]


# ---------------------------------------------------------------- headers and offsets


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_header_gives_shape_dtype_and_data_offset(version: tuple[int, int]) -> None:
    arr = np.arange(35, dtype=np.int32).reshape(5, 7)
    raw = _npy(arr, version)
    head = read_npy_header(io.BytesIO(raw))
    assert head.shape == (5, 7) and head.dtype == np.int32 and not head.fortran_order
    assert head.data_offset == len(raw) - arr.nbytes
    assert raw[head.data_offset:] == arr.tobytes()


def test_header_reports_fortran_order() -> None:
    head = read_npy_header(io.BytesIO(_npy(np.asfortranarray(np.ones((3, 4))))))
    assert head.fortran_order and head.shape == (3, 4)


@pytest.mark.parametrize("raw", [b"", b"not an npy file at all", b"\x93NUMPY\x01\x00\xff\x00{garbage"])
def test_header_of_non_npy_is_refused(raw: bytes) -> None:
    with pytest.raises(ParamError, match="'a'"):
        read_npy_header(io.BytesIO(raw), "a")


def test_truncated_input_is_refused() -> None:
    raw = _npy(np.ones((10, 10)))
    with pytest.raises(ParamError, match="truncated"):
        KIND.check(_ctx({"a": raw[:-8], "b": raw}))


def test_plan_offsets_point_at_each_blocks_rows() -> None:
    a = np.arange(23 * 6, dtype=np.float64).reshape(23, 6)
    files = {"a": _npy(a, (2, 0)), "b": _npy(np.ones((6, 2)))}
    ctx = _ctx(files, block_rows=5)
    KIND.check(ctx)
    plan = KIND.plan(ctx)
    ctx.state = plan.state
    assert plan.n_chunks == 5
    rows_seen = []
    for index in range(plan.n_chunks):
        _, offset, start, rows, k, dtype, out = msgspec.msgpack.decode(KIND.chunk(ctx, index))
        assert (k, dtype, out) == (6, "<f8", "<f8")
        begin = offset + start * k * 8
        block = np.frombuffer(files["a"][begin:begin + rows * k * 8], dtype=dtype).reshape(rows, k)
        assert np.array_equal(block, a[start:start + rows])
        rows_seen.append(rows)
    assert rows_seen == [5, 5, 5, 5, 3]
    assert KIND.chunk_inputs(ctx, 0) == {"b": "b" * 64}  # b once per worker, a only by ranges


def test_auto_block_rows_depends_only_on_shapes() -> None:
    assert auto_block_rows(2048, 2048, 8, 8) == 256  # 32 KiB per row of a plus row of c: 8 MiB blocks
    assert auto_block_rows(10, 10, 8, 8) > 10_000
    assert auto_block_rows(0, 0, 8, 8) >= 1


def test_written_header_round_trips_through_numpy() -> None:
    c = np.arange(12, dtype=np.complex64).reshape(3, 4)
    raw = npy_header_bytes(c.shape, c.dtype) + c.tobytes()
    assert np.array_equal(np.load(io.BytesIO(raw)), c)
    assert result_dtype(np.dtype(">f8"), np.dtype(">f8")) == np.dtype("f8")


# ---------------------------------------------------------------- refusals


def _refusal(a: Any, b: Any) -> str:
    with pytest.raises(ParamError) as info:
        KIND.check(_ctx({"a": _npy(a), "b": _npy(b)}))
    return str(info.value)


def test_refusals_name_the_problem() -> None:
    assert "2-D" in _refusal(np.ones(4), np.ones((4, 2)))
    assert "2-D" in _refusal(np.ones((2, 2)), np.ones((2, 2, 2)))
    assert "columns (3) must equal b's rows (4)" in _refusal(np.ones((2, 3)), np.ones((4, 2)))
    assert "dtypes differ" in _refusal(np.ones((2, 2)), np.ones((2, 2), np.float32))
    assert "non-numeric" in _refusal(np.array([["a"]]), np.array([["b"]]))
    assert "non-numeric" in _refusal(np.zeros((1, 1), "i4,f8"), np.zeros((1, 1), "i4,f8"))
    assert "Python objects" in _refusal(np.array([[1, None]], dtype=object), np.ones((2, 1), dtype=object))
    assert "Fortran" in _refusal(np.asfortranarray(np.ones((3, 4))), np.ones((4, 2)))


def test_accepted_operands() -> None:
    head = read_npy_header(io.BytesIO(_npy(np.ones((3, 4), ">f8"))))
    check_operands(head, read_npy_header(io.BytesIO(_npy(np.asfortranarray(np.ones((4, 5)))))))


# ---------------------------------------------------------------- end to end


def _run(cluster: rvidia.LocalCluster, tmp: Path, a: Any, b: Any, **params: Any) -> tuple[np.ndarray, dict[str, Any]]:
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "a.npy", a)
    np.save(tmp / "b.npy", b)
    job = cluster.submit("matmul", inputs={"a": tmp / "a.npy", "b": tmp / "b.npy"}, **params)
    result = job.result(timeout=60)
    job.download_outputs(tmp / "out")
    return np.load(tmp / "out" / "c.npy"), result


def test_float64_matches_numpy_and_is_identical_on_1_and_3_workers(
        one: rvidia.LocalCluster, three: rvidia.LocalCluster, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((301, 190)), rng.standard_normal((190, 157))
    c1, result = _run(one, tmp_path / "one", a, b, block_rows=37)
    c3, _ = _run(three, tmp_path / "three", a, b, block_rows=37)
    assert result == {"shape": [301, 157], "dtype": "float64", "blocks": 9, "block_rows": 37}
    assert c1.shape == (301, 157) and c1.dtype == np.float64
    np.testing.assert_allclose(c1, a @ b, rtol=1e-12, atol=1e-12)
    assert c1.tobytes() == c3.tobytes()
    status = three.jobs(limit=1)[0]
    assert status["progress"]["done"] == 9


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool"])
def test_exact_dtypes_equal_numpy(three: rvidia.LocalCluster, tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 3, (53, 31)).astype(dtype)
    b = rng.integers(0, 3, (31, 17)).astype(dtype)
    c, result = _run(three, tmp_path, a, b, block_rows=10)
    assert c.dtype == (a @ b).dtype and result["dtype"] == str(c.dtype)
    assert np.array_equal(c, a @ b)


def test_fortran_b_big_endian_complex_and_default_blocks(one: rvidia.LocalCluster, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((40, 30)) + 1j * rng.standard_normal((40, 30))).astype(">c16")
    b = np.asfortranarray(rng.standard_normal((30, 20)) + 1j).astype(">c16", order="F")
    c, result = _run(one, tmp_path, a, b)
    assert result["blocks"] == 1 and c.dtype == np.complex128
    np.testing.assert_allclose(c, a @ b, rtol=1e-12, atol=1e-12)


def test_empty_dimensions(one: rvidia.LocalCluster, tmp_path: Path) -> None:
    c, result = _run(one, tmp_path / "m0", np.ones((0, 4)), np.ones((4, 3)))
    assert c.shape == (0, 3) and result["blocks"] == 0
    c, _ = _run(one, tmp_path / "k0", np.ones((5, 0)), np.ones((0, 3)))
    assert np.array_equal(c, np.zeros((5, 3)))


def test_bad_inputs_are_refused_with_422(one: rvidia.LocalCluster, tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones((4, 3)))
    np.save(tmp_path / "b.npy", np.ones((4, 2)))
    (tmp_path / "junk.npy").write_bytes(b"plain text")
    cases = [({"a": "a.npy", "b": "b.npy"}, {}, "must equal b's rows"),
             ({"a": "junk.npy", "b": "b.npy"}, {}, "not a readable .npy"),
             ({"a": "b.npy", "b": "b.npy"}, {"block_rows": -1}, "block_rows"),
             ({"a": "b.npy", "b": "b.npy"}, {"rows": 3}, "rows")]
    for files, params, reason in cases:
        with pytest.raises(ApiError) as info:
            one.submit("matmul", inputs={k: tmp_path / v for k, v in files.items()}, **params)
        assert info.value.status == 422 and reason in str(info.value)


def test_replicated_on_three_workers_equals_numpy(three: rvidia.LocalCluster, tmp_path: Path) -> None:
    """replicas=2: every block runs on two different workers and the copies must agree."""
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((120, 40)), rng.standard_normal((40, 30))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    job = three.submit("matmul", inputs={"a": tmp_path / "a.npy", "b": tmp_path / "b.npy"}, replicas=2,
                       block_rows=20)
    job.result(timeout=60)
    job.download_outputs(tmp_path / "out")
    np.testing.assert_allclose(np.load(tmp_path / "out" / "c.npy"), a @ b, rtol=1e-12, atol=1e-12)
    chunks = three.request("GET", f"/api/v1/jobs/{job.id}/chunks").json()
    assert len(chunks) == 6 and all(c["state"] == "done" for c in chunks)
    assert three.request("GET", f"/api/v1/jobs/{job.id}").json()["outvoted"] == {}


class _Blobs:
    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data

    def exists(self, blob_id: str) -> bool:
        return blob_id in self.data

    def size(self, blob_id: str) -> int:
        return len(self.data[blob_id])

    def open(self, blob_id: str) -> BinaryIO:
        return io.BytesIO(self.data[blob_id])


@pytest.mark.parametrize("dtype, noise, agree", [
    ("float64", 1e-13, True), ("float64", 1e-6, False), ("float32", 1e-6, True), ("float32", 1e-2, False),
])
def test_copies_agree_within_the_declared_tolerance(dtype: str, noise: float, agree: bool) -> None:
    block = np.random.default_rng(2).standard_normal((4, 5)).astype(dtype)
    other = (block * (1 + noise)).astype(dtype)
    blobs = _Blobs({"x" * 64: block.tobytes(), "y" * 64: other.tobytes()})
    ctx = JobContext(job_id="j", params=MatmulParams(), inputs=_Inputs({}), outputs=None,  # type: ignore[arg-type]
                     results=lambda: iter(()), blobs=blobs, state={"out": np.dtype(dtype).str})
    first = msgspec.msgpack.encode(["x" * 64, block.nbytes])
    second = msgspec.msgpack.encode(["y" * 64, other.nbytes])
    assert KIND.agree(ctx, first, first)
    assert KIND.agree(ctx, first, second) is agree


def test_integer_copies_must_be_equal() -> None:
    block = np.arange(6, dtype=np.int64)
    blobs = _Blobs({"x" * 64: block.tobytes(), "y" * 64: (block + 1).tobytes()})
    ctx = JobContext(job_id="j", params=MatmulParams(), inputs=_Inputs({}), outputs=None,  # type: ignore[arg-type]
                     results=lambda: iter(()), blobs=blobs, state={"out": "<i8"})
    assert not KIND.agree(ctx, msgspec.msgpack.encode(["x" * 64, 48]), msgspec.msgpack.encode(["y" * 64, 48]))
