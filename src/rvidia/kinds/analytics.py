"""``analytics``: group-by aggregates (sum, mean, min, max, count) over a CSV table, map-reduce style.

The master reads only the header line. Chunks are fixed byte ranges of ``chunk_bytes`` after it (never
dependent on the worker count); a worker reads its range with ranged blob reads and owns exactly the
lines that *start* inside it: it skips the partial first line unless it starts at the data start,
and reads past its end, in small steps, through the end of the line that crosses the boundary. pandas
aggregates the chunk into per-group partials (sum, count, min, max; a mean is a sum over a count,
never a mean of means). The master folds partials as they arrive into one row per group. Sums fold
as exact integers (over a power of two fine enough for every partial sum of the column), so the
merged values, and the output, do not depend on the order in which chunks arrive. CSV fields with embedded newlines are not supported.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Annotated, Any, Callable, Iterator, Literal

import msgspec
import numpy as np

from rvidia.kinds.base import Done, JobContext, Kind, ParamError, Plan, RunContext
from rvidia.protocol import values

Agg = Literal["sum", "mean", "min", "max", "count"]
AGGS: tuple[str, ...] = ("sum", "mean", "min", "max", "count")
STATS: dict[str, tuple[str, ...]] = {"sum": ("sum",), "mean": ("sum", "count"), "min": ("min",),
                                     "max": ("max",), "count": ("count",)}
MAX_HEADER = 1 << 20
MAX_CHUNKS = 200_000
STEP = 4096  # first read past a chunk's end, doubling up to 1 MiB
INLINE_LIMIT = 1 << 20  # larger chunk results travel as blobs


class AnalyticsParams(msgspec.Struct, forbid_unknown_fields=True):
    group_by: Annotated[list[str], msgspec.Meta(min_length=1, description="Columns to group by")]
    aggregates: Annotated[dict[str, list[Agg]], msgspec.Meta(
        min_length=1, description="Column -> aggregates among sum, mean, min, max, count")]
    chunk_bytes: Annotated[int, msgspec.Meta(
        ge=1024, le=1 << 30, description="Bytes of the table per chunk (fixes chunk boundaries)")] = 4 << 20

    def stats(self) -> dict[str, tuple[str, ...]]:
        """The partial statistics each aggregated column needs, in a fixed order."""
        return {col: tuple(s for s in ("sum", "count", "min", "max") if any(s in STATS[a] for a in aggs))
                for col, aggs in self.aggregates.items()}


# ---------------------------------------------------------------- splitting


def read_header(read: Callable[[int, int], bytes], size: int) -> tuple[list[str], int]:
    """Column names and where the data starts, from the first line; ParamError when it is unusable."""
    line = _through_newline(read, 0, size, STEP, limit=MAX_HEADER)
    if len(line) > MAX_HEADER:
        raise ParamError(f"the table's first line is longer than {MAX_HEADER} bytes: is it a CSV file?")
    text = line.decode("utf-8", errors="replace").removeprefix("\ufeff").rstrip("\r\n")
    names = next(csv.reader([text]), [])
    if not names or any(not n.strip() for n in names):
        raise ParamError("the table needs a header row naming every column (its first line has an empty name)")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ParamError(f"the table's header names a column twice: {', '.join(dup)}")
    return names, len(line)


def chunk_range(data_start: int, size: int, chunk_bytes: int, index: int) -> tuple[int, int]:
    start = data_start + index * chunk_bytes
    return start, min(start + chunk_bytes, size)


def owned_lines(read: Callable[[int, int], bytes], data_start: int, size: int, start: int, end: int,
                step: int = STEP) -> bytes:
    """The lines that start in [start, end): the classic line-boundary rule for byte-range splits."""
    if start >= end:
        return b""
    lead = 1 if start > data_start else 0  # the byte before says whether a line starts at ``start``
    buf = read(start - lead, end - start + lead)
    if lead:
        nl = buf.find(b"\n")
        if nl < 0 or nl + 1 >= len(buf):
            return b""  # the line crossing ``start`` runs past ``end``: nothing starts here
        buf = buf[nl + 1:]
    if end < size and not buf.endswith(b"\n"):
        buf += _through_newline(read, end, size, step)
    return buf


def _through_newline(read: Callable[[int, int], bytes], pos: int, size: int, step: int,
                     limit: int | None = None) -> bytes:
    """Bytes from ``pos`` through the next newline (or the end), read in growing steps."""
    parts: list[bytes] = []
    got = 0
    while pos < size and (limit is None or got <= limit):
        piece = read(pos, step)
        if not piece:
            break
        nl = piece.find(b"\n")
        if nl >= 0:
            parts.append(piece[:nl + 1])
            break
        parts.append(piece)
        pos, got, step = pos + len(piece), got + len(piece), min(step * 2, 1 << 20)
    return b"".join(parts)


# ---------------------------------------------------------------- a chunk's partials


def chunk_partials(data: bytes, names: list[str], p: AnalyticsParams, where: str = "") -> dict[str, Any]:
    """Per-group partial statistics of CSV lines (no header): keys as strings, stats as arrays."""
    import pandas as pd

    needs = p.stats()
    if not data.strip():
        return {"rows": 0, "keys": [[] for _ in p.group_by], "stats": {}}
    frame = pd.read_csv(io.BytesIO(data), header=None, names=names, usecols=[*p.group_by, *needs],
                        dtype={g: str for g in p.group_by}, index_col=False)
    for col in needs:
        frame[col] = _numeric(frame[col], col, where)
    groups = frame.groupby(p.group_by, dropna=False, sort=False)  # groups in first-seen order, every time
    tables = {s: getattr(groups[[c for c, ss in needs.items() if s in ss]], s)()
              for s in ("sum", "count", "min", "max") if any(s in ss for ss in needs.values())}
    index = next(iter(tables.values())).index
    levels = [index.get_level_values(i) for i in range(len(p.group_by))]
    keys = [[None if pd.isna(v) else str(v) for v in level] for level in levels]
    stats = {col: {s: tables[s][col].to_numpy() for s in ss} for col, ss in needs.items()}
    return {"rows": len(frame), "keys": keys, "stats": stats}


def _numeric(series: Any, col: str, where: str) -> Any:
    """The column as int64 or float64; a ValueError naming a value that is not a number."""
    import pandas as pd

    kind = series.dtype.kind
    if kind in "ifu":
        return series.astype(np.float64) if kind == "u" else series
    if kind == "b":
        raise ValueError(f"column {col!r} holds true/false values{where}: only numbers can be aggregated")
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna() & series.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"column {col!r} holds a non-numeric value {series[bad].iloc[0]!r} "
                         f"(data row {row + 1} of the chunk{where}): only numbers can be aggregated")
    return converted.astype(np.float64)


# ---------------------------------------------------------------- merging


def _exact(v: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Partial sums as exact integers over 2**k (object array), their non-finite part, and k: the
    given ``scale``, raised if some value needs finer bits."""
    if v.dtype.kind in "iu":
        return v.astype(object) << scale, np.zeros(v.size), scale
    finite = np.isfinite(v)
    frac, exp = np.frexp(np.where(finite, v, 0.0))
    mant = (frac * 2.0 ** 53).astype(np.int64)  # v = mant * 2**(exp - 53), exactly
    low = np.log2(np.maximum(mant & -mant, 1).astype(np.float64)).astype(np.int64)  # trailing zero bits
    power = np.where(mant != 0, exp - 53 + low, 0)  # v = (mant >> low) * 2**power
    need = max(scale, -int(power.min(initial=0)))
    exact = (mant >> low).astype(object) << (power + need).astype(object)
    return exact, np.where(finite, 0.0, v), need


