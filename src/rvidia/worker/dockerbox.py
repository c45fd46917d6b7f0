"""Chunk processes in Docker containers (``rvidia worker --isolation docker``).

Each slot's chunk process is ``docker run -i --rm`` of a local image with no network, a read-only
root, no capabilities, no new privileges, limits on tasks, memory and CPU, an unprivileged user and
tmpfs for /tmp and the scratch directory. The image holds nothing but mount points (``build_image``:
``docker import`` of a tiny tar, so no registry is needed); the host's system directories, Python
runtime and packages are bound into it read-only at their own paths: the same view bwrap gives.

The flags come from the worker's settings and the host only; a task reaches the container later, as a
frame on its stdin, so nothing a submitter sends can add or loosen one. ``docker pause``/``unpause``
stop and resume a chunk for owner-first (the agent may not signal a container's processes), and
``docker rm -f`` makes sure a killed chunk's container goes too.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from rvidia.worker.sandbox import (SCRATCH, SYSTEM_DIRS, Launcher, Limits, SandboxSettings, SandboxUnavailable,
                                   Started, etc_paths, gpu_devices, niced, runtime_paths, sandbox_env,
                                   sandbox_python_path)

log = logging.getLogger("rvidia.worker")

DEFAULT_IMAGE = SandboxSettings.image
NOBODY = "65534:65534"
DOCKER_OWNS = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")  # docker mounts its own


def docker_bin() -> str:
    """The docker client's path; SandboxUnavailable when there is none."""
    found = shutil.which("docker")
    if found is None:
        raise SandboxUnavailable("--isolation docker: the docker command is not installed")
    return found


