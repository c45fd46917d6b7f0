"""Benchmark of the ``render`` kind: a LocalCluster job against the single-process reference.

The reference is ``render_full`` (pixels only) and ``render_full`` plus a Pillow PNG encode (what a
single process needs to produce the same file). The job's time runs from submit to result as the
client sees it (its polling included), and from created_at to finished_at on the master's clock, with
the cluster already started and warmed up (chunk processes have imported numpy). Run:

    python benchmarks/kinds/bench_render.py [--width 1920 --height 1080 --max-iter 256 --workers 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for benchmarks.common

import io  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import rvidia  # noqa: E402
from benchmarks.common import Row, Runs, job_rows, parser, report, time_jobs, time_runs  # noqa: E402
from rvidia.kinds.render import render_full  # noqa: E402


def encode_png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def main() -> None:
    ap = parser(__doc__, repeats=3)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--max-iter", type=int, default=256)
    ap.add_argument("--scene", default="mandelbrot", choices=["mandelbrot", "spheres"])
    ap.add_argument("--tile-rows", type=int, default=32)
    args = ap.parse_args()
    params = {"width": args.width, "height": args.height, "scene": args.scene, "max_iter": args.max_iter,
              "tile_rows": args.tile_rows}

    pixels = time_runs(lambda: render_full(params), args.repeats)
    png = time_runs(lambda: encode_png(pixels.last), args.repeats)
    with_png = Runs([a + b for a, b in zip(pixels.seconds, png.seconds)], png.values)

    with rvidia.LocalCluster(workers=args.workers) as cluster, tempfile.TemporaryDirectory() as tmp:
        cluster.submit("render", width=64, height=64, scene=args.scene).result(timeout=120)  # warm-up
        runs = time_jobs(cluster, "render", args.repeats, wait=600, **params)
        out = runs.job.download_outputs(tmp)["image.png"]
        with Image.open(out) as img:
            same = np.array_equal(np.asarray(img), pixels.last)
        size = Path(out).stat().st_size

    iters = f" max_iter={args.max_iter}" if args.scene == "mandelbrot" else ""
    report(f"render {args.scene}",
           f"render {args.scene} {args.width}x{args.height}{iters} tile_rows={args.tile_rows} on {os.cpu_count()} "
           f"cores, LocalCluster(workers={args.workers})",
           [Row("render_full (pixels only)", pixels.median, ref="pixels"),
            Row("render_full + Pillow PNG", with_png.median, ref="pixels+PNG"),
            *job_rows(runs, args.workers, f"PNG {size} bytes, equal pixels: {same}")],
           repeats=args.repeats, json_path=args.json, workload=f"{args.scene} {args.width}x{args.height}{iters}",
           check=f"PNG pixels equal render_full's: {same}")


if __name__ == "__main__":
    main()
