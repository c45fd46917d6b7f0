"""Run the five kind benchmarks at modest sizes and print one Markdown table of their ratios.

    python benchmarks/run_kinds.py [--workers 2] [--repeats 3] [--only matmul,train] [--smoke] > table.md

Each benchmark runs as its own process (``python benchmarks/kinds/bench_X.py ... --json FILE``), so each
one sets up its own environment: matmul, compress and train hold BLAS to one thread before numpy loads.
Their own tables go to stderr as they finish. The combined table goes to stdout, ready to paste
into the "Measured figures" section of docs/kinds.md: one line per single-process reference, against
the cluster's job. ``--smoke`` uses the smallest sizes, only to check that everything still runs:
its figures measure fixed overheads and mean nothing. It exits 1 if any benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

KINDS = Path(__file__).resolve().parent / "kinds"

# name, script, modest arguments, smallest arguments (--smoke; empty: not run by --smoke)
BENCHMARKS: list[tuple[str, str, list[str], list[str]]] = [
    ("matmul", "bench_matmul.py", ["--n", "1024"], ["--n", "64"]),
    ("compress", "bench_compress.py", ["--size-mib", "64"], ["--size-mib", "1"]),
    ("render mandelbrot", "bench_render.py", ["--width", "1280", "--height", "720"],
     ["--width", "64", "--height", "48"]),
    ("render spheres", "bench_render.py", ["--scene", "spheres", "--width", "1280", "--height", "720"],
     ["--scene", "spheres", "--width", "64", "--height", "48"]),
    ("analytics", "bench_analytics.py", ["--rows", "1000000"], ["--rows", "5000"]),
    ("train", "bench_train.py", [], ["--rounds", "2"]),
    # Larger sizes, where each chunk's compute outweighs its fixed costs (skipped by --smoke)
    ("matmul", "bench_matmul.py", ["--n", "4096"], []),
    ("render spheres", "bench_render.py", ["--scene", "spheres", "--width", "1920", "--height", "1080"], []),
]


def run_one(script: str, args: list[str], json_path: Path) -> dict[str, Any] | str:
    """The benchmark's JSON figures, or why there are none."""
    cmd = [sys.executable, str(KINDS / script), *args, "--json", str(json_path)]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    if done.returncode != 0:
        return f"failed (exit code {done.returncode})"
    return json.loads(json_path.read_text())  # type: ignore[no-any-return]


def table_lines(name: str, figures: dict[str, Any] | str) -> list[str]:
    if isinstance(figures, str):
        return [f"| {name} | | | | | | {figures} |"]
    rows = figures["rows"]
    job = next(r for r in rows if r["cluster"] == "job")
    master = next(r for r in rows if r["cluster"] == "master")
    lines = []
    for ref in (r for r in rows if r["ref"]):
        lines.append(f"| {name} | {figures['workload']} | {ref['label']} | {ref['seconds']:.3f} | "
                     f"{job['seconds']:.3f} ({master['seconds']:.3f}) | "
                     f"{ref['seconds'] / job['seconds']:.2f} ({ref['seconds'] / master['seconds']:.2f}) | "
                     f"{figures['check']} |")
    return lines


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="workers of each LocalCluster (default: 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each side; the median is reported (default: 3)")
    ap.add_argument("--only", default="", help="comma-separated kinds among matmul, compress, render (both "
                                               "scenes), analytics, train (default: all)")
    ap.add_argument("--smoke", action="store_true", help="the smallest sizes, to check that they run")
    args = ap.parse_args()
    chosen = [b for b in BENCHMARKS if (not args.only or b[0].split()[0] in args.only.split(","))
              and (b[3] or not args.smoke)]
    if not chosen:
        ap.error(f"--only {args.only!r} names no benchmark")
    load_before, started = load(), time.monotonic()
    lines: list[str] = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, script, modest, smallest) in enumerate(chosen):
            extra = ["--workers", str(args.workers), "--repeats", str(args.repeats)]
            figures = run_one(script, (smallest if args.smoke else modest) + extra, Path(tmp) / f"{i}.json")
            failed |= isinstance(figures, str)
            lines += table_lines(name, figures)
    minutes = (time.monotonic() - started) / 60
    runs = f"{args.repeats} run{'' if args.repeats == 1 else 's'}"
    print(f"`python benchmarks/run_kinds.py{' --smoke' if args.smoke else ''}` on {time.strftime('%Y-%m-%d')}: "
          f"{os.cpu_count()} cpus, Python {platform.python_version()}, numpy {version('numpy')}, "
          f"LocalCluster(workers={args.workers}), median of {runs} of each side; load average {load_before} "
          f"before and {load()} after ({minutes:.1f} min). Cluster times run from submit to result as the "
          f"client sees it, the master's own clock in brackets, inputs (if any) uploaded beforehand. "
          f"Ratio = single-process seconds / cluster seconds: above 1 the cluster was faster, below 1 slower.")
    print()
    print("| benchmark | workload | single-process reference | reference s | cluster s (master's clock) "
          "| ratio (master's clock) | output check |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
