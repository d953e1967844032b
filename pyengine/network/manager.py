"""Network create/ls/inspect/rm/prune, container connect/disconnect with IPAM, reconcile after a
crash, and the hosts files kept current; the one place the CLI and the container engine go
through for networks. Calls drivers only through the NetworkDriver protocol."""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pyengine.drivers.network import Endpoint
from pyengine.errors import Conflict, NotFound, PyEngineError, UsageError
from pyengine.log import get_logger
from pyengine.network import hosts, ipam
from pyengine.network.ports import PortMapping, free_host_port
from pyengine.network.store import EndpointRecord, NetworkRecord, NetworkStore

log = get_logger("pyengine.network")

#: networks every engine has; they cannot be removed or pruned
PREDEFINED = ("bridge", "host", "none")
#: the Linux bridge of the default ``bridge`` network
DEFAULT_BRIDGE = "pyengine0"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_PEERS_MARKER = "# pyengine: containers on shared networks\n"


class NetworkManager:
    """Networks of one engine (one data root)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.store = NetworkStore(engine.config.data_root)
        self._drivers: dict[str, Any] = {}

    # -- drivers ---------------------------------------------------------------------------
    def driver_spec(self, name: str) -> Any:
        """The spec of network driver ``name``; unknown names are refused with one line."""
        return self.engine.plugins.find_spec("network", name, "--driver")

    def driver(self, name: str) -> Any:
        """The started network driver ``name``."""
        if name not in self._drivers:
            spec = self.driver_spec(name)
            state = self.engine.probe(spec)
            if state.state != "ok":
                raise UsageError(f"network driver {name!r} cannot run on this host: {state.reason}")
            self._drivers[name] = spec.factory(self.engine.context(spec))
        return self._drivers[name]

    def _uses_ipam(self, driver_name: str) -> bool:
        return bool(self.driver_spec(driver_name).extra.get("ipam"))

    # -- networks --------------------------------------------------------------------------
    def create(self, name: str, driver: str = "bridge", *, subnet: str | None = None,
               gateway: str | None = None, ip_range: str | None = None, internal: bool = False,
               options: dict[str, str] | None = None, labels: dict[str, str] | None = None,
               _predefined: bool = False) -> NetworkRecord:
        """Create network ``name``: validate, pick a subnet, let the driver make it, persist it."""
        if not _NAME.match(name):
            raise UsageError(f"invalid network name {name!r}: use letters, digits, '_', '.', '-'")
        if name in PREDEFINED and not _predefined:
            raise Conflict(f"network name {name!r} is reserved for the predefined network")
        started = time.monotonic()
        spec = self.driver_spec(driver)
        with self.store.locked():
            if (existing := self.store.find(name)) is not None and existing.name == name:
                raise Conflict(f"network {name!r} already exists")
            record = NetworkRecord(id=secrets.token_hex(32), name=name, driver=driver,
                                   created=datetime.now(UTC).isoformat(),
                                   internal=internal, options=dict(options or {}),
                                   labels=dict(labels or {}))
            if spec.extra.get("ipam"):
                self._assign_subnet(record, subnet, gateway, ip_range, self.driver(driver))
            elif subnet or gateway or ip_range:
                raise UsageError(f"network driver {driver!r} takes no --subnet, --gateway or --ip-range")
            driver_options = {"name": name, "subnet": record.subnet, "gateway": record.gateway,
                              "internal": internal, "options": record.options,
                              "bridge": DEFAULT_BRIDGE if name == "bridge" else None}
            record.state = self.driver(driver).create_network(record.id, driver_options)
            self.store.save(record)
        log.info("network.created", network=name, id=record.id[:12], driver=driver,
                 subnet=record.subnet, ms=round((time.monotonic() - started) * 1000, 1))
        self._record_event("create", record)
        return record

    def _assign_subnet(self, record: NetworkRecord, subnet: str | None, gateway: str | None,
                       ip_range: str | None, driver: Any) -> None:
        taken = {f"network {r.name!r}": ipaddress.IPv4Network(r.subnet)
                 for r in self.store.all() if r.subnet}
        host_routes: list[ipaddress.IPv4Network] = getattr(driver, "host_subnets", lambda: [])()
        for route in host_routes:
            taken.setdefault(f"a route of this host ({route})", route)
        if subnet:
            network = ipam.parse_subnet(subnet)
            ipam.check_no_overlap(network, taken)
        else:
            pools, size = driver.subnet_pool()
            network = ipam.pick_subnet(pools, size, taken.values())
        if gateway:
            try:
                gw = ipaddress.IPv4Address(gateway)
            except ValueError:
                raise UsageError(f"invalid --gateway {gateway!r}") from None
            if gw not in network or gw in (network.network_address, network.broadcast_address):
                raise UsageError(f"--gateway {gw} is not a host address of {network}")
        else:
            gw = ipam.default_gateway(network)
        if ip_range:
            span = ipam.parse_subnet(ip_range, "--ip-range")
            if not span.subnet_of(network):
                raise UsageError(f"--ip-range {span} is not inside --subnet {network}")
            record.ip_range = str(span)
        record.subnet, record.gateway = str(network), str(gw)

    def list(self) -> list[NetworkRecord]:
        """Every network; the ``host`` and ``none`` networks are recorded on first listing."""
        self._ensure_pseudo()
        return self.store.all()

    def _ensure_pseudo(self) -> None:
        for name in ("host", "none"):
            if self.store.find(name) is None:
                with contextlib.suppress(Conflict, PyEngineError):
                    self.create(name, name, _predefined=True)

    def get(self, name_or_id: str) -> NetworkRecord:
        if name_or_id in ("host", "none"):
            self._ensure_pseudo()
        return self.store.get(name_or_id)

    def default_network(self) -> NetworkRecord:
        """The ``bridge`` network (bridge ``pyengine0``), created on first use."""
        record = self.store.find("bridge")
        if record is not None and record.name == "bridge":
            return record
        with contextlib.suppress(Conflict):
            return self.create("bridge", "bridge", _predefined=True)
        return self.store.get("bridge")

    def remove(self, name_or_id: str) -> NetworkRecord:
        """Remove a network and its host-side resources; refused while containers use it."""
        with self.store.locked():
            record = self.store.get(name_or_id)
            if record.name in ("host", "none"):
                raise Conflict(f"network {record.name!r} is predefined and cannot be removed")
            if record.endpoints:
                users = ", ".join(e.name for e in record.endpoints.values())
                raise Conflict(f"network {record.name!r} is in use by {len(record.endpoints)} "
                               f"container(s) ({users}); disconnect or remove them first")
            self.driver(record.driver).delete_network(record.id, record.state)
            self.store.delete(record)
        log.info("network.removed", network=record.name, id=record.id[:12])
        self._record_event("destroy", record)
        return record

    def prune(self) -> builtins.list[NetworkRecord]:
        """Remove every user-defined network no container uses."""
        removed = []
        for record in self.store.all():
            if record.name in PREDEFINED or record.endpoints:
                continue
            with contextlib.suppress(Conflict, NotFound):
                removed.append(self.remove(record.id))
        return removed

    # -- containers ------------------------------------------------------------------------
    def connect(self, network: str, container_id: str, netns_path: str | None, *,
                name: str | None = None, aliases: Iterable[str] = (), ip: str | None = None,
                ports: Iterable[PortMapping] = (), hosts_path: str | None = None) -> Endpoint:
        """Attach a container's network namespace to ``network``; returns the driver's Endpoint.

        The address is reserved under the store lock and the driver works outside it, so
        concurrent starts proceed in parallel and never share an address.
        :param hosts_path: the container's hosts file on the host; rewritten as peers come and go
        """
        started = time.monotonic()
        record = self.default_network() if network == "bridge" else self.get(network)
        mappings = [PortMapping(**asdict(p)) for p in ports]
        with self.store.locked():
            record = self.store.get(record.id)
            if container_id in record.endpoints:
                raise Conflict(f"container {name or container_id[:12]} is already on network {record.name!r}")
            address = None
            if record.subnet:
                subnet = ipaddress.IPv4Network(record.subnet)
                span = ipaddress.IPv4Network(record.ip_range) if record.ip_range else None
                chosen = ipam.allocate(subnet, span, record.used_addresses(), ip)
                address = f"{chosen}/{subnet.prefixlen}"
            elif ip:
                raise UsageError(f"--ip needs a network with a subnet; {record.name!r} has none")
            taken = {(p["host_port"], p["protocol"]) for r in self.store.all()
                     for e in r.endpoints.values() for p in e.ports}
            for mapping in mappings:
                if mapping.host_port == 0:
                    mapping.host_port = free_host_port(mapping.protocol, mapping.host_ip)
                if (mapping.host_port, mapping.protocol) in taken:
                    raise Conflict(f"host port {mapping.host_port}/{mapping.protocol} is already published")
                taken.add((mapping.host_port, mapping.protocol))
            record.endpoints[container_id] = EndpointRecord(
                container_id=container_id, name=name or container_id[:12], aliases=list(aliases),
                address=address, ports=[m.as_dict() for m in mappings], hosts_path=hosts_path)
            self.store.save(record)
        try:
            endpoint = self.driver(record.driver).join(
                record.id, container_id, netns_path, state=record.state, address=address,
                ports=[m.as_dict() for m in mappings])
        except BaseException:
            with self.store.locked():
                fresh = self.store.get(record.id)
                fresh.endpoints.pop(container_id, None)
                self.store.save(fresh)
            raise
        with self.store.locked():
            fresh = self.store.get(record.id)
            entry = fresh.endpoints[container_id]
            entry.state, entry.endpoint = "joined", asdict(endpoint)
            self.store.save(fresh)
        self.refresh_hosts(fresh)
        log.info("network.connected", network=record.name, container=container_id[:12],
                 address=address, ms=round((time.monotonic() - started) * 1000, 1))
        self._record_event("connect", record, container_id)
        return endpoint

    def disconnect(self, network: str, container_id: str) -> None:
        """Detach a container: the driver removes its links and rules, IPAM frees its address."""
        record = self.get(network)
        entry = record.endpoints.get(container_id)
        if entry is None:
            raise NotFound(f"container {container_id[:12]} is not on network {record.name!r}")
        if entry.endpoint:
            self.driver(record.driver).leave(Endpoint(**entry.endpoint))
        with self.store.locked():
            fresh = self.store.get(record.id)
            fresh.endpoints.pop(container_id, None)
            self.store.save(fresh)
        self.refresh_hosts(fresh)
        log.info("network.disconnected", network=record.name, container=container_id[:12])
        self._record_event("disconnect", record, container_id)

    def _record_event(self, action: str, record: NetworkRecord, container_id: str | None = None) -> None:
        """A network event in the engine's journal, with dockerd's attributes."""
        from pyengine import events

        events.record(self.engine.config.run_root, "network", action, record.id,
                      {"container": container_id, "name": record.name, "type": record.driver})

    def disconnect_all(self, container_id: str) -> None:
        """Detach a container from every network it is on (called when it ends)."""
        for record in self.store.all():
            if container_id in record.endpoints:
                self.disconnect(record.id, container_id)

    def networks_of(self, container_id: str) -> builtins.list[NetworkRecord]:
        return [r for r in self.store.all() if container_id in r.endpoints]

    def reconcile(self, live_container_ids: Iterable[str]) -> builtins.list[tuple[str, str]]:
        """Free every endpoint whose container is gone (its monitor died); returns
        (network name, container id) of each freed endpoint."""
        live = set(live_container_ids)
        freed = []
        for record in self.store.all():
            for container_id, entry in list(record.endpoints.items()):
                if container_id in live:
                    continue
                if entry.endpoint:
                    try:
                        self.driver(record.driver).leave(Endpoint(**entry.endpoint))
                    except Exception as exc:  # the namespace may be long gone; free anyway
                        log.warning("network.reconcile_leave_failed", network=record.name,
                                    container=container_id[:12], reason=str(exc))
                with self.store.locked():
                    fresh = self.store.get(record.id)
                    fresh.endpoints.pop(container_id, None)
                    self.store.save(fresh)
                freed.append((record.name, container_id))
        if freed:
            log.info("network.reconciled", freed=len(freed))
            for record in self.store.all():
                self.refresh_hosts(record)
        return freed

    # -- /etc/hosts and /etc/resolv.conf ---------------------------------------------------
    def _names(self, record: NetworkRecord, container_id: str, hostname: str | None = None) -> builtins.list[str]:
        entry = record.endpoints[container_id]
        names = [n for n in (hostname, entry.name, *entry.aliases, container_id[:12]) if n]
        return list(dict.fromkeys(names))

    def hosts_content(self, container_id: str, hostname: str | None = None,
                      extra_hosts: Iterable[tuple[str, str]] = ()) -> str:
        """The /etc/hosts of a container: its own addresses and, on user-defined networks, every
        peer by name, alias and short id (the default ``bridge`` network resolves no peers, as
        in Docker)."""
        own, peers = [], []
        for record in self.networks_of(container_id):
            entry = record.endpoints[container_id]
            if entry.address:
                own.append((entry.address.split("/")[0], self._names(record, container_id, hostname)))
            if record.name == "bridge":
                continue
            for peer_id, peer in record.endpoints.items():
                if peer_id != container_id and peer.address:
                    peers.append((peer.address.split("/")[0], self._names(record, peer_id)))
        head = hosts.hosts_content(own, [], extra_hosts)
        return head + _PEERS_MARKER + hosts.hosts_content([], peers).split("\n", 2)[2]

    def resolv_conf_content(self, dns: Iterable[str] = (), search: Iterable[str] = (),
                            options: Iterable[str] = ()) -> str:
        """The /etc/resolv.conf of a container (``--dns``, ``--dns-search``, ``--dns-option``)."""
        return hosts.resolv_conf_content(dns, search, options)

    def refresh_hosts(self, record: NetworkRecord) -> None:
        """Rewrite the peers part of every joined container's hosts file on ``record``.

        Written in place, not renamed over: the file is bind-mounted into the container, and a
        rename would leave the container looking at the old inode.
        """
        for container_id, entry in record.endpoints.items():
            if not entry.hosts_path or not os.path.exists(entry.hosts_path):
                continue
            fresh = self.hosts_content(container_id)
            peers = fresh.split(_PEERS_MARKER, 1)[1]
            try:
                with open(entry.hosts_path, "r+") as f:
                    head = f.read().split(_PEERS_MARKER, 1)[0]
                    f.seek(0)
                    f.write(head + _PEERS_MARKER + peers)
                    f.truncate()
            except OSError as exc:
                log.warning("network.hosts_refresh_failed", container=container_id[:12], reason=str(exc))
