"""Refresh the dashboard screenshots in docs/ that README.md shows.

Starts a local cluster with two workers, runs a few jobs, and photographs the dashboard in Debian's
headless chromium at 1280 px and at phone size. Needs ``pip install -e '.[dev]'`` and
``apt-get install chromium``. From the repository root: ``python scripts/dashboard_screenshots.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

import rvidia
import rvidia.client.api

DOCS = Path(__file__).resolve().parents[1] / "docs"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
CSV = b"city,year,price\n" + b"".join(f"{c},{y},{(i * 37) % 101}\n".encode()
                                      for i, (c, y) in enumerate((c, y) for c in ("Lyon", "Oslo", "Porto")
                                                                 for y in (2023, 2024) for _ in range(50)))


def page(browser: Browser, cluster: rvidia.LocalCluster, route: str, phone: bool = False) -> Page:
    if phone:
        context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                      is_mobile=True, has_touch=True)
    else:
        context = browser.new_context(viewport={"width": 1280, "height": 860})
    p = context.new_page()
    p.goto(f"{cluster.url}/{route}")
    p.fill("#token", cluster.token)
    p.press("#token", "Enter")
    p.wait_for_selector('.conn[data-state="live"]')
    return p


def main() -> int:
    DOCS.mkdir(exist_ok=True)
    with rvidia.LocalCluster(workers=2, slots=1) as cluster, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        overview = page(browser, cluster, "#/overview")  # open first: the chart counts what follows
        train = cluster.submit("train", dataset="digits", rounds=12, shards=4, seed=1)
        train.result()
        render = cluster.submit("render", width=960, height=540, scene="mandelbrot", max_iter=600,
                                center_x=-0.16, center_y=1.0405, zoom=40, tile_rows=12)
        render.result()
        cluster.submit("analytics", inputs={"table": CSV}, group_by=["city"],
                       aggregates={"price": ["mean", "max"]}).result()
        cluster.submit("montecarlo", samples=200_000_000, chunk_samples=5_000_000, seed=1).result()
        cancelled = cluster.submit("montecarlo", samples=10**12, chunk_samples=10**7)
        time.sleep(1.5)
        cancelled.cancel()
        running = cluster.submit("montecarlo", samples=10_000_000_000, chunk_samples=20_000_000, seed=2)
        time.sleep(12)  # a running job: busy workers, a rising chart

        overview.screenshot(path=str(DOCS / "dashboard-overview.png"))
        phone = page(browser, cluster, "#/overview", phone=True)
        time.sleep(1)
        phone.screenshot(path=str(DOCS / "dashboard-phone.png"))
        live = page(browser, cluster, f"#/jobs/{running.id}")
        live.wait_for_selector("#gantt rect.bar.state-running")
        time.sleep(1)
        live.screenshot(path=str(DOCS / "dashboard-running.png"))
        try:
            running.cancel()
        except rvidia.client.api.ApiError:  # it finished already
            pass

        job = page(browser, cluster, f"#/jobs/{render.id}")
        job.wait_for_selector("#result-image")
        job.wait_for_function("document.querySelector('#result-image').complete")
        job.screenshot(path=str(DOCS / "dashboard-job.png"), full_page=True)
        detail = page(browser, cluster, f"#/jobs/{train.id}")
        detail.wait_for_selector("#accuracy-chart svg")
        detail.screenshot(path=str(DOCS / "dashboard-train.png"))
        form = page(browser, cluster, "#/submit/render")
        form.wait_for_selector("#p-width")
        form.screenshot(path=str(DOCS / "dashboard-submit.png"), full_page=True)
        browser.close()
    for name in sorted(DOCS.glob("dashboard-*.png")):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
