"""What the dashboard needs from the master: its files, session status, stats, lasting sessions."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from rvidia.master import auth as auth_mod
from rvidia.master.auth import Auth
from rvidia.master.store import Store
from .live_master import LiveMaster

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "src" / "rvidia" / "dashboard"


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMaster]:
    live = LiveMaster(tmp_path_factory.mktemp("dash-master")).start()
    yield live
    live.stop()


def test_the_page_and_its_files_load_without_a_token(master: LiveMaster) -> None:
    r = httpx.get(master.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<title>RVIDIA</title>" in r.text and "/static/app.js" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src" not in csp  # no inline script allowed
    assert f"connect-src 'self' {master.url.replace('http', 'ws')} " in csp  # the event socket
    forged = httpx.get(master.url + "/", headers={"Host": "evil; script-src *"}).headers["content-security-policy"]
    assert "evil" not in forged and "connect-src 'self';" in forged
    assert r.headers["x-content-type-options"] == "nosniff"
    for name in ("app.js", "app.css", "views/submit.js", "favicon.svg"):
        f = httpx.get(f"{master.url}/static/{name}")
        assert f.status_code == 200, name
        assert f.headers["cache-control"] == "no-cache"
    assert httpx.get(master.url + "/static/app.js").headers["content-type"].split(";")[0] in (
        "text/javascript", "application/javascript")
    assert httpx.get(master.url + "/static/nothing.js").status_code == 404
    assert httpx.get(master.url + "/static/../master/api.py").status_code == 404


def test_every_dashboard_file_is_package_data() -> None:
    """pyproject's package-data globs ship every file the dashboard loads (no build step)."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["rvidia"]
    shipped = {p for g in globs for p in (ROOT / "src" / "rvidia").glob(g) if p.is_file()}
    files = {p for p in DASHBOARD.rglob("*") if p.is_file() and "__pycache__" not in p.parts
             and p.suffix != ".py"}
    assert files and files <= shipped, sorted(str(p) for p in files - shipped)


def test_session_status_answers_before_sign_in(master: LiveMaster) -> None:
    with httpx.Client(base_url=master.url) as browser:
        assert browser.get("/api/v1/session").json() == {"signed_in": False}
        browser.post("/api/v1/session", json={"token": master.token}).raise_for_status()
        me = browser.get("/api/v1/session").json()
        assert me["signed_in"] is True and me["role"] == "admin"
        browser.delete("/api/v1/session").raise_for_status()
        assert browser.get("/api/v1/session").json() == {"signed_in": False}


def test_stats_for_the_overview(master: LiveMaster) -> None:
    assert httpx.get(master.url + "/api/v1/stats").status_code == 401
    with master.client() as api:
        api.post("/api/v1/jobs", json={"kind": "montecarlo", "params": {"samples": 10}}).raise_for_status()
        stats = api.get("/api/v1/stats", params={"seconds": 60}).json()
    assert stats["jobs"].get("queued", 0) + stats["jobs"].get("running", 0) >= 1
    series = stats["finished_per_second"]
    assert series["interval"] == 1 and len(series["counts"]) == 60
    assert abs(series["start"] + 59 - time.time()) < 5
    assert stats["chunks_finished"] >= 0 and stats["chunks_failed"] >= 0


def test_finished_per_second_counts_each_second() -> None:
    from rvidia.master.runtime import Runtime

    rt = Runtime.__new__(Runtime)
    rt._rate = __import__("collections").deque()
    for _ in range(3):
        rt._count_finished()
    series = rt.finished_per_second(10)
    assert len(series["counts"]) == 10 and sum(series["counts"]) == 3 and series["counts"][-1] in (0, 3)


def test_dashboard_sessions_outlive_a_master_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    auth = Auth(store)
    _, token = auth.create("user", "alice")
    alice = auth.check(token)
    assert alice is not None
    kept, ended, revoked = auth.new_session(alice), auth.new_session(alice), None
    auth.end_session(ended)
    store.close()

    store = Store(tmp_path / "db")  # the master restarts on the same data dir
    auth = Auth(store)
    assert auth.session(kept) == alice
    assert auth.session(ended) is None
    assert auth.session("forged") is None and auth.session(None) is None
    assert all(kept not in v for _, v in store.db.execute("SELECT key, value FROM meta"))  # only hashes

    revoked = auth.new_session(alice)
    auth.revoke("alice")  # revoking the token ends its sessions, now and after a restart
    assert auth.session(revoked) is None and auth.session(kept) is None
    store.close()
    assert Auth(Store(tmp_path / "db")).session(kept) is None


def test_dashboard_sessions_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Auth(Store(tmp_path / "db"))
    _, token = auth.create("user", "bob")
    sid = auth.new_session(auth.check(token))  # type: ignore[arg-type]
    later = time.time() + auth_mod.SESSION_SECONDS + 60
    monkeypatch.setattr(auth_mod.time, "time", lambda: later)
    assert auth.session(sid) is None
    assert Auth(auth.store).sessions == {}
