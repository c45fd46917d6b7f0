"""The ``analytics`` kind: byte-range chunks own each CSV line exactly once, partials fold in any
order to the same exact result, and the cluster's result.csv equals a pandas groupby of the whole file.

End to end runs use small ``chunk_bytes`` so a few thousand rows make dozens of chunks, with 1 and with
3 workers; bad columns, bad aggregates and bad tables are refused before any chunk runs (422), and a
non-numeric value in an aggregated column fails the job with a reason that names it.
"""

from __future__ import annotations

import io
import math
import random
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rvidia
from rvidia.client.api import ApiError, JobFailed
from rvidia.kinds.analytics import (KIND, AnalyticsParams, Partials, chunk_partials, chunk_range, csv_parts,
                                    finalize, owned_lines, read_header)
from rvidia.kinds.base import ParamError
from rvidia.protocol import values

pytestmark = pytest.mark.timeout(120)

AGGS = {"price": ["sum", "mean", "min", "max", "count"], "qty": ["count", "max", "sum", "mean", "min"]}
NAMED = {f"{c}_{a}": (c, a) for c, aggs in AGGS.items() for a in aggs}


def make_table(rows: int = 3000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "region": rng.choice(["north", "south", "east", "west", "centre"], rows),
        "year": rng.integers(2015, 2024, rows),
        "price": np.round(rng.normal(100.0, 40.0, rows), 4),
        "qty": rng.integers(-20, 500, rows),
        "note": rng.choice(["x", "y z", ""], rows),
    })
    frame.loc[rng.choice(rows, rows // 20, replace=False), "price"] = np.nan
    return frame


def reference(frame: pd.DataFrame, group_by: list[str]) -> pd.DataFrame:
    return frame.groupby(group_by).agg(**NAMED).reset_index()


def params(**kw: Any) -> AnalyticsParams:
    return KIND.parse_params({"group_by": ["region"], "aggregates": {"price": ["sum"]}, **kw})


def split(data: bytes, chunk_bytes: int, step: int = 4096) -> list[bytes]:
    """Every chunk's owned lines, read from ``data`` the way a worker reads the blob."""
    names, start = read_header(lambda s, n: data[s:s + n], len(data))
    n_chunks = -(-(len(data) - start) // chunk_bytes)
    return [owned_lines(lambda s, n: data[s:s + n], start, len(data), *chunk_range(start, len(data), chunk_bytes, i),
                        step=step) for i in range(n_chunks)]


def chunk_results(data: bytes, p: AnalyticsParams) -> list[bytes]:
    """What the workers would send back, computed in this process."""
    names, _ = read_header(lambda s, n: data[s:s + n], len(data))
    return [values.dumps(chunk_partials(piece, names, p)) for piece in split(data, p.chunk_bytes)]


def merged_csv(results: list[bytes], p: AnalyticsParams) -> bytes:
    """The master's side: fold the results in the order given, then write result.csv."""
    acc = Partials(p.stats())
    for raw in results:
        acc.add(values.loads(raw))
    return b"".join(csv_parts(finalize(acc, p), p))


# ---------------------------------------------------------------- splitting

lines = st.lists(st.text(st.sampled_from("ab,1\r"), max_size=12), max_size=25)


@settings(max_examples=200, deadline=None)
@given(lines, st.booleans(), st.integers(1, 40), st.integers(1, 9))
def test_every_line_belongs_to_exactly_one_chunk(body: list[str], trailing: bool, chunk_bytes: int,
                                                 step: int) -> None:
    data = ("h1,h2\n" + "\n".join(body) + ("\n" if trailing and body else "")).encode()
    pieces = split(data, chunk_bytes, step)
    assert b"".join(pieces) == data[6:]
    at = 6
    for piece in pieces:  # whole lines only: each piece starts at a line start and ends at a line end
        assert not piece or at == 6 or data[at - 1:at] == b"\n"
        at += len(piece)
        assert not piece or piece.endswith(b"\n") or at == len(data)


def test_a_line_longer_than_many_chunks_goes_to_the_chunk_it_starts_in() -> None:
    data = b"a,b\n1,2\n" + b"9" * 5000 + b",3\n4,5"
    pieces = split(data, 100, step=16)
    assert pieces[0] == b"1,2\n" + b"9" * 5000 + b",3\n"
    assert [p for p in pieces[1:] if p] == [b"4,5"]


@pytest.mark.parametrize("head, names, start", [
    (b"a,b\n1,2\n", ["a", "b"], 4),
    (b"\xef\xbb\xbfa,\"b c\"\r\n1,2\r\n", ["a", "b c"], 12),
    (b"only,header", ["only", "header"], 11),
])
def test_header_names_and_data_start(head: bytes, names: list[str], start: int) -> None:
    assert read_header(lambda s, n: head[s:s + n], len(head)) == (names, start)


@pytest.mark.parametrize("head, words", [(b"\n1,2\n", "header"), (b"a,,c\n", "empty name"),
                                         (b"a,b,a\n", "twice: a")])
def test_unusable_headers_are_refused(head: bytes, words: str) -> None:
    with pytest.raises(ParamError, match=words):
        read_header(lambda s, n: head[s:s + n], len(head))


# ---------------------------------------------------------------- parameters and merging


@pytest.mark.parametrize("raw, words", [
    ({"group_by": []}, "at least one"),
    ({"group_by": "region"}, r'list of at least one column name, e.g. \["region"\]'),
    ({"aggregates": {"price": ["median"]}}, "unknown aggregate 'median'.*sum, mean, min, max, count"),
    ({"aggregates": {}}, "aggregates"),
    ({"chunk_bytes": 10}, "chunk_bytes"),
    ({"having": 1}, "having"),
])
def test_bad_parameters_are_refused_with_a_reason(raw: dict[str, Any], words: str) -> None:
    with pytest.raises(ParamError, match=words):
        params(**raw)


def test_local_map_reduce_equals_pandas_in_any_merge_order() -> None:
    frame = make_table(1500)
    data = frame.to_csv(index=False).encode()
    p = params(group_by=["region", "year"], aggregates=AGGS, chunk_bytes=1024)
    results = chunk_results(data, p)
    assert len(results) > 30
    orders = [results, results[::-1], random.Random(1).sample(results, len(results))]
    outputs = {merged_csv(order, p) for order in orders}
    assert len(outputs) == 1, "merging in another order changed result.csv"
    got = pd.read_csv(io.BytesIO(outputs.pop()))
    pd.testing.assert_frame_equal(got, reference(frame, ["region", "year"]), rtol=1e-12)


def test_sums_are_exact_across_chunks() -> None:
    """1e16 + 1 - 1e16 in different chunks: float folding would say 0 (or 2); the exact sum is 1."""
    data = b"g,x\na,1e16\na,1.0\na,-1e16\na,0.5\n"
    p = params(group_by=["g"], aggregates={"x": ["sum", "mean"]}, chunk_bytes=1024)
    names = ["g", "x"]
    acc = Partials(p.stats())
    for line in data.splitlines(keepends=True)[1:]:  # one row per partial, as tiny chunks would be
        acc.add(values.loads(values.dumps(chunk_partials(line, names, p))))
    text = b"".join(csv_parts(finalize(acc, p), p)).decode()
    assert text == f"g,x_sum,x_mean\na,1.5,{math.fsum([1e16, 1.0, -1e16, 0.5]) / 4!r}\n"


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(finite, min_size=1, max_size=4), min_size=1, max_size=6), st.randoms())
def test_folded_sums_are_the_correctly_rounded_exact_sum(chunks: list[list[float]], rnd: random.Random) -> None:
    """Whatever the values (tiny, huge, cancelling) and the merge order: math.fsum, exactly."""
    p = params(group_by=["g"], aggregates={"x": ["sum", "mean", "count"]})
    parts = [{"rows": len(c), "keys": [["k"]], "stats": {"x": {"sum": np.array([math.fsum(c)]),
                                                               "count": np.array([len(c)])}}} for c in chunks]
    rnd.shuffle(parts)
    acc = Partials(p.stats())
    for part in parts:
        acc.add(values.loads(values.dumps(part)))
    flat, n = [math.fsum(c) for c in chunks], sum(map(len, chunks))
    key, total, mean, count = b"".join(csv_parts(finalize(acc, p), p)).decode().splitlines()[1].split(",")
    assert (key, float(total), float(mean), int(count)) == ("k", math.fsum(flat), float(sum(map(Fraction, flat)) / n), n)


def test_keys_that_are_equal_as_numbers_form_one_group_sorted_numerically() -> None:
    data = b"k,x\n10,1\n9,2\n010,3\n,4\n9,5\n"
    p = params(group_by=["k"], aggregates={"x": ["sum", "count", "max"]}, chunk_bytes=1024)
    assert merged_csv(chunk_results(data, p), p).decode() == "k,x_sum,x_count,x_max\n9,7,2,5\n10,4,2,3\n,4,1,4\n"


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module", params=[1, 3], ids=["1-worker", "3-workers"])
def cluster(request: pytest.FixtureRequest) -> Iterator[rvidia.LocalCluster]:
    with rvidia.LocalCluster(workers=request.param) as made:
        yield made


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    frame = make_table(4000)
    path = tmp_path_factory.mktemp("analytics") / "table.csv"
    frame.to_csv(path, index=False)
    return frame, path


OUTPUTS: dict[int, bytes] = {}


@pytest.mark.parametrize("group_by", [["region"], ["region", "year"]])
def test_cluster_result_equals_pandas_groupby(cluster: rvidia.LocalCluster, table: tuple[pd.DataFrame, Path],
                                              group_by: list[str], tmp_path: Path) -> None:
    frame, path = table
    job = cluster.submit("analytics", inputs={"table": path}, group_by=group_by, aggregates=AGGS,
                         chunk_bytes=2048)
    expected = reference(frame, group_by)
    assert job.result(timeout=90) == {"groups": len(expected), "rows": len(frame)}
    data_start = len(path.read_bytes().split(b"\n", 1)[0]) + 1
    assert job.status()["progress"]["total"] == -(-(path.stat().st_size - data_start) // 2048) > 30
    out = job.download_outputs(tmp_path)["result.csv"].read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(out)), expected, rtol=1e-12)
    if len(group_by) == 2:
        OUTPUTS[len(cluster.worker_procs)] = out
        assert len(set(OUTPUTS.values())) == 1, "result.csv must not depend on the number of workers"


