"""``render``: a Mandelbrot set or a small ray-traced scene, rendered in row tiles into one PNG.

Tiles are fixed runs of ``tile_rows`` rows, so they never depend on the number of workers. Every
pixel comes from pure, element-wise numpy code on its own row and column, so a tile is bit-identical
to the same rows of the single-process reference :func:`render_full`. A worker also does the PNG
work for its tile: it applies the PNG row filters and deflates the rows as one independent,
sync-flushed raw deflate segment. The master only concatenates the segments into ``IDAT`` chunks
in row order and combines their Adler-32 checksums: it never encodes pixels nor holds the image.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Annotated, Any, Iterator, Literal

import msgspec
import numpy as np

from rvidia.kinds.base import Done, JobContext, Kind, ParamError, Plan, RunContext
from rvidia.protocol import values

MAX_PIXELS = 1 << 26  # 64 Mi pixels: the raw RGB image stays under ~200 MB (render_full, viewers)
MAX_TILE_BYTES = 16 << 20  # raw RGB bytes of one tile
INLINE_LIMIT = 1 << 20  # larger compressed tiles travel as blobs
_REF_BLOCK = 64  # rows per block in render_full (any block size gives the same pixels)
SCENES = ("mandelbrot", "spheres")


class RenderParams(msgspec.Struct, forbid_unknown_fields=True):
    width: Annotated[int, msgspec.Meta(ge=1, le=16384, description="Image width in pixels")] = 640
    height: Annotated[int, msgspec.Meta(ge=1, le=16384, description="Image height in pixels")] = 480
    scene: Annotated[Literal["mandelbrot", "spheres"], msgspec.Meta(description="What to draw")] = "mandelbrot"
    max_iter: Annotated[int, msgspec.Meta(ge=1, le=100_000, description="Mandelbrot iterations")] = 256
    center_x: Annotated[float, msgspec.Meta(ge=-4.0, le=4.0, description="Mandelbrot centre, real")] = -0.5
    center_y: Annotated[float, msgspec.Meta(ge=-4.0, le=4.0, description="Mandelbrot centre, imaginary")] = 0.0
    zoom: Annotated[float, msgspec.Meta(gt=0.0, le=1e13, description="Mandelbrot zoom (1: whole set)")] = 1.0
    reflections: Annotated[int, msgspec.Meta(ge=0, le=4, description="Spheres: reflection bounces")] = 2
    tile_rows: Annotated[int, msgspec.Meta(ge=1, le=4096, description="Rows per tile (fixes chunks)")] = 32
    level: Annotated[int, msgspec.Meta(ge=0, le=9, description="PNG deflate level")] = 6

    def __post_init__(self) -> None:
        if self.width * self.height > MAX_PIXELS:
            raise ValueError(f"width*height is {self.width * self.height} pixels; at most {MAX_PIXELS}")
        if self.tile_rows * self.width * 3 > MAX_TILE_BYTES:
            raise ValueError(f"tile_rows*width*3 must be at most {MAX_TILE_BYTES} bytes: lower tile_rows")


# ---------------------------------------------------------------- mandelbrot

_BAILOUT2 = 256.0 * 256.0  # a large escape radius makes smooth colouring accurate
_PHASES = (0.0, 0.10, 0.20)  # cosine palette phase per channel


def _mandelbrot_rows(p: RenderParams, start: int, stop: int) -> np.ndarray:
    scale = 3.0 / (p.zoom * min(p.width, p.height))  # the shorter side spans 3/zoom
    xs = p.center_x + (np.arange(p.width) + 0.5 - p.width / 2) * scale
    ys = p.center_y - (np.arange(start, stop) + 0.5 - p.height / 2) * scale
    cr, ci = np.tile(xs, stop - start), np.repeat(ys, p.width)
    nu = _smooth_escape(cr, ci, p.max_iter)
    rgb = np.zeros((cr.size, 3))
    out = np.flatnonzero(~np.isnan(nu))
    t = nu[out] * 0.05
    for k, phase in enumerate(_PHASES):
        rgb[out, k] = 0.5 + 0.5 * np.cos(2.0 * math.pi * (t + phase))
    return _to_uint8(rgb).reshape(stop - start, p.width, 3)


def _smooth_escape(cr: np.ndarray, ci: np.ndarray, max_iter: int) -> np.ndarray:
    """Smooth escape count per point (NaN inside). Escaped points are frozen at z = c = 0, then
    dropped from the working arrays once enough of them have piled up."""
    nu = np.full(cr.size, np.nan)
    q = (cr - 0.25) ** 2 + ci * ci
    inside = (q * (q + (cr - 0.25)) <= 0.25 * ci * ci) | ((cr + 1.0) ** 2 + ci * ci <= 0.0625)
    idx = np.flatnonzero(~inside)  # main cardioid and period-2 bulb never escape: skipped
    c_r, c_i = cr[idx], ci[idx]
    z_r, z_i = np.zeros(idx.size), np.zeros(idx.size)
    zr2, zi2, mag = np.empty(idx.size), np.empty(idx.size), np.empty(idx.size)
    frozen = 0
    for it in range(max_iter):
        if idx.size == 0:
            break
        np.multiply(z_r, z_r, out=zr2)
        np.multiply(z_i, z_i, out=zi2)
        np.add(zr2, zi2, out=mag)
        esc = np.flatnonzero(mag > _BAILOUT2)
        if esc.size:
            nu[idx[esc]] = it + 1.0 - np.log2(0.5 * np.log2(mag[esc]))
            z_r[esc] = z_i[esc] = c_r[esc] = c_i[esc] = zr2[esc] = zi2[esc] = 0.0
            frozen += esc.size
            if frozen * 4 > idx.size:
                keep = _live(idx, nu)
                idx, c_r, c_i, z_r, z_i = idx[keep], c_r[keep], c_i[keep], z_r[keep], z_i[keep]
                zr2, zi2, mag = zr2[keep], zi2[keep], mag[keep]
                frozen = 0
        np.multiply(z_i, z_r, out=z_i)
        np.multiply(z_i, 2.0, out=z_i)
        np.add(z_i, c_i, out=z_i)
        np.subtract(zr2, zi2, out=z_r)
        np.add(z_r, c_r, out=z_r)
    return nu


def _live(idx: np.ndarray, nu: np.ndarray) -> np.ndarray:
    """Positions in the working arrays of points that have not escaped yet."""
    return np.flatnonzero(np.isnan(nu[idx]))


# ---------------------------------------------------------------- spheres

_EPS = 1e-6
# centre x, y, z, radius, colour r, g, b, reflectivity
_SPHERES = np.array([
    [-1.6, 0.9, 0.8, 0.9, 0.90, 0.20, 0.20, 0.25],
    [0.4, 1.0, 1.8, 1.0, 0.95, 0.95, 0.95, 0.80],
    [1.9, 0.6, -0.2, 0.6, 0.20, 0.50, 0.95, 0.30],
    [-0.2, 0.45, -1.2, 0.45, 0.20, 0.85, 0.30, 0.15],
    [2.9, 1.3, 3.6, 1.3, 0.95, 0.75, 0.20, 0.40],
])
_LIGHT = (-4.0, 7.0, -5.0)
_EYE, _LOOK_AT, _FOV_DEG = (0.0, 1.5, -6.0), (0.3, 0.8, 0.0), 50.0
_PLANE_REFL, _AMBIENT, _SHININESS = 0.2, 0.12, 40.0


def _dot(a: Any, b: Any) -> np.ndarray:
    """Element-wise 3-vector dot product (no reductions: bit-identical whatever the batch)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt(_dot(v, v))


