"""What the fault tests share: jobs of several kinds with exact, independent checks, and helpers to
start, freeze and kill real processes.

Every ``Case`` knows its inputs and how to prove the finished job right without trusting RVIDIA's own
merge: montecarlo against the in-process reference, compress by decompressing with gzip and zlib,
matmul (integers, so equality is exact) against numpy, analytics against a pandas groupby. Nothing
lost and nothing counted twice shows as an exact match, and as every chunk counted once in the
job's per-worker tally.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import shutil
import subprocess
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import numpy as np
import pandas as pd
import pytest

from harness import Cluster, reference_result, wait_until

Check = Callable[[Cluster, dict[str, Any]], None]


def seed() -> int:
    """The random seed of the fault schedule: RVIDIA_FAULT_SEED to replay one, else a fresh one
    (printed, so a failure names the schedule that found it)."""
    value = int(os.environ.get("RVIDIA_FAULT_SEED") or random.randrange(1 << 30))
    print(f"fault schedule seed: RVIDIA_FAULT_SEED={value}")
    return value


def need_root(what: str) -> None:
    """Skip without root, unless under CI, where a skipped fault test would hide a gap: fail."""
    if os.geteuid() == 0:
        return
    reason = f"{what} needs root (CAP_NET_ADMIN / CAP_SYS_ADMIN); run as root to include it"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: under CI=true it must run")
    pytest.skip(reason)


def need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        reason = f"missing {', '.join(missing)} (scripts/test.sh installs them when run as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


# ---------------------------------------------------------------- jobs with exact checks


@dataclass
class Case:
    """One job: what to submit and how to check its end exactly."""

    kind: str
    params: dict[str, Any]
    inputs: dict[str, bytes] = field(default_factory=dict)
    check: Check = lambda cluster, view: None

    def submit(self, cluster: Cluster, **options: Any) -> str:
        blobs = {name: upload(cluster.api, data) for name, data in self.inputs.items()}
        body = {"kind": self.kind, "params": self.params, "inputs": blobs, **options}
        response = cluster.api.post("/api/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def upload(api: httpx.Client, data: bytes) -> str:
    response = api.post("/api/v1/blobs", content=data)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def output(cluster: Cluster, view: dict[str, Any], name: str) -> bytes:
    response = cluster.api.get(f"/api/v1/blobs/{view['outputs'][name]}")
    assert response.status_code == 200, response.text
    return response.content


def mixed_bytes(size: int, seed: int = 0) -> bytes:
    """Random bytes and compressible text interleaved: deflate has real work on both."""
    rng = random.Random(seed)
    parts, total = [], 0
    while total < size:
        piece = rng.randbytes(3000) if rng.random() < 0.4 else b"the quick brown fox %d " % rng.randrange(999) * 150
        parts.append(piece)
        total += len(piece)
    return b"".join(parts)[:size]


def montecarlo(samples: int = 24_000_000, seed: int = 11, chunk_samples: int = 8_000) -> Case:
    params = {"samples": samples, "seed": seed, "chunk_samples": chunk_samples}

    def check(cluster: Cluster, view: dict[str, Any]) -> None:
        assert view["result"] == reference_result(**params)

    return Case("montecarlo", params, check=check)


def compress(size: int = 6 << 20, block_size: int = 64 << 10, level: int = 6, seed: int = 1) -> Case:
    data = mixed_bytes(size, seed)

    def check(cluster: Cluster, view: dict[str, Any]) -> None:
        gz = output(cluster, view, "data.gz")
        assert gzip.decompress(gz) == data
        assert zlib.decompressobj(31).decompress(gz) == data  # one gzip member, not several
        assert view["result"]["input_bytes"] == size and view["result"]["blocks"] == -(-size // block_size)

    return Case("compress", {"block_size": block_size, "level": level}, {"data": data}, check)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def matmul(m: int = 1200, k: int = 300, n: int = 300, block_rows: int = 20, seed: int = 2) -> Case:
    """Integer matrices: every product is exact, so the check is equality, not closeness."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-1000, 1000, (m, k), dtype=np.int64)
    b = rng.integers(-1000, 1000, (k, n), dtype=np.int64)

    def check(cluster: Cluster, view: dict[str, Any]) -> None:
        c = np.load(io.BytesIO(output(cluster, view, "c.npy")))
        assert c.dtype == np.int64 and c.shape == (m, n)
        assert np.array_equal(c, a @ b)

    return Case("matmul", {"block_rows": block_rows}, {"a": _npy(a), "b": _npy(b)}, check)


