"""Finding the master on the local network with mDNS / DNS-SD (zeroconf), service type ``_rvidia._tcp``.

Why: in a lab, typing the master's address on every machine is the step people get wrong, so
``rvidia master`` advertises itself and ``rvidia worker --discover`` finds it. Three rules:

- The token is never advertised: anyone on the network can read mDNS, so joining still needs it.
  The TXT record says only how to talk to the master (URL scheme, protocol and package version).
- A master advertises only on the interface it binds (127.0.0.1: loopback only; 0.0.0.0: all), so a
  loopback-only master is never announced to the network, where nobody could reach it anyway.
- Advertising never stops the master: zeroconf runs in a thread of its own after the master
  listens, and a failure (no multicast, port 5353 taken, ...) is one warning on stderr.
"""

from __future__ import annotations

import ipaddress
import queue
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rvidia import __version__
from rvidia.protocol.messages import PROTOCOL_VERSION

if TYPE_CHECKING:
    from zeroconf import IPVersion, ServiceInfo, Zeroconf
    from zeroconf._utils.net import InterfacesType

SERVICE_TYPE = "_rvidia._tcp.local."
_WILDCARD_VERSION = {"": 4, "0.0.0.0": 4, "::": 6}  # bind-all addresses -> their IP version


class DiscoveryError(Exception):
    """No usable master was found, or discovery cannot run here; the message is one line."""


def check_name(name: str) -> str:
    """An instance name (``--advertise-name``/``--discover-name``): DNS-SD allows 63 bytes, and a dot
    would be read as a label separator by other tools, so both are refused here, early."""
    name = name.strip()
    if not name or "." in name or len(name.encode()) > 63:
        raise ValueError(f"{name!r} is not a service name: 1 to 63 bytes, no dots")
    return name


def _bind_address(host: str) -> str:
    """The IP address a bind to ``host`` uses (a name is resolved the way the server resolved it)."""
    if host in _WILDCARD_VERSION:
        return host or "0.0.0.0"
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]


def _interfaces(bind: str) -> tuple["InterfacesType", "IPVersion"]:
    """Which interfaces zeroconf joins for a master bound to ``bind``: that one, or all of them."""
    from zeroconf import InterfaceChoice, IPVersion

    if bind in _WILDCARD_VERSION:
        return InterfaceChoice.All, IPVersion.All if _WILDCARD_VERSION[bind] == 6 else IPVersion.V4Only
    return [bind], IPVersion.V6Only if ":" in bind else IPVersion.V4Only


def _local_addresses(v6: bool) -> list[str]:
    """This host's addresses, reachable ones first and loopback last (a worker takes the first it can)."""
    import ifaddr

    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                out.append(ip.ip)
            elif v6 and not ipaddress.ip_address(ip.ip[0]).is_link_local:  # link-local needs a scope id
                out.append(ip.ip[0])
    return sorted(out, key=lambda a: (ipaddress.ip_address(a).is_loopback, ":" in a))


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:63] or "rvidia"


class Advertiser:
    """The master's mDNS advertisement: ``start()`` returns at once, ``stop()`` says goodbye."""

    def __init__(self, host: str, port: int, scheme: str, name: str | None = None) -> None:
        self.host, self.port, self.scheme = host, port, scheme
        self.name = name or f"rvidia on {socket.gethostname().split('.')[0]}:{port}"[:63]
        self._zc: Zeroconf | None = None
        self._stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._register, name="rvidia-mdns", daemon=True)

    def info(self) -> "ServiceInfo":
        """The service record: addresses of the bound interface(s), TXT without any secret."""
        from zeroconf import ServiceInfo

        bind = _bind_address(self.host)
        addresses = _local_addresses(v6=bind == "::") if bind in _WILDCARD_VERSION else [bind]
        # A server host name of its own per master, so two masters on one host never merge addresses.
        server = _label(f"rvidia-{socket.gethostname().split('.')[0]}-{bind}-{self.port}") + ".local."
        return ServiceInfo(SERVICE_TYPE, f"{self.name}.{SERVICE_TYPE}", port=self.port, server=server,
                           properties={"scheme": self.scheme, "proto": str(PROTOCOL_VERSION),
                                       "version": __version__},
                           parsed_addresses=addresses)

    def start(self) -> None:
        self._thread.start()

    def _register(self) -> None:
        from zeroconf import Zeroconf

        zc: Zeroconf | None = None
        try:
            info = self.info()
            interfaces, ip_version = _interfaces(_bind_address(self.host))
            zc = Zeroconf(interfaces=interfaces, ip_version=ip_version)
            zc.register_service(info, allow_name_change=True)  # probes for ~1.5 s: not on the server's loop
        except Exception as exc:  # anything: advertising is a convenience, serving is the job
            print(f"rvidia: warning: not advertising the master by mDNS ({type(exc).__name__}: {exc}); "
                  "workers need --master", file=sys.stderr, flush=True)
            if zc is not None:
                _close_quietly(zc)
            return
        with self._lock:
            if not self._stopped:
                self._zc = zc
                return
        _close_quietly(zc)  # stop() came while we were probing

    def stop(self, timeout: float = 3.0) -> None:
        """Unregister (goodbye packets) and close; bounded, so shutdown never hangs on it."""
        with self._lock:
            self._stopped = True
        if self._thread.is_alive():  # still probing: its end sees _stopped and says goodbye itself
            self._thread.join(timeout)
        with self._lock:
            zc, self._zc = self._zc, None
        if zc is not None:
            closer = threading.Thread(target=_close_quietly, args=(zc,), daemon=True)
            closer.start()
            closer.join(timeout)


