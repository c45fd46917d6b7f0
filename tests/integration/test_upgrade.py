"""A newer master on a data dir made by the previous schema version (docs/operations.md, "Upgrades")."""

from __future__ import annotations

import sys
from pathlib import Path

from harness import Master, Processes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "master"))
from test_store_migration import make_v1_database  # noqa: E402


def test_master_upgrades_a_version_1_data_dir(procs: Processes, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    make_v1_database(data / "rvidia.db")
    master = Master(procs, data, extra=["--token", "upgrade-test-token", "--retention", "36500d"]).start()
    with master.client("upgrade-test-token") as api:
        job = api.get("/api/v1/jobs/jold")
        assert job.status_code == 200 and job.json()["result"] == {"pi": 3.2}
        log = api.get("/api/v1/jobs/jold/chunks/0/log")
        assert log.status_code == 200 and log.text == ""
