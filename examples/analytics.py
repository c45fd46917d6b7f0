"""Group-by aggregates of a generated sales table on a local cluster, checked against pandas.

    python examples/analytics.py

Writes a CSV of 20,000 sales, runs ``analytics`` on two local workers with small chunks (so the table
is cut into many byte ranges), prints result.csv and compares it with a pandas groupby of the file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import rvidia

AGGREGATES = {"amount": ["sum", "mean", "min", "max", "count"], "items": ["sum", "max"]}


def make_sales(path: Path, rows: int = 20_000) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    sales = pd.DataFrame({
        "shop": rng.choice(["Lyon", "Paris", "Nantes", "Lille"], rows),
        "month": rng.integers(1, 13, rows),
        "amount": np.round(rng.gamma(2.0, 30.0, rows), 2),
        "items": rng.integers(1, 20, rows),
    })
    sales.loc[rng.random(rows) < 0.02, "amount"] = np.nan  # some sales without an amount
    sales.to_csv(path, index=False)
    return sales


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sales.csv"
        sales = make_sales(path)
        with rvidia.LocalCluster(workers=2) as cluster:
            job = cluster.submit("analytics", inputs={"table": path}, group_by=["shop", "month"],
                                 aggregates=AGGREGATES, chunk_bytes=64 * 1024)
            print(job.result(timeout=300), f"({job.status()['progress']['total']} chunks)")
            out = job.download_outputs(tmp)["result.csv"]
        got = pd.read_csv(out)
        print(got.head(8).to_string(index=False))
        named = {f"{c}_{a}": (c, a) for c, aggs in AGGREGATES.items() for a in aggs}
        expected = sales.groupby(["shop", "month"]).agg(**named).reset_index()
        pd.testing.assert_frame_equal(got, expected, rtol=1e-12)
        print("result.csv equals pandas' groupby of the whole file")


if __name__ == "__main__":
    main()
