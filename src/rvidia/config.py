"""Settings files for ``rvidia master`` and ``rvidia worker`` (TOML), and where each value came from.

Precedence: a flag on the command line (or its environment variable) > the file > the default.
The file is ``--config F``, else ``rvidia.toml`` in the data dir (the master's ``--data-dir``, or the
local data dir for a worker) when it exists. Keys are the long flags' names, with ``-`` or ``_``:

    # one command's settings, flat            # or one file for both, in tables
    port = 8765                               [master]
    retention = "14d"                         retention = "14d"
                                              [worker]
                                              slots = 4

An unknown key is an error that names it (exit 2), so a typo never passes silently.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from rvidia import addresses

CONFIG_FILE = "rvidia.toml"
SECTIONS = ("master", "worker")
_NOT_SETTINGS = {"config", "help"}
_SECRET = {"token"}


class ConfigError(click.ClickException):
    """A settings file that cannot be used: exit 2 with a one-line reason."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"rvidia: {self.format_message()}", err=True)


def settings_params(command: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in command.params if p.name and p.name not in _NOT_SETTINGS}


def config_path(command: str, given: str | None, ctx: click.Context) -> tuple[Path | None, bool]:
    """The file to read, and whether it was asked for (then it must exist)."""
    if given:
        return Path(given).expanduser(), True
    data_dir = ctx.params.get("data_dir") if command == "master" else None
    return addresses.data_dir(data_dir) / CONFIG_FILE, False


def load_file(path: Path, command: str, params: dict[str, click.Parameter]) -> dict[str, Any]:
    """The file's values for ``command``, keyed by parameter name; ConfigError names a bad key."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from None
    if any(k in data for k in SECTIONS):
        stray = [k for k in data if k not in SECTIONS]
        if stray:
            raise ConfigError(f"unknown key {stray[0]!r} in {path}: with [master]/[worker] tables, "
                              "every setting goes in one of them")
        section, where = data.get(command, {}), f"[{command}] of {path}"
        if not isinstance(section, dict):
            raise ConfigError(f"{command!r} in {path} must be a table")
    else:
        section, where = data, str(path)
    values: dict[str, Any] = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if name not in params:
            known = ", ".join(sorted(n.replace("_", "-") for n in params))
            raise ConfigError(f"unknown key {key!r} in {where} (known keys: {known})")
        values[name] = value
    return values


def resolve(ctx: click.Context, command: str, given_config: str | None) -> tuple[dict[str, Any], dict[str, str], Path | None]:
    """Effective values of a master/worker context, the source of each ('flag', 'env', 'file',
    'default'), and the file read (None if none)."""
    params = settings_params(ctx.command)
    path, required = config_path(command, given_config, ctx)
    from_file: dict[str, Any] = {}
    if path is not None and (required or path.is_file()):
        from_file = load_file(path, command, params)
    else:
        path = None
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, param in params.items():
        source = ctx.get_parameter_source(name)
        if source == ParameterSource.COMMANDLINE:
            values[name], sources[name] = ctx.params[name], "flag"
        elif source == ParameterSource.ENVIRONMENT:
            values[name], sources[name] = ctx.params[name], "env"
        elif name in from_file:
            raw = from_file[name]
            if param.multiple and not isinstance(raw, list):
                raw = [raw]
            if isinstance(raw, dict) or (isinstance(raw, list) and not param.multiple):
                raw = _flatten(raw)
            try:
                values[name] = param.type_cast_value(ctx, raw)
            except click.BadParameter as exc:
                raise ConfigError(f"bad value for {name.replace('_', '-')!r} in {path}: {exc.message}") from None
            sources[name] = "file"
        else:
            values[name], sources[name] = ctx.params.get(name), "default"
    return values, sources, path


def _flatten(value: Any) -> str:
    """A TOML table or list for a flag that takes text: ``{gpu = 1}`` -> ``gpu=1``; ``[a, b]`` -> ``a,b``."""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return ",".join(str(v) for v in value)


def show(values: dict[str, Any], sources: dict[str, str], path: Path | None) -> str:
    """The lines ``rvidia config show`` prints: ``key = value  # source``."""
    lines = [f"# config file: {path if path else 'none'}"]
    width = max(len(k) for k in values) + 1
    for name, value in values.items():
        shown = "***" if name in _SECRET and value else value
        origin = sources[name]
        if origin == "file" and path is not None:
            origin = f"file {path}"
        lines.append(f"{name.replace('_', '-'):<{width}}= {json.dumps(shown, default=str):<24} # {origin}")
    return "\n".join(lines)