class Partials:
    """One row per group: exact sums, non-finite sum parts, counts, mins and maxes. Folding is
    commutative and associative, so the result does not depend on the order chunks arrive in."""

    def __init__(self, needs: dict[str, tuple[str, ...]]) -> None:
        self.needs = needs
        self.rows = 0
        self.index: dict[tuple[Any, ...], int] = {}
        self.keys: list[tuple[Any, ...]] = []
        self.integral = {col: True for col in needs}
        self.scale = {col: 0 for col in needs}  # sums are held as integers over 2**scale
        self.cols: dict[str, dict[str, np.ndarray]] = {col: {} for col in needs}

    def add(self, part: dict[str, Any]) -> None:
        """Fold in one chunk's partials (each group at most once)."""
        self.rows += int(part["rows"])
        if not part["keys"] or not part["keys"][0]:
            return
        cols: dict[str, dict[str, np.ndarray]] = {}
        for col, stats in part["stats"].items():
            arrays = {s: np.asarray(a) for s, a in stats.items()}
            self.integral[col] &= all(a.dtype.kind == "i" for s, a in arrays.items() if s != "count")
            if "sum" in arrays:
                arrays["sum"], arrays["special"], need = _exact(arrays["sum"], self.scale[col])
                if need > self.scale[col] and "sum" in self.cols[col]:  # finer bits: rescale what we hold
                    self.cols[col]["sum"] = self.cols[col]["sum"] << (need - self.scale[col])
                self.scale[col] = need
            cols[col] = arrays
        self._fold(list(zip(*part["keys"])), cols)

    def _fold(self, keys: list[tuple[Any, ...]], cols: dict[str, dict[str, np.ndarray]]) -> None:
        pos = np.array([self.index.get(k, -1) for k in keys], dtype=np.int64)
        new, old = np.flatnonzero(pos < 0), np.flatnonzero(pos >= 0)
        for i in new:
            self.index[keys[i]] = len(self.keys)
            self.keys.append(keys[i])
        at = pos[old]
        for col, arrays in cols.items():
            mine = self.cols[col]
            for stat, v in arrays.items():
                acc = mine.get(stat)
                if acc is None:
                    mine[stat] = v[new].copy()
                    continue
                if stat in ("min", "max") and acc.dtype != v.dtype:
                    acc, v = acc.astype(np.float64), v.astype(np.float64)  # an int column met floats
                acc = np.concatenate([acc, v[new]])
                if stat in ("min", "max"):
                    acc[at] = (np.fmin if stat == "min" else np.fmax)(acc[at], v[old])
                else:
                    acc[at] = acc[at] + v[old]
                mine[stat] = acc

    def collapse(self, keys: list[tuple[Any, ...]]) -> "Partials":
        """The same partials under new keys (typed ones); groups whose new keys are equal fold together."""
        out = Partials(self.needs)
        out.rows, out.integral, out.scale = self.rows, dict(self.integral), dict(self.scale)
        seen: dict[tuple[Any, ...], int] = {}
        layer = np.empty(len(keys), dtype=np.int64)  # the how-manieth time each key comes up
        for i, k in enumerate(keys):
            layer[i] = seen[k] = seen.get(k, -1) + 1
        for n in range(int(layer.max(initial=-1)) + 1):  # each layer holds every key at most once
            rows = np.flatnonzero(layer == n)
            out._fold([keys[i] for i in rows],
                      {c: {s: a[rows] for s, a in arrays.items()} for c, arrays in self.cols.items()})
        return out


