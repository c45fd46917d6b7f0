"""What the browser tests share: Chromium's settings, console checks, screenshots, signing in."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import rvidia

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def missing() -> str:
    """Why the browser tests cannot run here, or "" when they can."""
    if sync_playwright is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return ""


class Console:
    """Console errors and uncaught exceptions of one page; a test may allow expected ones."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


def new_page(browser: "Browser", console: Console, viewport: dict[str, int], **extra: Any) -> "Page":
    """A page in a fresh context (no cookie) whose console errors land in ``console``."""
    context = browser.new_context(viewport=viewport, **extra)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.on("console", lambda msg: console.errors.append(f"console.error: {msg.text}")
            if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console.errors.append(f"pageerror: {exc}"))
    return page


def shot(page: "Page", name: str, full_page: bool = False) -> Path:
    """Save a screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    try:
        page.screenshot(path=str(path), full_page=full_page)
    except Exception:  # a closed page must not hide the test's own failure
        pass
    return path


def sign_in(page: "Page", cluster: rvidia.LocalCluster, route: str = "") -> None:
    """Sign in through the form, then wait for the live connection."""
    page.goto(cluster.url + "/" + route)
    page.fill("#token", cluster.token)
    page.press("#token", "Enter")
    page.wait_for_selector('.conn[data-state="live"]')
