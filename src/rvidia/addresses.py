"""Where the master is and which token to present: the defaults every command shares."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_MASTER = "http://127.0.0.1:8765"
DEFAULT_DATA_DIR = "~/.rvidia"


def master_url(given: str | None) -> str:
    """``--master``, else $RVIDIA_MASTER, else the local default; without a trailing slash."""
    url = given or os.environ.get("RVIDIA_MASTER") or DEFAULT_MASTER
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"master URL must look like http://HOST:PORT, not {url!r}")
    return url.rstrip("/")


def ws_url(master: str, path: str) -> str:
    """The WebSocket URL under a master URL: ws:// for http://, wss:// for https://."""
    parts = urlsplit(master)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


def data_dir(given: str | os.PathLike[str] | None = None) -> Path:
    return Path(given or os.environ.get("RVIDIA_DATA_DIR") or DEFAULT_DATA_DIR).expanduser()


def token(given: str | None, data: Path | None = None) -> str | None:
    """``--token``, else $RVIDIA_TOKEN, else the ``token`` file of the local data dir."""
    if given:
        return given
    env = os.environ.get("RVIDIA_TOKEN")
    if env:
        return env
    path = (data or data_dir()) / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def is_loopback(host: str) -> bool:
    """Whether a master bound to ``host`` can be reached from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
