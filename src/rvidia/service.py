"""systemd units for ``rvidia master`` and ``rvidia worker`` (``rvidia service install``)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

UNIT_DIR = Path("/etc/systemd/system")

_DESCRIPTIONS = {
    "master": "RVIDIA master (REST API, worker WebSocket, dashboard)",
    "worker": "RVIDIA worker (runs chunks for a master)",
}


def unit_path(what: str) -> Path:
    return UNIT_DIR / f"rvidia-{what}.service"


def exec_start(what: str, args: list[str]) -> str:
    """This interpreter's ``-m rvidia`` (works in any virtual environment), then the command and flags."""
    return shlex.join([sys.executable, "-m", "rvidia", what, *args])


def unit_text(what: str, args: list[str], user: str | None = None, environment: dict[str, str] | None = None) -> str:
    lines = [
        "[Unit]",
        f"Description={_DESCRIPTIONS[what]}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start(what, args)}",
        "Restart=on-failure",
        "RestartSec=5",
        # SIGTERM is the clean stop of both: the master keeps its state, a worker finishes or hands
        # back its chunks (--grace), so give it time before SIGKILL.
        "KillSignal=SIGTERM",
        "TimeoutStopSec=60",
    ]
    if what == "worker":
        lines.append("Nice=19")  # the owner of the machine comes first
    if user:
        lines.append(f"User={user}")
    for key, value in sorted((environment or {}).items()):
        lines.append(f"Environment={shlex.quote(f'{key}={value}')}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def install(what: str, text: str, path: Path | None = None) -> Path:
    path = path or unit_path(what)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def systemctl_available() -> bool:
    return shutil.which("systemctl") is not None
