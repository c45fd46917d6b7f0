"""Containment of chunk processes: how the pool starts them (plainly, under bubblewrap, in a container).

Chunks run other people's code (a map job's function) and parse other people's data. On Linux, where
bubblewrap is installed, every chunk process runs in a sandbox: no network, the file system read-only
except a private scratch directory, a private /tmp, nothing of the users' home directories, resource
limits and nice 19 (docs/security.md). ``--isolation docker`` runs them in containers instead
(``dockerbox``); ``none`` starts them plainly, as before, on every OS.

A launcher turns a slot number into a running ``python -m rvidia.worker.child`` behind the right
prefix, and knows how to kill, stop and resume what it started. Everything in a launch command comes
from the worker's own settings and the host, never from a task: tasks arrive later, as frames.
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rvidia.worker import facts, oscompat

ISOLATIONS = ("bwrap", "docker", "none")
SCRATCH = "/scratch"  # the chunk's working directory and HOME inside a sandbox
DEFAULT_CPU_SECONDS = 6 * 3600
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a Python program needs (the dynamic loader's cache, time zone, names of ids, BLAS
# alternatives); not all of /etc, which holds the machine's secrets.
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "timezone", "passwd",
               "group", "nsswitch.conf", "hosts", "host.conf", "mime.types", "os-release", "debian_version",
               f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}")
PASS_ENV_PREFIXES = ("OMP_", "OPENBLAS_", "MKL_", "NUMEXPR_", "VECLIB_")  # the owner's thread settings


SANDBOX_ENV = "RVIDIA_SANDBOXED"  # set inside a sandbox: a chunk's file errors then say why (worker/child.py)


class SandboxUnavailable(Exception):
    """The isolation asked for cannot work here; the message says why and what to do."""


@dataclass(frozen=True)
class SandboxSettings:
    """The worker's containment options (``rvidia worker --isolation ... --chunk-memory ...``)."""

    isolation: str = "none"
    image: str = "rvidia-chunk:local"
    memory: int | None = None  # bytes per chunk process: RLIMIT_AS, docker --memory; None: the machine's
    cpu_seconds: int = DEFAULT_CPU_SECONDS  # CPU time per chunk (all its threads): RLIMIT_CPU
    processes: int | None = None  # tasks per chunk: RLIMIT_NPROC / docker --pids-limit; None: 4 per core
    cpus: float | None = None  # docker --cpus per chunk; None: the cores shared out over the slots


@dataclass(frozen=True)
class Limits:
    """What one sandboxed chunk process may use. ``address_space`` (RLIMIT_AS) is ``memory`` unless
    the machine has an NVIDIA GPU and no --chunk-memory was given: CUDA reserves far more address
    space than memory, and would not start under the limit."""

    memory: int
    cpu_seconds: int
    processes: int
    address_space: int | None = None

    @classmethod
    def of(cls, settings: SandboxSettings) -> Limits:
        """The limits the worker's options give, with the defaults filled in from this machine."""
        memory = settings.memory or facts.memory_bytes()
        space = memory if settings.memory or not gpu_devices() else None
        return cls(memory=memory, cpu_seconds=settings.cpu_seconds, address_space=space,
                   processes=settings.processes or max(256, 4 * facts.cores()))


def gpu_devices() -> list[str]:
    """The NVIDIA device nodes a chunk needs to use the GPUs (the driver's libraries are in /usr)."""
    import glob

    return sorted(glob.glob("/dev/nvidia*")) if sys.platform.startswith("linux") else []


@dataclass
class Started:
    """One chunk process as its launcher started it."""

    proc: subprocess.Popen[bytes]
    scratch: str | None = None
    container: str | None = None

    @property
    def pid(self) -> int:
        """The launched process's pid (bwrap's or the docker client's in a sandbox)."""
        return self.proc.pid


# ---------------------------------------------------------------- no isolation