# ---------------------------------------------------------------- the output


def typed_keys(keys: list[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """Group keys typed per column as a whole-file CSV reader would: int, else float, else string."""
    import pandas as pd

    columns = []
    for j in range(width):
        raw = pd.Series([k[j] for k in keys], dtype=object)
        present = raw.notna()
        num = pd.to_numeric(raw[present], errors="coerce")
        if num.isna().any():
            columns.append(list(raw))
            continue
        cast = int if num.dtype.kind in "iu" else float
        it = iter(num.tolist())
        columns.append([cast(next(it)) if ok else None for ok in present])
    return list(zip(*columns)) if columns else []


def _ratio(num: int, den: int) -> float:
    """num / den correctly rounded (Python's int division), inf past the float range."""
    if den == 0:
        return math.nan
    try:
        return num / den
    except OverflowError:
        return math.inf if (num > 0) == (den > 0) else -math.inf


_ratios = np.frompyfunc(_ratio, 2, 1)


def _column(acc: Partials, col: str, agg: str) -> np.ndarray:
    """One output column, for every group at once; a non-finite part of a sum wins over its exact part."""
    arrays, scale = acc.cols[col], acc.scale[col]
    if agg in ("count", "min", "max"):
        return arrays[agg]
    special = arrays["special"]
    if agg == "sum":
        if acc.integral[col]:
            return arrays["sum"] >> scale  # exact Python ints
        return np.where(special != 0.0, special, _ratios(arrays["sum"], 1 << scale).astype(np.float64))
    count = arrays["count"]
    mean = _ratios(arrays["sum"], count.astype(object) << scale).astype(np.float64)
    return np.where(special != 0.0, np.where(count > 0, special, np.nan), mean)


def finalize(acc: Partials, p: AnalyticsParams) -> Partials:
    """The partials under typed keys: groups whose keys are equal once typed fold together."""
    return acc.collapse(typed_keys(acc.keys, len(p.group_by)))


def csv_parts(acc: Partials, p: AnalyticsParams, batch: int = 50_000) -> Iterator[bytes]:
    """result.csv: group columns, then <column>_<agg> in the order asked; groups sorted, missing last."""
    import pandas as pd

    header = [*p.group_by, *(f"{col}_{agg}" for col, aggs in p.aggregates.items() for agg in aggs)]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(header)
    yield out.getvalue().encode()
    if not acc.keys:
        return
    columns = [pd.Series([k[j] for k in acc.keys], dtype=object) for j in range(len(p.group_by))]
    columns += [pd.Series(_column(acc, col, agg))
                for col, aggs in p.aggregates.items() for agg in aggs]
    frame = pd.concat(columns, axis=1, ignore_index=True)  # positions: names may repeat
    frame = frame.sort_values(by=list(range(len(p.group_by))), na_position="last", kind="stable")
    for lo in range(0, len(frame), batch):
        yield frame.iloc[lo:lo + batch].to_csv(header=False, index=False, lineterminator="\n").encode()


# ---------------------------------------------------------------- the kind


class AnalyticsKind(Kind):
    name = "analytics"
    description = "Group-by aggregates (sum, mean, min, max, count) over a CSV table with a header row"
    Params = AnalyticsParams
    inputs = ("table",)

    def parse_params(self, raw: dict[str, Any]) -> AnalyticsParams:
        """msgspec's checks, after friendlier reasons for the usual mistakes."""
        group_by, aggregates = raw.get("group_by"), raw.get("aggregates")
        if isinstance(group_by, str) or group_by == []:
            raise ParamError(f'group_by must be a list of at least one column name, e.g. ["{group_by or "city"}"]')
        if isinstance(aggregates, dict):
            for col, aggs in aggregates.items():
                unknown = [a for a in (aggs if isinstance(aggs, list) else [aggs]) if a not in AGGS]
                if unknown:
                    raise ParamError(f"unknown aggregate {unknown[0]!r} for column {col!r}: "
                                     f"choose among {', '.join(AGGS)}")
        return super().parse_params(raw)  # type: ignore[no-any-return]

    def _header(self, ctx: JobContext) -> tuple[list[str], int]:
        if "header" not in ctx.cache:
            with ctx.inputs.open("table") as f:
                def read(start: int, length: int) -> bytes:
                    f.seek(start)
                    return f.read(length)

                ctx.cache["header"] = read_header(read, ctx.inputs.size("table"))
        return ctx.cache["header"]  # type: ignore[no-any-return]

    def check(self, ctx: JobContext) -> None:
        p: AnalyticsParams = ctx.params
        if ctx.inputs.size("table") == 0:
            raise ParamError("the table is empty: a CSV file with a header row is needed")
        names, _ = self._header(ctx)
        unknown = [c for c in [*p.group_by, *p.aggregates] if c not in names]
        if unknown:
            raise ParamError(f"unknown column {unknown[0]!r}; the table's columns are: {', '.join(names)}")
        both = [c for c in p.aggregates if c in p.group_by]
        if both:
            raise ParamError(f"column {both[0]!r} is in group_by, so it cannot also be aggregated")
        repeats = any(len(set(a)) < len(a) or not a for a in p.aggregates.values())
        if repeats or len(set(p.group_by)) < len(p.group_by):
            raise ParamError("group_by must not repeat a column, and each column's aggregates must be a "
                             "non-empty list without repeats")

    def plan(self, ctx: JobContext) -> Plan:
        p: AnalyticsParams = ctx.params
        names, data_start = self._header(ctx)
        size = ctx.inputs.size("table")
        n = -(-(size - data_start) // p.chunk_bytes)
        if n > MAX_CHUNKS:
            raise ParamError(f"chunk_bytes={p.chunk_bytes} cuts this table into {n} chunks; "
                             f"use at least {-(-(size - data_start) // MAX_CHUNKS)}")
        return Plan(n_chunks=n, state={"names": names, "data_start": data_start, "size": size,
                                       "blob": ctx.inputs.blob_id("table")})

    def chunk(self, ctx: JobContext, index: int) -> bytes:
        st = ctx.state
        start, end = chunk_range(st["data_start"], st["size"], ctx.params.chunk_bytes, index)
        return values.dumps({**st, "start": start, "end": end})

    def chunk_inputs(self, ctx: JobContext, index: int) -> dict[str, str]:
        return {}  # a chunk reads only its byte range, never the whole table

    def run(self, params: AnalyticsParams, payload: bytes, ctx: RunContext) -> bytes:
        task = values.loads(payload)
        if ctx.blobs is None:
            raise RuntimeError("analytics chunks read the table from the master's blob store")
        blobs, blob = ctx.blobs, task["blob"]
        data = owned_lines(lambda s, n: blobs.read_range(blob, s, n), task["data_start"], task["size"],
                           task["start"], task["end"])
        where = f" at bytes {task['start']}-{task['end']}"
        result = values.dumps(chunk_partials(data, task["names"], params, where))
        return values.dumps({"blob": blobs.put(result)}) if len(result) > INLINE_LIMIT else result

    def new_acc(self, ctx: JobContext) -> Partials:
        return Partials(ctx.params.stats())

    def merge(self, ctx: JobContext, acc: Partials, index: int, result: bytes) -> Partials:
        part = values.loads(result)
        if "blob" in part and ctx.blobs is not None:  # many groups: the partials came as a blob
            with ctx.blobs.open(part["blob"]) as f:
                part = values.loads(f.read())
        acc.add(part)
        return acc

    def progress(self, ctx: JobContext, acc: Partials) -> dict[str, Any]:
        return {"rows": acc.rows, "groups": len(acc.keys)}

    def finish_stage(self, ctx: JobContext, acc: Partials) -> Done:
        final = finalize(acc, ctx.params)
        blob = ctx.outputs.write("result.csv", csv_parts(final, ctx.params))
        return Done(result={"groups": len(final.keys), "rows": final.rows}, outputs={"result.csv": blob})


KIND = AnalyticsKind()
