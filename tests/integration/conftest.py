"""Fixtures of the integration tests: processes that die with their test, a cluster per module."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from harness import Cluster, Processes, process_group, start_cluster


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Processes that live as long as one test."""
    with process_group(tmp_path) as group:
        yield group


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and two one-slot workers shared by the tests of one module."""
    base = tmp_path_factory.mktemp("cluster")
    group = Processes(base)
    try:
        made = start_cluster(group, base / "data")
        yield made
        made.api.close()
    finally:
        group.stop_all()