class Launcher:
    """``--isolation none``: the same Python, ``sys.path`` and environment as the agent (what
    multiprocessing's spawn gave), on every OS. The base of the sandboxed launchers."""

    name = "none"
    sandboxed = False
    nproc = True  # limit tasks with RLIMIT_NPROC (docker has --pids-limit instead)

    def __init__(self, nice: int = 0, limits: Limits | None = None, shared: Sequence[str] = ()) -> None:
        # A sandbox runs its chunks at nice 19 unless the worker was given a --nice of its own.
        self.nice = (nice or 19) if self.sandboxed else nice
        self.limits = limits
        self.shared = [os.path.abspath(p) for p in shared]  # read-only dirs chunks need (the input cache)
        self.root = ""  # where the launcher keeps its processes' scratch directories, if anywhere

    def child_args(self, scratch: str | None) -> list[str]:
        """The chunk process's own options: the niceness and limits it sets on itself before any chunk."""
        args = ["--nice", str(self.nice)]
        if self.limits is not None:
            if self.limits.address_space:
                args += ["--memory", str(self.limits.address_space)]
            args += ["--cpu-seconds", str(self.limits.cpu_seconds)]
            if self.nproc:  # RLIMIT_NPROC counts all of the user's tasks: start above those there now
                args += ["--processes", str(self.limits.processes + oscompat.user_tasks())]
        if scratch:
            args += ["--scratch", scratch]
        return args

    def entry(self, scratch: str | None) -> list[str]:
        """The chunk process's command line (what a sandbox prefix wraps)."""
        # -P in a sandbox: the scratch directory (the chunk's cwd) is never on sys.path.
        flags = ["-P"] if self.sandboxed else []
        return [sys.executable, *flags, "-m", "rvidia.worker.child", *self.child_args(scratch)]

    def start(self, number: int, entry: Sequence[str] | None = None) -> Started:
        """Start slot ``number``'s chunk process; ``entry`` replaces the child's command (tests)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # as spawn passes sys.path
        return Started(_popen(list(entry or self.entry(None)), env, new_session=False))

    def kill(self, started: Started) -> None:
        """SIGKILL it and whatever it started; its reader thread reports the death."""
        if started.proc.poll() is None:
            oscompat.kill_tree(started.proc.pid)

    def suspend(self, started: Started) -> bool:
        """Stop the chunk where it is (owner-first); False when it is gone."""
        return oscompat.suspend_tree(started.proc.pid)

    def resume(self, started: Started) -> None:
        oscompat.resume_tree(started.proc.pid)

    def release(self, started: Started) -> None:
        """After the process is gone: remove what it had (its scratch directory)."""
        if started.scratch:
            shutil.rmtree(started.scratch, ignore_errors=True)

    def exit_code(self, code: int | None) -> int | None:
        """The chunk's own exit status as multiprocessing wrote it (-N: killed by signal N)."""
        return code

    def recycle(self, cpu_seconds: float) -> bool:
        """Whether a process that has used this much CPU must be replaced before its next chunk."""
        return self.limits is not None and cpu_seconds > self.limits.cpu_seconds

    def describe(self) -> str:
        return "none (chunk processes are not contained)"

    def close(self) -> None:
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


def niced(argv: list[str], nice: int) -> list[str]:
    """``argv`` under ``nice -n N`` (POSIX), so a sandbox's own processes (bwrap, the docker client)
    run at the chunk's niceness from their first instruction, like the chunk process itself."""
    tool = shutil.which("nice") if nice > 0 and os.name == "posix" else None
    return [tool, "-n", str(nice), *argv] if tool else argv


def _popen(argv: list[str], env: dict[str, str], new_session: bool) -> subprocess.Popen[bytes]:
    # stderr stays the agent's: what the interpreter or C code prints there goes where it always went.
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=env,
                            close_fds=True, start_new_session=new_session)


# ---------------------------------------------------------------- what a sandbox shows


def _homes() -> set[str]:
    homes = {"/root", "/home", "/Users", os.path.expanduser("~")}
    return {os.path.realpath(h) for h in homes if h and h != "~"}


def _unsafe(path: str, homes: set[str]) -> bool:
    """``/``, a home directory or anything holding one: binding it would show the users' files."""
    return any(h == path or h.startswith(path.rstrip("/") + "/") for h in homes) or path == "/"


