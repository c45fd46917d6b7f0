"""Benchmark: ``compress`` on a LocalCluster against single-process compression of the same file.

Two references run in this process: zlib over the same blocks at the same level (the very bytes the
kind produces, so the cluster's ``data.gz`` must equal it byte for byte), and Python's gzip module
compressing the file as one stream. The output is also checked with ``gzip -dc``. Peak RSS of the
master, the worker agents and their chunk processes is sampled while the job runs, to show that
memory stays bounded by the block size, not the file size.

    python benchmarks/kinds/bench_compress.py --size-mib 256 --workers 2
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for benchmarks.common
from benchmarks.common import pin_blas_threads  # noqa: E402

pin_blas_threads()  # before numpy is imported

import gzip  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import zlib  # noqa: E402
from typing import Iterator  # noqa: E402

import numpy as np  # noqa: E402

import rvidia  # noqa: E402
from benchmarks.common import MIB, PeakRss, Row, job_rows, parser, report, time_jobs, time_runs  # noqa: E402
from rvidia.kinds.compress import WINDOW, crc32_combine, deflate_block, gzip_header, gzip_trailer  # noqa: E402


def write_sample(path: Path, size: int, seed: int = 0) -> None:
    """Half random, half repetitive text, written a MiB at a time (never whole in memory)."""
    rng = np.random.default_rng(seed)
    text = b"".join(b"%08d GET /api/v1/jobs 200 0.0031s user=alice\n" % i for i in range(MIB // 48 + 1))
    with open(path, "wb") as f:
        left = size
        while left > 0:
            piece = rng.bytes(MIB // 2) + text[: MIB // 2]
            f.write(piece[:left])
            left -= min(left, MIB)


def _blocks(path: Path, block_size: int) -> Iterator[tuple[bytes, bytes]]:
    """(block, the 32 KiB before it) for each block of the file, in order."""
    previous = b""
    with open(path, "rb") as f:
        while block := f.read(block_size):
            yield block, previous[-WINDOW:]
            previous = block


def zlib_blocks(path: Path, out: Path, level: int, block_size: int) -> None:
    """The kind's computation in one process; writes the same gzip file."""
    size = path.stat().st_size
    crc, done = 0, 0
    with open(out, "wb") as f:
        f.write(gzip_header(level))
        if size == 0:
            f.write(deflate_block(b"", b"", level, True))
        for block, dictionary in _blocks(path, block_size):
            done += len(block)
            f.write(deflate_block(block, dictionary, level, done >= size))
            crc = crc32_combine(crc, zlib.crc32(block), len(block))
        f.write(gzip_trailer(crc, size))


def gzip_module(path: Path, out: Path, level: int) -> None:
    with open(path, "rb") as src, open(out, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as dst:
            shutil.copyfileobj(src, dst, MIB)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while part := f.read(MIB):
            h.update(part)
    return h.hexdigest()


def gunzip_sha256(path: Path) -> str:
    """SHA-256 of what ``gzip -dc`` restores, streamed."""
    h = hashlib.sha256()
    with subprocess.Popen(["gzip", "-dc", str(path)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while part := proc.stdout.read(MIB):
            h.update(part)
    if proc.returncode != 0:
        raise RuntimeError(f"gzip -dc failed with {proc.returncode}")
    return h.hexdigest()


def main() -> None:
    ap = parser(__doc__, repeats=2)
    ap.add_argument("--size-mib", type=float, default=256)
    ap.add_argument("--level", type=int, default=6)
    ap.add_argument("--block-size", type=int, default=MIB)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "data.bin"
        write_sample(path, int(args.size_mib * MIB))
        zlib_runs = time_runs(lambda: zlib_blocks(path, folder / "zlib.gz", args.level, args.block_size), args.repeats)
        gzip_runs = time_runs(lambda: gzip_module(path, folder / "module.gz", args.level), args.repeats)
        with rvidia.LocalCluster(workers=args.workers) as cluster:
            upload = time_runs(lambda: cluster.upload(path), 1)
            # warm-up: 4 chunks per worker, so that every worker's chunk process has started (a single
            # chunk would warm one worker only and leave the other's start-up in the first timed run)
            warm = bytes(4 * args.workers * 64 * 1024)
            cluster.submit("compress", inputs={"data": warm}, block_size=64 * 1024).result()
            with PeakRss.of_cluster(cluster) as rss:
                runs = time_jobs(cluster, "compress", args.repeats, inputs={"data": upload.last},
                                 level=args.level, block_size=args.block_size)
            out = runs.job.download_outputs(folder / "out")["data.gz"]
        same = sha256_of(out) == sha256_of(folder / "zlib.gz")
        restored = gunzip_sha256(out) == sha256_of(path)
        module_size = (folder / "module.gz").stat().st_size
    assert same and restored, f"identical to the serial blocks: {same}; gzip -dc restores the input: {restored}"
    report("compress", f"compress {args.size_mib:g} MiB (half random, half text), level {args.level}, "
                       f"block {args.block_size} bytes, cpus {os.cpu_count()}",
           [Row("zlib over the same blocks, one process", zlib_runs.median, ref="zlib-blocks"),
            Row("gzip module, one stream", gzip_runs.median, f"{module_size} bytes", ref="gzip-module"),
            *job_rows(runs, args.workers, "job only, input already uploaded")],
           [f"result: {runs.result}",
            f"upload of the input: {upload.median:.2f} s",
            f"output byte-identical to the serial blocks: {same}; gzip -dc restores the input: {restored}",
            f"peak RSS during the job: {rss.report()}"],
           repeats=args.repeats, json_path=args.json,
           workload=f"{args.size_mib:g} MiB, level {args.level}, {args.block_size >> 10} KiB blocks",
           check="byte-identical to zlib over the same blocks; gzip -dc restores the input")


if __name__ == "__main__":
    main()
