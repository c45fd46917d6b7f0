"""``compress``: gzip a file in fixed blocks compressed in parallel, the way pigz does.

Each chunk fetches its block of the input by byte range, plus the 32 KiB before it as a preset
dictionary, and deflates it as raw deflate ending in a sync flush (the last block ends the stream),
so the blocks concatenate into one deflate stream. The chunk uploads its bytes and returns the blob
id with the block's CRC-32 and length. The master writes a gzip header, streams the blocks in
order from the blob store, and ends with a trailer whose CRC-32 it combines from the blocks' CRCs
(no second pass over the input). The result is one standard gzip member that ``gzip -dc``
restores byte for byte, identical whatever the number of workers.
"""

from __future__ import annotations

import struct
import zlib
from typing import Annotated, Any, Iterator

import msgspec

from rvidia.kinds.base import Done, JobContext, Kind, Plan, RunContext

WINDOW = 32 * 1024  # deflate's window: the dictionary each block borrows from the one before
_STREAM = 1 << 20
_CRC_POLY = 0xEDB88320


class CompressParams(msgspec.Struct, forbid_unknown_fields=True):
    level: Annotated[int, msgspec.Meta(ge=1, le=9, description="Compression level, 1 (fastest) to 9 (smallest)")] = 6
    block_size: Annotated[int, msgspec.Meta(
        ge=64 * 1024, le=64 * 1024 * 1024,
        description="Input bytes per chunk (64 KiB to 64 MiB); fixes chunk boundaries")] = 1024 * 1024


class BlockResult(msgspec.Struct, array_like=True):
    blob_id: str
    out_bytes: int
    crc: int
    in_bytes: int


# ---------------------------------------------------------------- CRC-32 combination (as zlib's)


def _multmodp(a: int, b: int) -> int:
    """a times b modulo the CRC-32 polynomial, in zlib's reflected representation."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    table = [1 << 30]  # x^1
    for _ in range(31):
        table.append(_multmodp(table[-1], table[-1]))
    return table


_X2N = _x2n_table()


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A + B from crc32(A), crc32(B) and len(B), like zlib's crc32_combine."""
    p = 1 << 31  # x^0
    n, k = len2, 3  # x^(8 * len2) = x^(2^3 * len2)
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


# ---------------------------------------------------------------- gzip framing


def gzip_header(level: int) -> bytes:
    """A fixed gzip header: no name, mtime 0 (so the output is reproducible), OS unknown."""
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    return bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, xfl, 255])


def gzip_trailer(crc: int, size: int) -> bytes:
    return struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


def deflate_block(data: bytes, dictionary: bytes, level: int, last: bool) -> bytes:
    """Raw deflate of one block, primed with the preceding bytes; byte-aligned unless it is last."""
    if dictionary:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=dictionary)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    return c.compress(data) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class Compress(Kind):
    name = "compress"
    description = "Gzip a file, compressing fixed-size blocks in parallel (like pigz)"
    Params = CompressParams
    inputs = ("data",)

    def plan(self, ctx: JobContext) -> Plan:
        size = ctx.inputs.size("data")
        bs = ctx.params.block_size
        return Plan(n_chunks=-(-size // bs), state={"size": size})

    def chunk(self, ctx: JobContext, index: int) -> bytes:
        size, bs = ctx.state["size"], ctx.params.block_size
        start = index * bs
        length = min(bs, size - start)
        last = start + length >= size
        return msgspec.msgpack.encode([ctx.inputs.blob_id("data"), start, length, last])

    def chunk_inputs(self, ctx: JobContext, index: int) -> dict[str, str]:
        return {}  # each chunk reads its own range, never the whole file

    def new_acc(self, ctx: JobContext) -> list[int]:
        return [0, 0]  # input bytes, output bytes compressed so far

    def merge(self, ctx: JobContext, acc: list[int], index: int, result: bytes) -> list[int]:
        block = msgspec.msgpack.decode(result, type=BlockResult)
        return [acc[0] + block.in_bytes, acc[1] + block.out_bytes]

    def progress(self, ctx: JobContext, acc: list[int]) -> dict[str, Any] | None:
        return {"input_bytes_done": acc[0], "output_bytes": acc[1]}

    def finish_stage(self, ctx: JobContext, acc: list[int]) -> Done:
        size = ctx.state["size"]
        totals = {"crc": 0, "out": 0}
        blob = ctx.outputs.write("data.gz", self._gz_parts(ctx, totals))
        out = totals["out"]
        result = {"input_bytes": size, "output_bytes": out, "ratio": round(size / out, 4),
                  "blocks": -(-size // ctx.params.block_size), "level": ctx.params.level}
        return Done(result=result, outputs={"data.gz": blob})

    def _gz_parts(self, ctx: JobContext, totals: dict[str, int]) -> Iterator[bytes]:
        """Header, the blocks in order from the blob store, trailer; counts bytes into ``totals``."""
        size, bs = ctx.state["size"], ctx.params.block_size
        assert ctx.blobs is not None
        head = gzip_header(ctx.params.level)
        totals["out"] += len(head)
        yield head
        crc = 0
        if size == 0:
            empty = deflate_block(b"", b"", ctx.params.level, last=True)
            totals["out"] += len(empty)
            yield empty
        for index, raw in ctx.results():
            block = msgspec.msgpack.decode(raw, type=BlockResult)
            expected = min(bs, size - index * bs)
            if block.in_bytes != expected or ctx.blobs.size(block.blob_id) != block.out_bytes:
                raise ValueError(f"block {index} does not match its range of the input")
            crc = crc32_combine(crc, block.crc, block.in_bytes)
            totals["out"] += block.out_bytes
            with ctx.blobs.open(block.blob_id) as f:
                while part := f.read(_STREAM):
                    yield part
        tail = gzip_trailer(crc, size)
        totals["out"] += len(tail)
        yield tail

    def run(self, params: CompressParams, payload: bytes, ctx: RunContext) -> bytes:
        blob_id, start, length, last = msgspec.msgpack.decode(payload, type=tuple[str, int, int, bool])
        if ctx.blobs is None:
            raise RuntimeError("compress needs the blob store (ctx.blobs) on the worker")
        dict_len = min(WINDOW, start)
        raw = ctx.blobs.read_range(blob_id, start - dict_len, dict_len + length)
        if len(raw) != dict_len + length:
            raise ValueError(f"bytes {start}..{start + length} of the input: got {len(raw) - dict_len}")
        view = memoryview(raw)
        data, dictionary = view[dict_len:], bytes(view[:dict_len])
        out = deflate_block(data, dictionary, params.level, last)
        block = BlockResult(ctx.blobs.put(out), len(out), zlib.crc32(data), length)
        return msgspec.msgpack.encode(block)


KIND = Compress()