def runtime_paths() -> list[str]:
    """The Python runtime and installed packages a chunk needs, bound read-only: the prefixes (a
    venv's and its base), site-packages, this package's import root (an editable install's source)
    and the agent's other ``sys.path`` entries; never the user site, the current directory, a home
    directory itself, or what the system directories already show."""
    import rvidia

    homes = _homes()
    skip = {os.path.realpath(os.getcwd())}
    user_site = os.path.realpath(site.getusersitepackages()) if site.ENABLE_USER_SITE is not None else ""
    wanted = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, *site.getsitepackages(),
              str(Path(rvidia.__file__).resolve().parents[1]), os.path.dirname(os.path.realpath(sys.executable)),
              *sys.path]
    found: list[str] = []
    for raw in wanted:
        if not raw or not os.path.exists(raw):
            continue
        path = os.path.realpath(raw)
        if path in skip or _unsafe(path, homes) or (user_site and path.startswith(user_site)):
            continue
        found.append(path)
    chosen: list[str] = []
    covered = [d for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    for path in sorted(set(found), key=len):
        if not any(path == c or path.startswith(c.rstrip("/") + "/") for c in covered + chosen):
            chosen.append(path)
    return chosen


def etc_paths() -> list[str]:
    """The entries of ETC_ENTRIES this machine has."""
    return [os.path.join("/etc", e) for e in ETC_ENTRIES if os.path.lexists(os.path.join("/etc", e))]


def sandbox_env(python_path: Sequence[str]) -> dict[str, str]:
    """A chunk's whole environment in a sandbox: nothing of the agent's (its token, say) but thread
    settings."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": SCRATCH, "TMPDIR": "/tmp", "LANG": "C.UTF-8",
           "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": os.pathsep.join(python_path),
           SANDBOX_ENV: "1"}
    env.update({k: v for k, v in os.environ.items() if k.startswith(PASS_ENV_PREFIXES)})
    return env


def sandbox_python_path(binds: Sequence[str]) -> list[str]:
    """The agent's ``sys.path`` entries a sandboxed chunk can see (so that it imports what the agent does)."""
    homes = _homes()
    binds = [*binds, *(d for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d))]
    out = []
    for p in sys.path:
        if not p or not os.path.exists(p):
            continue
        real = os.path.realpath(p)
        if any(real == b or real.startswith(b.rstrip("/") + "/") for b in binds) and not _unsafe(real, homes):
            out.append(p)
    return out


# ---------------------------------------------------------------- bubblewrap

