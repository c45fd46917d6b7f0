"""The ``rvidia`` command line: thin wrappers over the client, master and worker entry points.

stdout carries only what a script would parse (a job id, a result's JSON, a --json table); progress,
tables' decorations and messages go to stderr. Exit codes: 0 ok, 1 job failed or cancelled, 2 bad
usage or parameters, 3 master unreachable or token refused.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from rvidia import __version__, addresses, cliops, lifeline
from rvidia.cliargs import (
    EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, _duration, _fail, _service_name, _settings, _size, client_options,
    config_option, connect, handle_errors, input_option, json_option, out_option, param_option, parse_inputs,
    parse_params, parse_resources)
from rvidia.client.api import Cluster, Job, JobFailed
from rvidia.clishow import print_json_line, progress_wait, show_table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rvidia")
def main() -> None:
    """RVIDIA: make a lab full of uneven computers work as one."""
    lifeline.watch_stdin_if_asked()


# ---------------------------------------------------------------- processes


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--data-dir", default=None, help="Where jobs, blobs and the token live [default ~/.rvidia].")
@click.option("--token", default=None, help="The admin token to accept [env RVIDIA_TOKEN; else created].")
@click.option("--worker-timeout", default=10.0, show_default=True, type=click.FloatRange(0.5),
              help="Seconds without heartbeat before a worker is declared lost.")
@click.option("--max-upload", default=64 * 1024**3, show_default=True, type=click.IntRange(1),
              help="Largest upload in bytes (413 beyond).")
@click.option("--tls-cert", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--tls-key", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--retention", default="7d", show_default=True, metavar="DURATION",
              help="How long finished jobs and their blobs are kept (seconds, or 90m, 12h, 7d, 2w).")
@click.option("--gc-interval", default="1h", show_default=True, metavar="DURATION",
              help="How often retention runs by itself (0: only `rvidia gc`).")
@click.option("--min-free-disk", default="1GiB", show_default=True, metavar="SIZE",
              help="Refuse uploads (507) when the data dir's disk has less free (bytes, or 500M, 2GiB).")
@click.option("--max-running-per-user", default=0, show_default=True, type=click.IntRange(0),
              help="Most chunks one user's jobs run at once (0: no limit).")
@click.option("--no-advertise", is_flag=True, help="Do not advertise by mDNS (for `rvidia worker --discover`).")
@click.option("--advertise-name", default=None, metavar="NAME",
              help="mDNS instance name [default: 'rvidia on HOST:PORT'].")
@click.option("--speculation", default=2.0, show_default=True, type=click.FloatRange(0), metavar="FACTOR",
              help="At a job's tail, back up a chunk running FACTOR times longer than its typical chunk on "
                   "another free worker (0: never).")
@click.option("--speculation-min", default=1.0, show_default=True, type=click.FloatRange(0), metavar="SECONDS",
              help="Never back up a chunk that has run less than this.")
@config_option
@click.pass_context
def master(ctx: click.Context, config: str | None, **_: Any) -> None:
    """Start the master: REST API, worker WebSocket, dashboard, /metrics."""
    _start_master(**_settings(ctx, "master", config))


def _start_master(host: str, port: int, data_dir: str | None, token: str | None, worker_timeout: float,
                  max_upload: int, tls_cert: str | None, tls_key: str | None, log_level: str, retention: str,
                  gc_interval: str, min_free_disk: str, max_running_per_user: int = 0, no_advertise: bool = False,
                  advertise_name: str | None = None, speculation: float = 2.0, speculation_min: float = 1.0) -> None:
    import logging

    from rvidia.master.server import MasterSettings, serve
    from rvidia.master.store import StoreError

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = MasterSettings(host=host, port=port, data_dir=addresses.data_dir(data_dir),
                              token=token or os.environ.get("RVIDIA_TOKEN"), worker_timeout=worker_timeout,
                              max_upload_bytes=max_upload, tls_cert=tls_cert, tls_key=tls_key, log_level=log_level,
                              retention=_duration(retention, "--retention"),
                              gc_interval=_duration(gc_interval, "--gc-interval"),
                              min_free_disk=_size(min_free_disk, "--min-free-disk"),
                              max_running_per_user=max_running_per_user,
                              advertise=not no_advertise, advertise_name=_service_name(advertise_name),
                              speculation=speculation, speculation_min=speculation_min)
    try:
        serve(settings)
    except (StoreError, OSError) as exc:
        _fail(str(exc), EXIT_USAGE)


@main.command()
@client_options
@click.option("--slots", default=None, type=click.IntRange(1), help="Chunks run at once [default: cores].")
@click.option("--name", default=None, help="Name shown in the dashboard [default: host name].")
@click.option("--allow-code", is_flag=True, help="Run submitters' Python functions (map jobs).")
@click.option("--resources", default=None, metavar="NAME=N,...", help="Resources offered, e.g. gpu=1,ram_gb=16.")
@click.option("--nice", default=0, show_default=True, type=click.IntRange(0, 19),
              help="CPU niceness of chunk processes (with owner-first they run at 19 whatever this says).")
@click.option("--owner-first/--no-owner-first", default=True, show_default=True,
              help="The machine's owner comes first: chunks at nice 19, paused (and stopped) while the "
                   "owner's CPU use is high.")
@click.option("--owner-cpu", default=50.0, show_default=True, type=click.FloatRange(0, 100), metavar="PERCENT",
              help="Owner-first: pause when programs other than RVIDIA's use more than this percent of the "
                   "machine for 5 s; lend again after 30 s below it.")
@click.option("--vacate-after", default=60.0, show_default=True, type=click.FloatRange(0), metavar="SECONDS",
              help="Owner-first: seconds paused before the stopped chunks are handed back to run elsewhere.")
@click.option("--hours", default=None, metavar="HH:MM-HH:MM[,...]",
              help="Lend the machine only in these local hours, e.g. 18:00-08:00 (may wrap midnight); "
                   "outside them it takes no new chunks [default: always].")
@click.option("--max-slots", default=None, type=click.IntRange(1),
              help="Never run more chunks at once than this, whatever --slots or the default says.")
@click.option("--grace", default=10.0, show_default=True, type=click.FloatRange(0),
              help="On SIGTERM, seconds to let running chunks finish before handing them back.")
@click.option("--discover", is_flag=True, help="Find the master by mDNS (_rvidia._tcp) instead of --master.")
@click.option("--discover-interface", default=None, metavar="ADDR",
              help="With --discover: browse on the interface with this address [default: all].")
@click.option("--discover-timeout", default=30.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="With --discover: seconds to wait for a master.")
@click.option("--discover-name", default=None, metavar="NAME",
              help="With --discover: only the master advertised under this name (see master --advertise-name).")
@click.option("--isolation", default=None, type=click.Choice(["bwrap", "docker", "none"]), envvar="RVIDIA_ISOLATION",
              help="How chunk processes are contained (docs/security.md): bwrap (bubblewrap: no network, read-only "
                   "file system but a private scratch dir and /tmp, no home dirs, limits, nice 19), docker (a "
                   "locked-down container of --image), none [env RVIDIA_ISOLATION; default: bwrap where it works, "
                   "else none with a warning].")
@click.option("--image", default="rvidia-chunk:local", show_default=True, metavar="IMAGE",
              help="With --isolation docker: the image (scripts/build_chunk_image.sh builds the default; no registry).")
@click.option("--chunk-memory", default=None, metavar="SIZE",
              help="Sandboxed chunks: memory per chunk process, e.g. 4GiB (address-space limit; docker --memory); "
                   "past it an allocation fails with MemoryError [default: the machine's memory].")
@click.option("--chunk-cpu-seconds", default=6 * 3600, show_default=True, type=click.IntRange(1), metavar="SECONDS",
              help="Sandboxed chunks: CPU time one chunk may use, all its threads together (RLIMIT_CPU); past it "
                   "the chunk fails.")
@click.option("--chunk-processes", default=None, type=click.IntRange(1), metavar="N",
              help="Sandboxed chunks: processes and threads one chunk process may start (RLIMIT_NPROC, docker "
                   "--pids-limit) [default: 4 per core, at least 256].")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@config_option
@click.pass_context
def worker(ctx: click.Context, config: str | None, **_: Any) -> None:
    """Join a master and run chunks."""
    _start_worker(**_settings(ctx, "worker", config))


def _start_worker(master: str | None, token: str | None, slots: int | None, name: str | None, allow_code: bool,
                  resources: str | None, nice: int, grace: float, log_level: str, discover: bool = False,
                  discover_interface: str | None = None, discover_timeout: float = 30.0,
                  discover_name: str | None = None, owner_first: bool = True, owner_cpu: float = 50.0,
                  vacate_after: float = 60.0, hours: str | None = None, max_slots: int | None = None,
                  ca: str | None = None, isolation: str | None = None, image: str = "rvidia-chunk:local",
                  chunk_memory: str | None = None, chunk_cpu_seconds: int = 6 * 3600,
                  chunk_processes: int | None = None) -> None:
    import logging

    from rvidia import tls
    from rvidia.worker import facts
    from rvidia.worker.agent import WorkerSettings, run_worker

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    owner = _owner_settings(owner_first, owner_cpu, vacate_after, hours, nice)
    if discover and master:
        _fail("--discover and --master exclude each other: give one of them", EXIT_USAGE)
    try:
        url = addresses.master_url(master)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--master") from None
    tok = addresses.token(token)
    if not tok:
        _fail("no token: pass --token, set RVIDIA_TOKEN, or run where the master's data dir is", EXIT_UNREACHABLE)
    ca = tls.ca_file(ca)
    try:
        tls.client_context(ca)  # a CA file that cannot be loaded is bad usage, found before connecting
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    if discover:  # the found URL is kept for reconnects; restart the worker to look again
        url = _discover(discover_interface, discover_timeout, _service_name(discover_name, "--discover-name"))
    slots = min(slots or facts.cores(), max_slots or sys.maxsize)  # --max-slots caps whatever gave the slots
    containment = _containment(isolation, image, chunk_memory, chunk_cpu_seconds, chunk_processes)
    settings = WorkerSettings(master=url, token=tok, slots=slots, name=name or facts.hostname(),
                              allow_code=allow_code, resources=parse_resources(resources), grace=grace, ca=ca,
                              containment=containment, **owner)
    sys.exit(run_worker(settings))


def _containment(isolation: str | None, image: str, memory: str | None, cpu_seconds: int,
                 processes: int | None) -> Any:
    """The worker's sandbox settings with a working isolation: the one asked for (exit 2 with the reason
    when it cannot work here), or bwrap where it works, else none with a one-line warning."""
    from rvidia.worker import sandbox

    size = _size(memory, "--chunk-memory") if memory else None
    try:
        choice = sandbox.choose(isolation, image)
    except sandbox.SandboxUnavailable as exc:
        _fail(str(exc), EXIT_USAGE)
        raise
    if choice.warning:
        click.echo(f"rvidia worker: warning: {choice.warning}", err=True)
    return sandbox.SandboxSettings(isolation=choice.isolation, image=image, memory=size, cpu_seconds=cpu_seconds,
                                   processes=processes)


def _owner_settings(owner_first: bool, owner_cpu: float, vacate_after: float, hours: str | None,
                    nice: int) -> dict[str, Any]:
    """WorkerSettings' owners-first fields (docs/operations.md): with owner-first, chunks run at nice 19
    whatever --nice says. Checked before anything else, so a bad --hours is exit 2 with one line."""
    from rvidia.worker import owner

    try:
        ranges = owner.parse_hours(hours)
    except ValueError as exc:
        _fail(f"bad --hours: {exc}", EXIT_USAGE)
    try:
        windows = owner.windows_from_env()
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    return {"owner_first": owner_first, "owner_cpu": owner_cpu, "vacate_after": vacate_after, "hours": ranges,
            "windows": windows, "nice": 19 if owner_first else nice}


def _discover(interface: str | None, timeout: float, name: str | None) -> str:
    """The URL of the first master found by mDNS; exit 3 with the reason when none answers."""
    from rvidia.discovery import DiscoveryError, browse

    try:  # silent while it looks: on failure, stderr holds exactly the one-line reason
        found = browse(interface, timeout, name)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
        raise
    except DiscoveryError as exc:
        click.echo(f"rvidia: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    click.echo(f"rvidia: found master {found.name!r} at {found.url} (version {found.version or '?'})", err=True)
    return found.url


@main.command()
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0), help="Local workers.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--data-dir", default=None, help="[default ~/.rvidia]")
@click.option("--no-advertise", is_flag=True, help="Do not advertise the master by mDNS.")
@click.option("--isolation", default=None, type=click.Choice(["bwrap", "docker", "none"]),
              help="How the local workers contain chunk processes [default: none while the master listens on "
                   "loopback only (your own code, your own files, as with multiprocessing); else the worker "
                   "default, bwrap where it works].")
@handle_errors
def up(workers: int, host: str, port: int, data_dir: str | None, no_advertise: bool, isolation: str | None) -> None:
    """Master plus local workers in one command; Ctrl-C stops all of it."""
    import signal
    import time

    from rvidia.client.local import LocalCluster
    cluster = LocalCluster(workers, data_dir=addresses.data_dir(data_dir), host=host, port=port, quiet=False,
                           advertise=not no_advertise,
                           isolation=isolation or ("none" if addresses.is_loopback(host) else None))
    click.echo(f"rvidia: dashboard at {cluster.url}/  (token: {cluster.token})", err=True)
    click.echo(f"rvidia: {workers} local workers joined; submit with e.g. "
               f"`rvidia submit montecarlo -p samples=100000000 --wait`; Ctrl-C stops everything", err=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while cluster.master_proc.poll() is None:
            time.sleep(0.5)
        _fail(f"the master exited with code {cluster.master_proc.returncode}", EXIT_FAILED)
    except KeyboardInterrupt:
        click.echo("rvidia: stopping", err=True)
    finally:
        cluster.close()


# ---------------------------------------------------------------- jobs


def _finish(job: Job, cluster: Cluster, out_dir: str, quiet: bool = False) -> None:
    """Wait with a progress bar, then write outputs and print the result on stdout."""
    view = progress_wait(job, quiet=quiet)
    if view["state"] != "succeeded":
        raise JobFailed(job.id, view["state"], view.get("error") or view.get("reason"))
    for name, path in job.download_outputs(out_dir).items():
        click.echo(f"rvidia: wrote {path}", err=True)
    print_json_line(view["result"])


@main.command()
@click.argument("kind")
@param_option
@input_option
@out_option
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1))
@handle_errors
def run(kind: str, params: tuple[str, ...], inputs: tuple[str, ...], out_dir: str, workers: int) -> None:
    """One-shot: a temporary master and local workers run one job, then stop."""
    from rvidia.client.local import LocalCluster

    p, i = parse_params(params), parse_inputs(inputs)
    with LocalCluster(workers) as cluster:
        job = cluster.submit(kind, inputs=i, **p)
        _finish(job, cluster, out_dir)


@main.command()
@click.argument("kind")
@param_option
@input_option
@click.option("--wait", is_flag=True, help="Wait, write outputs and print the result.")
@out_option
@click.option("--priority", default=0, show_default=True, type=int)
@click.option("--max-attempts", default=3, show_default=True, type=click.IntRange(1, 100))
@click.option("--timeout", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Seconds per chunk attempt.")
@click.option("--deadline", default=None, metavar="DURATION",
              help="Cancel the job if it has not finished this long after submission (seconds, or 30m, 2h).")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(1, 9),
              help="Run each chunk on this many different workers and accept only agreeing results.")
@client_options
@handle_errors
def submit(kind: str, params: tuple[str, ...], inputs: tuple[str, ...], wait: bool, out_dir: str, priority: int,
           max_attempts: int, timeout: float | None, deadline: str | None, replicas: int, master: str | None,
           token: str | None, ca: str | None) -> None:
    """Submit a job to a running master and print its id."""
    p, i = parse_params(params), parse_inputs(inputs)
    with connect(master, token, ca) as cluster:
        job = cluster.submit(kind, inputs=i, priority=priority, max_attempts=max_attempts, timeout=timeout,
                             deadline=_duration(deadline, "--deadline") if deadline else None,
                             replicas=replicas, **p)
        if not wait:
            click.echo(job.id)
            return
        click.echo(f"rvidia: submitted {job.id}", err=True)
        _finish(job, cluster, out_dir)


@main.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@json_option
@client_options
@handle_errors
def jobs(limit: int, as_json: bool, master: str | None, token: str | None, ca: str | None) -> None:
    """List jobs, newest first."""
    with connect(master, token, ca) as cluster:
        rows = cluster.jobs(limit)
    show_table(rows, as_json, "Jobs", [
        ("id", "id"), ("kind", "kind"), ("state", "state"),
        ("progress", lambda r: f"{r['progress']['done']}/{r['progress']['total']}"),
        ("created", "created_at"), ("finished", "finished_at")])


@main.command()
@json_option
@client_options
@handle_errors
def workers(as_json: bool, master: str | None, token: str | None, ca: str | None) -> None:
    """List workers."""
    with connect(master, token, ca) as cluster:
        rows = cluster.workers()
    show_table(rows, as_json, "Workers", [
        ("id", "id"), ("name", "name"), ("host", "host"), ("state", "state"), ("slots", "slots"),
        ("running", "running"), ("cores", "cores"), ("speed", "speed"), ("done", "chunks_done"),
        ("last seen", "last_seen")])


@main.command()
@json_option
@client_options
@handle_errors
def kinds(as_json: bool, master: str | None, token: str | None, ca: str | None) -> None:
    """List job kinds and their parameters."""
    with connect(master, token, ca) as cluster:
        rows = cluster.kinds()

    def describe(row: dict[str, Any]) -> str:
        props = row["params"].get("properties", {})
        required = set(row["params"].get("required", []))
        return ", ".join(f"{k}{'*' if k in required else ''}" for k in props)

    show_table(rows, as_json, "Kinds", [("name", "name"), ("description", "description"),
                                        ("params (* required)", describe),
                                        ("inputs", lambda r: ", ".join(r["inputs"]))])


@main.command()
@click.argument("job_id")
@json_option
@client_options
@handle_errors
def status(job_id: str, as_json: bool, master: str | None, token: str | None, ca: str | None) -> None:
    """One job's state and progress."""
    with connect(master, token, ca) as cluster:
        view = cluster.job(job_id).status()
    if as_json:
        print_json_line(view)
        return
    prog = view["progress"]
    click.echo(f"{view['id']} {view['kind']} {view['state']} {prog['done']}/{prog['total']} chunks done, "
               f"{prog['running']} running, {prog['failed']} failed attempts")
    if view.get("reason"):
        click.echo(f"waiting: {view['reason']}")
    if view.get("error"):
        click.echo(f"error: {view['error']}")


