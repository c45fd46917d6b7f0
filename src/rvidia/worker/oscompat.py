"""Everything POSIX-only the worker uses, each with a fallback, so the worker runs on Windows too."""

from __future__ import annotations

import os
import signal
import sys


def die_with_parent() -> None:
    """In a chunk process: be killed when the worker agent dies, even by kill -9 (Linux only).

    Elsewhere the chunk process notices the closed pipe when its chunk ends and exits then.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        parent = os.getppid()  # not "== 1": in a sandbox's pid namespace the parent is pid 1
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    except OSError:
        pass


def lower_priority(nice: int) -> None:
    """Run at a lower CPU priority (and idle I/O priority where supported)."""
    if nice <= 0:
        return
    try:
        import psutil

        proc = psutil.Process()
        if sys.platform == "win32":
            proc.nice(psutil.IDLE_PRIORITY_CLASS)
        else:
            proc.nice(min(19, nice))
            if hasattr(psutil, "IOPRIO_CLASS_IDLE"):
                proc.ionice(psutil.IOPRIO_CLASS_IDLE)
    except Exception:
        pass


def binary_fd(fd: int) -> None:
    """Make a file descriptor carry bytes untranslated (Windows' C runtime may be in text mode)."""
    if sys.platform == "win32":
        import msvcrt

        msvcrt.setmode(fd, os.O_BINARY)


def set_limits(memory: int | None, cpu_seconds: int | None, processes: int | None) -> None:
    """In a sandboxed chunk process, before any chunk runs: cap its address space (an allocation past
    it is a MemoryError), its CPU time and the tasks its user may have (POSIX; elsewhere nothing).

    The CPU-time hard limit is twice the per-chunk budget (and 2 s): ``cpu_budget`` moves the soft
    limit along chunk by chunk and the pool replaces a process once it has used one budget, so a chunk
    gets its whole budget (SIGXCPU past it) and one that raises its own soft limit still stops at the
    hard one (SIGKILL). Core dumps are off (a crashing chunk must not fill the scratch directory).
    """
    try:
        import resource
    except ImportError:
        return
    wanted = [(resource.RLIMIT_CORE, 0)]
    if memory:
        wanted.append((resource.RLIMIT_AS, memory))
    if cpu_seconds:
        wanted.append((resource.RLIMIT_CPU, 2 * cpu_seconds + 2))
    if processes and hasattr(resource, "RLIMIT_NPROC"):
        wanted.append((resource.RLIMIT_NPROC, processes))
    for which, value in wanted:
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def cpu_budget(seconds: int | None, used: float) -> None:
    """Before each chunk: let it use ``seconds`` more CPU seconds (soft RLIMIT_CPU; SIGXCPU past it)."""
    if not seconds:
        return
    try:
        import math
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    value = math.ceil(used) + seconds
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (value, hard))
    except (ValueError, OSError):
        pass


def user_tasks() -> int:
    """How many tasks (threads) this user runs now: RLIMIT_NPROC counts them all, so a chunk's limit
    must start above it. 0 where it cannot be counted or does not matter (root is exempt)."""
    if not hasattr(os, "getuid") or os.getuid() == 0:
        return 0
    import psutil

    me, count = os.getuid(), 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        uids, threads = proc.info.get("uids"), proc.info.get("num_threads")
        if uids is not None and uids.real == me:
            count += threads or 1
    return count


def process_tree(pid: int) -> list[int]:
    """``pid`` and everything below it (a sandbox's processes hang below its launcher)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return [pid] + [p.pid for p in proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything below it, children first seen before the parent goes."""
    import psutil

    for each in reversed(process_tree(pid)):
        try:
            psutil.Process(each).kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def suspend_process(pid: int) -> bool:
    """Stop a process where it is (SIGSTOP; the equivalent on Windows, through psutil).

    Returns False when the process is gone. The work it has done is kept; ``resume_process``
    lets it go on.
    """
    import psutil

    try:
        psutil.Process(pid).suspend()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return True


def resume_process(pid: int) -> None:
    """Let a process stopped by ``suspend_process`` run again (SIGCONT)."""
    import psutil

    try:
        psutil.Process(pid).resume()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def suspend_tree(pid: int) -> bool:
    """``suspend_process`` for a process and everything below it (a sandbox's chunk process is a
    grandchild of the agent). False when the process is gone."""
    tree = process_tree(pid)
    stopped = [each for each in tree if suspend_process(each)]
    return bool(stopped) and stopped[0] == pid


def resume_tree(pid: int) -> None:
    """Let a tree stopped by ``suspend_tree`` run again."""
    for each in process_tree(pid):
        resume_process(each)


def describe_exit(code: int | None) -> str:
    """'exit code 3' or 'killed by SIGSEGV' for a child's exit status."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def install_term_handler(loop, callback) -> None:  # type: ignore[no-untyped-def]
    """Call ``callback`` on SIGTERM and SIGINT (on Windows only SIGINT, via KeyboardInterrupt)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, callback)
        except (RuntimeError, ValueError):  # Windows' loops raise a RuntimeError subclass here
            pass
