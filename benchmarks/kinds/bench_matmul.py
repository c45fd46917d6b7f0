"""Benchmark: ``matmul`` on a LocalCluster against numpy's single-threaded ``a @ b`` in one process.

BLAS is held to one thread everywhere: the variables are set before numpy is imported, and the local
master and workers inherit them. So the ratio shows what splitting the product across workers buys.
Peak RSS of the master, the worker agents and their chunk processes is sampled while the job runs.

    python benchmarks/kinds/bench_matmul.py --n 2048 --workers 2
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for benchmarks.common
from benchmarks.common import pin_blas_threads  # noqa: E402

pin_blas_threads()  # before numpy is imported

import os  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

import rvidia  # noqa: E402
from benchmarks.common import PeakRss, Row, job_rows, parser, report, time_jobs, time_runs  # noqa: E402


def main() -> None:
    ap = parser(__doc__, repeats=3)
    ap.add_argument("--n", type=int, default=2048, help="a and b are n x n float64")
    ap.add_argument("--block-rows", type=int, default=0, help="0: the kind's automatic choice")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((args.n, args.n)), rng.standard_normal((args.n, args.n))
    ref = time_runs(lambda: a @ b, args.repeats, warmup=1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "a.npy", a)
        np.save(folder / "b.npy", b)
        with rvidia.LocalCluster(workers=args.workers) as cluster:
            upload = time_runs(lambda: {name: cluster.upload(folder / f"{name}.npy") for name in ("a", "b")}, 1)
            inputs = upload.last
            cluster.submit("matmul", inputs=inputs, block_rows=args.block_rows).result()  # warm: b cached, imports paid
            with PeakRss.of_cluster(cluster) as rss:
                runs = time_jobs(cluster, "matmul", args.repeats, inputs=inputs, block_rows=args.block_rows)
            c = np.load(runs.job.download_outputs(folder / "out")["c.npy"])
        assert np.allclose(c, ref.last, rtol=1e-10, atol=1e-10), "the cluster's product differs from numpy's"
    report("matmul", f"matmul {args.n}x{args.n} float64, BLAS threads 1, cpus {os.cpu_count()}",
           [Row("numpy a @ b, one process", ref.median, ref="numpy"),
            *job_rows(runs, args.workers, "job only, inputs already uploaded")],
           [f"result: {runs.result}",
            f"upload of a and b: {upload.median:.2f} s",
            "the cluster's c.npy equals numpy's a @ b within rtol=atol=1e-10",
            f"peak RSS during the job: {rss.report()}"],
           repeats=args.repeats, json_path=args.json, workload=f"{args.n}x{args.n} float64",
           check="equals numpy within 1e-10")


if __name__ == "__main__":
    main()
