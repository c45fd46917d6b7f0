"""Example: multiply two matrices on a local RVIDIA cluster and check the product against numpy.

Run with ``python examples/matmul.py``. It writes ``a.npy`` and ``b.npy`` into a temporary folder,
submits a ``matmul`` job to a LocalCluster of two workers, downloads ``c.npy`` and compares it with
``a @ b`` computed here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import rvidia


def main() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((600, 400))
    b = rng.standard_normal((400, 300))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "a.npy", a)
        np.save(folder / "b.npy", b)
        with rvidia.LocalCluster(workers=2) as cluster:
            job = cluster.submit("matmul", inputs={"a": folder / "a.npy", "b": folder / "b.npy"},
                                 block_rows=100)
            print("result:", job.result())
            c = np.load(job.download_outputs(folder)["c.npy"])
    error = float(np.max(np.abs(c - a @ b)))
    print(f"c has shape {c.shape}; largest difference from numpy's a @ b: {error:.3g}")
    assert np.allclose(c, a @ b, rtol=1e-12, atol=1e-12)


if __name__ == "__main__":
    main()
