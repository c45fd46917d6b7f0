"""Fixtures of the browser tests: one cluster and one headless Chromium per module, and a fresh
browser context per test whose console errors fail the test; screenshots go to test-artifacts/."""

from __future__ import annotations

from typing import Iterator

import pytest

import rvidia

from .helpers import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, Console, missing, new_page, shot, sync_playwright


@pytest.fixture(scope="module")
def cluster() -> Iterator[rvidia.LocalCluster]:
    with rvidia.LocalCluster(workers=1, slots=2) as c:
        yield c


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    if missing():
        pytest.skip(missing())
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser, console: Console, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A 1280 px wide page in a fresh context; the test fails on console errors it did not allow."""
    p = new_page(browser, console, DESKTOP)
    yield p
    _finish(p, console, request.node.name)


@pytest.fixture
def phone(browser, console: Console, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A phone-sized page (390 x 844, touch) in a fresh context."""
    p = new_page(browser, console, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    yield p
    _finish(p, console, request.node.name + "-phone")


def _finish(p, console: Console, name: str) -> None:  # type: ignore[no-untyped-def]
    try:
        shot(p, f"{name}-end")
    finally:
        p.context.close()
    bad = console.unexpected()
    assert not bad, "console errors on the page:\n" + "\n".join(bad)
