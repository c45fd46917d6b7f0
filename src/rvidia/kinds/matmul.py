"""``matmul``: ``c.npy = a @ b`` for two ``.npy`` inputs, split into fixed row blocks of ``a``.

The master reads only the two ``.npy`` headers (shapes, dtypes, where the data starts) and refuses
inputs that cannot be multiplied before any chunk runs. Each chunk fetches just its rows of ``a`` by
byte range, multiplies them by ``b`` (a whole local file, downloaded once per worker and cached by
content hash), and uploads its block of ``c`` to the blob store. The master writes a ``.npy`` header
into ``c.npy`` when the job starts and appends each block as soon as every block before it has come
(``InOrder``), never holding ``c`` whole and with no second pass at the end. Block boundaries depend
only on the shapes and ``block_rows``, so the output is the same whatever the number of workers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Annotated, Any, BinaryIO

import msgspec

from rvidia.kinds.base import Done, InOrder, JobContext, Kind, OutputWriter, ParamError, Plan, RunContext

TARGET_BLOCK_BYTES = 8 << 20  # automatic block_rows: rows of a plus rows of c in about 8 MiB
_STREAM = 1 << 20  # bytes per piece when streaming blocks into c.npy
_NUMERIC_KINDS = "biufc"  # bool, signed, unsigned, float, complex


class MatmulParams(msgspec.Struct, forbid_unknown_fields=True):
    block_rows: Annotated[int, msgspec.Meta(
        ge=0, le=10**9,
        description="Rows of a (and of c) per chunk; 0 picks rows so that a block of a plus its block "
                    "of c is about 8 MiB. Fixes chunk boundaries.")] = 0


# Relative tolerance between two computations of one block of c (replicas, GPUs, other BLAS).
TOLERANCE = {"float16": 1e-2, "float32": 1e-4, "float64": 1e-10}


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header says: enough to find any row without reading the data."""

    shape: tuple[int, ...]
    dtype: Any  # numpy.dtype
    fortran_order: bool
    data_offset: int

    @property
    def data_bytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * int(self.dtype.itemsize)


def read_npy_header(f: BinaryIO, name: str = "input") -> NpyHeader:
    """Parse the header of an ``.npy`` file open at its start; ParamError with a reason if it is not one."""
    from numpy.lib import format as npf

    try:
        version = npf.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npf.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npf.read_array_header_2_0(f)
        else:
            raise ParamError(f"input {name!r}: .npy format version {version[0]}.{version[1]} is not "
                             "supported (save it with numpy.save)")
    except ParamError:
        raise
    except Exception as exc:
        raise ParamError(f"input {name!r} is not a readable .npy file: {exc}") from None
    return NpyHeader(tuple(int(d) for d in shape), dtype, bool(fortran), f.tell())


def header_of(ctx: JobContext, name: str) -> NpyHeader:
    """The parsed header of input ``name``, checked against the input's size."""
    with ctx.inputs.open(name) as f:
        head = read_npy_header(f, name)
    size = ctx.inputs.size(name)
    if size < head.data_offset + head.data_bytes:
        raise ParamError(f"input {name!r} is truncated: its header announces {head.data_bytes} bytes of "
                         f"data but the file holds {size - head.data_offset}")
    return head


def check_operands(a: NpyHeader, b: NpyHeader) -> None:
    """Refuse, with a reason a user can act on, operands this kind cannot multiply."""
    for name, h in (("a", a), ("b", b)):
        if len(h.shape) != 2:
            raise ParamError(f"input {name!r} must be a 2-D array, got shape {list(h.shape)}")
        if h.dtype.hasobject:
            raise ParamError(f"input {name!r} holds Python objects (dtype {h.dtype}); save a numeric array")
        if h.dtype.kind not in _NUMERIC_KINDS or h.dtype.fields is not None or h.dtype.subdtype is not None:
            raise ParamError(f"input {name!r} has non-numeric dtype {h.dtype}; matmul needs bool, "
                             "integer, float or complex numbers")
    if a.fortran_order and a.shape[0] > 1 and a.shape[1] > 1:
        raise ParamError("input 'a' is stored in Fortran order, so its rows are not contiguous; save "
                         "numpy.ascontiguousarray(a) instead")
    if a.shape[1] != b.shape[0]:
        raise ParamError(f"shapes do not match: a is {a.shape[0]}x{a.shape[1]} and b is "
                         f"{b.shape[0]}x{b.shape[1]}; a's columns ({a.shape[1]}) must equal b's rows "
                         f"({b.shape[0]})")
    if a.dtype.newbyteorder("=") != b.dtype.newbyteorder("="):
        raise ParamError(f"dtypes differ: a is {a.dtype} and b is {b.dtype}; convert both to one dtype")


