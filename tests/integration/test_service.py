"""systemd units from ``rvidia service install`` (docs/operations.md, "Setting up as services")."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from harness import run_cli


def _exec_start(text: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


def test_master_unit_printed() -> None:
    result = run_cli("service", "install", "master", "--print", "--", "--host", "0.0.0.0",
                     "--data-dir", "/var/lib/rvidia", "--retention", "14d")
    assert result.code == 0, result.stderr
    text = result.stdout
    assert _exec_start(text) == [sys.executable, "-m", "rvidia", "master", "--host", "0.0.0.0",
                                 "--data-dir", "/var/lib/rvidia", "--retention", "14d"]
    assert "Restart=on-failure" in text and "WantedBy=multi-user.target" in text
    assert "Nice=" not in text and "[Service]" in text


def test_worker_unit_printed_is_niced() -> None:
    result = run_cli("service", "install", "worker", "--print", "--user", "rvidia", "--",
                     "--master", "http://head:8765", "--config", "/etc/rvidia/worker.toml", token="secret-token")
    assert result.code == 0, result.stderr
    text = result.stdout
    assert _exec_start(text)[3:] == ["worker", "--master", "http://head:8765", "--config", "/etc/rvidia/worker.toml"]
    assert "Nice=19" in text and "Restart=on-failure" in text and "User=rvidia" in text
    assert "secret-token" not in text  # units are world-readable: tokens go in the config file


def test_unit_written_to_a_directory(tmp_path: Path) -> None:
    result = run_cli("service", "install", "worker", "--unit-dir", str(tmp_path))
    assert result.code == 0, result.stderr
    written = (tmp_path / "rvidia-worker.service").read_text()
    assert "Nice=19" in written and "systemctl enable --now rvidia-worker" in result.stderr


def test_bad_flags_for_the_command_are_refused() -> None:
    result = run_cli("service", "install", "master", "--print", "--", "--port", "notaport")
    assert result.code == 2 and "ExecStart" not in result.stdout