def test_cluster_handles_a_header_only_table(cluster: rvidia.LocalCluster, tmp_path: Path) -> None:
    job = cluster.submit("analytics", inputs={"table": b"g,x\n"}, group_by=["g"], aggregates={"x": ["mean"]})
    assert job.result(timeout=60) == {"groups": 0, "rows": 0}
    assert job.download_outputs(tmp_path)["result.csv"].read_text() == "g,x_mean\n"


@pytest.mark.parametrize("table_bytes, group_by, aggregates, words", [
    (b"a,b\n1,2\n", ["c"], {"b": ["sum"]}, "unknown column 'c'; the table's columns are: a, b"),
    (b"a,b\n1,2\n", ["a"], {"zz": ["sum"]}, "unknown column 'zz'"),
    (b"a,b\n1,2\n", ["a"], {"a": ["sum"]}, "cannot also be aggregated"),
    (b"a,b\n1,2\n", ["a"], {"b": ["mode"]}, "unknown aggregate 'mode'"),
    (b"", ["a"], {"b": ["sum"]}, "empty"),
    (b",\n1,2\n", ["a"], {"b": ["sum"]}, "header"),
])
def test_cluster_refuses_bad_requests_with_422(cluster: rvidia.LocalCluster, table_bytes: bytes,
                                               group_by: list[str], aggregates: dict[str, Any], words: str) -> None:
    with pytest.raises(ApiError, match=words) as err:
        cluster.submit("analytics", inputs={"table": table_bytes}, group_by=group_by, aggregates=aggregates)
    assert err.value.status == 422


def test_non_numeric_values_fail_the_job_with_a_clear_error(cluster: rvidia.LocalCluster) -> None:
    data = b"g,x\n" + b"a,1\n" * 400 + b"b,twelve\n" + b"a,2\n" * 400
    job = cluster.submit("analytics", inputs={"table": data}, group_by=["g"], aggregates={"x": ["sum"]},
                         chunk_bytes=1024, max_attempts=1)
    with pytest.raises(JobFailed, match="column 'x' holds a non-numeric value 'twelve'"):
        job.result(timeout=60)
