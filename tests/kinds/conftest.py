"""Clusters the kinds' end-to-end tests share: one with 1 worker and one with 3, per test module."""

from __future__ import annotations

from typing import Iterator

import pytest

import rvidia


@pytest.fixture(scope="module")
def one() -> Iterator[rvidia.LocalCluster]:
    with rvidia.LocalCluster(workers=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def three() -> Iterator[rvidia.LocalCluster]:
    with rvidia.LocalCluster(workers=3) as cluster:
        yield cluster
