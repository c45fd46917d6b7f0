"""RVIDIA's engine overhead, side by side with the tools a user would pick instead (issue 6).

    python benchmarks/engine.py                 # full sizes, medians of 3 repeats, writes docs/benchmarks.md
    python benchmarks/engine.py --quick         # small sizes, 1 repeat, a fast check (writes no doc)
    python benchmarks/engine.py --repeat 5 --engines rvidia,ppe --json figures.json --no-doc

Needs the peers: ``pip install -e '.[dev]' "dask[distributed]" ray`` (an engine that is not installed,
or does not start, is skipped with a message; RVIDIA and ProcessPoolExecutor always run).

In one run on this machine, one engine at a time (so that one engine's idle processes do not load
another's measurement), each with two single-threaded workers:

- ``rvidia``: ``rvidia.LocalCluster(workers=2, slots=1)``, a real master and two real workers,
  driven through ``cluster.executor()`` (and ``cluster.submit("montecarlo", ...)`` for pi);
- ``ppe``: ``concurrent.futures.ProcessPoolExecutor(2)``;
- ``dask``: ``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``;
- ``ray``: ``ray.init(num_cpus=2)``;
- ``tcp``: raw loopback TCP between two processes, the physical limit.

Workloads (each engine through its natural bulk API, named in ``API`` below):

- a. 10,000 no-op tasks submitted at once: tasks/s;
- b. 500 sequential round trips of a tiny task: p50 and p99;
- c. 20 tasks each taking a distinct 32 MiB numpy array and returning a float: MB/s (MB = 10^6 bytes);
- d. Monte Carlo pi, 2e8 samples in chunks of 1e6: speedup over one process running
  ``rvidia.kinds.montecarlo.count_inside`` over the same chunks;
- e. (tcp only) 1 GiB one way in 1 MiB sends, and 10,000 ping-pongs of 64 bytes.

Every result is checked (no-op and tiny results in order, the arrays' first values, pi's exact count of
points inside). Figures are medians over ``--repeat`` repeats. BLAS and OpenMP are held to one thread
here and in every process started from here (the variables are set before numpy is imported).

The benchmark measures the RVIDIA of this checkout: ``src/`` goes first on ``sys.path`` and on
``PYTHONPATH`` (which the master, the workers and the peers' workers inherit), installed or not.
Other work's CPU use just before and just after the run (no engine running) is printed and written,
with the load average: a run on a loaded machine measures the load, not the engines.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_SRC = ROOT / "src"
if (_SRC / "rvidia").is_dir():
    if str(_SRC) not in sys.path:
        sys.path.insert(0, str(_SRC))
    _paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(_SRC) not in _paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(_SRC), *_paths])

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from importlib.metadata import PackageNotFoundError, version  # noqa: E402
from typing import Any, Callable, Iterator  # noqa: E402

import numpy as np  # noqa: E402

MIB = 1 << 20
MB = 1_000_000
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- BEGIN benchmarks/engine.py -->", "<!-- END benchmarks/engine.py -->"

# ---------------------------------------------------------------- task functions (module level)


def noop(x: int) -> int:
    """Workload a: does nothing but hand its argument back (so that order can be checked)."""
    return x


def tiny(x: int) -> int:
    """Workload b: the smallest useful task."""
    return x + 1


def first_value(a: Any) -> float:
    """Workload c: takes a large array, returns something small."""
    return float(a[0])


def count_inside(seed: int, index: int, n: int) -> int:
    """Workload d: the montecarlo kind's own chunk function (imported where it runs)."""
    from rvidia.kinds.montecarlo import count_inside as count

    return count(seed, index, n)


