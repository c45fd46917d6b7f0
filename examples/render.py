"""Render a Mandelbrot set and the spheres scene on a local cluster, and check them pixel for pixel.

    python examples/render.py [OUT_DIR]

Starts a master and two local workers, renders both scenes in row tiles, writes the PNGs into
OUT_DIR (default: a temporary folder) and compares each with the single-process reference.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import rvidia
from rvidia.kinds.render import render_full

JOBS = {
    "mandelbrot": {"width": 480, "height": 320, "scene": "mandelbrot", "max_iter": 400,
                   "center_x": -0.745, "center_y": 0.113, "zoom": 40.0},
    "spheres": {"width": 480, "height": 320, "scene": "spheres", "reflections": 2},
}


def main(out_dir: Path) -> None:
    with rvidia.LocalCluster(workers=2) as cluster:
        for name, params in JOBS.items():
            job = cluster.submit("render", **params)
            print(f"{name}: {job.result(timeout=300)}")
            png = job.download_outputs(out_dir / name)["image.png"]
            with Image.open(png) as img:
                same = np.array_equal(np.asarray(img), render_full(params))
            print(f"  wrote {png}; equal to the single-process render: {same}")
            if not same:
                raise SystemExit(f"{name}: the cluster's image differs from the reference")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
