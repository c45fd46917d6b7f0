"""Owners first: the people who lend their machines come before the jobs.

Three parts, kept apart so the rules can be tested without processes or clocks:

- ``OwnerPolicy``: a state machine fed with (time, the owner's CPU use, "inside the lending hours")
  that says what the worker should do: take chunks or not, keep its running chunks stopped, hand them
  back. Time and samples are injected; it reads neither clock nor ``/proc``.
- ``OwnerCpu``: the measurement. "The owner's CPU use" is what every process on the host uses except
  RVIDIA's own (masters, worker agents and their chunk processes, of any worker on the host), as a
  percent of the whole machine: total CPU busy time minus RVIDIA processes' CPU time, between samples.
- ``parse_hours`` / ``lending_now``: ``--hours 18:00-08:00[,12:00-13:00]`` in the host's local time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

import psutil

DAY_MINUTES = 24 * 60
Range = tuple[int, int]  # minutes since local midnight, [start, end); start > end wraps midnight


# ---------------------------------------------------------------- timing


@dataclass(frozen=True)
class Windows:
    """How long the owner's CPU use must stay high (busy) or low (calm) before the worker reacts.

    The defaults are the documented behaviour; tests shorten them with the environment variables
    below (``windows_from_env``) so they do not wait minutes.
    """

    busy: float = 5.0
    calm: float = 30.0
    sample: float = 1.0


ENV_BUSY = "RVIDIA_OWNER_BUSY_SECONDS"
ENV_CALM = "RVIDIA_OWNER_CALM_SECONDS"
ENV_SAMPLE = "RVIDIA_OWNER_SAMPLE_SECONDS"


def windows_from_env(environ: Mapping[str, str] = os.environ) -> Windows:
    """The default windows, or shorter ones from RVIDIA_OWNER_*_SECONDS (meant for tests only)."""
    base = Windows()

    def read(name: str, default: float) -> float:
        text = environ.get(name, "").strip()
        if not text:
            return default
        value = float(text)
        if value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, not {text!r}")
        return value

    return Windows(busy=read(ENV_BUSY, base.busy), calm=read(ENV_CALM, base.calm),
                   sample=read(ENV_SAMPLE, base.sample))


# ---------------------------------------------------------------- the rules


@dataclass(frozen=True)
class Plan:
    """What the worker should do now.

    ``paused``: take no new chunks (Capacity slots=0, paused=True). ``suspended``: keep the running
    chunk processes stopped (the owner is busy). ``vacate``: hand the running chunks back now; true
    once per owner pause, when it has lasted ``vacate_after`` seconds. ``reason`` is for people.
    """

    paused: bool = False
    suspended: bool = False
    vacate: bool = False
    reason: str = ""


class OwnerPolicy:
    """Owner CPU above ``threshold`` for ``windows.busy`` s: pause and stop the running chunks; paused
    that way for ``vacate_after`` s: hand them back; below the threshold for ``windows.calm`` s:
    resume. Outside the lending hours: pause too, but let running chunks finish (the friendliest end
    of a lending period: nothing is lost, and no new work starts).
    """

    def __init__(self, threshold: float, vacate_after: float, windows: Windows = Windows()) -> None:
        self.threshold = threshold
        self.vacate_after = vacate_after
        self.windows = windows
        self.owner_busy = False  # the owner-CPU pause is on
        self._above_since: float | None = None
        self._below_since: float | None = None
        self._paused_at = 0.0
        self._vacated = False

    def step(self, now: float, owner_cpu: float | None, lending: bool = True) -> Plan:
        """One sample. ``owner_cpu`` None means "not watched" (owner-first off, or no sample yet)."""
        if owner_cpu is not None:
            self._observe(now, owner_cpu)
        vacate = (self.owner_busy and not self._vacated and now - self._paused_at >= self.vacate_after)
        if vacate:
            self._vacated = True
        reasons = []
        if self.owner_busy:
            reasons.append(f"the owner's CPU use is above {self.threshold:g}%")
        if not lending:
            reasons.append("outside the lending hours")
        return Plan(paused=bool(reasons), suspended=self.owner_busy, vacate=vacate, reason="; ".join(reasons))

    def _observe(self, now: float, owner_cpu: float) -> None:
        if owner_cpu > self.threshold:
            self._below_since = None
            if self._above_since is None:
                self._above_since = now
            if not self.owner_busy and now - self._above_since >= self.windows.busy:
                self.owner_busy, self._paused_at, self._vacated = True, now, False
            return
        self._above_since = None
        if self._below_since is None:
            self._below_since = now
        if self.owner_busy and now - self._below_since >= self.windows.calm:
            self.owner_busy = False


# ---------------------------------------------------------------- lending hours


def _minute(text: str, whole: str) -> int:
    hours, sep, minutes = text.strip().partition(":")
    if not hours.isdigit() or (sep and not (minutes.isdigit() and len(minutes) == 2)):
        raise ValueError(f"{whole!r}: {text.strip()!r} is not a time like 18:00")
    value = int(hours) * 60 + (int(minutes) if sep else 0)
    if int(hours) > 24 or (sep and int(minutes) > 59) or value > DAY_MINUTES:
        raise ValueError(f"{whole!r}: {text.strip()!r} is not a time of day")
    return value


def parse_hours(text: str | None) -> list[Range]:
    """``"18:00-08:00,12:00-13:00"`` -> ranges of minutes; empty or None: always lending.

    ValueError with a one-line reason for anything else: a range must be ``HH:MM-HH:MM`` (or
    ``HH-HH``), its two ends different; an end before its start wraps past midnight.
    """
    ranges: list[Range] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        start, sep, end = part.partition("-")
        if not sep:
            raise ValueError(f"{part!r} is not a range like 18:00-08:00")
        first, last = _minute(start, part) % DAY_MINUTES, _minute(end, part)
        last = last if last == DAY_MINUTES else last % DAY_MINUTES  # 00:00-24:00 is the whole day
        if first == last:
            raise ValueError(f"{part!r} starts and ends at the same time (leave --hours out to lend always)")
        ranges.append((first, last))
    return ranges


def in_hours(ranges: list[Range], minute: int) -> bool:
    """Whether ``minute`` (since midnight) falls in one of the ranges; no ranges means always."""
    if not ranges:
        return True
    for start, end in ranges:
        if start < end and start <= minute < end:
            return True
        if start > end and (minute >= start or minute < end):
            return True
    return False


def lending_now(ranges: list[Range], when: datetime | None = None) -> bool:
    """``in_hours`` for a local wall-clock time (now by default)."""
    when = when or datetime.now()
    return in_hours(ranges, when.hour * 60 + when.minute)


# ---------------------------------------------------------------- the measurement


def is_rvidia_cmdline(cmdline: list[str]) -> bool:
    """A master, worker or other ``rvidia`` command: ``rvidia ...``, ``python [opts] -m rvidia[.x] ...``,
    ``python [opts] /venv/bin/rvidia ...``.

    Only the program and the interpreter's own options are looked at, so a program that merely has
    "rvidia" among its arguments (an editor on a file of this repository) still counts as the owner's.
    """
    if not cmdline:
        return False
    if _is_rvidia_script(cmdline[0]):
        return True
    if not os.path.basename(cmdline[0]).lower().startswith(("python", "pypy")):
        return False
    args = iter(cmdline[1:])
    for arg in args:
        if arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")):
            module = next(args, "") if arg == "-m" else arg[2:]
            return module == "rvidia" or module.startswith("rvidia.")
        if arg in ("-X", "-W"):
            next(args, None)  # the option's value
        elif arg in ("-c", "-") or not arg.startswith("-"):
            return not arg.startswith("-") and _is_rvidia_script(arg)
    return False


def _is_rvidia_script(path: str) -> bool:
    return os.path.basename(path).lower() in ("rvidia", "rvidia.exe", "rvidia-script.py")


class OwnerCpu:
    """Samples the owner's CPU use: total busy time minus RVIDIA processes' time, between calls.

    RVIDIA's processes are those whose command line is an ``rvidia`` command, everything below them
    (chunk processes, whose command line is multiprocessing's), and this process with its children
    (an agent started from Python). Each call costs one walk over the process table.
    """

    def __init__(self) -> None:
        self._me = os.getpid()
        self._kind: dict[tuple[int, float], bool] = {}  # (pid, create time) -> is an rvidia command
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, create time) -> user+system seconds
        self._last_total, self._last_busy = _machine_times()
        self._last_at = time.time()
        self.sample()  # first pass: remember every RVIDIA process's CPU time so far

    def sample(self) -> float:
        """The owner's CPU use since the previous call, in percent of the whole machine (0 to 100)."""
        total, busy = _machine_times()
        ours = self._rvidia_seconds()
        d_total, d_busy = total - self._last_total, busy - self._last_busy
        self._last_total, self._last_busy = total, busy
        if d_total <= 0:
            return 0.0
        return max(0.0, min(100.0, 100.0 * (d_busy - ours) / d_total))

    def _rvidia_seconds(self) -> float:
        """CPU seconds RVIDIA processes used since the previous call (a new one: all of its time)."""
        since, self._last_at = self._last_at, time.time()
        seen: dict[tuple[int, float], float] = {}
        spent = 0.0
        for proc in self._rvidia_processes():
            try:
                key = (proc.pid, proc.create_time())
                times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            used = times.user + times.system
            seen[key] = used
            before = self._cpu.get(key, 0.0 if key[1] >= since - 1.0 else used)
            spent += max(0.0, used - before)
        self._cpu = seen
        return spent

    def _rvidia_processes(self) -> list[psutil.Process]:
        children: dict[int, list[psutil.Process]] = {}
        roots: list[psutil.Process] = []
        kinds: dict[tuple[int, float], bool] = {}
        for proc in psutil.process_iter():
            try:
                parent = proc.ppid()
                key = (proc.pid, proc.create_time())
                kinds[key] = self._kind[key] if key in self._kind else _cmdline_is_rvidia(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if proc.pid == self._me or kinds[key]:
                roots.append(proc)
            children.setdefault(parent, []).append(proc)
        self._kind = kinds  # only processes alive now: the cache does not grow with pid churn
        found: dict[int, psutil.Process] = {}
        stack = list(roots)
        while stack:
            proc = stack.pop()
            if proc.pid not in found:
                found[proc.pid] = proc
                stack.extend(children.get(proc.pid, []))
        return list(found.values())


def _cmdline_is_rvidia(proc: psutil.Process) -> bool:
    try:
        return is_rvidia_cmdline(proc.cmdline())
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return False  # another user's process that hides its command line: the owner's


def _machine_times() -> tuple[float, float]:
    """(all CPU time, busy CPU time) of the whole machine so far, in seconds summed over cores."""
    t = psutil.cpu_times()
    total = sum(t)
    # Guest time is already inside user time on Linux (psutil's cpu_percent subtracts it too).
    total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    busy = total - t.idle - getattr(t, "iowait", 0.0)
    return total, busy