@main.command()
@click.argument("job_id")
@out_option
@client_options
@handle_errors
def result(job_id: str, out_dir: str, master: str | None, token: str | None, ca: str | None) -> None:
    """A finished job's result (stdout) and outputs (into DIR)."""
    with connect(master, token, ca) as cluster:
        job = cluster.job(job_id)
        view = job.status()
        if view["state"] != "succeeded":
            raise JobFailed(job_id, view["state"], view.get("error") or view.get("reason"))
        _finish(job, cluster, out_dir, quiet=True)


@main.command()
@click.argument("job_id")
@client_options
@handle_errors
def cancel(job_id: str, master: str | None, token: str | None, ca: str | None) -> None:
    """Cancel a queued or running job."""
    with connect(master, token, ca) as cluster:
        view = cluster.job(job_id).cancel()
    click.echo(f"rvidia: {view['id']} {view['state']}", err=True)


@main.command()
@click.argument("job_id")
@click.option("--chunk", "chunk", default=None, type=click.IntRange(0), help="Only this chunk's output.")
@click.option("--stage", default=None, type=click.IntRange(0), help="The chunk's stage [default: its latest].")
@client_options
@handle_errors
def logs(job_id: str, chunk: int | None, stage: int | None, master: str | None, token: str | None,
         ca: str | None) -> None:
    """What the job's chunks printed (stdout and stderr, the last 64 KiB of each)."""
    with connect(master, token, ca) as cluster:
        if chunk is not None:
            params = {"stage": stage} if stage is not None else {}
            text = cluster.request("GET", f"/api/v1/jobs/{job_id}/chunks/{chunk}/log", params=params).text
            click.echo(text, nl=not text.endswith("\n") and bool(text))
            return
        rows = cluster.get(f"/api/v1/jobs/{job_id}/logs")
    if not rows:
        click.echo(f"rvidia: no chunk of {job_id} printed anything", err=True)
    for row in rows:
        if stage is not None and row["stage"] != stage:
            continue
        click.echo(f"==> chunk {row['index']} (stage {row['stage']}, {row['state']}) <==")
        text = row["log"]
        click.echo(text, nl=not text.endswith("\n"))


for _command in cliops.COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    main()