# ---------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    noop_tasks: int = 10_000
    round_trips: int = 500
    arrays: int = 20
    array_mib: int = 32
    pi_samples: int = 200_000_000
    pi_chunk: int = 1_000_000
    tcp_bytes: int = 1 << 30
    tcp_pings: int = 10_000
    seed: int = 6

    def pi_chunks(self) -> list[tuple[int, int, int]]:
        """(seed, index, n) of every chunk, exactly as the montecarlo kind cuts them."""
        count = -(-self.pi_samples // self.pi_chunk)
        return [(self.seed, i, min(self.pi_chunk, self.pi_samples - i * self.pi_chunk)) for i in range(count)]


FULL = Sizes()
QUICK = Sizes(noop_tasks=1_000, round_trips=100, arrays=6, array_mib=8, pi_samples=20_000_000,
              tcp_bytes=256 * MIB, tcp_pings=2_000)
TINY = Sizes(noop_tasks=200, round_trips=10, arrays=2, array_mib=1, pi_samples=4_000_000,
             tcp_bytes=16 * MIB, tcp_pings=200)

WORKLOADS = ("a", "b", "c", "d", "e")
API = {
    "rvidia": {"a": "executor.map(noop, range(N)) (default chunksize: ceil(N/512) items per chunk)",
               "b": "executor.submit(tiny, i).result()",
               "c": "executor.map(first_value, arrays) (one chunk per array)",
               "d": 'cluster.submit("montecarlo", samples, chunk_samples, seed).result()'},
    "ppe": {"a": "pool.map(noop, range(N)) (chunksize 1, the default)",
            "b": "pool.submit(tiny, i).result()",
            "c": "pool.map(first_value, arrays)",
            "d": "pool.map(count_inside, seeds, indices, sizes)"},
    "dask": {"a": "client.gather(client.map(noop, range(N), pure=False))",
             "b": "client.submit(tiny, i, pure=False).result()",
             "c": "client.gather(client.map(first_value, arrays, pure=False))",
             "d": "client.gather(client.map(count_inside, seeds, indices, sizes, pure=False))"},
    "ray": {"a": "ray.get([noop.remote(i) for i in range(N)])",
            "b": "ray.get(tiny.remote(i))",
            "c": "ray.get([first_value.remote(a) for a in arrays])",
            "d": "ray.get([count_inside.remote(s, i, n) for s, i, n in chunks])"},
    "tcp": {"e": "socket.sendall of 1 MiB buffers to a process that recv_into()s them; 64-byte ping-pong"},
}

# ---------------------------------------------------------------- engines


class Engine:
    """One engine with two single-threaded workers, started once and used for every workload."""

    name = ""
    label = ""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def map(self, fn: Callable[..., Any], *iterables: Any, chunksize: int | None = None) -> list[Any]:
        """Submit every call at once; the results in order (``chunksize``: items per task, where the
        engine batches; None is the engine's default)."""
        raise NotImplementedError

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One call, waited for."""
        raise NotImplementedError

    def pi(self, sizes: Sizes) -> int:
        """Points inside over every chunk of ``sizes``."""
        chunks = sizes.pi_chunks()
        return sum(self.map(count_inside, *zip(*chunks, strict=True)))

    def warm_up(self) -> None:
        """Start the worker processes and load what the workloads import, outside any timing."""
        assert self.map(noop, range(8)) == list(range(8))
        assert self.call(tiny, 1) == 2
        assert self.map(first_value, [np.full(16, 3.0), np.full(16, 4.0)]) == [3.0, 4.0]
        small = Sizes(pi_samples=4000, pi_chunk=1000)
        assert self.pi(small) == _reference_pi(small)


class RvidiaEngine(Engine):
    name, label = "rvidia", "RVIDIA (master + 2 workers x 1 slot)"

    def __init__(self) -> None:
        self.cluster: Any = None
        self.ex: Any = None
        self.master_seconds: list[float] = []

    def start(self) -> None:
        import rvidia

        self.cluster = rvidia.LocalCluster(workers=2, slots=1)
        self.ex = self.cluster.executor()

    def stop(self) -> None:
        try:
            if self.ex is not None:
                self.ex.shutdown(wait=True, cancel_futures=True)
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def warm_up(self) -> None:
        super().warm_up()
        self.master_seconds.clear()  # the warm-up's small pi job is no measurement

    def map(self, fn: Callable[..., Any], *iterables: Any, chunksize: int | None = None) -> list[Any]:
        return list(self.ex.map(fn, *iterables, chunksize=chunksize or 0))

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.ex.submit(fn, *args).result()

    def pi(self, sizes: Sizes) -> int:
        job = self.cluster.submit("montecarlo", samples=sizes.pi_samples, chunk_samples=sizes.pi_chunk,
                                  seed=sizes.seed)
        result = job.result()
        with contextlib.suppress(Exception):
            self.master_seconds.append(_master_seconds(job.status()))
        return int(result["inside"])


class PpeEngine(Engine):
    name, label = "ppe", "ProcessPoolExecutor(2)"

    def start(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(2)

    def stop(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def map(self, fn: Callable[..., Any], *iterables: Any, chunksize: int | None = None) -> list[Any]:
        return list(self.pool.map(fn, *iterables, chunksize=chunksize or 1))

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.submit(fn, *args).result()


class DaskEngine(Engine):
    name, label = "dask", "Dask LocalCluster (2 processes x 1 thread)"

    def start(self) -> None:
        from distributed import Client, LocalCluster

        warnings.filterwarnings("ignore", message="Sending large graph")  # workload c sends arrays on purpose
        for logger in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
            logging.getLogger(logger).setLevel(logging.ERROR)
        self.local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        self.client = Client(self.local)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.local.close()

    def map(self, fn: Callable[..., Any], *iterables: Any, chunksize: int | None = None) -> list[Any]:
        return self.client.gather(self.client.map(fn, *iterables, pure=False))  # type: ignore[no-any-return]

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False).result()


class RayEngine(Engine):
    name, label = "ray", "Ray (num_cpus=2)"

    def start(self) -> None:
        import ray

        self.ray = ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=False)
        self._remote: dict[Callable[..., Any], Any] = {}

    def stop(self) -> None:
        self.ray.shutdown()

    def _r(self, fn: Callable[..., Any]) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(num_cpus=1)(fn)
        return self._remote[fn]

    def map(self, fn: Callable[..., Any], *iterables: Any, chunksize: int | None = None) -> list[Any]:
        remote = self._r(fn)
        return self.ray.get([remote.remote(*args) for args in zip(*iterables, strict=True)])  # type: ignore[no-any-return]

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.ray.get(self._r(fn).remote(*args))


ENGINES: dict[str, type[Engine]] = {"rvidia": RvidiaEngine, "ppe": PpeEngine, "dask": DaskEngine, "ray": RayEngine}
PEERS = ("ppe", "dask", "ray")

# ---------------------------------------------------------------- workloads


def _reference_pi(sizes: Sizes) -> int:
    return sum(count_inside(*c) for c in sizes.pi_chunks())


def _master_seconds(view: dict[str, Any]) -> float:
    start = datetime.fromisoformat(view["created_at"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(view["finished_at"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def _arrays(sizes: Sizes) -> list[Any]:
    """``sizes.arrays`` distinct float64 arrays of ``sizes.array_mib`` MiB (distinct, so none is deduplicated)."""
    base = np.random.default_rng(0).random(sizes.array_mib * MIB // 8)
    out = []
    for i in range(sizes.arrays):
        a = base.copy()
        a[0] = float(i)
        out.append(a)
    return out


def bench_noop(engine: Engine, sizes: Sizes, chunksize: int | None = None) -> dict[str, float]:
    n = sizes.noop_tasks
    t0 = time.perf_counter()
    results = engine.map(noop, range(n), chunksize=chunksize)
    elapsed = time.perf_counter() - t0
    if results != list(range(n)):
        raise AssertionError(f"{engine.name}: no-op results wrong or out of order")
    return {"tasks_per_s": n / elapsed, "seconds": elapsed}


def batched_chunksize(n: int) -> int:
    """RVIDIA's default items per chunk for ``n`` items (``rvidia.client.api.default_chunksize``)."""
    from rvidia.client.api import default_chunksize

    return default_chunksize(n)


def bench_other_batching(engine: Engine, sizes: Sizes) -> dict[str, float]:
    """Workload a with the other side's batching: RVIDIA one item per chunk, PPE RVIDIA's chunksize.

    The headline figure uses each engine's default, and the defaults differ (RVIDIA batches
    ceil(N/512) items per chunk, ``ProcessPoolExecutor.map`` sends one item per task); this one shows
    how much of the difference the batching makes. Dask and Ray do not batch calls.
    """
    if isinstance(engine, RvidiaEngine):
        return bench_noop(engine, sizes, chunksize=1)
    if isinstance(engine, PpeEngine):
        return bench_noop(engine, sizes, chunksize=batched_chunksize(sizes.noop_tasks))
    return {}


def bench_round_trip(engine: Engine, sizes: Sizes) -> dict[str, float]:
    lat = []
    for i in range(sizes.round_trips):
        t0 = time.perf_counter()
        out = engine.call(tiny, i)
        lat.append(time.perf_counter() - t0)
        if out != i + 1:
            raise AssertionError(f"{engine.name}: tiny({i}) gave {out!r}")
    return {"p50_ms": _quantile(lat, 0.50) * 1e3, "p99_ms": _quantile(lat, 0.99) * 1e3}


def bench_payload(engine: Engine, sizes: Sizes, arrays: list[Any] | None = None) -> dict[str, float]:
    arrays = arrays if arrays is not None else _arrays(sizes)
    t0 = time.perf_counter()
    out = engine.map(first_value, arrays)
    elapsed = time.perf_counter() - t0
    if out != [float(i) for i in range(len(arrays))]:
        raise AssertionError(f"{engine.name}: first values {out[:5]!r}... are wrong")
    nbytes = sum(a.nbytes for a in arrays)
    return {"mb_per_s": nbytes / MB / elapsed, "seconds": elapsed}


def bench_pi(engine: Engine, sizes: Sizes, reference: tuple[int, float]) -> dict[str, float]:
    inside, single = reference
    t0 = time.perf_counter()
    got = engine.pi(sizes)
    elapsed = time.perf_counter() - t0
    if got != inside:
        raise AssertionError(f"{engine.name}: {got} points inside, the single process counted {inside}")
    return {"speedup": single / elapsed, "seconds": elapsed, "single_seconds": single}


def single_process_pi(sizes: Sizes) -> tuple[int, float]:
    """The same chunks, one after the other, in this process: (points inside, seconds)."""
    count_inside(0, 0, 10_000)  # imports and first-call costs stay out of the timing
    t0 = time.perf_counter()
    inside = _reference_pi(sizes)
    return inside, time.perf_counter() - t0


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# ---------------------------------------------------------------- raw loopback TCP


def _tcp_peer(port: int, mode: str, total: int, ping: int) -> None:
    """The other process: sink ``total`` bytes then ack, or echo ``ping``-byte messages until EOF."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if mode == "sink":
            buf = bytearray(MIB)
            view = memoryview(buf)
            left = total
            while left > 0:
                n = s.recv_into(view, min(MIB, left))
                if n == 0:
                    return
                left -= n
            s.sendall(b"k")
        else:
            buf = bytearray(ping)
            view = memoryview(buf)
            while True:
                got = 0
                while got < ping:
                    n = s.recv_into(view[got:], ping - got)
                    if n == 0:
                        return
                    got += n
                s.sendall(view)


def _tcp_session(mode: str, total: int, ping: int) -> Iterator[socket.socket]:
    ctx = multiprocessing.get_context("spawn")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        proc = ctx.Process(target=_tcp_peer, args=(listener.getsockname()[1], mode, total, ping), daemon=True)
        proc.start()
        listener.settimeout(60)
        conn, _ = listener.accept()
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        yield conn
    finally:
        conn.close()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()


def bench_tcp(sizes: Sizes) -> dict[str, float]:
    """Raw loopback TCP between two processes: MB/s one way, and 64-byte ping-pong latency."""
    total = sizes.tcp_bytes
    payload = memoryview(np.random.default_rng(1).bytes(MIB))
    for conn in _tcp_session("sink", total, 64):
        t0 = time.perf_counter()
        left = total
        while left > 0:
            part = payload[: min(MIB, left)]
            conn.sendall(part)
            left -= len(part)
        if conn.recv(1) != b"k":
            raise AssertionError("tcp: the sink did not acknowledge")
        elapsed = time.perf_counter() - t0
    lat = []
    msg = b"p" * 64
    buf = bytearray(64)
    for conn in _tcp_session("echo", 0, 64):
        for _ in range(sizes.tcp_pings):
            t0 = time.perf_counter()
            conn.sendall(msg)
            got = 0
            while got < 64:
                n = conn.recv_into(memoryview(buf)[got:], 64 - got)
                if n == 0:
                    raise AssertionError("tcp: the echo peer closed")
                got += n
            lat.append(time.perf_counter() - t0)
        if bytes(buf) != msg:
            raise AssertionError("tcp: echo corrupted")
    return {"mb_per_s": total / MB / elapsed, "p50_ms": _quantile(lat, 0.5) * 1e3,
            "p99_ms": _quantile(lat, 0.99) * 1e3}


# ---------------------------------------------------------------- running


@dataclass
class Results:
    """Per engine, per metric: one figure per repeat; and why an engine or workload has none."""

    figures: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, engine: str, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.figures.setdefault(engine, {}).setdefault(key, []).append(value)

    def median(self, engine: str, metric: str) -> float | None:
        values = self.figures.get(engine, {}).get(metric)
        return statistics.median(values) if values else None


def _say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def run_engine(engine: Engine, sizes: Sizes, repeats: int, workloads: str, results: Results) -> None:
    """Start ``engine``, run each chosen workload ``repeats`` times, stop it; failures are recorded.

    Pi's single-process reference is measured ``repeats`` times just before the engine starts (so
    that a change in the machine's load during the run shifts both sides alike); its median is
    what each of the engine's pi runs is compared with.
    """
    reference: tuple[int, float] = (0, 0.0)
    if "d" in workloads:
        runs = [single_process_pi(sizes) for _ in range(repeats)]
        reference = (runs[0][0], statistics.median(t for _, t in runs))
        results.add("single", {f"d_{engine.name}_seconds": reference[1]})
        _say("  single process pi: " + ", ".join(f"{t:.3f}" for _, t in runs) + f" s, {runs[0][0]} inside")
    t0 = time.perf_counter()
    try:
        with _quiet():
            engine.start()
            engine.warm_up()
    except Exception as exc:  # noqa: BLE001 - a peer that does not start is skipped, with the reason
        results.errors[engine.name] = f"did not start: {type(exc).__name__}: {exc}"
        _say(f"  {engine.name}: skipped, {results.errors[engine.name]}")
        with contextlib.suppress(Exception), _quiet():
            engine.stop()
        return
    _say(f"  {engine.name}: started and warmed up in {time.perf_counter() - t0:.1f} s")
    arrays = _arrays(sizes) if "c" in workloads else None
    try:
        for r in range(repeats):
            steps: list[tuple[str, Callable[[], dict[str, float]]]] = [
                ("a", lambda: {f"a_{k}": v for k, v in bench_noop(engine, sizes).items()}),
                ("a", lambda: {f"a_other_batching_{k}": v for k, v in bench_other_batching(engine, sizes).items()}),
                ("b", lambda: {f"b_{k}": v for k, v in bench_round_trip(engine, sizes).items()}),
                ("c", lambda: {f"c_{k}": v for k, v in bench_payload(engine, sizes, arrays).items()}),
                ("d", lambda: {f"d_{k}": v for k, v in bench_pi(engine, sizes, reference).items()}),
            ]
            for key, step in steps:
                if key not in workloads:
                    continue
                if f"{engine.name}/{key}" in results.errors:
                    continue
                try:
                    with _quiet():
                        figures = step()
                    if not figures:
                        continue
                except Exception as exc:  # noqa: BLE001 - report the failure, measure the rest
                    results.errors[f"{engine.name}/{key}"] = f"{type(exc).__name__}: {exc}"
                    _say(f"  {engine.name} {key}: FAILED {type(exc).__name__}: {exc}")
                    traceback.print_exc(file=sys.stderr)
                    continue
                results.add(engine.name, figures)
                _say(f"  {engine.name} {key} #{r + 1}: " + ", ".join(f"{k} {v:,.3f}" for k, v in figures.items()))
    finally:
        with _quiet():
            engine.stop()
        if isinstance(engine, RvidiaEngine) and engine.master_seconds:
            results.figures.setdefault("rvidia", {})["d_master_seconds"] = engine.master_seconds


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the peers' start-up chatter (warnings about large graphs, log lines) from the table."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def others_busy(seconds: float = 3.0) -> float:
    """Share of the machine's CPU (0-100) used over ``seconds`` while no engine runs.

    The load average cannot tell: it lags by minutes and, at the end, counts the benchmark itself.
    Sampled before the first engine starts and after the last has stopped, this is other work only.
    """
    import psutil

    return float(psutil.cpu_percent(interval=seconds))


def run(sizes: Sizes, repeats: int, engines: list[str], workloads: str) -> tuple[Results, dict[str, Any]]:
    results = Results()
    meta = machine_facts()
    meta["load_start"] = os.getloadavg()
    meta["others_start"] = others_busy()
    meta["started"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t_run = time.perf_counter()
    if "e" in workloads:
        _say("tcp: raw loopback")
        for r in range(repeats):
            figures = bench_tcp(sizes)
            results.add("tcp", {"e_mb_per_s": figures["mb_per_s"], "e_p50_ms": figures["p50_ms"],
                                "e_p99_ms": figures["p99_ms"]})
            _say(f"  tcp #{r + 1}: " + ", ".join(f"{k} {v:,.3f}" for k, v in figures.items()))
    for name in engines:
        _say(f"{name}:")
        run_engine(ENGINES[name](), sizes, repeats, workloads, results)
    meta["run_seconds"] = time.perf_counter() - t_run
    meta["load_end"] = os.getloadavg()
    meta["others_end"] = others_busy()
    meta["versions"] = versions()
    meta["run"] = {"sizes": asdict(sizes), "repeats": repeats, "engines": engines, "workloads": workloads}
    return results, meta


# ---------------------------------------------------------------- facts


def machine_facts() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(Exception):
        import psutil

        memory = psutil.virtual_memory().total
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": memory,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def versions() -> dict[str, str]:
    out = {}
    for dist in ("rvidia", "numpy", "dask", "distributed", "ray"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    with contextlib.suppress(Exception):
        import rvidia

        out["rvidia"] += f" ({Path(rvidia.__file__).resolve().parents[1]})"
    return out


# ---------------------------------------------------------------- the table

# metric, column title, higher is better, format
COLUMNS = [
    ("a_tasks_per_s", "a. no-op tasks/s", True, "{:,.0f}"),
    ("b_p50_ms", "b. round trip p50", False, "ms"),
    ("b_p99_ms", "b. round trip p99", False, "ms"),
    ("c_mb_per_s", "c. 32 MiB args MB/s", True, "{:,.0f}"),
    ("d_speedup", "d. pi speedup on 2", True, "{:.2f}x"),
]
TCP_COLUMNS = {"b_p50_ms": "e_p50_ms", "b_p99_ms": "e_p99_ms", "c_mb_per_s": "e_mb_per_s"}
LABELS = {"rvidia": RvidiaEngine.label, "ppe": PpeEngine.label, "dask": DaskEngine.label, "ray": RayEngine.label,
          "tcp": "raw loopback TCP (the limit)"}


def _fmt(value: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "ms":
        return f"{value * 1e3:,.0f} us" if value < 1 else f"{value:,.2f} ms"
    return fmt.format(value)


def _ratio(results: Results, metric: str, peer: str) -> float | None:
    ours, theirs = results.median("rvidia", metric), results.median(peer, metric)
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def table(results: Results, engines: list[str], sizes: Sizes) -> str:
    """The Markdown tables: figures per engine, RVIDIA's ratios, the targets of issue 6."""
    titles = [c[1] for c in COLUMNS]
    if sizes != FULL:
        titles[3] = f"c. {sizes.array_mib} MiB args MB/s"
    lines = ["| engine | " + " | ".join(titles) + " |", "| --- |" + " --- |" * len(COLUMNS)]
    for name in [*engines, "tcp"]:
        if name == "tcp" and "tcp" not in results.figures:
            continue
        if name in results.errors:
            lines.append(f"| {LABELS[name]} | " + " | ".join(["skipped"] * len(COLUMNS)) + " |")
            continue
        cells = []
        for metric, _, _, fmt in COLUMNS:
            if name == "tcp":
                if metric == "d_speedup":
                    cells.append("2.00x (ideal)")
                    continue
                metric = TCP_COLUMNS.get(metric, "")
            if metric and f"{name}/{metric[0]}" in results.errors:
                cells.append("failed")
                continue
            cells.append(_fmt(results.median(name, metric), fmt))
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    out = ["\n".join(lines), ""]
    ratio_lines = ["| RVIDIA's ratio against | " + " | ".join(titles) + " |", "| --- |" + " --- |" * len(COLUMNS)]
    any_peer = False
    for peer in [p for p in engines if p in PEERS and p not in results.errors]:
        any_peer = True
        cells = []
        for metric, _, _, _ in COLUMNS:
            r = _ratio(results, metric, peer)
            cells.append("-" if r is None else f"{r:.2f}x")
        ratio_lines.append(f"| {LABELS[peer]} | " + " | ".join(cells) + " |")
    if "tcp" in results.figures:
        any_peer = True
        cells = []
        for metric, _, _, _ in COLUMNS:
            theirs = results.median("tcp", TCP_COLUMNS.get(metric, ""))
            ours = results.median("rvidia", metric)
            if metric == "d_speedup":
                theirs = 2.0
            cells.append("-" if ours is None or not theirs else f"{ours / theirs:.2f}x")
        ratio_lines.append(f"| {LABELS['tcp']} | " + " | ".join(cells) + " |")
    if any_peer:
        out += ["\n".join(ratio_lines), "",
                "Ratios are RVIDIA's figure divided by the peer's: above 1 is better for tasks/s, MB/s and "
                "speedup, below 1 is better for round-trip times.", ""]
    batching = batching_rows(results, sizes)
    if batching:
        chunk = batched_chunksize(sizes.noop_tasks)
        out += [f"Workload a at equal batching (each engine's default above: RVIDIA {chunk} items per chunk, "
                "ProcessPoolExecutor one item per task):", "",
                "| items per task | ProcessPoolExecutor(2) tasks/s | RVIDIA tasks/s | RVIDIA / PPE |",
                "| --- | --- | --- | --- |"]
        for title, ppe, ours in batching:
            ratio = f"{ours / ppe:.2f}x" if ppe and ours else "-"
            out.append(f"| {title} | {_fmt(ppe, '{:,.0f}')} | {_fmt(ours, '{:,.0f}')} | {ratio} |")
        out.append("")
    return "\n".join(out)


def batching_rows(results: Results, sizes: Sizes) -> list[tuple[str, float | None, float | None]]:
    """Workload a with both batchings: (title, PPE tasks/s, RVIDIA tasks/s); empty if not measured."""
    other = "a_other_batching_tasks_per_s"
    if results.median("rvidia", other) is None and results.median("ppe", other) is None:
        return []
    chunk = batched_chunksize(sizes.noop_tasks)
    return [("1 (PPE's default)", results.median("ppe", "a_tasks_per_s"), results.median("rvidia", other)),
            (f"{chunk} (RVIDIA's default)", results.median("ppe", other), results.median("rvidia", "a_tasks_per_s"))]


# name, metric, peer (None: RVIDIA's own figure), bound, at least (True) or at most (False)
TARGETS = [
    ("throughput >= 1.0x ProcessPoolExecutor", "a_tasks_per_s", "ppe", 1.0, True),
    ("throughput >= 4x Ray", "a_tasks_per_s", "ray", 4.0, True),
    ("throughput >= 15x Dask", "a_tasks_per_s", "dask", 15.0, True),
    ("round-trip p50 <= 1.5x ProcessPoolExecutor", "b_p50_ms", "ppe", 1.5, False),
    ("32 MiB payload >= 2.5x ProcessPoolExecutor", "c_mb_per_s", "ppe", 2.5, True),
    ("Monte Carlo pi speedup >= 1.9x on 2 workers", "d_speedup", None, 1.9, True),
]


def targets(results: Results, sizes: Sizes = FULL) -> tuple[str, list[dict[str, Any]]]:
    lines = ["| target (issue 6) | measured | met |", "| --- | --- | --- |"]
    rows: list[dict[str, Any]] = []
    for title, metric, peer, bound, at_least in TARGETS:
        value = results.median("rvidia", metric) if peer is None else _ratio(results, metric, peer)
        if value is None:
            failed = f"rvidia/{metric[0]}" in results.errors
            lines.append(f"| {title} | {'RVIDIA failed (below)' if failed else 'not measured'} | "
                         f"{'**no**' if failed else '-'} |")
            rows.append({"target": title, "value": None, "met": None})
            continue
        met = value >= bound if at_least else value <= bound
        lines.append(f"| {title} | {value:.2f}x | {'yes' if met else '**no**'} |")
        rows.append({"target": title, "value": value, "met": met})
    for title, ppe, ours in batching_rows(results, sizes):
        if ppe and ours:
            n = int(title.split()[0])
            verdict = "yes" if ours >= ppe else "**no**"
            lines.append(f"| (not a target) throughput >= 1.0x ProcessPoolExecutor, both at {n} item"
                         f"{'s' if n > 1 else ''} per task | {ours / ppe:.2f}x | {verdict} |")
            rows.append({"target": f"equal batching {n}", "value": ours / ppe, "met": ours >= ppe})
    return "\n".join(lines), rows


def report(results: Results, meta: dict[str, Any], engines: list[str], sizes: Sizes, repeats: int,
           quick: bool) -> str:
    gib = (meta["memory_bytes"] or 0) / (1 << 30)
    v = meta["versions"]
    la0 = ", ".join(f"{x:.2f}" for x in meta["load_start"])
    la1 = ", ".join(f"{x:.2f}" for x in meta["load_end"])
    target_table, _ = targets(results, sizes)
    cores = meta["cores"] or 1
    others = (meta["others_start"], meta["others_end"])
    busy = max(others) > 15.0
    lines = [
        f"**Measured under load**: other work used {others[0]:.0f}% of the {cores} cores' CPU just before "
        f"the run and {others[1]:.0f}% just after it, so it shared the cores. These figures are noisy, and "
        "the speedups and latencies are not meaningful; rerun on an idle machine.",
        "",
    ] if busy else []
    lines += [
        f"Run of `python benchmarks/engine.py{' --quick' if quick else ''}"
        f"{'' if repeats == (1 if quick else 3) else f' --repeat {repeats}'}` on {meta['started']}, "
        f"{meta['run_seconds']:.0f} s in all; medians of {repeats} repeat{'s' if repeats != 1 else ''}.",
        "",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores, {gib:.1f} GiB memory, {meta['os']}.",
        f"- Python {meta['python']}; numpy {v['numpy']}; dask {v['dask']} (distributed {v['distributed']}); "
        f"ray {v['ray']}; rvidia {v['rvidia']}.",
        "- BLAS and OpenMP threads: 1 (set before numpy loads, inherited by every worker).",
        f"- Other work's CPU use, sampled for 3 s with no engine running: {others[0]:.0f}% just before the "
        f"run, {others[1]:.0f}% just after it (above 15% the figures are marked as measured under load). "
        f"Load average (1, 5, 15 min) at the start: {la0}; at the end: {la1} (it lags by minutes, and at "
        "the end it counts the benchmark's own processes).",
        f"- Sizes: a. {sizes.noop_tasks:,} no-op tasks; b. {sizes.round_trips} round trips; "
        f"c. {sizes.arrays} arrays of {sizes.array_mib} MiB; d. {sizes.pi_samples:,} samples in chunks of "
        f"{sizes.pi_chunk:,}; e. {sizes.tcp_bytes // MIB} MiB one way, {sizes.tcp_pings:,} ping-pongs of 64 bytes.",
        "",
        table(results, engines, sizes),
        target_table,
        "",
    ]
    single = results.median("single", "d_rvidia_seconds")
    master = results.median("rvidia", "d_master_seconds")
    rv = results.median("rvidia", "d_seconds")
    if single and master and rv:
        lines += [f"Pi: one process took {single:.2f} s. RVIDIA took {rv:.2f} s from submit to result as the "
                  f"client saw it, {master:.2f} s on the master's clock (created to finished; "
                  f"{single / master:.2f}x), so the client's status polling added {rv - master:.2f} s.", ""]
    if results.errors:
        lines += ["Skipped or failed:", ""] + [f"- {k}: {v}" for k, v in results.errors.items()] + [""]
    lines += ["How each engine was driven:", ""]
    for name in engines:
        for key, api in API.get(name, {}).items():
            lines.append(f"- {name} {key}: `{api}`")
    return "\n".join(lines) + "\n"


def write_doc(path: Path, block: str) -> None:
    """Replace the generated block in ``path`` (or append it), keeping every hand-written line."""
    generated = f"{BEGIN}\n{block}{END}\n"
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            tail = rest.split(END, 1)[1].lstrip("\n")
            path.write_text(head + generated + ("\n" + tail if tail else ""))
            return
        path.write_text(text.rstrip("\n") + "\n\n## Engine overhead: the latest run\n\n" + generated)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Benchmarks\n\n## Engine overhead: the latest run\n\n" + generated)


def _leftovers() -> list[str]:
    """Processes of the engines still running after the run (there should be none)."""
    import psutil

    me = psutil.Process()
    out = []
    for proc in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "multiprocessing.resource_tracker" in " ".join(proc.cmdline()):
                continue  # exits with this process
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:100]}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and 1 repeat: a fast check (writes no doc)")
    ap.add_argument("--repeat", "--repeats", type=int, default=None, help="repeats per workload (default 3; --quick 1)")
    ap.add_argument("--engines", default="rvidia,ppe,dask,ray", help="comma-separated, from rvidia,ppe,dask,ray")
    ap.add_argument("--workloads", default="abcde", help="letters of the workloads to run (default abcde)")
    ap.add_argument("--doc", type=Path, default=None,
                    help="write the report here (default docs/benchmarks.md, except with --quick)")
    ap.add_argument("--no-doc", action="store_true", help="do not write the report")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure of every repeat here")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="run nothing: print (and write, with --doc) the report of a run saved with --json")
    args = ap.parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        results, meta = Results(saved["figures"], saved["errors"]), saved["meta"]
        run_args = meta["run"]
        sizes = Sizes(**run_args["sizes"])
        text = report(results, meta, run_args["engines"], sizes, run_args["repeats"], sizes == QUICK)
        print(text)
        if args.doc and not args.no_doc:
            write_doc(args.doc, text)
        return 0
    sizes = QUICK if args.quick else FULL
    repeats = args.repeat or (1 if args.quick else 3)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        ap.error(f"unknown engine(s) {unknown}; choose from {', '.join(ENGINES)}")
    workloads = "".join(w for w in args.workloads.lower() if w in WORKLOADS)
    results, meta = run(sizes, repeats, engines, workloads)
    if max(meta["others_start"], meta["others_end"]) > 15.0:
        _say(f"warning: other work used {meta['others_start']:.0f}% / {meta['others_end']:.0f}% of the CPU "
             "before / after the run: these figures measure that load too")
    text = report(results, meta, engines, sizes, repeats, args.quick)
    print(text)
    doc = None if args.no_doc else (args.doc or (None if args.quick else DOC))
    if doc is not None:
        write_doc(doc, text)
        _say(f"wrote {doc}")
    if args.json:
        _, rows = targets(results, sizes)
        args.json.write_text(json.dumps({"meta": meta, "figures": results.figures, "errors": results.errors,
                                         "targets": rows}, indent=2, default=str))
    left = _leftovers()
    if left:
        _say("warning: processes still running after the run:\n  " + "\n  ".join(left))
    return 0


if __name__ == "__main__":
    sys.exit(main())
