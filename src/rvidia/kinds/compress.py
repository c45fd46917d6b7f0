"""``compress``: gzip a file in fixed blocks compressed in parallel, the way pigz does.

Each chunk fetches its block of the input by byte range, plus the 32 KiB before it as a preset
dictionary, and deflates it as raw deflate ending in a sync flush (the last block ends the stream),
so the blocks concatenate into one deflate stream. The chunk uploads its bytes and returns the blob
id with the block's CRC-32 and length. The master writes a gzip header when the job starts, appends
each block from the blob store as soon as every block before it has come (``InOrder``), and ends with
a trailer whose CRC-32 it combines from the blocks' CRCs (no second pass over the input or output).
The result is one standard gzip member that ``gzip -dc`` restores byte for byte, identical whatever
the number of workers.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from rvidia.kinds.base import Done, InOrder, JobContext, Kind, OutputWriter, Plan, RunContext

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


@dataclass
class GzOutput:
    """The gzip member being written; each block goes in once every block before it has."""

    writer: OutputWriter
    order: InOrder[BlockResult] = field(default_factory=InOrder)
    in_bytes: int = 0  # input compressed so far, in any order (progress)
    out_bytes: int = 0  # its compressed size
    crc: int = 0  # CRC-32 of the input written so far, in order


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

    def new_acc(self, ctx: JobContext) -> GzOutput:
        acc = GzOutput(ctx.outputs.begin("data.gz"))
        acc.writer.write(gzip_header(ctx.params.level))
        if ctx.state["size"] == 0:
            acc.writer.write(deflate_block(b"", b"", ctx.params.level, last=True))
        return acc

    def merge(self, ctx: JobContext, acc: GzOutput, index: int, result: bytes) -> GzOutput:
        size, bs = ctx.state["size"], ctx.params.block_size
        assert ctx.blobs is not None
        block = msgspec.msgpack.decode(result, type=BlockResult)
        if block.in_bytes != min(bs, size - index * bs) or ctx.blobs.size(block.blob_id) != block.out_bytes:
            raise ValueError(f"block {index} does not match its range of the input")
        acc.in_bytes += block.in_bytes
        acc.out_bytes += block.out_bytes
        for _, ready in acc.order.add(index, block):
            acc.crc = crc32_combine(acc.crc, ready.crc, ready.in_bytes)
            with ctx.blobs.open(ready.blob_id) as f:
                while part := f.read(_STREAM):
                    acc.writer.write(part)
        return acc

    def progress(self, ctx: JobContext, acc: GzOutput) -> dict[str, Any] | None:
        return {"input_bytes_done": acc.in_bytes, "output_bytes": acc.out_bytes}

    def finish_stage(self, ctx: JobContext, acc: GzOutput) -> Done:
        size = ctx.state["size"]
        blocks = -(-size // ctx.params.block_size)
        if acc.order.held or acc.order.next != blocks:
            raise ValueError(f"blocks missing: {acc.order.next} of {blocks} written")
        assert ctx.blobs is not None
        acc.writer.write(gzip_trailer(acc.crc, size))
        blob = acc.writer.commit()
        out = ctx.blobs.size(blob)
        result = {"input_bytes": size, "output_bytes": out, "ratio": round(size / out, 4),
                  "blocks": blocks, "level": ctx.params.level}
        return Done(result=result, outputs={"data.gz": blob})

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
