"""Settings files: flag > file > default, where each value came from, unknown keys refused
(docs/operations.md, "Configuration")."""

from __future__ import annotations

from pathlib import Path

from harness import Master, Processes, assert_one_line_error, run_cli


def _shown(stdout: str) -> dict[str, tuple[str, str]]:
    out = {}
    for line in stdout.splitlines():
        if line.startswith("#"):
            continue
        key, _, rest = line.partition("=")
        value, _, source = rest.partition("#")
        out[key.strip()] = (value.strip(), source.strip())
    return out


def test_precedence_flag_over_file_over_default(tmp_path: Path) -> None:
    conf = tmp_path / "master.toml"
    conf.write_text('port = 9100\nretention = "14d"\nworker-timeout = 3.5\n')
    result = run_cli("config", "show", "master", "--config", str(conf), "--port", "9000")
    assert result.code == 0, result.stderr
    shown = _shown(result.stdout)
    assert shown["port"] == ("9000", "flag")
    assert shown["retention"] == ('"14d"', f"file {conf}")
    assert shown["worker-timeout"] == ("3.5", f"file {conf}")
    assert shown["host"] == ('"127.0.0.1"', "default")
    assert f"# config file: {conf}" in result.stdout


def test_tables_for_both_commands_and_worker_settings(tmp_path: Path) -> None:
    conf = tmp_path / "rvidia.toml"
    conf.write_text('[master]\nport = 9200\n\n[worker]\nslots = 3\nallow-code = true\nresources = {gpu = 1}\n')
    shown = _shown(run_cli("config", "show", "worker", "--config", str(conf), "--nice", "5").stdout)
    assert shown["slots"] == ("3", f"file {conf}")
    assert shown["allow-code"] == ("true", f"file {conf}")
    assert shown["resources"] == ('"gpu=1"', f"file {conf}")
    assert shown["nice"] == ("5", "flag")
    assert shown["grace"] == ("10.0", "default")
    assert _shown(run_cli("config", "show", "master", "--config", str(conf)).stdout)["port"][0] == "9200"


def test_master_reads_rvidia_toml_in_its_data_dir(procs: Processes, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "rvidia.toml").write_text('min-free-disk = "1000000TiB"\n')  # shows up as 507 on upload
    shown = _shown(run_cli("config", "show", "master", "--data-dir", str(data)).stdout)
    assert shown["min-free-disk"] == ('"1000000TiB"', f"file {data / 'rvidia.toml'}")
    master = Master(procs, data).start()
    with master.client() as api:
        assert api.post("/api/v1/blobs", content=b"x").status_code == 507


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    conf = tmp_path / "rvidia.toml"
    conf.write_text("port = 1\nprot = 2\n")
    for args in (["config", "show", "master", "--config", str(conf)], ["master", "--config", str(conf)]):
        result = run_cli(*args)
        assert_one_line_error(result, 2)
        assert "unknown key 'prot'" in result.stderr
    conf.write_text("[worker]\nslots = 2\nslot = 3\n")
    result = run_cli("worker", "--config", str(conf))
    assert_one_line_error(result, 2)
    assert "unknown key 'slot' in [worker]" in result.stderr


def test_bad_value_and_missing_file_are_one_line_errors(tmp_path: Path) -> None:
    conf = tmp_path / "rvidia.toml"
    conf.write_text('port = "not a port"\n')
    result = run_cli("config", "show", "master", "--config", str(conf))
    assert_one_line_error(result, 2)
    assert "'port'" in result.stderr
    result = run_cli("master", "--config", str(tmp_path / "missing.toml"))
    assert_one_line_error(result, 2)
    assert "cannot read the config file" in result.stderr