def _camera_rays(p: RenderParams, start: int, stop: int) -> np.ndarray:
    eye, target = np.array(_EYE), np.array(_LOOK_AT)
    fwd = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(np.array([0.0, 1.0, 0.0]), fwd)
    right /= np.linalg.norm(right)
    up = np.cross(fwd, right)
    half = math.tan(math.radians(_FOV_DEG) / 2) / (p.height / 2)
    u = np.tile((np.arange(p.width) + 0.5 - p.width / 2) * half, stop - start)
    v = np.repeat(-(np.arange(start, stop) + 0.5 - p.height / 2) * half, p.width)
    d = np.stack([fwd[k] + u * right[k] + v * up[k] for k in range(3)])
    return _normalize(d)


def _hit_spheres(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest sphere hit distance (inf when none) and which sphere (-1 when none)."""
    best, which = np.full(o.shape[1], np.inf), np.full(o.shape[1], -1)
    for k, s in enumerate(_SPHERES):
        oc = (o[0] - s[0], o[1] - s[1], o[2] - s[2])
        b = _dot(oc, d)
        disc = b * b - (_dot(oc, oc) - s[3] * s[3])
        root = np.sqrt(np.maximum(disc, 0.0))
        t = np.where(-b - root > _EPS, -b - root, -b + root)
        ok = (disc > 0.0) & (t > _EPS) & (t < best)
        best, which = np.where(ok, t, best), np.where(ok, k, which)
    return best, which


def _sky(d: np.ndarray) -> np.ndarray:
    a = np.clip(d[1], 0.0, 1.0)
    return np.stack([0.85 - 0.6 * a, 0.90 - 0.45 * a, 1.0 - 0.15 * a])


def _trace(o: np.ndarray, d: np.ndarray, depth: int) -> np.ndarray:
    t, which = _hit_spheres(o, d)
    t_plane = np.where(d[1] < 0.0, -o[1] / np.where(d[1] < 0.0, d[1], -1.0), np.inf)
    on_plane = (t_plane > _EPS) & (t_plane < t)
    t = np.where(on_plane, t_plane, t)
    col = _sky(d)
    hit = np.flatnonzero(np.isfinite(t))
    if hit.size == 0:
        return col
    h_o, h_d, h_t, h_plane, h_which = o[:, hit], d[:, hit], t[hit], on_plane[hit], which[hit]
    pos = h_o + h_t * h_d
    centre = _SPHERES[np.maximum(h_which, 0), :3].T
    normal = np.where(h_plane, np.array([[0.0], [1.0], [0.0]]), (pos - centre) / _SPHERES[h_which, 3])
    checker = (np.floor(pos[0]).astype(np.int64) + np.floor(pos[2]).astype(np.int64)) & 1
    board = np.where(checker == 1, 0.85, 0.12)
    base = np.where(h_plane, board, _SPHERES[np.maximum(h_which, 0), 4:7].T)
    refl = np.where(h_plane, _PLANE_REFL, _SPHERES[np.maximum(h_which, 0), 7])
    local = _shade(pos + normal * 1e-4, normal, h_d, base)
    if depth > 0:
        bounce = h_d - 2.0 * _dot(h_d, normal) * normal
        local = local * (1.0 - refl) + refl * _trace(pos + normal * 1e-4, bounce, depth - 1)
    fog = np.exp(-0.015 * h_t)  # the endless checkerboard fades into the sky
    col[:, hit] = local * fog + col[:, hit] * (1.0 - fog)
    return col


def _shade(pos: np.ndarray, normal: np.ndarray, d: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Ambient plus Lambert and Phong terms of the point light, with hard shadows."""
    to_light = np.array(_LIGHT)[:, None] - pos
    dist = np.sqrt(_dot(to_light, to_light))
    ldir = to_light / dist
    blocker, _ = _hit_spheres(pos, ldir)
    lit = (blocker >= dist).astype(np.float64)
    diffuse = np.maximum(_dot(normal, ldir), 0.0) * lit
    mirror = 2.0 * _dot(normal, ldir) * normal - ldir
    spec = np.maximum(-_dot(mirror, d), 0.0) ** _SHININESS * lit
    return base * (_AMBIENT + 0.88 * diffuse) + 0.6 * spec


def _spheres_rows(p: RenderParams, start: int, stop: int) -> np.ndarray:
    d = _camera_rays(p, start, stop)
    o = np.repeat(np.array(_EYE)[:, None], d.shape[1], axis=1)
    rgb = np.clip(_trace(o, d, p.reflections), 0.0, 1.0) ** (1.0 / 2.2)  # gamma
    return _to_uint8(rgb.T).reshape(stop - start, p.width, 3)


# ---------------------------------------------------------------- pixels


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_rows(params: RenderParams, start: int, stop: int) -> np.ndarray:
    """Rows ``start`` to ``stop`` of the image as uint8 RGB, shape (rows, width, 3)."""
    rows = _mandelbrot_rows if params.scene == "mandelbrot" else _spheres_rows
    return rows(params, start, stop)


def render_full(params: RenderParams | dict[str, Any]) -> np.ndarray:
    """The whole image in one process: the reference the tiled job must match pixel for pixel."""
    p = params if isinstance(params, RenderParams) else KIND.parse_params(params)
    blocks = [render_rows(p, y, min(y + _REF_BLOCK, p.height)) for y in range(0, p.height, _REF_BLOCK)]
    return np.concatenate(blocks)


# ---------------------------------------------------------------- PNG pieces


def _filter_rows(rows: np.ndarray, above: np.ndarray | None) -> bytes:
    """PNG-filtered scanlines: per row the filter (none, sub, up, average, Paeth) whose output has
    the smallest sum of absolute signed bytes, the usual libpng heuristic. uint8 arithmetic wraps
    modulo 256 exactly as PNG filters do."""
    n, width = rows.shape[0], rows.shape[1] * 3
    x = rows.reshape(n, width)
    b = np.empty_like(x)  # the row above
    b[0] = 0 if above is None else above.reshape(width)
    b[1:] = x[:-1]
    a, c = np.zeros_like(x), np.zeros_like(b)  # the pixel to the left, and above-left
    a[:, 3:], c[:, 3:] = x[:, :-3], b[:, :-3]
    cand = np.empty((5, n, width), np.uint8)
    cand[0] = x
    np.subtract(x, a, out=cand[1])
    np.subtract(x, b, out=cand[2])
    np.subtract(x, (a >> 1) + (b >> 1) + (a & b & 1), out=cand[3])
    a16, b16, c16 = a.astype(np.int16), b.astype(np.int16), c.astype(np.int16)
    pa, pb, pc = np.abs(b16 - c16), np.abs(a16 - c16), np.abs(a16 + b16 - 2 * c16)
    np.subtract(x, np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)), out=cand[4])
    score = np.abs(cand.view(np.int8)).view(np.uint8).sum(axis=2, dtype=np.int64)
    best = np.argmin(score, axis=0)
    out = np.empty((n, width + 1), np.uint8)
    out[:, 0] = best
    out[:, 1:] = cand[best, np.arange(n)]
    return out.tobytes()


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """Adler-32 of A+B from those of A and B and B's length (zlib's adler32_combine)."""
    base = 65521
    rem = len2 % base
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % base
    sum1 = (sum1 + (adler2 & 0xFFFF) + base - 1) % base
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + base - rem) % base
    return sum1 | (sum2 << 16)


