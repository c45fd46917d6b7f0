"""The ``render`` kind: tiles equal the single-process reference pixel for pixel, whoever renders them.

Unit tests cover the pieces a tile is made of (per-row rendering that does not depend on how rows are
blocked, PNG filters, the Adler-32 combination that stitches the workers' deflate segments). End to
end, the PNG a LocalCluster writes, decoded by Pillow, must equal ``render_full`` exactly, with 1 and
with 3 workers, and the file itself must be the same bytes whatever the number of workers.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import rvidia
from rvidia.client.api import ApiError
from rvidia.kinds.base import ParamError
from rvidia.kinds.render import (KIND, MAX_PIXELS, RenderParams, _filter_rows, _png_chunk, adler32_combine,
                                 encode_tile, render_full, render_rows)
from rvidia.protocol import values

pytestmark = pytest.mark.timeout(120)

SMALL = {"width": 96, "height": 70, "tile_rows": 9}
SCENES = [
    {"scene": "mandelbrot", "max_iter": 96},
    {"scene": "mandelbrot", "max_iter": 300, "center_x": -0.7436, "center_y": 0.1318, "zoom": 120.0},
    {"scene": "spheres", "reflections": 2},
]


def params(**kw: Any) -> RenderParams:
    return KIND.parse_params(kw)


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        assert img.mode == "RGB"
        return np.asarray(img)


class FakeContext:
    """What finish_stage and merge read on the master: params and the stored results in index order."""

    def __init__(self, p: RenderParams, results: list[bytes]) -> None:
        self.params, self.blobs, self._results = p, None, results

    def results(self) -> Iterator[tuple[int, bytes]]:
        return iter(enumerate(self._results))


def tiled_png(p: RenderParams) -> bytes:
    """The job's PNG built in this process from the same tile code, merged in a scrambled order."""
    n = KIND.plan(FakeContext(p, [])).n_chunks  # type: ignore[arg-type]
    results = [values.dumps(encode_tile(p, i * p.tile_rows, min((i + 1) * p.tile_rows, p.height)))
               for i in range(n)]
    ctx = FakeContext(p, results)
    acc = KIND.new_acc(ctx)  # type: ignore[arg-type]
    for i in reversed(range(n)):
        acc = KIND.merge(ctx, acc, i, results[i])  # type: ignore[arg-type]
    return b"".join(KIND._png_parts(ctx))  # type: ignore[arg-type]


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize("raw, words", [
    ({"width": 0}, "width"),
    ({"height": 16385}, "height"),
    ({"scene": "cube"}, "unknown scene 'cube': choose among mandelbrot, spheres"),
    ({"width": 16384, "height": 16384}, "pixels"),
    ({"width": 16384, "tile_rows": 4096}, "tile_rows"),
    ({"zoom": 0}, "zoom"),
    ({"colour": "red"}, "colour"),
])
def test_bad_parameters_are_refused_with_a_reason(raw: dict[str, Any], words: str) -> None:
    with pytest.raises(ParamError, match=words):
        KIND.parse_params(raw)


def test_the_pixel_cap_allows_the_largest_legal_image() -> None:
    assert params(width=8192, height=MAX_PIXELS // 8192, tile_rows=8).height == 8192


def test_tiles_cover_every_row_once_and_ignore_workers() -> None:
    p = params(width=10, height=100, tile_rows=32)
    ctx = FakeContext(p, [])
    n = KIND.plan(ctx).n_chunks  # type: ignore[arg-type]
    bounds = [tuple(values.loads(KIND.chunk(ctx, i))) for i in range(n)]  # type: ignore[arg-type]
    assert bounds == [(0, 32), (32, 64), (64, 96), (96, 100)]


# ---------------------------------------------------------------- pixels and PNG pieces


@pytest.mark.parametrize("scene", SCENES, ids=["mandelbrot", "mandelbrot-zoomed", "spheres"])
def test_rows_do_not_depend_on_how_they_are_blocked(scene: dict[str, Any]) -> None:
    p = params(**SMALL, **scene)
    full = render_full(p)
    assert full.shape == (70, 96, 3) and full.dtype == np.uint8
    cuts = [0, 1, 2, 13, 40, 41, 70]
    pieces = np.concatenate([render_rows(p, a, b) for a, b in zip(cuts, cuts[1:])])
    assert np.array_equal(pieces, full)
    assert len(np.unique(full.reshape(-1, 3), axis=0)) > 50, "the image should not be flat"


def test_mandelbrot_is_black_inside_and_coloured_outside() -> None:
    img = render_full(params(width=60, height=40, max_iter=200))
    assert img[20, 20].tolist() == [0, 0, 0]  # c = -0.5: inside the main cardioid
    assert img[0, 0].any()  # a corner far outside the set


@pytest.mark.parametrize("scene", SCENES, ids=["mandelbrot", "mandelbrot-zoomed", "spheres"])
@pytest.mark.parametrize("tile_rows", [1, 9, 500])
def test_tiles_merged_in_any_order_make_the_reference_png(scene: dict[str, Any], tile_rows: int) -> None:
    p = params(**{**SMALL, "tile_rows": tile_rows}, **scene)
    assert np.array_equal(decode(tiled_png(p)), render_full(p))


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_adler32_combine_matches_zlib(a: bytes, b: bytes) -> None:
    assert adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 7), st.just(3)),
                  elements=st.sampled_from([0, 1, 2, 127, 128, 129, 200, 254, 255])))
