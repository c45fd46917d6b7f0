"""The ``compress`` kind: CRC combination, block framing, and end-to-end runs checked with gzip."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

import rvidia
from rvidia.client.api import ApiError
from rvidia.kinds.base import JobContext, ParamError
from rvidia.kinds.compress import (
    KIND, WINDOW, CompressParams, crc32_combine, deflate_block, gzip_header, gzip_trailer,
)

pytestmark = pytest.mark.timeout(120)

BLOCK = 64 * 1024


def _mixed(size: int, seed: int = 0) -> bytes:
    """Random bytes and compressible text, interleaved, ``size`` bytes in all."""
    rng = __import__("random").Random(seed)
    parts, total = [], 0
    while total < size:
        piece = rng.randbytes(5000) if rng.random() < 0.4 else b"the quick brown fox %d " % rng.randrange(99) * 300
        parts.append(piece)
        total += len(piece)
    return b"".join(parts)[:size]


def _gunzip_cli(path: Path) -> bytes:
    return subprocess.run(["gzip", "-dc", str(path)], check=True, capture_output=True).stdout


# ---------------------------------------------------------------- pieces


@pytest.mark.parametrize("len1,len2", [(0, 0), (0, 10), (10, 0), (1, 1), (1000, 65536), (70000, 123457)])
def test_crc32_combine_matches_zlib(len1: int, len2: int) -> None:
    a, b = os.urandom(len1), os.urandom(len2)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@pytest.mark.parametrize("level", [1, 6, 9])
def test_blocks_with_dictionaries_concatenate_into_one_gzip_member(level: int) -> None:
    data = _mixed(5 * 10_000 + 777)
    parts, crc, bs = [gzip_header(level)], 0, 10_000
    for start in range(0, len(data), bs):
        block = data[start:start + bs]
        last = start + bs >= len(data)
        parts.append(deflate_block(block, data[max(0, start - WINDOW):start], level, last))
        crc = crc32_combine(crc, zlib.crc32(block), len(block))
    parts.append(gzip_trailer(crc, len(data)))
    gz = b"".join(parts)
    assert gzip.decompress(gz) == data
    assert zlib.decompressobj(31).decompress(gz) == data  # one member, not several
    assert gz[:2] == b"\x1f\x8b" and gz[4:8] == b"\0\0\0\0"  # mtime 0: reproducible


def test_params_are_bounded() -> None:
    assert KIND.parse_params({}) == CompressParams(level=6, block_size=1 << 20)
    for bad in ({"level": 0}, {"level": 10}, {"block_size": 1000}, {"block_size": 65 << 20}, {"lvl": 3}):
        with pytest.raises(ParamError):
            KIND.parse_params(bad)


class _Inputs:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def names(self) -> list[str]:
        return ["data"]

    def blob_id(self, name: str) -> str:
        return "d" * 64

    def size(self, name: str) -> int:
        return len(self.data)

    def open(self, name: str) -> io.BytesIO:
        return io.BytesIO(self.data)


@pytest.mark.parametrize("size,chunks,last_len", [(0, 0, None), (1, 1, 1), (BLOCK, 1, BLOCK),
                                                  (3 * BLOCK + 5, 4, 5)])
def test_plan_splits_by_block_size_only(size: int, chunks: int, last_len: int | None) -> None:
    ctx = JobContext(job_id="j", params=CompressParams(block_size=BLOCK), inputs=_Inputs(b"x" * size),
                     outputs=None, results=lambda: iter(()))  # type: ignore[arg-type]
    plan = KIND.plan(ctx)
    ctx.state = plan.state
    assert plan.n_chunks == chunks
    if chunks:
        blob, start, length, last = msgspec.msgpack.decode(KIND.chunk(ctx, chunks - 1))
        assert (start, length, last) == ((chunks - 1) * BLOCK, last_len, True)
        assert msgspec.msgpack.decode(KIND.chunk(ctx, 0))[3] is (chunks == 1)
        assert KIND.chunk_inputs(ctx, 0) == {}


# ---------------------------------------------------------------- end to end


def _compress(cluster: rvidia.LocalCluster, folder: Path, data: bytes, **params: Any) -> tuple[Path, dict[str, Any]]:
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "data"
    src.write_bytes(data)
    job = cluster.submit("compress", inputs={"data": src}, **params)
    result = job.result(timeout=60)
    return job.download_outputs(folder / "out")["data.gz"], result


def _assert_restores(gz: Path, data: bytes) -> None:
    assert _gunzip_cli(gz) == data
    assert gzip.decompress(gz.read_bytes()) == data
    with gzip.open(gz, "rb") as f:
        assert f.read() == data


@pytest.mark.parametrize("size", [7 * BLOCK + 1234, 4 * BLOCK])
def test_mixed_data_on_1_and_3_workers(one: rvidia.LocalCluster, three: rvidia.LocalCluster, tmp_path: Path,
                                       size: int) -> None:
    data = _mixed(size, seed=size)
    gz1, result = _compress(one, tmp_path / "one", data, block_size=BLOCK)
    gz3, result3 = _compress(three, tmp_path / "three", data, block_size=BLOCK)
    _assert_restores(gz1, data)
    assert gz1.read_bytes() == gz3.read_bytes() and result == result3
    assert result["input_bytes"] == size and result["output_bytes"] == gz1.stat().st_size
    assert result["blocks"] == -(-size // BLOCK)
    assert result["ratio"] == pytest.approx(size / gz1.stat().st_size, rel=1e-3)


def test_random_data_and_levels(three: rvidia.LocalCluster, tmp_path: Path) -> None:
    data = os.urandom(3 * BLOCK + 99)
    for level in (1, 9):
        gz, result = _compress(three, tmp_path / str(level), data, block_size=BLOCK, level=level)
        _assert_restores(gz, data)
        assert result["output_bytes"] < len(data) * 1.01  # stored-like, not blown up


def test_compressible_data_shrinks_like_gzip(three: rvidia.LocalCluster, tmp_path: Path) -> None:
    data = b"".join(b"line %08d of a log file, nothing to see\n" % i for i in range(20_000))
    gz, result = _compress(three, tmp_path, data, block_size=BLOCK)
    _assert_restores(gz, data)
    assert result["output_bytes"] < 1.2 * len(gzip.compress(data, 6, mtime=0))


@pytest.mark.parametrize("data", [b"", b"x"])
def test_tiny_inputs(one: rvidia.LocalCluster, tmp_path: Path, data: bytes) -> None:
    gz, result = _compress(one, tmp_path, data)
    _assert_restores(gz, data)
    assert result["input_bytes"] == len(data) and result["blocks"] == len(data)


def test_bad_params_are_refused_with_422(one: rvidia.LocalCluster) -> None:
    for params in ({"level": 11}, {"block_size": 10}, {"blocksize": BLOCK}):
        with pytest.raises(ApiError) as info:
            one.submit("compress", inputs={"data": b"abc"}, **params)
        assert info.value.status == 422 and next(iter(params)) in str(info.value)


def test_cli_run(tmp_path: Path) -> None:
    data = _mixed(2 * BLOCK + 10, seed=5)
    (tmp_path / "in.bin").write_bytes(data)
    done = subprocess.run([sys.executable, "-m", "rvidia", "run", "compress", "-i", f"data={tmp_path / 'in.bin'}",
                           "-o", str(tmp_path / "out"), "-p", f"block_size={BLOCK}", "-p", "level=3",
                           "--workers", "1"], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["input_bytes"] == len(data) and result["level"] == 3 and result["blocks"] == 3
    _assert_restores(tmp_path / "out" / "data.gz", data)