def analytics(rows: int = 60_000, chunk_bytes: int = 8192, seed: int = 3) -> Case:
    """Integer values, so sums and counts are exact and a chunk counted twice cannot hide."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"region": rng.choice(["north", "south", "east", "west"], rows),
                          "year": rng.integers(2015, 2024, rows), "qty": rng.integers(-50, 500, rows)})
    table = frame.to_csv(index=False).encode()
    aggs = {"qty": ["sum", "count", "min", "max", "mean"]}
    expected = frame.groupby(["region", "year"]).agg(
        **{f"qty_{a}": ("qty", a) for a in aggs["qty"]}).reset_index()

    def check(cluster: Cluster, view: dict[str, Any]) -> None:
        assert view["result"] == {"groups": len(expected), "rows": rows}
        got = pd.read_csv(io.BytesIO(output(cluster, view, "result.csv")))
        for col in ("qty_sum", "qty_count", "qty_min", "qty_max"):
            assert got[col].tolist() == expected[col].tolist(), col
        pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-12)

    return Case("analytics", {"group_by": ["region", "year"], "aggregates": aggs, "chunk_bytes": chunk_bytes},
                {"table": table}, check)


def render(width: int = 320, height: int = 240, tile_rows: int = 4) -> Case:
    """Spheres: the tiled PNG must equal the single-process render pixel for pixel."""
    from PIL import Image

    from rvidia.kinds.render import render_full

    params = {"scene": "spheres", "width": width, "height": height, "tile_rows": tile_rows}
    expected = render_full(params)

    def check(cluster: Cluster, view: dict[str, Any]) -> None:
        image = np.asarray(Image.open(io.BytesIO(output(cluster, view, "image.png"))).convert("RGB"))
        assert np.array_equal(image, expected)

    return Case("render", params, check=check)


def train(rounds: int = 6, shards: int = 6) -> Case:
    """Federated averaging: the model must equal ``train_reference``'s bit for bit, whoever ran a shard."""
    from rvidia.kinds.train import train_reference

    params = {"rounds": rounds, "shards": shards}
    weights, history = train_reference(params)

    def check(cluster: Cluster, view: dict[str, Any]) -> None:
        assert view["result"]["history"] == history
        model = np.load(io.BytesIO(output(cluster, view, "model.npz")))
        assert all(np.array_equal(model[k], weights[k]) for k in weights)

    return Case("train", params, check=check)


def assert_exact(cluster: Cluster, job_id: str, case: Case, view: dict[str, Any]) -> None:
    """The job succeeded, every chunk is done exactly once in the tally, and the output is exact."""
    assert view["state"] == "succeeded", (view["state"], view["error"])
    total = view["progress"]["total"]
    chunks = cluster.chunks(job_id)
    assert len(chunks) == total and all(c["state"] == "done" for c in chunks), \
        [c for c in chunks if c["state"] != "done"][:5]
    assert sum(view["workers"].values()) == total, f"chunks counted {view['workers']} for {total}"
    assert view["progress"]["done"] == total
    case.check(cluster, view)


# ---------------------------------------------------------------- watching a job


def progress(cluster: Cluster, job_id: str) -> tuple[str, int, int]:
    view = cluster.job(job_id)
    return view["state"], view["progress"]["done"], view["progress"]["total"]


def wait_progress(cluster: Cluster, job_id: str, fraction: float, timeout: float = 60.0) -> bool:
    """Wait until ``fraction`` of the job's chunks are done; False if it ended first."""
    outcome: list[bool] = []

    def reached() -> bool:
        state, done, total = progress(cluster, job_id)
        if state in ("succeeded", "failed", "cancelled"):
            outcome.append(False)
            return True
        if state == "running" and total and done >= fraction * total:
            outcome.append(True)
            return True
        return False

    wait_until(reached, timeout, interval=0.02, message=f"job {job_id} to reach {fraction:.0%}")
    return outcome[0]


def live_names(cluster: Cluster) -> set[str]:
    """Names of the workers the master lists as joined and not lost."""
    return {name for name, w in cluster.workers_by_name().items() if w["state"] != "lost"}


def worker_state(cluster: Cluster, name: str) -> str:
    return str(cluster.workers_by_name()[name]["state"])
