"""Memory with a 1 GiB input: ``compress`` and ``analytics`` on a LocalCluster, peak RSS per process.

The issue's bound: the master under 300 MB RSS and each worker under 200 MB while a 1 GiB file is
compressed, and likewise for analytics on a 1 GiB CSV. Peak RSS is sampled (every 50 ms) through the
upload and the job, for the master, each worker agent, each chunk process and each worker with its
chunk processes. Both results are checked: ``gzip -dc`` must restore the file byte for byte, and the
analytics table (one ~128 MiB CSV repeated 8 times, so its exact answer follows from a pandas group-by
of one copy) must match that answer.

    python benchmarks/kinds/memory_1gib.py [--size-mib 1024] [--only compress|analytics]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for benchmarks.common
from benchmarks.kinds.bench_compress import gunzip_sha256, sha256_of, write_sample  # noqa: E402  (pins BLAS first)

import argparse  # noqa: E402
import io  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import rvidia  # noqa: E402
from benchmarks.common import MIB, PeakRss  # noqa: E402
from benchmarks.kinds.bench_analytics import AGGREGATES, GROUP_BY, generate, reference  # noqa: E402

COPIES = 8  # the analytics table is one generated CSV, its rows repeated this many times
FIGURES = ("master", "worker agent (max)", "chunk process (max)", "worker 1", "worker 2")


def _measured(cluster: rvidia.LocalCluster, path: Path, kind: str, **params: object) -> tuple[dict, dict, float]:
    """Upload ``path`` and run the job, sampling RSS throughout; (result, peaks in MiB, seconds)."""
    idle = PeakRss.of_cluster(cluster).measure()
    start = time.perf_counter()
    with PeakRss.of_cluster(cluster) as rss:
        blob = cluster.upload(path)
        job = cluster.submit(kind, inputs={"table" if kind == "analytics" else "data": blob}, **params)
        result = job.result(timeout=3600)
    seconds = time.perf_counter() - start
    peaks = {name: round(rss.peak.get(name, 0) / MIB) for name in FIGURES}
    peaks.update({f"{name} idle": round(idle.get(name, 0) / MIB) for name in ("master", "worker 1")})
    return {"result": result, "job": job}, peaks, seconds


def run_compress(folder: Path, size: int) -> dict:
    path = folder / "data.bin"
    write_sample(path, size)
    with rvidia.LocalCluster(workers=2) as cluster:
        out, peaks, seconds = _measured(cluster, path, "compress", level=6)
        gz = out["job"].download_outputs(folder / "out")["data.gz"]
    exact = gunzip_sha256(gz) == sha256_of(path)
    return {"kind": "compress", "input_mib": size / MIB, "seconds": seconds, "exact": exact, **peaks}


def _repeat_csv(one: Path, out: Path, copies: int) -> None:
    """The rows of ``one`` ``copies`` times, under one header."""
    with open(one, "rb") as src:
        header = src.readline()
        body_start = src.tell()
    with open(out, "wb") as dst:
        dst.write(header)
        for _ in range(copies):
            with open(one, "rb") as src:
                src.seek(body_start)
                shutil.copyfileobj(src, dst, 4 * MIB)


def _expected(one: Path, copies: int) -> pd.DataFrame:
    """The group-by of ``copies`` copies of the table, from one copy: sums and counts scale, the rest
    (mean, min, max) stay."""
    ref = reference(one)
    for column in ref.columns:
        if column.endswith(("_sum", "_count")):
            ref[column] = ref[column] * copies
    return ref


def run_analytics(folder: Path, size: int, chunk_bytes: int | None = None) -> dict:
    one, table = folder / "one.csv", folder / "table.csv"
    rows_per_mib = 1_000_000 / 32.9  # about 33 bytes per generated row
    generate(one, int(size / COPIES / MIB * rows_per_mib))
    _repeat_csv(one, table, COPIES)
    with rvidia.LocalCluster(workers=2) as cluster:
        extra = {"chunk_bytes": chunk_bytes} if chunk_bytes else {}
        out, peaks, seconds = _measured(cluster, table, "analytics", group_by=GROUP_BY,
                                        aggregates=AGGREGATES, **extra)
        csv = out["job"].download_outputs(folder / "out")["result.csv"]
    got = pd.read_csv(io.BytesIO(csv.read_bytes()))
    want = _expected(one, COPIES)
    exact = list(got.columns) == list(want.columns) and len(got) == len(want) and all(
        np.allclose(got[c].to_numpy(float), want[c].to_numpy(float), rtol=1e-9, equal_nan=True)
        if got[c].dtype.kind in "fi" else (got[c].astype(str) == want[c].astype(str)).all()
        for c in want.columns)
    return {"kind": "analytics", "input_mib": table.stat().st_size / MIB, "seconds": seconds, "exact": exact,
            **peaks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=float, default=1024)
    ap.add_argument("--only", choices=["compress", "analytics"], default=None)
    ap.add_argument("--chunk-bytes", type=int, default=None, help="analytics chunk_bytes [the kind's default]")
    args = ap.parse_args()
    size = int(args.size_mib * MIB)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "compress"):
            rows.append(run_compress(Path(tmp), size))
            print(rows[-1], file=sys.stderr, flush=True)
        if args.only in (None, "analytics"):
            rows.append(run_analytics(Path(tmp), size, args.chunk_bytes))
            print(rows[-1], file=sys.stderr, flush=True)
    print("| kind | input | upload + job | result exact | peak RSS, MiB: master (idle) | worker agent | "
          "chunk process | each worker with its chunk processes (idle) |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['kind']} | {r['input_mib']:.0f} MiB | {r['seconds']:.1f} s | {r['exact']} | "
              f"{r['master']} ({r['master idle']}) | {r['worker agent (max)']} | {r['chunk process (max)']} | "
              f"{r['worker 1']}, {r['worker 2']} ({r['worker 1 idle']}) |")
    if not all(r["exact"] for r in rows):
        raise SystemExit("a result was wrong")


if __name__ == "__main__":
    main()
