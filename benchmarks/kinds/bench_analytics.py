"""Benchmark of the ``analytics`` kind: a LocalCluster job against a pandas groupby in one process.

It generates a CSV of ``--rows`` rows (a string and an int key, two float and one int value column,
some missing values), times ``pd.read_csv(...).groupby(...).agg(...)`` against the job from submit to
result (and created_at to finished_at on the master's clock, without the client's polling; cluster
started and warmed up, the table already uploaded), the median of ``--repeats`` runs each,
checks that both agree, and reports peak RSS: this process during the pandas reference, the master,
and each worker with its chunk processes (psutil, sampled every 20 ms). Run:

    python benchmarks/kinds/bench_analytics.py [--rows 4000000 --chunk-bytes 4194304 --workers 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for benchmarks.common

import os  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import rvidia  # noqa: E402
from benchmarks.common import MIB, PeakRss, Row, job_rows, parser, report, time_jobs, time_runs  # noqa: E402

GROUP_BY = ["region", "year"]
AGGREGATES = {"price": ["sum", "mean", "min", "max", "count"], "qty": ["sum", "mean", "max"],
              "weight": ["mean", "min"]}
SAMPLE_EVERY = 0.02  # seconds between RSS samples


def generate(path: Path, rows: int, n_regions: int = 40, seed: int = 1, block: int = 500_000) -> None:
    """A sales-like table: n_regions x 25 years groups."""
    rng = np.random.default_rng(seed)
    regions = np.array([f"region-{i:05d}" for i in range(n_regions)])
    with open(path, "w") as f:
        for lo in range(0, rows, block):
            n = min(block, rows - lo)
            frame = pd.DataFrame({"region": regions[rng.integers(0, len(regions), n)],
                                  "year": rng.integers(2000, 2025, n),
                                  "price": np.round(rng.gamma(2.0, 50.0, n), 2),
                                  "qty": rng.integers(0, 1000, n),
                                  "weight": np.round(rng.normal(10.0, 3.0, n), 3)})
            frame.loc[rng.random(n) < 0.01, "price"] = np.nan
            frame.to_csv(f, index=False, header=lo == 0)


def reference(path: Path) -> pd.DataFrame:
    named = {f"{c}_{a}": (c, a) for c, aggs in AGGREGATES.items() for a in aggs}
    return pd.read_csv(path).groupby(GROUP_BY).agg(**named).reset_index()


def main() -> None:
    ap = parser(__doc__, repeats=2)
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--chunk-bytes", type=int, default=4 * MIB)
    ap.add_argument("--regions", type=int, default=40, help="distinct regions; groups = regions x 25 years")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.csv"
        generate(path, args.rows, args.regions)
        size = path.stat().st_size
        with PeakRss.of_process(interval=SAMPLE_EVERY) as ref_rss:
            ref = time_runs(lambda: reference(path), args.repeats)
        with rvidia.LocalCluster(workers=args.workers) as cluster:
            blob = cluster.upload(path)
            warm = b"region,year,price,qty,weight\n" + b"a,1,1.0,1,1.0\n" * 2000
            cluster.submit("analytics", inputs={"table": warm}, group_by=GROUP_BY, aggregates=AGGREGATES,
                           chunk_bytes=1024).result(timeout=120)  # every chunk process imports pandas
            rss = PeakRss.of_cluster(cluster, interval=SAMPLE_EVERY)
            idle = rss.measure()
            with rss:
                runs = time_jobs(cluster, "analytics", args.repeats, inputs={"table": blob}, wait=1200,
                                 group_by=GROUP_BY, aggregates=AGGREGATES, chunk_bytes=args.chunk_bytes)
            out = runs.job.download_outputs(tmp)["result.csv"]
            n_chunks = runs.job.status()["progress"]["total"]
        pd.testing.assert_frame_equal(pd.read_csv(out), ref.last, rtol=1e-9)
    trees = ["master"] + [f"worker {i + 1}" for i in range(args.workers)]
    report("analytics", f"analytics over {args.rows} rows ({size / MIB:.1f} MiB, {runs.result['groups']} groups), "
                        f"chunk_bytes={args.chunk_bytes} ({n_chunks} chunks), {os.cpu_count()} cores, "
                        f"LocalCluster(workers={args.workers})",
           [Row("pandas read_csv + groupby", ref.median, f"peak RSS {ref_rss.peak['process'] / MIB:.1f} MiB",
                ref="pandas"),
            *job_rows(runs, args.workers, "result equals pandas: True")],
           [f"peak RSS {name:<10} {rss.peak[name] / MIB:7.1f} MiB (idle before the job {idle[name] / MIB:6.1f} MiB)"
            for name in trees] + [f"peak RSS by role: {rss.report()}"],
           repeats=args.repeats, json_path=args.json, check="result.csv equals pandas (rtol 1e-9)",
           workload=f"{args.rows} rows, {runs.result['groups']} groups, {n_chunks} chunks")


if __name__ == "__main__":
    main()
