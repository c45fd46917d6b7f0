"""Discovery by mDNS: masters advertise ``_rvidia._tcp`` on the interface they bind; ``worker --discover``.

Real processes, loopback only: every advertisement here binds 127.0.0.1 and every browse runs on
127.0.0.1, so no packet leaves the machine. Other masters (parallel tests, other people's runs on the
same host) may advertise on loopback too, so each test gives its master a unique instance name and
looks only for that name (and port).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness import (Master, Processes, assert_one_line_error, clean_env, free_port, run_cli, stop, wait_for_workers,
                     wait_until)
from rvidia import __version__, discovery
from rvidia.protocol.messages import PROTOCOL_VERSION


def unique_name() -> str:
    return f"rvidia-test-{uuid.uuid4().hex[:12]}"


def _loopback_round_trip() -> bool:
    """Whether an advertisement on 127.0.0.1 is seen by a browse on 127.0.0.1 in this container."""
    name, port = unique_name(), free_port()
    advertiser = discovery.advertise("127.0.0.1", port, "http", name)
    try:
        discovery.browse("127.0.0.1", timeout=8.0, name=name, port=port)
        return True
    except discovery.DiscoveryError:
        return False
    finally:
        advertiser.stop()


@pytest.fixture(scope="module")
def loopback_mdns() -> None:
    """mDNS on loopback works here, or is made to work (lo without MULTICAST: set it, as root), or skip."""
    if _loopback_round_trip():
        return
    ip = shutil.which("ip")
    if ip is None:
        pytest.skip("mDNS on 127.0.0.1 does not round-trip and there is no `ip` command to set lo multicast on")
    done = subprocess.run([ip, "link", "set", "lo", "multicast", "on"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mDNS on 127.0.0.1 does not round-trip and `ip link set lo multicast on` failed: "
                    f"{done.stderr.strip()}")
    if not _loopback_round_trip():
        pytest.skip("mDNS on 127.0.0.1 does not round-trip even with lo multicast on (no 224.0.0.251 route?)")


@pytest.fixture
def named_master(procs: Processes, tmp_path: Path, loopback_mdns: None) -> Iterator[tuple[Master, str]]:
    """A master on 127.0.0.1, a random port, advertising under a name of its own."""
    name = unique_name()
    master = Master(procs, tmp_path / "data", extra=["--advertise-name", name]).start()
    yield master, name


# ---------------------------------------------------------------- unit: no network


def test_the_txt_record_says_how_to_connect_and_never_carries_the_token() -> None:
    info = discovery.Advertiser("127.0.0.1", 8765, "https", "lab").info()
    props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    assert props == {"scheme": "https", "proto": str(PROTOCOL_VERSION), "version": __version__}
    assert info.name == f"lab.{discovery.SERVICE_TYPE}" and info.port == 8765
    assert info.parsed_addresses() == ["127.0.0.1"]  # loopback-bound: only the loopback address


def test_a_master_advertises_only_on_the_interface_it_binds() -> None:
    from zeroconf import InterfaceChoice

    assert discovery._interfaces("127.0.0.1")[0] == ["127.0.0.1"]
    assert discovery._interfaces("192.0.2.2")[0] == ["192.0.2.2"]
    assert discovery._interfaces("0.0.0.0")[0] is InterfaceChoice.All
    addresses = discovery.Advertiser("0.0.0.0", 8765, "http").info().parsed_addresses()
    assert "127.0.0.1" in addresses and addresses[-1] == "127.0.0.1"  # reachable ones first, loopback last


def test_a_worker_connects_to_the_address_that_fits_where_it_looked() -> None:
    both = ["192.0.2.2", "127.0.0.1"]
    assert discovery.pick_address(both, "127.0.0.1") == "127.0.0.1"
    assert discovery.pick_address(both, None) == "192.0.2.2"
    assert discovery.pick_address(["127.0.0.1"], None) == "127.0.0.1"
    assert discovery.pick_address([], None) is None


@pytest.mark.parametrize("bad", ["", "a.b", "x" * 64])
def test_service_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        discovery.check_name(bad)


def test_an_advertising_failure_is_a_warning_not_an_error(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    def no_network(host: str) -> str:
        raise OSError("no multicast here")

    monkeypatch.setattr(discovery, "_bind_address", no_network)
    advertiser = discovery.Advertiser("127.0.0.1", 8765, "http")
    advertiser._register()  # what the thread runs; must not raise
    advertiser.stop()
    err = capsys.readouterr().err
    assert "warning: not advertising" in err and "no multicast here" in err


# ---------------------------------------------------------------- real masters and workers


def test_a_loopback_master_is_found_on_loopback_with_its_port_and_says_goodbye(
        named_master: tuple[Master, str]) -> None:
    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

    master, name = named_master
    found = discovery.browse("127.0.0.1", timeout=20.0, name=name, port=master.port)
    assert (found.name, found.port, found.url, found.version) == (name, master.port, master.url, __version__)

    events: list[tuple[Any, str]] = []
    seen = threading.Lock()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        with seen:
            events.append((state_change, name))

    full = f"{name}.{discovery.SERVICE_TYPE}"
    zc = Zeroconf(interfaces=["127.0.0.1"])
    try:
        ServiceBrowser(zc, discovery.SERVICE_TYPE, handlers=[on_change])
        wait_until(lambda: (ServiceStateChange.Added, full) in events, 20, message="the master in the browser")
        assert master.proc is not None
        stop(master.proc)  # SIGTERM: a clean shutdown unregisters (goodbye packets)
        wait_until(lambda: (ServiceStateChange.Removed, full) in events, 10, message="the master's goodbye")
    finally:
        zc.close()


def test_worker_discover_joins_the_master_it_finds(procs: Processes, named_master: tuple[Master, str]) -> None:
    master, name = named_master
    args = ["worker", "--discover", "--discover-interface", "127.0.0.1", "--discover-name", name,
            "--token", master.token, "--name", "found-it", "--slots", "1", "--grace", "1"]
    worker = procs.spawn(args, clean_env(), "worker-found-it")  # no --master, no RVIDIA_MASTER
    with master.client() as api:
        rows = wait_for_workers(api, ["found-it"], timeout=60)
    assert rows["found-it"]["state"] in ("idle", "busy")
    assert worker.poll() is None
    log = (procs.log_dir / "worker-found-it.log").read_text()
    assert f"at {master.url}" in log, log


def test_a_master_with_no_advertise_is_not_found(procs: Processes, tmp_path: Path, loopback_mdns: None) -> None:
    name = unique_name()
    master = Master(procs, tmp_path / "data", extra=["--no-advertise", "--advertise-name", name]).start()
    with pytest.raises(discovery.DiscoveryError):
        discovery.browse("127.0.0.1", timeout=3.0, port=master.port)
    result = run_cli("worker", "--discover", "--discover-interface", "127.0.0.1", "--discover-name", name,
                     "--discover-timeout", "3", "--token", master.token, timeout=60)
    assert_one_line_error(result, 3)
    assert "no RVIDIA master" in result.stderr and name in result.stderr


def test_discover_and_master_together_is_a_usage_error() -> None:
    result = run_cli("worker", "--discover", "--master", "http://127.0.0.1:1", "--token", "t")
    assert_one_line_error(result, 2)
    assert "--discover" in result.stderr and "--master" in result.stderr


def test_a_bad_discover_interface_is_a_usage_error() -> None:
    result = run_cli("worker", "--discover", "--discover-interface", "not-an-address", "--token", "t")
    assert_one_line_error(result, 2)
