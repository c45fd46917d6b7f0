"""``rvidia`` commands for operating a pool: drain, gc, config, service and token.

Registered on the main group by ``rvidia.cli``; kept apart so that each module stays readable.
"""

from __future__ import annotations

from pathlib import Path

import click

from rvidia.cliargs import EXIT_USAGE, _duration, _fail, client_options, connect, handle_errors, json_option
from rvidia.clishow import print_json_line, show_table


def _root_commands() -> dict[str, click.Command]:
    """The main group's commands (``rvidia master``, ``rvidia worker``...), whose flags config and
    service read."""
    root = click.get_current_context().find_root().command
    assert isinstance(root, click.Group)
    return root.commands


def _set_drain(worker_ref: str, action: str, master: str | None, token: str | None, ca: str | None) -> None:
    with connect(master, token, ca) as cluster:
        view = cluster.request("POST", f"/api/v1/workers/{worker_ref}/{action}").json()
    done = "drained" if action == "drain" else "takes chunks again"
    click.echo(f"rvidia: {view['name']} ({view['id']}) {done}", err=True)


@click.command()
@click.argument("worker_ref", metavar="WORKER")
@client_options
@handle_errors
def drain(worker_ref: str, master: str | None, token: str | None, ca: str | None) -> None:
    """Stop giving WORKER (name or id) chunks once its running ones finish."""
    _set_drain(worker_ref, "drain", master, token, ca)


@click.command()
@click.argument("worker_ref", metavar="WORKER")
@client_options
@handle_errors
def undrain(worker_ref: str, master: str | None, token: str | None, ca: str | None) -> None:
    """Give WORKER chunks again."""
    _set_drain(worker_ref, "undrain", master, token, ca)


@click.command()
@click.option("--older-than", default=None, metavar="DURATION",
              help="Remove finished jobs older than this instead of the master's --retention.")
@json_option
@client_options
@handle_errors
def gc(older_than: str | None, as_json: bool, master: str | None, token: str | None, ca: str | None) -> None:
    """Apply retention now: remove old finished jobs and the blobs no kept job refers to."""
    from rvidia.units import format_bytes

    params = {"retention": _duration(older_than, "--older-than")} if older_than is not None else {}
    with connect(master, token, ca) as cluster:
        freed = cluster.request("POST", "/api/v1/gc", params=params).json()
    if as_json:
        print_json_line(freed)
        return
    partial = f", {freed['partial']} abandoned partial writes" if freed.get("partial") else ""
    click.echo(f"removed {freed['jobs']} jobs ({freed['chunks']} chunks) and {freed['blobs']} blobs{partial}, "
               f"freed {format_bytes(freed['bytes'])} ({freed['bytes']} bytes)")


@click.group()
def config() -> None:
    """Settings files: see what a command would run with."""


@config.command("show", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("command", type=click.Choice(["master", "worker"]))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def config_show(command: str, args: tuple[str, ...]) -> None:
    """The settings `rvidia master|worker [--config F] [flags]` would run with, and where each came from."""
    from rvidia.config import resolve, show

    target = _root_commands()[command]
    with target.make_context(command, list(args)) as ctx:
        values, sources, path = resolve(ctx, command, ctx.params.get("config"))
    click.echo(show(values, sources, path))


@click.group()
def service() -> None:
    """Run the master or a worker as a systemd service."""


@service.command("install", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("what", type=click.Choice(["master", "worker"]))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of writing it.")
@click.option("--user", default=None, help="User= the service runs as [default: root].")
@click.option("--unit-dir", default=None, type=click.Path(file_okay=False),
              help="Where to write the unit [default /etc/systemd/system].")
def service_install(what: str, args: tuple[str, ...], print_only: bool, user: str | None,
                    unit_dir: str | None) -> None:
    """Write rvidia-master.service or rvidia-worker.service; ARGS are the command's flags, e.g.
    `rvidia service install worker -- --master http://head:8765 --config /etc/rvidia/worker.toml`."""
    from rvidia.service import install, unit_path, unit_text

    target = _root_commands()[what]
    try:  # check the flags now, not when systemd first starts the service
        target.make_context(what, list(args), resilient_parsing=False).close()
    except click.exceptions.Exit:
        pass
    # No token goes into the unit (units are world-readable): give it in a --config file of mode 0600.
    text = unit_text(what, list(args), user=user)
    if print_only:
        click.echo(text, nl=False)
        return
    path = Path(unit_dir) / unit_path(what).name if unit_dir else unit_path(what)
    try:
        install(what, text, path)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror or exc} (run as root, or use --print)", EXIT_USAGE)
    click.echo(f"rvidia: wrote {path}; now: systemctl daemon-reload && systemctl enable --now {path.stem}",
               err=True)


@click.group()
def token() -> None:
    """Manage tokens (admin token needed)."""


@token.command("create")
@click.option("--role", required=True, type=click.Choice(["worker", "user"]))
@click.option("--name", default=None)
@client_options
@handle_errors
def token_create(role: str, name: str | None, master: str | None, token: str | None, ca: str | None) -> None:
    """Create a token; it is printed once, on stdout."""
    with connect(master, token, ca) as cluster:
        made = cluster.request("POST", "/api/v1/tokens", json={"role": role, "name": name}).json()
    click.echo(f"rvidia: created {made['role']} token {made['name']}", err=True)
    click.echo(made["token"])


@token.command("list")
@json_option
@client_options
@handle_errors
def token_list(as_json: bool, master: str | None, token: str | None, ca: str | None) -> None:
    with connect(master, token, ca) as cluster:
        rows = cluster.get("/api/v1/tokens")
    show_table(rows, as_json, "Tokens", [("name", "name"), ("role", "role"), ("created", "created_at")])


@token.command("revoke")
@click.argument("name")
@client_options
@handle_errors
def token_revoke(name: str, master: str | None, token: str | None, ca: str | None) -> None:
    with connect(master, token, ca) as cluster:
        cluster.request("DELETE", f"/api/v1/tokens/{name}")
    click.echo(f"rvidia: revoked {name}", err=True)


COMMANDS = (drain, undrain, gc, config, service, token)
