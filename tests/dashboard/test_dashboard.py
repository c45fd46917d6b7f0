"""The dashboard in a real headless Chromium: sign-in, live updates, submit, inspect, cancel, sign-out.

Needs Debian's chromium at /usr/bin/chromium and the playwright package (``pip install -e '.[dev]'``;
scripts/test.sh installs chromium with apt when it runs as root). Nothing downloads a browser.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

import rvidia

from .helpers import missing, shot, sign_in

pytestmark = pytest.mark.skipif(bool(missing()), reason=f"browser tests skipped: {missing()}")

EXPECTED_401 = r"status of 401"
EXPECTED_422 = r"status of 422"


def test_sign_in_refuses_a_wrong_token_and_shows_nothing_before(page, console, cluster: rvidia.LocalCluster) -> None:
    console.allow(EXPECTED_401)  # the refused sign-in request itself
    page.goto(cluster.url + "/")
    page.wait_for_selector("#token")
    assert page.title() == "Sign in · RVIDIA"
    assert page.get_attribute("#token", "type") == "password"
    assert page.is_visible("label[for=token]")
    # Nothing of the cluster before sign-in: no worker, no view, no data fetched.
    assert "local-1" not in page.content()
    assert page.query_selector("#stat-workers") is None
    shot(page, "signin")

    page.fill("#token", "not-the-token")
    page.press("#token", "Enter")  # Enter submits
    page.wait_for_selector("#signin-error:has-text('Wrong token')")
    assert page.query_selector("#stat-workers") is None
    assert page.get_attribute("#token", "aria-invalid") == "true"

    page.fill("#token", cluster.token)
    page.press("#token", "Enter")
    page.wait_for_selector("#stat-workers:has-text('1')")
    assert page.title() == "Overview · RVIDIA"
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["rvidia_session"]["httpOnly"] and cookies["rvidia_session"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: the page's script never sees it
    page.wait_for_selector('.conn[data-state="live"]')
    shot(page, "overview")


def test_a_worker_joining_appears_without_reload(page, cluster: rvidia.LocalCluster) -> None:
    sign_in(page, cluster, "#/workers")
    page.wait_for_selector("tr.worker-row:has-text('local-1')")
    page.evaluate("window.__noReload = true")
    proc = cluster.add_worker(slots=1, name="late-joiner")
    try:
        started = time.monotonic()
        page.wait_for_selector("tr.worker-row:has-text('late-joiner')", timeout=30_000)
        joined = time.monotonic() - started
        assert page.evaluate("window.__noReload") is True  # the same page, updated live
        row = page.locator("tr.worker-row", has_text="late-joiner")
        assert row.locator("td[data-label=Slots]").inner_text() == "1"
        assert row.locator("td[data-label=State]").inner_text() in ("idle", "busy")
        shot(page, "workers")
        # The overview counts it too, from the same live state.
        page.click("nav a[data-route=overview]")
        page.wait_for_selector("#stat-workers:has-text('2')")
        assert joined < 30
    finally:
        proc.terminate()
        proc.wait(10)
    page.click("nav a[data-route=workers]")
    page.wait_for_selector("tr.worker-row[data-state=lost]:has-text('late-joiner')", timeout=30_000)


def test_submit_montecarlo_from_the_form_and_watch_it_succeed(page, cluster: rvidia.LocalCluster) -> None:
    sign_in(page, cluster, "#/submit")
    assert page.title() == "Submit a job · RVIDIA"
    page.wait_for_selector("#kind option[value=montecarlo]", state="attached")
    assert page.query_selector("#kind option[value=map]") is None  # hidden kinds stay off the form
    page.select_option("#kind", "montecarlo")
    for name in ("samples", "seed", "chunk_samples"):  # every field has a label
        assert page.is_visible(f"label[for=p-{name}]")
    page.fill("#p-samples", "20000000")
    page.fill("#p-seed", "7")
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"#/jobs/j[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector(".head-badge .badge.state-succeeded", timeout=60_000)
    value = page.inner_text("#result-value")
    assert value.startswith("3.14")
    assert abs(float(value) - cluster.job(job_id).result()["pi"]) < 1e-8
    assert page.inner_text(".progress-text") == "20 / 20"
    page.wait_for_selector("#gantt svg rect.bar.state-done")
    assert page.locator("#gantt rect.bar").count() == 20
    assert "local-1" in page.inner_text(".per-worker")
    shot(page, "job-montecarlo", full_page=True)
    # The jobs list shows it with its progress bar, and the overview counts it.
    page.click("nav a[data-route=jobs]")
    row = page.locator(f"tr.job-row[data-id={job_id}]")
    row.wait_for()
    assert "succeeded" in row.inner_text() and "montecarlo" in row.inner_text()


def test_a_validation_error_is_shown_next_to_its_field(page, console, cluster: rvidia.LocalCluster) -> None:
    console.allow(EXPECTED_422)  # the refused submits themselves
    sign_in(page, cluster, "#/submit/montecarlo")
    page.wait_for_selector("#p-samples")
    page.fill("#p-samples", "-5")
    page.click("#submit-job")
    error = page.locator("#p-samples-error")
    error.wait_for()
    assert "`$.samples`" in error.inner_text() and ">= 1" in error.inner_text()
    assert page.get_attribute("#p-samples", "aria-invalid") == "true"
    assert page.url.endswith("#/submit/montecarlo")  # nothing was submitted
    field = page.locator(".field", has=page.locator("#p-samples"))
    assert field.locator(".field-error").is_visible()
    shot(page, "validation-error")
    # A required field left empty is named too; fixing it clears the error.
    page.fill("#p-samples", "")
    page.fill("#p-chunk_samples", "5")
    page.click("#submit-job")
    page.wait_for_selector("#p-samples-error:has-text('samples'), #p-chunk_samples-error:has-text('chunk_samples')")
    page.fill("#p-samples", "1000")
    page.fill("#p-chunk_samples", "")
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"#/jobs/j[0-9a-f]+$"))


def test_cancel_a_long_job_from_the_list(page, cluster: rvidia.LocalCluster) -> None:
    job = cluster.submit("montecarlo", samples=10**12, chunk_samples=10**7)
    try:
        sign_in(page, cluster, "#/jobs")
        row = page.locator(f"tr.job-row[data-id={job.id}]")
        page.wait_for_selector(f"tr.job-row[data-id={job.id}][data-state=running]", timeout=30_000)
        shot(page, "jobs-running")
        row.locator("button.cancel").click()
        page.wait_for_selector(f"tr.job-row[data-id={job.id}][data-state=cancelled]")
        assert not row.locator("button.cancel").is_visible()
        assert job.status()["state"] == "cancelled"
        page.click(f"tr.job-row[data-id={job.id}] a")
        page.wait_for_selector(".head-badge .badge.state-cancelled")
        assert not page.is_visible("#cancel-job")
    finally:
        try:
            job.cancel()
        except Exception:
            pass


def test_cancel_from_the_job_detail(page, cluster: rvidia.LocalCluster) -> None:
    job = cluster.submit("montecarlo", samples=10**12, chunk_samples=10**7)
    try:
        sign_in(page, cluster, f"#/jobs/{job.id}")
        page.wait_for_selector(".head-badge .badge.state-running", timeout=30_000)
        page.wait_for_selector("#gantt rect.bar.state-running")  # live chunks on the timeline
        page.click("#cancel-job")
        page.wait_for_selector(".head-badge .badge.state-cancelled")
        page.wait_for_selector("#cancel-job", state="hidden")
    finally:
        try:
            job.cancel()
        except Exception:
            pass


def test_a_render_jobs_image_is_shown(page, cluster: rvidia.LocalCluster) -> None:
    sign_in(page, cluster, "#/submit")
    page.wait_for_selector("#kind option[value=render]", state="attached")
    page.select_option("#kind", "render")
    page.wait_for_selector("#p-width")
    page.fill("#p-width", "320")
    page.fill("#p-height", "200")
    page.select_option("#p-scene", label="spheres")
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"#/jobs/j[0-9a-f]+$"))
    page.wait_for_selector(".head-badge .badge.state-succeeded", timeout=60_000)
    img = page.locator("#result-image")
    img.wait_for()
    page.wait_for_function("document.querySelector('#result-image').complete")
    size = page.evaluate("[document.querySelector('#result-image').naturalWidth, "
                         "document.querySelector('#result-image').naturalHeight]")
    assert size == [320, 200]
    link = page.locator("#job-outputs a.download")
    assert link.inner_text().strip().endswith("image.png")
    assert link.get_attribute("download") == "image.png"
    with page.expect_download() as info:
        link.click()
    assert info.value.suggested_filename == "image.png"
    shot(page, "job-render", full_page=True)


def test_file_inputs_upload_and_outputs_download(page, cluster: rvidia.LocalCluster, tmp_path) -> None:
    """compress: a file field uploads to /blobs; analytics: list and JSON fields, a preview of the table."""
    data = tmp_path / "words.txt"
    data.write_bytes(b"the quick brown fox jumps over the lazy dog\n" * 5000)
    sign_in(page, cluster, "#/submit/compress")
    page.wait_for_selector("#input-data")
    assert page.is_visible("label[for=input-data]")
    page.set_input_files("#input-data", str(data))
    page.fill("#p-block_size", "65536")
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"#/jobs/j[0-9a-f]+$"))
    page.wait_for_selector(".head-badge .badge.state-succeeded", timeout=60_000)
    link = page.locator("#job-outputs a.download")
    assert link.get_attribute("download") == "data.gz"
    gz = page.evaluate("fetch(document.querySelector('#job-outputs a.download').href)"
                       ".then(r => r.arrayBuffer()).then(b => Array.from(new Uint8Array(b.slice(0, 2))))")
    assert gz == [0x1F, 0x8B]  # gzip, served to the signed-in page by its cookie

    table = tmp_path / "sales.csv"
    table.write_text("city,price\n" + "".join(f"{c},{i}\n" for i in range(30) for c in ("Oslo", "Lyon")))
    page.click("nav a[data-route=submit]")
    page.wait_for_selector("#kind option[value=analytics]", state="attached")
    page.select_option("#kind", "analytics")
    page.set_input_files("#input-table", str(table))
    page.fill("#p-group_by", "city")
    page.fill("#p-aggregates", '{"price": ["sum", "max"]}')
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"#/jobs/j[0-9a-f]+$"))
    page.wait_for_selector(".head-badge .badge.state-succeeded", timeout=60_000)
    preview = page.locator(".csv-preview table")
    preview.wait_for()
    assert preview.locator("th").all_inner_texts() == ["city", "price_sum", "price_max"]
    assert preview.locator("tbody tr").first.locator("td").all_inner_texts() == ["Lyon", "435", "29"]
    shot(page, "job-analytics", full_page=True)


def _long_job(cluster: rvidia.LocalCluster) -> rvidia.Job:
    """A job that runs until cancelled, so that it is surely running when a held answer is fetched."""
    job = cluster.submit("montecarlo", samples=10**12, chunk_samples=10_000_000)
    deadline = time.monotonic() + 30
    while job.status()["state"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    return job


def _end_while_held(job: rvidia.Job, held: list[object], state: object) -> None:
    """The first answer, fetched while the job runs, is held until the job has ended (cancelled
    here, so that nothing can end it before the answer is fetched) and its end event has had time
    to reach the page."""
    if not held:
        held.append(state)
        job.cancel()
        time.sleep(0.5)


def test_a_job_that_ends_while_its_page_loads_shows_its_end(page, cluster: rvidia.LocalCluster) -> None:
    """The page's first load answers "running"; the job's end reaches the page over the event stream
    before that answer does. The stale answer must not win."""
    sign_in(page, cluster)
    job = _long_job(cluster)
    held: list[object] = []

    def hold_first_answer(route) -> None:  # type: ignore[no-untyped-def]
        answer = route.fetch()
        _end_while_held(job, held, answer.json()["state"])
        route.fulfill(response=answer)

    page.route(f"**/api/v1/jobs/{job.id}", hold_first_answer)
    page.goto(f"{cluster.url}/#/jobs/{job.id}")
    page.wait_for_selector(".head-badge .badge.state-cancelled", timeout=30_000)
    assert held == ["running"]
    page.unroute(f"**/api/v1/jobs/{job.id}")


def test_a_job_that_ends_while_the_list_loads_shows_its_end(page, cluster: rvidia.LocalCluster) -> None:
    """Same race for the state loaded at sign-in: events that land during the load win over it."""
    job = _long_job(cluster)
    held: list[object] = []

    def hold_first_answer(route) -> None:  # type: ignore[no-untyped-def]
        answer = route.fetch()
        _end_while_held(job, held, [j["state"] for j in answer.json() if j["id"] == job.id])
        route.fulfill(response=answer)

    page.route(re.compile(r".*/api/v1/jobs\?limit=.*"), hold_first_answer)
    sign_in(page, cluster, "#/jobs")
    row = page.locator(f"tr.job-row:has-text('{job.id}')")
    row.locator(".badge.state-cancelled").wait_for(timeout=30_000)
    assert held == [["running"]]


def test_sign_out_ends_the_session(page, cluster: rvidia.LocalCluster) -> None:
    sign_in(page, cluster)
    page.click("#sign-out")
    page.wait_for_selector("#token")
    assert page.query_selector("#stat-workers") is None
    assert not [c for c in page.context.cookies() if c["name"] == "rvidia_session"]
    page.reload()
    page.wait_for_selector("#token")  # still signed out after a reload
    status = page.evaluate("fetch('/api/v1/session').then(r => r.json())")
    assert status == {"signed_in": False}


def test_every_page_at_desktop_size_has_no_console_errors(page, console, cluster: rvidia.LocalCluster) -> None:
    train = cluster.submit("train", dataset="iris", rounds=4, shards=2, hidden=8)
    sign_in(page, cluster)
    for route, ready in [("#/overview", "#rate-chart svg"), ("#/workers", "tr.worker-row"),
                         ("#/jobs", "tr.job-row"), ("#/submit", "#kind-description:not(:empty)")]:
        page.click(f"nav a[href='{route}']")
        page.wait_for_selector(ready)
        assert page.title().endswith("· RVIDIA")
    for kind in page.eval_on_selector_all("#kind option", "els => els.map(e => e.value)"):
        page.select_option("#kind", kind)
        page.wait_for_selector("#kind-description")
        labels = page.eval_on_selector_all(
            ".submit-form input:not([type=hidden]), .submit-form select, .submit-form textarea",
            "els => els.filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id)")
        assert labels == [], f"{kind}: fields without a label: {labels}"
    failed = cluster.map(lambda x: 1 / x, [1, 0], max_attempts=1)
    page.goto(f"{cluster.url}/#/jobs/{failed.id}")
    page.wait_for_selector(".head-badge .badge.state-failed", timeout=60_000)
    assert "ZeroDivisionError" in page.inner_text("#job-error pre")  # the failing chunk's error
    page.wait_for_selector("#gantt rect.bar.state-failed", state="attached")
    shot(page, "job-failed", full_page=True)
    page.goto(f"{cluster.url}/#/jobs/{train.id}")
    page.wait_for_selector(".head-badge .badge.state-succeeded", timeout=60_000)
    page.wait_for_selector("#loss-chart svg path.series")
    page.wait_for_selector("#accuracy-chart svg path.series")
    assert "%" in page.inner_text("#result-value")
    shot(page, "job-train", full_page=True)
    assert console.unexpected() == []
    console.allow(r"status of 404")  # asking for a job that does not exist
    page.goto(f"{cluster.url}/#/jobs/jnosuchjob")
    page.wait_for_selector(".callout.error:has-text('no job')")


def test_phone_sized_screen(phone, cluster: rvidia.LocalCluster) -> None:
    cluster.submit("montecarlo", samples=3_000_000).result(timeout=60)  # a job to list and open
    sign_in(phone, cluster)
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the overview scrolls sideways on a phone ({width} px)"
    shot(phone, "phone-overview", full_page=True)
    for route, ready in [("#/workers", "tr.worker-row"), ("#/jobs", "tr.job-row"), ("#/submit", "#p-samples")]:
        phone.click(f"nav a[href='{route}']")
        phone.wait_for_selector(ready)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{route} scrolls sideways on a phone ({width} px)"
        shot(phone, f"phone-{route.strip('#/')}", full_page=True)
    phone.click("nav a[href='#/jobs']")
    phone.click("tr.job-row[data-state=succeeded] .cell-id a")
    phone.wait_for_selector("#gantt svg")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"a job's page scrolls sideways on a phone ({width} px)"
    shot(phone, "phone-job", full_page=True)


def test_the_dashboard_reconnects_by_itself_when_the_master_restarts(page, console,
                                                                     cluster: rvidia.LocalCluster) -> None:
    """Last in this module: it replaces the cluster's master with a new one on the same port and data dir."""
    console.allow(r"ERR_CONNECTION_REFUSED|WebSocket connection to .* failed")  # while the master is away
    sign_in(page, cluster, "#/jobs")
    page.evaluate("window.__noReload = true")
    old = cluster.master_proc
    old.send_signal(signal.SIGTERM)
    old.wait(15)
    page.wait_for_selector('.conn[data-state="reconnecting"]')
    port = cluster.url.rsplit(":", 1)[1]
    new = subprocess.Popen([sys.executable, "-m", "rvidia", "master", "--host", "127.0.0.1", "--port", port,
                            "--data-dir", str(cluster.data_dir)], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    cluster.procs.append(new)  # stopped with the cluster
    cluster.master_proc = new
    assert new.stdout is not None and "listening on" in new.stdout.readline()
    # Still signed in (the session outlives the restart), live again, and the same page.
    page.wait_for_selector('.conn[data-state="live"]', timeout=30_000)
    assert page.evaluate("window.__noReload") is True
    assert page.query_selector("#token") is None
    cluster.wait_for_workers(1, 30)
    job = cluster.submit("montecarlo", samples=2_000_000)
    page.wait_for_selector(f"tr.job-row[data-id={job.id}][data-state=succeeded]", timeout=30_000)
    shot(page, "reconnected")