def _close_quietly(zc: "Zeroconf") -> None:
    try:
        zc.close()  # unregisters every service first: goodbye packets
    except Exception:
        pass


def advertise(host: str, port: int, scheme: str, name: str | None = None) -> Advertiser:
    """Start advertising a master that listens on ``host:port``; returns at once (never raises)."""
    advertiser = Advertiser(host, port, scheme, name)
    advertiser.start()
    return advertiser


# ---------------------------------------------------------------- the worker's side


@dataclass(frozen=True)
class FoundMaster:
    name: str  # the instance name, e.g. "rvidia on lab-01:8765"
    url: str  # what --master would have been
    port: int
    version: str  # the master's package version


def _url(scheme: str, address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}"


def pick_address(addresses: list[str], interface: str | None) -> str | None:
    """The advertised address a worker should connect to: the one it browsed on when it is that
    (same host), else one on the same network as that interface, else the first that is not
    loopback (a master's own loopback is only reachable from its own host), else loopback."""
    if not addresses:
        return None
    if interface:
        if interface in addresses:
            return interface
        iface = ipaddress.ip_address(interface)
        for network in _networks_of(interface):
            for a in addresses:
                if ipaddress.ip_address(a) in network:
                    return a
        if iface.is_loopback:
            return next((a for a in addresses if ipaddress.ip_address(a).is_loopback), addresses[0])
    return next((a for a in addresses if not ipaddress.ip_address(a).is_loopback), addresses[0])


def _networks_of(address: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    import ifaddr

    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            if text == address:
                nets.append(ipaddress.ip_network(f"{text}/{ip.network_prefix}", strict=False))
    return nets


def _text(props: dict[bytes, bytes | None], key: str) -> str:
    value = props.get(key.encode())
    return value.decode(errors="replace") if value else ""


def browse(interface: str | None = None, timeout: float = 30.0, name: str | None = None,
           port: int | None = None) -> FoundMaster:
    """The first master that answers on ``interface`` (an address of this host; None: all), waiting
    at most ``timeout`` s. ``name``/``port`` keep only that instance or port (several clusters, tests).
    Masters of another protocol version are passed over. Raises DiscoveryError with a one-line reason
    (ValueError for an ``interface`` that is not an IP address)."""
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    if interface is not None:
        try:
            interface = str(ipaddress.ip_address(interface))
        except ValueError:
            raise ValueError(f"--discover-interface must be an IP address of this host, not {interface!r}") from None
    found: queue.Queue[str] = queue.Queue()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            found.put(name)  # resolved below, off zeroconf's own thread

    where = f"on {interface}" if interface else "on any interface"
    try:
        zc = Zeroconf(interfaces=[interface] if interface else _all_interfaces(),
                      ip_version=None if interface else IPVersion.V4Only)
    except Exception as exc:
        raise DiscoveryError(f"cannot browse for masters {where}: {type(exc).__name__}: {exc}") from None
    others: list[str] = []
    try:
        ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                full = found.get(timeout=left)
            except queue.Empty:
                break
            master = _resolve(zc, full, interface, max(0.5, min(3.0, left)))
            if master is None:
                continue
            instance, proto, candidate = master
            if name is not None and instance.lower() != name.lower():
                continue
            if port is not None and candidate.port != port:
                continue
            if proto != str(PROTOCOL_VERSION):
                others.append(f"{instance!r} speaks protocol {proto or '?'}, this worker {PROTOCOL_VERSION}")
                continue
            return candidate
    finally:
        _close_quietly(zc)
    what = f"named {name!r} " if name else ""
    extra = f" ({'; '.join(others)})" if others else ""
    raise DiscoveryError(f"no RVIDIA master {what}answered mDNS ({SERVICE_TYPE}) {where} within {timeout:g} s"
                         f"{extra}; is it running with advertising on, on this network? else use --master URL")


def _all_interfaces() -> "InterfacesType":
    from zeroconf import InterfaceChoice

    return InterfaceChoice.All


def _resolve(zc: "Zeroconf", full: str, interface: str | None,
             timeout: float) -> tuple[str, str, FoundMaster] | None:
    """(instance name, protocol version, the master) for a service name, or None if it does not resolve."""
    info = zc.get_service_info(SERVICE_TYPE, full, timeout=int(timeout * 1000))
    if info is None or not info.port:
        return None
    address = pick_address(info.parsed_addresses(), interface)
    if address is None:
        return None
    props = info.properties
    scheme = _text(props, "scheme") if _text(props, "scheme") in ("http", "https") else "http"
    instance = full[: -len(SERVICE_TYPE) - 1] if full.endswith("." + SERVICE_TYPE) else full
    return instance, _text(props, "proto"), FoundMaster(instance, _url(scheme, address, info.port),
                                                         info.port, _text(props, "version"))