def encode_tile(params: RenderParams, start: int, stop: int) -> dict[str, Any]:
    """Render, filter and deflate rows ``start`` to ``stop``: one segment of the PNG's zlib stream."""
    first = max(0, start - 1)  # the row above feeds the up/average/Paeth filters of the first row
    pixels = render_rows(params, first, stop)
    above = pixels[0] if start > 0 else None
    raw = _filter_rows(pixels[1:] if start > 0 else pixels, above)
    comp = zlib.compressobj(params.level, zlib.DEFLATED, -15, 9)
    data = comp.compress(raw) + comp.flush(zlib.Z_SYNC_FLUSH)  # byte-aligned, not final: concatenable
    return {"rows": stop - start, "size": len(raw), "adler": zlib.adler32(raw), "data": data}


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(tag)))


# ---------------------------------------------------------------- the kind


def _tile_bounds(p: RenderParams, index: int) -> tuple[int, int]:
    start = index * p.tile_rows
    return start, min(start + p.tile_rows, p.height)


class RenderKind(Kind):
    name = "render"
    description = "Render a Mandelbrot set or a ray-traced spheres scene into image.png, in row tiles"
    Params = RenderParams

    def parse_params(self, raw: dict[str, Any]) -> RenderParams:
        scene = raw.get("scene", "mandelbrot")
        if scene not in SCENES:
            raise ParamError(f"unknown scene {scene!r}: choose among {', '.join(SCENES)}")
        return super().parse_params(raw)  # type: ignore[no-any-return]

    def plan(self, ctx: JobContext) -> Plan:
        p: RenderParams = ctx.params
        return Plan(n_chunks=-(-p.height // p.tile_rows))

    def chunk(self, ctx: JobContext, index: int) -> bytes:
        return msgspec.msgpack.encode(_tile_bounds(ctx.params, index))

    def chunk_inputs(self, ctx: JobContext, index: int) -> dict[str, str]:
        return {}

    def run(self, params: RenderParams, payload: bytes, ctx: RunContext) -> bytes:
        start, stop = msgspec.msgpack.decode(payload, type=tuple[int, int])
        tile = encode_tile(params, start, stop)
        if len(tile["data"]) > INLINE_LIMIT and ctx.blobs is not None:
            tile["blob"] = ctx.blobs.put(tile.pop("data"))
        return values.dumps(tile)

    def new_acc(self, ctx: JobContext) -> int:
        return 0

    def merge(self, ctx: JobContext, acc: int, index: int, result: bytes) -> int:
        """Check the tile's header; the runtime keeps the result itself for finish_stage."""
        tile = _decode_tile(result)
        start, stop = _tile_bounds(ctx.params, index)
        if tile["rows"] != stop - start or tile["size"] != (stop - start) * (ctx.params.width * 3 + 1):
            raise ValueError(f"tile {index} does not have the rows it should")
        if "blob" in tile and (ctx.blobs is None or not ctx.blobs.exists(tile["blob"])):
            raise ValueError(f"tile {index} names a blob the master does not have")
        return acc + tile["rows"]

    def progress(self, ctx: JobContext, acc: int) -> dict[str, Any]:
        return {"rows_done": acc, "rows": ctx.params.height}

    def finish_stage(self, ctx: JobContext, acc: int) -> Done:
        p: RenderParams = ctx.params
        if acc != p.height:
            raise ValueError(f"only {acc} of {p.height} rows arrived")
        blob = ctx.outputs.write("image.png", self._png_parts(ctx))
        return Done(result={"width": p.width, "height": p.height, "scene": p.scene,
                            "tiles": self.plan(ctx).n_chunks}, outputs={"image.png": blob})

    def _png_parts(self, ctx: JobContext) -> Iterator[bytes]:
        """The PNG, one tile at a time: header, one IDAT per tile, the stream's end, IEND."""
        p: RenderParams = ctx.params
        yield b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", p.width, p.height, 8, 2, 0, 0, 0))
        adler, header = 1, b"\x78\x9c"  # zlib header: deflate, 32 KiB window
        for _, result in ctx.results():
            tile = _decode_tile(result)
            data = tile["data"] if "data" in tile else self._blob_bytes(ctx, tile["blob"])
            yield _png_chunk(b"IDAT", header + data)
            header = b""
            adler = adler32_combine(adler, tile["adler"], tile["size"])
        yield _png_chunk(b"IDAT", header + b"\x03\x00" + struct.pack(">I", adler))  # empty final block
        yield _png_chunk(b"IEND", b"")

    @staticmethod
    def _blob_bytes(ctx: JobContext, blob_id: str) -> bytes:
        if ctx.blobs is None:
            raise ValueError("no blob store to read a tile from")
        with ctx.blobs.open(blob_id) as f:
            return f.read()


def _decode_tile(result: bytes) -> dict[str, Any]:
    tile = values.loads(result)
    if not isinstance(tile, dict) or not {"rows", "size", "adler"} <= tile.keys():
        raise ValueError("a tile result must be a map with rows, size, adler and data or blob")
    return tile


KIND = RenderKind()
