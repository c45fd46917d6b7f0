"""Outputs assembled while results arrive: ``InOrder`` and the master's ``BlobWriter``, and the
kinds that use them (compress, matmul) giving the same bytes whatever order their chunks finish in,
with no partial file left when a job never finishes."""

from __future__ import annotations

import gc
import gzip
import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rvidia.kinds.base import InOrder, JobContext, Kind, RunContext
from rvidia.kinds.compress import KIND as COMPRESS
from rvidia.kinds.matmul import KIND as MATMUL
from rvidia.master.blobs import BlobStore
from rvidia.master.jobio import JobInputs, JobOutputs
from rvidia.worker.directblobs import DirectBlobs


def test_in_order_hands_items_over_once_all_before_them_came() -> None:
    order: InOrder[str] = InOrder()
    assert order.add(2, "c") == []
    assert order.add(0, "a") == [(0, "a")]
    assert order.add(3, "d") == []
    assert order.add(1, "b") == [(1, "b"), (2, "c"), (3, "d")]
    assert order.held == {} and order.next == 4


def test_a_writer_commits_under_its_hash_and_a_dropped_one_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", 1 << 30)
    writer = store.writer()
    writer.write(b"abc")
    writer.write(memoryview(b"def"))
    blob = writer.commit()
    assert blob == hashlib.sha256(b"abcdef").hexdigest() and store.path(blob).read_bytes() == b"abcdef"
    dropped = store.writer()
    dropped.write(b"a job cancelled half-way")
    del dropped
    gc.collect()
    assert list(store.tmp.iterdir()) == []


def _job(kind: Kind, store: BlobStore, params: dict[str, Any], inputs: dict[str, str]) -> JobContext:
    ctx = JobContext(job_id="j", params=kind.parse_params(params), inputs=JobInputs(store, inputs),
                     outputs=JobOutputs(store), results=lambda: iter(()), blobs=store)
    kind.check(ctx)
    plan = kind.plan(ctx)
    ctx.state = plan.state
    ctx.cache["n_chunks"] = plan.n_chunks
    return ctx


def _results(kind: Kind, ctx: JobContext, store: BlobStore) -> list[bytes]:
    """Every chunk run here, as a worker on the master's machine would."""
    blobs = DirectBlobs(store.root, None)  # type: ignore[arg-type]  # everything is in the store
    out = []
    for index in range(ctx.cache["n_chunks"]):
        paths = {name: store.path(blob) for name, blob in kind.chunk_inputs(ctx, index).items()}
        run = RunContext(job_id="j", stage=0, index=index, input_paths=paths, cache={}, blobs=blobs)
        out.append(kind.run(ctx.params, kind.chunk(ctx, index), run))
    return out


def _finish(kind: Kind, ctx: JobContext, results: list[bytes], order: list[int]) -> bytes:
    acc = kind.new_acc(ctx)
    for index in order:
        acc = kind.merge(ctx, acc, index, results[index])
    done = kind.finish_stage(ctx, acc)
    blob = next(iter(done.outputs.values()))
    assert ctx.blobs is not None
    with ctx.blobs.open(blob) as f:
        return f.read()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compress_output_is_the_same_whatever_order_blocks_finish_in(tmp_path: Path, seed: int) -> None:
    store = BlobStore(tmp_path / "blobs", 1 << 30)
    data = random.Random(seed).randbytes(100_000) + b"text " * 40_000
    ctx = _job(COMPRESS, store, {"block_size": 65536, "level": 4}, {"data": store.put_parts([data])})
    results = _results(COMPRESS, ctx, store)
    n = len(results)
    shuffled = random.Random(seed).sample(range(n), n)
    in_order = _finish(COMPRESS, ctx, results, list(range(n)))
    assert _finish(COMPRESS, ctx, results, shuffled) == in_order
    assert gzip.decompress(in_order) == data


def test_matmul_output_is_the_same_whatever_order_blocks_finish_in(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", 1 << 30)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((50, 12)), rng.standard_normal((12, 7))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    inputs = {name: store.put_parts([(tmp_path / f"{name}.npy").read_bytes()]) for name in ("a", "b")}
    ctx = _job(MATMUL, store, {"block_rows": 8}, inputs)
    results = _results(MATMUL, ctx, store)
    backwards = _finish(MATMUL, ctx, results, list(reversed(range(len(results)))))
    assert backwards == _finish(MATMUL, ctx, results, list(range(len(results))))
    (tmp_path / "c.npy").write_bytes(backwards)
    assert np.allclose(np.load(tmp_path / "c.npy"), a @ b, rtol=1e-12, atol=1e-12)


def test_a_missing_block_fails_the_finish_instead_of_a_short_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", 1 << 30)
    data = b"x" * 200_000
    ctx = _job(COMPRESS, store, {"block_size": 65536}, {"data": store.put_parts([data])})
    results = _results(COMPRESS, ctx, store)
    acc = COMPRESS.new_acc(ctx)
    for index in (0, 2, 3):
        acc = COMPRESS.merge(ctx, acc, index, results[index])
    with pytest.raises(ValueError, match="missing"):
        COMPRESS.finish_stage(ctx, acc)
