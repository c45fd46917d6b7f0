"""Launchers for the worker tests: plain, bubblewrap and docker, each with the reason it cannot run here.

A sandbox test skips, with the reason, where the tool is missing; under CI (CI=true, where
scripts/test.sh installs bubblewrap and docker.io and starts dockerd) it fails instead, so a broken
CI machine cannot pass by skipping every containment test.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import pytest

from rvidia.worker import sandbox


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the containment tests: {reason}")
    pytest.skip(reason)


@functools.cache
def _docker_reason() -> str:
    from rvidia.worker import dockerbox

    try:
        dockerbox.check(dockerbox.DEFAULT_IMAGE)
    except sandbox.SandboxUnavailable as exc:
        return str(exc)
    return ""


def require(isolation: str) -> None:
    """Skip (fail under CI) unless ``isolation`` works on this machine."""
    if isolation == "bwrap":
        unshare, reason = sandbox.probe_bwrap()
        if unshare is None:
            _unavailable(reason)
    elif isolation == "docker":
        reason = _docker_reason()
        if reason:
            _unavailable(reason)


def make_launcher(isolation: str, shared: Sequence[str] = (), memory: int | None = None,
                  cpu_seconds: int = sandbox.DEFAULT_CPU_SECONDS, slots: int = 1) -> sandbox.Launcher:
    require(isolation)
    settings = sandbox.SandboxSettings(isolation=isolation, memory=memory, cpu_seconds=cpu_seconds)
    return sandbox.make_launcher(settings, slots, 0, shared)
