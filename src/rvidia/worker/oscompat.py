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

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
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