FULL_UNSHARE = ("--unshare-user-try", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try")
MINIMAL_UNSHARE = ("--unshare-net",)


class BwrapLauncher(Launcher):
    """``--isolation bwrap``: each chunk process in a bubblewrap sandbox (Linux)."""

    name = "bwrap"
    sandboxed = True

    def __init__(self, nice: int = 0, limits: Limits | None = None, shared: Sequence[str] = (),
                 unshare: Sequence[str] = FULL_UNSHARE, bwrap: str | None = None) -> None:
        super().__init__(nice, limits, shared)
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self.unshare = list(unshare)
        _sweep_scratch_roots()
        self.root = tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-")

    def prefix(self, scratch: str) -> list[str]:
        """``bwrap ... --``: an empty root with read-only binds of what a chunk needs, ``scratch``
        writable at /scratch, a tmpfs /tmp, and the root itself read-only at the end."""
        argv = [self.bwrap, "--die-with-parent", "--new-session", *self.unshare, "--cap-drop", "ALL",
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm", "--tmpfs", "/tmp"]
        for d in SYSTEM_DIRS:
            if os.path.islink(d):
                argv += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                argv += ["--ro-bind", d, d]
        for p in etc_paths():
            argv += ["--symlink", os.readlink(p), p] if os.path.islink(p) else ["--ro-bind", p, p]
        for p in [*runtime_paths(), *self.shared]:
            argv += ["--ro-bind", p, p]
        for dev in gpu_devices():
            argv += ["--dev-bind", dev, dev]
        argv += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu",
                 "--bind", scratch, SCRATCH, "--chdir", SCRATCH, "--remount-ro", "/", "--"]
        return argv

    def start(self, number: int, entry: Sequence[str] | None = None) -> Started:
        scratch = tempfile.mkdtemp(prefix=f"slot-{number}-", dir=self.root)
        argv = [*self.prefix(scratch), *(entry or self.entry(SCRATCH))]
        env = sandbox_env(sandbox_python_path([*runtime_paths(), *self.shared]))
        try:
            return Started(_popen(niced(argv, self.nice), env, new_session=True), scratch=scratch)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    def exit_code(self, code: int | None) -> int | None:
        # bwrap exits 128+N when its command was killed by signal N.
        return -(code - 128) if code is not None and 128 < code <= 128 + 64 else code

    def describe(self) -> str:
        return f"bwrap ({' '.join(self.unshare)})"


ROOT_PREFIX = "rvidia-sandbox-"


def _sweep_scratch_roots() -> None:
    """Remove the scratch roots of workers that died without cleaning up (kill -9, a crash): their
    names carry the pid, and a chunk's scratch files must not pile up in /tmp."""
    import psutil

    base = Path(tempfile.gettempdir())
    for path in base.glob(f"{ROOT_PREFIX}*-*"):
        pid = path.name[len(ROOT_PREFIX):].split("-", 1)[0]
        try:
            alive = psutil.pid_exists(int(pid))
            mine = not hasattr(os, "getuid") or path.stat().st_uid == os.getuid()
        except (ValueError, OSError):
            continue
        if mine and not alive:
            shutil.rmtree(path, ignore_errors=True)


@functools.cache
def probe_bwrap() -> tuple[tuple[str, ...] | None, str]:
    """Whether bubblewrap can start a chunk process here, and with which namespaces: the full set,
    else network only. (None, reason) when it cannot."""
    if not sys.platform.startswith("linux"):
        return None, "bubblewrap is Linux-only"
    if shutil.which("bwrap") is None:
        return None, "bubblewrap (bwrap) is not installed"
    reason = ""
    for unshare in (FULL_UNSHARE, MINIMAL_UNSHARE):
        launcher = BwrapLauncher(limits=None, unshare=unshare)
        try:
            scratch = tempfile.mkdtemp(dir=launcher.root)
            argv = [*launcher.prefix(scratch), sys.executable, "-m", "rvidia.worker.child", "--probe"]
            env = sandbox_env(sandbox_python_path(runtime_paths()))
            done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = str(exc)
            continue
        finally:
            launcher.close()
        if done.returncode == 0:
            return tuple(unshare), ""
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = lines[-1] if lines else f"exit code {done.returncode}"
    return None, f"bubblewrap does not work here: {reason}"


# ---------------------------------------------------------------- choosing


@dataclass
class Choice:
    """The isolation a worker runs with, and the warning to print for it (None: nothing to say)."""

    isolation: str
    warning: str | None = None
    unshare: tuple[str, ...] = field(default_factory=tuple)


def choose(requested: str | None, image: str = SandboxSettings.image) -> Choice:
    """The isolation to run with: the one asked for (SandboxUnavailable with the reason when it cannot
    work), or by default bwrap where it works, else none with a one-line warning."""
    if requested == "none":
        return Choice("none")
    if requested == "docker":
        from rvidia.worker import dockerbox

        dockerbox.check(image)
        return Choice("docker")
    unshare, reason = probe_bwrap()
    if unshare is not None:
        return Choice("bwrap", unshare=unshare)
    if requested == "bwrap":
        raise SandboxUnavailable(f"--isolation bwrap: {reason}")
    return Choice("none", warning=f"{reason}; chunks run without a sandbox (--isolation none). Install "
                                  "bubblewrap, or use --isolation docker, to contain them")


def make_launcher(settings: SandboxSettings, slots: int, nice: int, shared: Sequence[str]) -> Launcher:
    """The launcher for a worker's pool; ``settings.isolation`` is already a working choice."""
    if settings.isolation == "none":
        return Launcher(nice=nice, shared=shared)
    limits = Limits.of(settings)
    if settings.isolation == "bwrap":
        unshare, reason = probe_bwrap()
        if unshare is None:
            raise SandboxUnavailable(f"--isolation bwrap: {reason}")
        return BwrapLauncher(nice=nice, limits=limits, shared=shared, unshare=unshare)
    if settings.isolation == "docker":
        from rvidia.worker import dockerbox

        cpus = settings.cpus or max(0.1, facts.cores() / max(1, slots))
        return dockerbox.DockerLauncher(limits=limits, shared=shared, image=settings.image, cpus=cpus, nice=nice)
    raise SandboxUnavailable(f"unknown isolation {settings.isolation!r} (choose from {', '.join(ISOLATIONS)})")
