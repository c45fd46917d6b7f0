"""Every data kind from every surface a user has: ``rvidia run``, ``rvidia submit --wait``, the REST
API and the Python API. Each surface's outputs are checked against an independent reference and
must be byte-identical to the others' (the same parameters give the same result, however submitted).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import rvidia

pytestmark = pytest.mark.timeout(240)


@dataclass
class Case:
    """One kind's small job: its parameters, input files, and a check of its outputs and result."""

    params: dict[str, Any]
    make_inputs: Callable[[Path], dict[str, Path]]
    check: Callable[[dict[str, Path], dict[str, Any], Path], None]
    inputs: dict[str, Path] = field(default_factory=dict)


def _matmul_inputs(d: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    np.save(d / "a.npy", rng.standard_normal((37, 21)))
    np.save(d / "b.npy", rng.standard_normal((21, 11)))
    return {"a": d / "a.npy", "b": d / "b.npy"}


def _matmul_check(out: dict[str, Path], result: dict[str, Any], d: Path) -> None:
    expected = np.load(d / "a.npy") @ np.load(d / "b.npy")
    assert np.allclose(np.load(out["c.npy"]), expected, rtol=1e-10, atol=1e-10)
    assert result["shape"] == [37, 11]


def _compress_inputs(d: Path) -> dict[str, Path]:
    rng = np.random.default_rng(4)
    (d / "data.bin").write_bytes(rng.bytes(70_000) + b"log line 42\n" * 9_000)
    return {"data": d / "data.bin"}


def _compress_check(out: dict[str, Path], result: dict[str, Any], d: Path) -> None:
    assert gzip.decompress(out["data.gz"].read_bytes()) == (d / "data.bin").read_bytes()
    assert result["blocks"] == 3


def _render_check(out: dict[str, Path], result: dict[str, Any], d: Path) -> None:
    from rvidia.kinds.render import render_full

    pixels = np.asarray(Image.open(io.BytesIO(out["image.png"].read_bytes())).convert("RGB"))
    assert np.array_equal(pixels, render_full(CASES["render"].params))


def _analytics_inputs(d: Path) -> dict[str, Path]:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"g": rng.integers(0, 7, 3000), "x": rng.integers(-50, 50, 3000),
                          "y": rng.standard_normal(3000)})
    frame.to_csv(d / "table.csv", index=False)
    return {"table": d / "table.csv"}


def _analytics_check(out: dict[str, Path], result: dict[str, Any], d: Path) -> None:
    expected = pd.read_csv(d / "table.csv").groupby("g").agg(x_sum=("x", "sum"), y_mean=("y", "mean"))
    got = pd.read_csv(out["result.csv"]).set_index("g")
    assert list(got.columns) == ["x_sum", "y_mean"]
    assert (got["x_sum"] == expected["x_sum"]).all()
    assert np.allclose(got["y_mean"], expected["y_mean"], rtol=1e-12)


def _train_check(out: dict[str, Path], result: dict[str, Any], d: Path) -> None:
    from rvidia.kinds.train import train_reference

    weights, history = train_reference(CASES["train"].params)
    model = np.load(out["model.npz"])
    assert all(np.array_equal(model[k], weights[k]) for k in weights)
    assert result["history"] == history and result["rounds"] == 2


CASES: dict[str, Case] = {
    "matmul": Case({"block_rows": 8}, _matmul_inputs, _matmul_check),
    "compress": Case({"level": 5, "block_size": 65536}, _compress_inputs, _compress_check),
    "render": Case({"scene": "mandelbrot", "width": 40, "height": 30, "max_iter": 64}, lambda d: {},
                   _render_check),
    "analytics": Case({"group_by": ["g"], "aggregates": {"x": ["sum"], "y": ["mean"]}, "chunk_bytes": 16384},
                      _analytics_inputs, _analytics_check),
    "train": Case({"rounds": 2, "shards": 3}, lambda d: {}, _train_check),
}


def _cli_args(kind: str, case: Case, out: Path) -> list[str]:
    args = [kind, "-o", str(out)]
    for key, value in case.params.items():
        args += ["-p", f"{key}={json.dumps(value)}"]
    for name, path in case.inputs.items():
        args += ["-i", f"{name}={path}"]
    return args


def _cli(*args: str, token: str = "") -> dict[str, Any]:
    env = {**os.environ, "RVIDIA_TOKEN": token} if token else None
    done = subprocess.run([sys.executable, "-m", "rvidia", *args], capture_output=True, text=True,
                          timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _rest(cluster: rvidia.LocalCluster, kind: str, case: Case, out: Path) -> dict[str, Any]:
    """Upload, submit, wait and download with nothing but HTTP requests."""
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.token}"},
                      timeout=60) as http:
        inputs = {}
        for name, path in case.inputs.items():
            answer = http.post("/api/v1/blobs", content=path.read_bytes())
            assert answer.status_code == 201, answer.text
            inputs[name] = answer.json()["id"]
        answer = http.post("/api/v1/jobs", json={"kind": kind, "params": case.params, "inputs": inputs})
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["id"]
        deadline = time.monotonic() + 120
        while (job := http.get(f"/api/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["state"] == "succeeded", job
        out.mkdir()
        for name, blob_id in job["outputs"].items():
            (out / name).write_bytes(http.get(f"/api/v1/blobs/{blob_id}").content)
        return job["result"]  # type: ignore[no-any-return]


def _python(cluster: rvidia.LocalCluster, kind: str, case: Case, out: Path) -> dict[str, Any]:
    job = cluster.submit(kind, inputs=dict(case.inputs), **case.params)
    result = job.result(timeout=120)
    job.download_outputs(out)
    return result  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", sorted(CASES))
def test_every_surface_gives_the_reference_result(kind: str, one: rvidia.LocalCluster, tmp_path: Path) -> None:
    case = CASES[kind]
    case.inputs = case.make_inputs(tmp_path)
    results: dict[str, dict[str, Any]] = {}
    results["run"] = _cli("run", *_cli_args(kind, case, tmp_path / "run"), "--workers", "1")
    results["submit"] = _cli("submit", *_cli_args(kind, case, tmp_path / "submit"), "--wait",
                             "--master", one.url, token=one.token or "")
    results["rest"] = _rest(one, kind, case, tmp_path / "rest")
    results["python"] = _python(one, kind, case, tmp_path / "python")
    names = sorted(p.name for p in (tmp_path / "python").iterdir())
    assert names, "the job wrote no outputs"
    for surface, result in results.items():
        out = {name: tmp_path / surface / name for name in names}
        case.check(out, result, tmp_path)
        assert result == results["python"], surface
        for name in names:
            assert out[name].read_bytes() == (tmp_path / "python" / name).read_bytes(), (surface, name)