def _docker(*args: str, timeout: float = 30, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([docker_bin(), *args], input=stdin, capture_output=True, timeout=timeout)


def _why(done: subprocess.CompletedProcess[bytes]) -> str:
    lines = [line for line in (done.stderr or done.stdout).decode("utf-8", "replace").splitlines() if line.strip()]
    errors = [line for line in lines if "rror" in line]  # docker's own line, not its "see --help"
    return (errors or lines or [f"exit code {done.returncode}"])[-1 if not errors else 0].strip()


def image_tar() -> bytes:
    """The image's whole file system: mount points and a world-writable /tmp; everything else is bound."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode in (("tmp", 0o1777), ("etc", 0o755), ("proc", 0o555), ("dev", 0o755), ("sys", 0o555)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
    return buf.getvalue()


def build_image(tag: str = DEFAULT_IMAGE) -> str:
    """Build the chunk image locally (no registry): ``docker import`` of ``image_tar``; its id."""
    done = _docker("import", "--change", "LABEL org.rvidia.chunk-image=1", "-", tag, stdin=image_tar(), timeout=120)
    if done.returncode != 0:
        raise SandboxUnavailable(f"could not build the docker image {tag}: {_why(done)}")
    return done.stdout.decode().strip()


def check(image: str) -> None:
    """That docker answers and ``image`` is there (the default one is built when missing), and that a
    chunk process starts in it; SandboxUnavailable with what to do otherwise."""
    try:
        done = _docker("info", "--format", "{{.ServerVersion}}", timeout=20)
        if done.returncode != 0:
            raise SandboxUnavailable(f"--isolation docker: the docker daemon does not answer: {_why(done)}")
        if _docker("image", "inspect", image).returncode != 0:
            if image != DEFAULT_IMAGE:
                raise SandboxUnavailable(f"--isolation docker: there is no image {image}; build one with "
                                         "scripts/build_chunk_image.sh (or leave --image out)")
            build_image(image)
            print(f"rvidia worker: built the chunk image {image}", file=sys.stderr, flush=True)
        launcher = DockerLauncher(Limits(memory=1 << 30, cpu_seconds=60, processes=64), image=image)
        try:
            argv = launcher.argv(f"rvidia-probe-{secrets.token_hex(4)}",
                                 [sys.executable, "-P", "-m", "rvidia.worker.child", "--probe"])
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        finally:
            launcher.close()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"--isolation docker: {exc}") from None
    if done.returncode != 0:
        raise SandboxUnavailable(f"--isolation docker: a chunk process does not start in {image}: {_why(done)}")


def _bind(source: str, target: str) -> str:
    """A read-only ``--mount`` (CSV, so a path with a comma survives)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(["type=bind", f"source={source}", f"target={target}", "readonly"])
    return buf.getvalue()


class DockerLauncher(Launcher):
    """``--isolation docker``: each chunk process in its own container, named so it can be killed."""

    name = "docker"
    sandboxed = True
    nproc = False  # --pids-limit counts the container's tasks; RLIMIT_NPROC would count every nobody's

    def __init__(self, limits: Limits, shared: Sequence[str] = (), image: str = DEFAULT_IMAGE,
                 cpus: float = 1.0, nice: int = 0) -> None:
        super().__init__(nice, limits, shared)
        self.limits: Limits = limits
        self.image, self.cpus = image, cpus
        for d in self.shared:  # the container's user reads the input cache through the agent's group
            os.chmod(d, 0o750)
        self.docker = docker_bin()
        self.prefix = f"rvidia-chunk-{os.getpid()}-{secrets.token_hex(3)}"
        self.count = 0
        self.control = ThreadPoolExecutor(1, thread_name_prefix="rvidia-docker")  # in order, off the loop
        self._warned = False

    def argv(self, name: str, entry: Sequence[str]) -> list[str]:
        """``docker run ...`` for one chunk process: only the worker's settings and the host go in."""
        lim = self.limits
        argv = [self.docker, "run", "-i", "--rm", "--name", name, "--init", "--sig-proxy=false",
                "--log-driver", "none", "--network", "none", "--read-only", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", "--pids-limit", str(lim.processes),
                "--memory", str(lim.memory), "--memory-swap", str(lim.memory), "--cpus", f"{self.cpus:g}",
                "--user", NOBODY, "--group-add", str(os.getgid()) if hasattr(os, "getgid") else "0",
                "--mount", "type=tmpfs,destination=/tmp,tmpfs-mode=1777",
                # No --workdir: it would make the directory before the tmpfs and give it its mode (0755,
                # root's); the chunk process changes into its scratch directory itself.
                "--mount", f"type=tmpfs,destination={SCRATCH},tmpfs-mode=1777"]
        for d in SYSTEM_DIRS:
            if os.path.isdir(d) and d != "/sbin":  # /sbin is where docker puts its init
                argv += ["--mount", _bind(os.path.realpath(d), d)]
        for p in etc_paths():
            if p not in DOCKER_OWNS and os.path.exists(p):
                argv += ["--mount", _bind(os.path.realpath(p), p)]
        for dev in gpu_devices():
            if not os.path.isdir(dev):
                argv += ["--device", dev]
        binds = [*runtime_paths(), *self.shared]
        for p in binds:
            argv += ["--mount", _bind(p, p)]
        for key, value in sandbox_env(sandbox_python_path(binds)).items():
            argv += ["--env", f"{key}={value}"]
        return [*argv, self.image, *entry]

    def start(self, number: int, entry: Sequence[str] | None = None) -> Started:
        self.count += 1
        name = f"{self.prefix}-{number}-{self.count}"
        argv = niced(self.argv(name, entry or self.entry(SCRATCH)), self.nice)
        return Started(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
                                        close_fds=True, start_new_session=True), container=name)

    def _control(self, *args: str) -> None:
        def run() -> None:
            try:
                done = _docker(*args)
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("docker %s failed: %s", args[0], exc)
                return
            if done.returncode != 0 and args[0] != "rm":
                if args[0] == "pause" and not self._warned:
                    self._warned = True
                    log.warning("could not pause a chunk container (%s): it goes on at nice 19 within "
                                "--cpus", _why(done))

        try:
            self.control.submit(run)
        except RuntimeError:
            pass  # closed

    def kill(self, started: Started) -> None:
        """Kill the docker client and remove the container (its client's death alone may not stop it)."""
        if started.proc.poll() is None:
            started.proc.kill()
        if started.container:
            self._control("rm", "-f", started.container)  # the container, not just its docker client

    def suspend(self, started: Started) -> bool:
        if started.proc.poll() is not None or not started.container:
            return False
        self._control("pause", started.container)
        return True

    def resume(self, started: Started) -> None:
        if started.container:
            self._control("unpause", started.container)

    def exit_code(self, code: int | None) -> int | None:
        # docker run exits 128+N when the container's process was killed by signal N.
        return -(code - 128) if code is not None and 128 < code <= 128 + 64 else code

    def describe(self) -> str:
        return f"docker ({self.image})"

    def close(self) -> None:
        self.control.shutdown(wait=True)
        try:
            found = _docker("ps", "-aq", "--filter", f"name={self.prefix}-", timeout=20)
            ids = found.stdout.decode().split()
            if ids:
                _docker("rm", "-f", *ids, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        super().close()


def main(argv: list[str] | None = None) -> int:
    """``python -m rvidia.worker.dockerbox [TAG]``: build the chunk image (scripts/build_chunk_image.sh)."""
    args = sys.argv[1:] if argv is None else argv
    tag = args[0] if args else DEFAULT_IMAGE
    try:
        image_id = build_image(tag)
    except SandboxUnavailable as exc:
        print(f"rvidia: {exc}", file=sys.stderr)
        return 1
    print(f"rvidia: built {tag} ({image_id})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