def test_filtered_scanlines_decode_to_the_pixels(pixels: np.ndarray) -> None:
    """Filters chosen per row (sub, up, average, Paeth with byte wrap-around) decode exactly."""
    h, w, _ = pixels.shape
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    split = h // 2  # two pieces, the second filtered against the row above it, as tiles are
    raw = _filter_rows(pixels[:split], None) if split else b""
    raw += _filter_rows(pixels[split:], pixels[split - 1] if split else None)
    png = b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")
    assert np.array_equal(decode(png), pixels)


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module", params=[1, 3], ids=["1-worker", "3-workers"])
def cluster(request: pytest.FixtureRequest) -> Iterator[rvidia.LocalCluster]:
    with rvidia.LocalCluster(workers=request.param) as made:
        yield made


PNG_BYTES: dict[tuple[str, int], bytes] = {}


@pytest.mark.parametrize("scene", SCENES, ids=["mandelbrot", "mandelbrot-zoomed", "spheres"])
def test_cluster_png_equals_the_reference(cluster: rvidia.LocalCluster, scene: dict[str, Any],
                                          tmp_path: Path) -> None:
    job = cluster.submit("render", **SMALL, **scene)
    assert job.result(timeout=90) == {"width": 96, "height": 70, "scene": scene["scene"], "tiles": 8}
    png = job.download_outputs(tmp_path)["image.png"].read_bytes()
    assert np.array_equal(decode(png), render_full({**SMALL, **scene}))
    workers = len(cluster.worker_procs)
    PNG_BYTES[(json.dumps(scene), workers)] = png
    other = PNG_BYTES.get((json.dumps(scene), 4 - workers))
    assert other is None or other == png, "the PNG bytes must not depend on the number of workers"


def test_cluster_renders_a_full_hd_strip(cluster: rvidia.LocalCluster, tmp_path: Path) -> None:
    p = {"width": 1920, "height": 40, "scene": "mandelbrot", "tile_rows": 16, "center_y": 0.3}
    job = cluster.submit("render", **p)
    job.result(timeout=90)
    assert np.array_equal(decode(job.download_outputs(tmp_path)["image.png"].read_bytes()), render_full(p))


@pytest.mark.parametrize("raw, words", [
    ({"width": 0, "height": 10}, "width"),
    ({"width": 10, "height": 10, "scene": "teapot"}, "scene"),
    ({"width": 16384, "height": 16384}, "pixels"),
])
def test_cluster_refuses_bad_parameters_with_422(cluster: rvidia.LocalCluster, raw: dict[str, Any],
                                                 words: str) -> None:
    with pytest.raises(ApiError, match=words) as err:
        cluster.submit("render", **raw)
    assert err.value.status == 422


def test_cli_run_writes_the_reference_png(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RVIDIA_")}
    out = subprocess.run([sys.executable, "-m", "rvidia", "run", "render", "-p", "width=64", "-p", "height=48",
                          "-p", "scene=mandelbrot", "-o", str(tmp_path), "--workers", "1"],
                         capture_output=True, text=True, timeout=100, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"width": 64, "height": 48, "scene": "mandelbrot", "tiles": 2}
    assert out.stdout.count("\n") == 1
    png = (tmp_path / "image.png").read_bytes()
    assert np.array_equal(decode(png), render_full({"width": 64, "height": 48, "scene": "mandelbrot"}))
