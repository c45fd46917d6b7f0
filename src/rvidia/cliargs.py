"""What the ``rvidia`` commands share: the common options, argument parsers, and the one place that
turns a client error into one line on stderr and the contract's exit code."""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import Any, Callable

import click

from rvidia.client.api import ApiError, Cluster, JobFailed, MasterUnreachable

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


def _fail(message: str, code: int) -> None:
    click.echo(f"rvidia: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn client errors into one line on stderr and the contract's exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MasterUnreachable as exc:
            _fail(str(exc), EXIT_UNREACHABLE)
        except ApiError as exc:
            _fail(str(exc), EXIT_USAGE if exc.status in (400, 403, 404, 409, 413, 422) else EXIT_FAILED)
        except JobFailed as exc:
            _fail(str(exc), EXIT_FAILED)
        except (ValueError, OSError) as exc:
            _fail(str(exc), EXIT_USAGE)

    return wrapper


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs; values parse as JSON where they can, else stay strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="-p")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def parse_inputs(pairs: tuple[str, ...]) -> dict[str, str]:
    inputs: dict[str, str] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not name=FILE", param_hint="-i")
        if not Path(path).is_file():
            raise click.BadParameter(f"no such file: {path}", param_hint="-i")
        inputs[name] = path
    return inputs


def parse_resources(text: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (text or "").split(",")):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise click.BadParameter(f"{part!r} is not name=number", param_hint="--resources") from None
    return out


def _duration(value: str, hint: str) -> float:
    from rvidia.units import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def _size(value: str, hint: str) -> int:
    from rvidia.units import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def _service_name(value: str | None, hint: str = "--advertise-name") -> str | None:
    from rvidia.discovery import check_name

    try:
        return check_name(value) if value is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


config_option = click.option(
    "--config", default=None, metavar="FILE",
    help="TOML settings file (keys: the long flags); flags override it [default: DATA_DIR/rvidia.toml if present].")


def _settings(ctx: click.Context, command: str, config: str | None) -> dict[str, Any]:
    """The command's parameters after the settings file: flag > file > default."""
    from rvidia.config import resolve

    return resolve(ctx, command, config)[0]


master_option = click.option("--master", "master", default=None, metavar="URL",
                             help="Master URL [env RVIDIA_MASTER; default http://127.0.0.1:8765]")
token_option = click.option("--token", default=None, help="Token [env RVIDIA_TOKEN; else DATA_DIR/token]")
ca_option = click.option("--ca", default=None, metavar="FILE", type=click.Path(exists=True, dir_okay=False),
                         help="CA certificate (PEM) an https:// master's certificate must chain to, for a "
                              "private certificate [env RVIDIA_CA; default: the system's trust store]")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
param_option = click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
                            help="A job parameter (JSON where it parses, else a string).")
input_option = click.option("-i", "--input", "inputs", multiple=True, metavar="NAME=FILE",
                            help="An input file, uploaded to the master.")
out_option = click.option("-o", "--out", "out_dir", default=".", type=click.Path(file_okay=False),
                          help="Directory for the job's output files.")


def client_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--master, --token and --ca: what every command that talks to a master takes."""
    return master_option(token_option(ca_option(fn)))


def connect(master: str | None, token: str | None, ca: str | None = None) -> Cluster:
    return Cluster(master, token, ca=ca)
