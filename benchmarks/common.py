"""What the kind benchmarks in ``benchmarks/kinds/`` share.

- :func:`pin_blas_threads` holds BLAS and OpenMP to one thread. It is a function, not a side effect of
  importing this module, and it must be called before numpy is imported (it raises otherwise). This
  module imports neither numpy nor rvidia, so a script can import it first and then call it. The
  master and workers a LocalCluster starts inherit the variables.
- :class:`PeakRss` samples the peak resident memory of a LocalCluster by role (master, worker agents,
  chunk processes, all worker processes together, each worker with its chunk processes), or of one
  process tree.
- :func:`time_runs` and :func:`time_jobs` time N runs of a function or of a job and report their
  median. ``time_jobs`` also records the master's own clock (``created_at`` to ``finished_at``).
- :class:`Row` and :func:`report` print one result table layout, with a ratio column for each
  single-process reference. With ``--json PATH`` they also write the figures for
  ``benchmarks/run_kinds.py``.
- :func:`parser` adds the options every script has: ``--workers``, ``--repeats`` (``--repeat`` works
  too) and ``--json``.

The scripts import this module through a small ``sys.path`` insert at their top (see
``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import psutil

MIB = 1 << 20
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def pin_blas_threads() -> None:
    """Hold BLAS and OpenMP to one thread, here and in every process started from here on.

    BLAS reads these variables once, when numpy loads it, so calling this after numpy has been
    imported would have no effect. In that case it raises RuntimeError instead of letting the
    benchmark measure with threads and not say so.
    """
    if "numpy" in sys.modules:
        raise RuntimeError("pin_blas_threads() must be called before numpy is imported")
    for var in THREAD_VARS:
        os.environ[var] = "1"


# ---------------------------------------------------------------- memory


def _rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:
        return 0


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


class PeakRss:
    """Peak resident memory (RSS), sampled in a thread every ``interval`` seconds and once more on exit.

    ``PeakRss.of_cluster(cluster)`` follows a LocalCluster. Each figure in ``peak`` is the highest
    value seen in any one sample, in bytes:

    - ``master``: the master process, with its children (it has none today);
    - ``worker agent (max)``: the largest worker agent process on its own;
    - ``chunk process (max)``: the largest chunk process, that is, a child of an agent other than the
      multiprocessing resource tracker each agent starts;
    - ``all workers (sum)``: every worker-side process at once: agents, chunk processes and the
      resource trackers;
    - ``worker 1``, ``worker 2``, ...: each agent with all its children.

    ``PeakRss.of_process()`` follows one process tree instead (this process by default), as the figure
    ``process``, for single-process references. ``measure()`` gives the figures at this moment, for
    example the idle memory before a job.
    """

    ROLES = ("master", "worker agent (max)", "chunk process (max)", "all workers (sum)")

    def __init__(self, master: int | None = None, workers: Sequence[int] = (), process: int | None = None,
                 interval: float = 0.05) -> None:
        self._master = psutil.Process(master) if master is not None else None
        self._workers = [psutil.Process(pid) for pid in workers]
        self._process = psutil.Process(process) if process is not None else None
        self._trackers: dict[int, bool] = {}
        self.interval = interval
        self.peak = dict.fromkeys(self.measure(), 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @classmethod
    def of_cluster(cls, cluster: Any, interval: float = 0.05) -> "PeakRss":
        """The master and worker processes of a ``rvidia.LocalCluster``."""
        return cls(master=cluster.master_proc.pid, workers=[p.pid for p in cluster.worker_procs],
                   interval=interval)

    @classmethod
    def of_process(cls, pid: int | None = None, interval: float = 0.05) -> "PeakRss":
        """One process (default: this one) and its children."""
        return cls(process=os.getpid() if pid is None else pid, interval=interval)

    def _is_tracker(self, proc: psutil.Process) -> bool:
        if proc.pid not in self._trackers:
            try:
                self._trackers[proc.pid] = any("multiprocessing.resource_tracker" in part for part in proc.cmdline())
            except psutil.Error:
                return False
        return self._trackers[proc.pid]

    @staticmethod
    def _tree(proc: psutil.Process) -> int:
        return _rss(proc) + sum(_rss(child) for child in _children(proc))

    def measure(self) -> dict[str, int]:
        """The figures now, in bytes; a process that has gone counts 0."""
        now: dict[str, int] = {}
        if self._process is not None:
            now["process"] = self._tree(self._process)
        if self._master is not None:
            now["master"] = self._tree(self._master)
        if self._workers:
            agent_max = chunk_max = total = 0
            trees: dict[str, int] = {}
            for i, agent in enumerate(self._workers, 1):
                own = tree = _rss(agent)
                agent_max = max(agent_max, own)
                for child in _children(agent):
                    rss = _rss(child)
                    tree += rss
                    if not self._is_tracker(child):
                        chunk_max = max(chunk_max, rss)
                trees[f"worker {i}"] = tree
                total += tree
            now.update({"worker agent (max)": agent_max, "chunk process (max)": chunk_max,
                        "all workers (sum)": total, **trees})
        return now

    def sample(self) -> None:
        for name, value in self.measure().items():
            self.peak[name] = max(self.peak.get(name, 0), value)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def report(self, names: Iterable[str] | None = None) -> str:
        """``master 76 MiB, worker agent (max) 48 MiB, ...``: the roles (default) or the figures named."""
        chosen = [n for n in (self.ROLES if names is None else names) if n in self.peak]
        return ", ".join(f"{name} {self.peak[name] / MIB:.0f} MiB" for name in chosen)


# ---------------------------------------------------------------- time


@dataclass
class Runs:
    """Seconds and return values of repeated runs of one thing; ``median`` is the figure reported."""

    seconds: list[float]
    values: list[Any]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def last(self) -> Any:
        return self.values[-1]


def time_runs(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> Runs:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times (at least once) timed."""
    for _ in range(warmup):
        fn()
    seconds, values = [], []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        values.append(fn())
        seconds.append(time.perf_counter() - start)
    return Runs(seconds, values)