def result_dtype(a: Any, b: Any) -> Any:
    """The dtype numpy's ``a @ b`` gives for these operand dtypes (native byte order)."""
    import numpy as np

    return np.matmul(np.zeros((1, 1), a), np.zeros((1, 1), b)).dtype


def auto_block_rows(k: int, n: int, itemsize: int, out_itemsize: int) -> int:
    """Rows per block so that a block of a and its block of c take about TARGET_BLOCK_BYTES."""
    per_row = k * itemsize + n * out_itemsize
    return max(1, TARGET_BLOCK_BYTES // max(1, per_row))


def npy_header_bytes(shape: tuple[int, ...], dtype: Any) -> bytes:
    """A C-order ``.npy`` header for an array of ``shape`` and ``dtype``."""
    from numpy.lib import format as npf

    buf = io.BytesIO()
    fields = {"descr": npf.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    try:
        npf.write_array_header_1_0(buf, fields)
    except ValueError:  # header longer than 64 KiB: only version 2.0 can say it
        buf = io.BytesIO()
        npf.write_array_header_2_0(buf, fields)
    return buf.getvalue()


@dataclass
class COutput:
    """``c.npy`` being written; each block goes in once every block before it has."""

    writer: OutputWriter
    order: InOrder[str] = field(default_factory=InOrder)
    bytes_of_c: int = 0  # blocks received so far, in any order (progress)


class Matmul(Kind):
    name = "matmul"
    description = "Multiply two matrices stored as .npy files (c = a @ b), in row blocks of a"
    Params = MatmulParams
    inputs = ("a", "b")

    def _headers(self, ctx: JobContext) -> tuple[NpyHeader, NpyHeader]:
        heads = ctx.cache.get("headers")
        if heads is None:
            heads = ctx.cache["headers"] = (header_of(ctx, "a"), header_of(ctx, "b"))
        return heads  # type: ignore[no-any-return]

    def check(self, ctx: JobContext) -> None:
        check_operands(*self._headers(ctx))

    def plan(self, ctx: JobContext) -> Plan:
        a, b = self._headers(ctx)
        m, k = a.shape
        n = b.shape[1]
        out = result_dtype(a.dtype, b.dtype)
        rows = ctx.params.block_rows or auto_block_rows(k, n, a.dtype.itemsize, out.itemsize)
        rows = max(1, min(rows, m))  # a block never holds more rows than the matrix
        state = {"m": m, "k": k, "n": n, "rows": rows, "a_offset": a.data_offset,
                 "dtype": a.dtype.str, "out": out.str}
        return Plan(n_chunks=-(-m // rows) if m else 0, state=state)

    def chunk(self, ctx: JobContext, index: int) -> bytes:
        s = ctx.state
        start = index * s["rows"]
        rows = min(s["rows"], s["m"] - start)
        return msgspec.msgpack.encode([ctx.inputs.blob_id("a"), s["a_offset"], start, rows, s["k"],
                                       s["dtype"], s["out"]])

    def chunk_inputs(self, ctx: JobContext, index: int) -> dict[str, str]:
        return {"b": ctx.inputs.blob_id("b")}  # a arrives by ranges, b once per worker

    def new_acc(self, ctx: JobContext) -> COutput:
        import numpy as np

        acc = COutput(ctx.outputs.begin("c.npy"))
        acc.writer.write(npy_header_bytes((ctx.state["m"], ctx.state["n"]), np.dtype(ctx.state["out"])))
        return acc

    def merge(self, ctx: JobContext, acc: COutput, index: int, result: bytes) -> COutput:
        import numpy as np

        s = ctx.state
        assert ctx.blobs is not None
        blob_id, nbytes = msgspec.msgpack.decode(result, type=tuple[str, int])
        expected = min(s["rows"], s["m"] - index * s["rows"]) * s["n"] * np.dtype(s["out"]).itemsize
        if nbytes != expected or ctx.blobs.size(blob_id) != expected:
            raise ValueError(f"block {index} of c has {ctx.blobs.size(blob_id)} bytes, expected {expected}")
        acc.bytes_of_c += nbytes
        for _, ready in acc.order.add(index, blob_id):
            with ctx.blobs.open(ready) as f:
                while part := f.read(_STREAM):
                    acc.writer.write(part)
        return acc

    def progress(self, ctx: JobContext, acc: COutput) -> dict[str, Any] | None:
        return {"bytes_of_c": acc.bytes_of_c}

    def agree(self, ctx: JobContext, a: bytes, b: bytes) -> bool:
        """Two copies of a block of c agree when equal within TOLERANCE for its dtype: a GPU or
        another BLAS sums in another order. Integer blocks must be equal."""
        import numpy as np

        if a == b:
            return True
        (blob_a, size_a), (blob_b, size_b) = (msgspec.msgpack.decode(r, type=tuple[str, int]) for r in (a, b))
        out = np.dtype(ctx.state["out"])
        if size_a != size_b or ctx.blobs is None or out.kind != "f":
            return False
        with ctx.blobs.open(blob_a) as fa, ctx.blobs.open(blob_b) as fb:
            x, y = np.frombuffer(fa.read(), dtype=out), np.frombuffer(fb.read(), dtype=out)
        rtol = TOLERANCE.get(out.name, 1e-6)
        return x.shape == y.shape and bool(np.allclose(x, y, rtol=rtol, atol=rtol * float(np.abs(y).max(initial=0))))

    def finish_stage(self, ctx: JobContext, acc: COutput) -> Done:
        import numpy as np

        s = ctx.state
        blocks = -(-s["m"] // s["rows"])
        if acc.order.held or acc.order.next != blocks:
            raise ValueError(f"blocks of c missing: {acc.order.next} of {blocks} written")
        blob = acc.writer.commit()
        result = {"shape": [s["m"], s["n"]], "dtype": str(np.dtype(s["out"])), "blocks": blocks,
                  "block_rows": s["rows"]}
        return Done(result=result, outputs={"c.npy": blob})

    def run(self, params: MatmulParams, payload: bytes, ctx: RunContext) -> bytes:
        import numpy as np

        from rvidia.worker import gpu

        a_blob, offset, start, rows, k, dtype, out = msgspec.msgpack.decode(
            payload, type=tuple[str, int, int, int, int, str, str])
        if ctx.blobs is None:
            raise RuntimeError("matmul needs the blob store (ctx.blobs) on the worker")
        dt = np.dtype(dtype)
        nbytes = rows * k * dt.itemsize
        raw = ctx.blobs.read_range(a_blob, offset + start * k * dt.itemsize, nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"rows {start}..{start + rows} of a: got {len(raw)} bytes, expected {nbytes}")
        a_block = np.frombuffer(raw, dtype=dt).reshape(rows, k)
        b = _load_b(ctx)
        on_gpu = gpu.matmul(a_block, b)  # None: no usable GPU here, or an integer product
        c_block = np.ascontiguousarray(a_block @ b if on_gpu is None else on_gpu, dtype=np.dtype(out))
        data = memoryview(c_block).cast("B")  # the block's own bytes: no copy on the way to the store
        return msgspec.msgpack.encode([ctx.blobs.put(data), len(data)])  # type: ignore[arg-type]


def _load_b(ctx: RunContext) -> Any:
    """``b`` from its local file, kept in the chunk process's memo (one b at a time)."""
    import os

    import numpy as np

    path = ctx.input_paths["b"]
    key = ("matmul-b", str(path))
    b = ctx.cache.get(key)
    if b is None:
        for old in [k for k in ctx.cache if isinstance(k, tuple) and k[:1] == ("matmul-b",)]:
            del ctx.cache[old]
        # Mapped, not read: the pages come from the page cache, shared by every chunk process of the
        # machine, instead of a private copy per process (128 MiB for a 4096x4096 float64 b).
        b = ctx.cache[key] = np.load(path, mmap_mode="r" if os.name == "posix" else None, allow_pickle=False)
    return b


KIND = Matmul()
