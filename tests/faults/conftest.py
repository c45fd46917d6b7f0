"""Fixtures of the fault-injection suite: real processes that die with their test.

The suite reuses the integration tests' harness (real ``rvidia master``/``rvidia worker`` processes on
loopback); ``faultkit`` adds jobs of several kinds with their independent, exact checks and the
root-only guards. Every module is marked ``slow`` (scripts/test.sh runs it in the slow tier).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from harness import Processes, process_group  # noqa: E402


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Processes that live as long as one test."""
    with process_group(tmp_path) as group:
        yield group