def master_seconds(view: dict[str, Any]) -> float:
    """``created_at`` to ``finished_at`` of a job view, on the master's clock (no client polling in it)."""
    start, end = (datetime.fromisoformat(view[k].replace("Z", "+00:00")) for k in ("created_at", "finished_at"))
    return (end - start).total_seconds()


@dataclass
class JobRuns(Runs):
    """Runs of a job: ``values`` holds (job, result) pairs, ``master`` the master's clock of each."""

    master: list[float] = field(default_factory=list)

    @property
    def master_median(self) -> float:
        return statistics.median(self.master)

    @property
    def job(self) -> Any:
        return self.values[-1][0]

    @property
    def result(self) -> Any:
        return self.values[-1][1]


def time_jobs(cluster: Any, kind: str, repeats: int, *, inputs: dict[str, Any] | None = None,
              wait: float | None = None, **params: Any) -> JobRuns:
    """Submit the same job ``repeats`` times, one after another. Each run is timed from submit to
    result as the client sees it (its status polling adds up to 0.25 s) and, in ``master``, from
    ``created_at`` to ``finished_at`` on the master's clock. ``wait``: seconds allowed for each result."""
    def one() -> tuple[Any, Any]:
        job = cluster.submit(kind, inputs=inputs, **params)
        return job, job.result(timeout=wait)

    runs = time_runs(one, repeats)
    return JobRuns(runs.seconds, runs.values, [master_seconds(job.status()) for job, _ in runs.values])


# ---------------------------------------------------------------- report


@dataclass
class Row:
    """One line of a result table.

    ``ref``: a short name makes the row a single-process reference, which gets a ratio column
    ``<ref> / this``: the reference's seconds divided by each row's (above 1: the row is faster).
    ``cluster``: ``"job"`` (submit to result) or ``"master"`` (the master's clock) for a cluster's row.
    """

    label: str
    seconds: float
    note: str = ""
    ref: str = ""
    cluster: str = ""


def job_rows(runs: JobRuns, workers: int, note: str = "") -> list[Row]:
    """The two rows of a cluster's timed jobs: submit to result, and the master's own clock."""
    return [Row(f"rvidia, {workers} workers, submit to result", runs.median, note, cluster="job"),
            Row(f"rvidia, {workers} workers, master's clock", runs.master_median,
                "created_at to finished_at", cluster="master")]


def ratio(reference: float, seconds: float) -> float:
    """reference / seconds; NaN when the run took no measurable time."""
    return reference / seconds if seconds > 0 else math.nan


def format_table(title: str, rows: Sequence[Row], notes: Iterable[str] = ()) -> str:
    refs = [row for row in rows if row.ref]
    heads = [f"{ref.ref} / this" for ref in refs]
    label_w = max(len(row.label) for row in rows)
    lines = [title, f"  {'':<{label_w}}  {'seconds':>9}" + "".join(f"  {h:>9}" for h in heads)]
    for row in rows:
        cells = "".join(f"  {ratio(ref.seconds, row.seconds):>{max(9, len(h)) - 1}.2f}x"
                        for ref, h in zip(refs, heads))
        lines.append(f"  {row.label:<{label_w}}  {row.seconds:9.3f}{cells}  {row.note}".rstrip())
    lines += [f"  {note}" for note in notes]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines.append(f"  ratios: the reference's seconds / the row's (above 1: the row is faster); "
                 f"load average {load} (1, 5, 15 min)")
    return "\n".join(lines)


def median_of(repeats: int) -> str:
    return f"median of {repeats} run{'' if repeats == 1 else 's'}"


def report(bench: str, title: str, rows: Sequence[Row], notes: Iterable[str] = (), *, repeats: int,
           json_path: str | None = None, workload: str = "", check: str = "") -> None:
    """Print the table (the title ends with "median of ``repeats`` runs"); with ``json_path`` also write its
    figures there. ``workload`` (what was measured, in a few words) and ``check`` (how the cluster's output
    was checked) label the benchmark's lines in ``run_kinds.py``'s table."""
    notes = list(notes)
    title = f"{title}; {median_of(repeats)}"
    print(format_table(title, rows, notes), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps({
            "bench": bench, "title": title, "workload": workload, "check": check, "notes": notes, "repeats": repeats,
            "rows": [asdict(row) for row in rows], "cpus": os.cpu_count(), "load_average": os.getloadavg(),
        }, indent=1))


def parser(doc: str, *, repeats: int, workers: int = 2) -> argparse.ArgumentParser:
    """An ArgumentParser described by ``doc``'s first line, with the options every kind benchmark has."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--workers", type=int, default=workers, help="workers of the LocalCluster (default: %(default)s)")
    ap.add_argument("--repeats", "--repeat", dest="repeats", type=int, default=repeats,
                    help="timed runs of each side; the median is reported (default: %(default)s)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON (benchmarks/run_kinds.py reads it)")
    return ap
