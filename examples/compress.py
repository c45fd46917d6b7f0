"""Example: gzip a file on a local RVIDIA cluster, then restore it with ``gzip -dc`` and Python's gzip.

Run with ``python examples/compress.py``. It writes 8 MiB of half random, half repetitive data,
compresses it in 1 MiB blocks with a LocalCluster of two workers, and checks that the ``data.gz`` it
gets back decompresses to the same bytes.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import rvidia


def sample_data(size: int) -> bytes:
    text = b"".join(b"%06d the same old log line again\n" % i for i in range(size // 64 + 1))
    return (os.urandom(size // 2) + text)[:size]


def main() -> None:
    data = sample_data(8 << 20)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "data.bin").write_bytes(data)
        with rvidia.LocalCluster(workers=2) as cluster:
            job = cluster.submit("compress", inputs={"data": folder / "data.bin"}, level=6, block_size=1 << 20)
            print("result:", job.result())
            gz = job.download_outputs(folder)["data.gz"]
        assert gzip.decompress(gz.read_bytes()) == data
        if shutil.which("gzip"):
            restored = subprocess.run(["gzip", "-dc", str(gz)], check=True, capture_output=True).stdout
            assert restored == data
        print(f"{len(data)} bytes -> {gz.stat().st_size} bytes; gzip restores them byte for byte")


if __name__ == "__main__":
    main()
