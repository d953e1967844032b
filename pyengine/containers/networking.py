"""Containers on networks: which network a container gets, joining its networks when it starts,
leaving them when it ends, and what ``inspect`` and ``port`` show of them.

A container's network namespace is made by the launcher (the child unshares it); the network
drivers then work on ``/proc/<pid>/ns/net`` before the process is let go, so eth0, its address
and its routes exist when the container's command starts. The namespace dies with the
container's last process, which takes its end of every veth pair with it; ``leave`` then only
removes what lives on the host (nftables rules, the network store's endpoint).

``HostConfig.NetworkMode`` is ``none``, ``host``, ``container:<id>``, ``bridge`` (the default
network) or a network's name; the networks joined at start are ``ContainerRecord.networks``
(name -> {"Aliases": [...], "IPAddress": "..."}), Docker's EndpointsConfig.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyengine.errors import NotFound, UsageError
from pyengine.log import get_logger

if TYPE_CHECKING:
    from pyengine.containers.engine import Containers
    from pyengine.containers.store import ContainerRecord
    from pyengine.network.ports import PortMapping

log = get_logger("pyengine.containers.network")

#: network modes that join no network of the store
SPECIAL_MODES = ("none", "host")


def joins_networks(network_mode: str) -> bool:
    """Whether a container in ``network_mode`` joins networks of the store (bridge or a name)."""
    return network_mode not in SPECIAL_MODES and not network_mode.startswith("container:")


def default_network_mode(engine: Any) -> str:
    """``PYENGINE_NETWORK_DEFAULT``, else ``[network] default``, else ``bridge`` when the host
    can run the bridge driver, else ``none``."""
    value = os.environ.get("PYENGINE_NETWORK_DEFAULT")
    if value:
        return value
    table = engine.config.tables.get("network") or {}
    if table.get("default"):
        return str(table["default"])
    try:
        spec = engine.plugins.find_spec("network", "bridge", "--network")
    except Exception:
        return "none"
    return "bridge" if engine.probe(spec).state == "ok" else "none"


def resolve_network_config(engine: Any, host_config: dict[str, Any], config: dict[str, Any],
                           endpoint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Check the network flags of a new container and fill in the defaults, in place; returns
    the networks it joins at start. Unknown networks and flags that need a network are refused.

    :param endpoint: ``{"Aliases": [...], "IPAddress": ...}`` for the container's first network
    """
    from pyengine.network.manager import NetworkManager

    mode = host_config.get("NetworkMode") or default_network_mode(engine)
    if mode == "default":
        mode = default_network_mode(engine)
    host_config["NetworkMode"] = mode
    wants_network = endpoint.get("IPAddress") or endpoint.get("Aliases")
    if mode.startswith("container:"):
        if not mode.split(":", 1)[1]:
            raise UsageError("--network container: needs a container name or ID")
        if host_config.get("PortBindings") or host_config.get("PublishAllPorts") or wants_network:
            raise UsageError("-p, -P, --ip and --network-alias cannot be used with --network container:")
        return {}
    if mode in SPECIAL_MODES:
        if wants_network:
            raise UsageError(f"--ip and --network-alias need a bridge network, not --network {mode}")
        if host_config.get("PortBindings") or host_config.get("PublishAllPorts"):
            # As Docker: the ports are discarded, with a warning.
            log.warning("container.ports_discarded", network=mode,
                        reason=f"published ports are discarded with --network {mode}")
            host_config["PortBindings"], host_config["PublishAllPorts"] = {}, False
        return {}
    manager = NetworkManager(engine)
    record = manager.default_network() if mode == "bridge" else manager.get(mode)
    if record.driver in SPECIAL_MODES:
        host_config["NetworkMode"] = record.driver
        return resolve_network_config(engine, host_config, config, endpoint)
    if endpoint.get("IPAddress") and not record.subnet:
        raise UsageError(f"--ip needs a network with a subnet; {record.name!r} has none")
    if (endpoint.get("Aliases") or endpoint.get("IPAddress")) and record.name == "bridge":
        raise UsageError("--ip and --network-alias work on user-defined networks only (as in Docker)")
    publish_mappings(host_config, config)  # refuses bad -p before anything is created
    return {record.name: {"Aliases": list(endpoint.get("Aliases") or []),
                          "IPAddress": endpoint.get("IPAddress") or ""}}


def publish_mappings(host_config: dict[str, Any], config: dict[str, Any]) -> list[PortMapping]:
    """The ports to publish: ``PortBindings`` (Docker's shape) and, with ``PublishAllPorts``,
    every exposed port not bound otherwise, on a random host port."""
    from pyengine.network.ports import PortMapping

    mappings: list[PortMapping] = []
    bound: set[str] = set()
    for key, bindings in (host_config.get("PortBindings") or {}).items():
        port, _, protocol = key.partition("/")
        if not port.isdigit() or protocol not in ("", "tcp", "udp"):
            raise UsageError(f"invalid published port {key!r}")
        bound.add(f"{port}/{protocol or 'tcp'}")
        for binding in bindings or [{}]:
            host_port = str(binding.get("HostPort") or "0")
            if not host_port.isdigit():
                raise UsageError(f"invalid host port {host_port!r} for {key}")
            mappings.append(PortMapping(int(port), int(host_port), binding.get("HostIp") or "",
                                        protocol or "tcp"))
    if host_config.get("PublishAllPorts"):
        for key in config.get("ExposedPorts") or {}:
            port, _, protocol = key.partition("/")
            if f"{port}/{protocol or 'tcp'}" not in bound and port.isdigit():
                mappings.append(PortMapping(int(port), 0, "", protocol or "tcp"))
    return mappings


class NetworkAttachment:
    """The launcher's hook for networks: an isolator that joins the container's networks once
    its namespaces exist (``enter``) and leaves them when it ends (``release``)."""

    name = "network"

    def __init__(self, containers: Containers, record: ContainerRecord, container_dir: Path) -> None:
        self.containers = containers
        self.record = record
        self.container_dir = container_dir

    def prepare(self, container_id: str, spec: dict[str, Any]) -> None:
        return None

    def enter(self, container_id: str, spec: dict[str, Any], pid: int) -> None:
        from pyengine.network.manager import NetworkManager

        manager = NetworkManager(self.containers.engine)
        record = self.record
        netns = f"/proc/{pid}/ns/net"
        hosts_path = self.container_dir / "hosts"
        ports = publish_mappings(record.host_config, record.config)
        # Ports are published on the first network, as Docker publishes them on the bridge.
        for index, (network, endpoint) in enumerate(record.networks.items()):
            manager.connect(network, container_id, netns, name=record.name,
                            aliases=endpoint.get("Aliases") or [], ip=endpoint.get("IPAddress") or None,
                            ports=ports if index == 0 else (), hosts_path=str(hosts_path))
        write_etc_files(manager, record, self.container_dir, spec.get("hostname"))

    def release(self, container_id: str) -> None:
        leave_networks(self.containers, container_id)


def write_etc_files(manager: Any, record: ContainerRecord, container_dir: Path, hostname: str | None) -> None:
    """The container's /etc/hosts (its addresses, its peers, --add-host) and resolv.conf,
    written in place: both are bind-mounted into the container."""
    extra = []
    for entry in record.host_config.get("ExtraHosts") or []:
        name, _, address = entry.partition(":")
        extra.append((name, address))
    host = record.host_config
    files = {"hosts": manager.hosts_content(record.id, hostname, extra),
             "resolv.conf": manager.resolv_conf_content(host.get("Dns") or [], host.get("DnsSearch") or [],
                                                        host.get("DnsOptions") or [])}
    for name, text in files.items():
        with open(container_dir / name, "a+") as f:
            f.seek(0)
            f.truncate()
            f.write(text)


def leave_networks(containers: Containers, container_id: str) -> None:
    """Leave every network the container is on (its end; idempotent)."""
    from pyengine.network.manager import NetworkManager

    NetworkManager(containers.engine).disconnect_all(container_id)


def connect(containers: Containers, network: str, ref: str, aliases: list[str], ip: str | None) -> None:
    """``network connect``: join a running container now, and at every later start."""
    from pyengine.network.manager import NetworkManager

    manager = NetworkManager(containers.engine)
    net = manager.get(network)
    container_id = containers.store.resolve(ref)
    with containers.store.container_lock(container_id):
        record = containers.reconcile(containers.store.load(container_id))
        mode = record.host_config.get("NetworkMode") or "none"
        if not joins_networks(mode):
            raise UsageError(f"container {record.name} uses --network {mode}; it joins no other network")
        if net.driver in SPECIAL_MODES:
            raise UsageError(f"network {net.name!r} cannot be joined with network connect; use run --network")
        if net.name in record.networks:
            raise UsageError(f"container {record.name} is already on network {net.name!r}")
        if record.state.running:
            manager.connect(net.name, container_id, f"/proc/{record.state.pid}/ns/net", name=record.name,
                            aliases=aliases, ip=ip, hosts_path=str(containers.store.dir(container_id) / "hosts"))
            write_etc_files(manager, record, containers.store.dir(container_id),
                            record.config.get("Hostname") or record.id[:12])
        record.networks[net.name] = {"Aliases": list(aliases), "IPAddress": ip or ""}
        containers.store.save_config(record)


def disconnect(containers: Containers, network: str, ref: str) -> None:
    """``network disconnect``: leave now if running, and no longer join at start."""
    from pyengine.network.manager import NetworkManager

    manager = NetworkManager(containers.engine)
    net = manager.get(network)
    container_id = containers.store.resolve(ref)
    with containers.store.container_lock(container_id):
        record = containers.reconcile(containers.store.load(container_id))
        if net.name not in record.networks and container_id not in net.endpoints:
            raise NotFound(f"container {record.name} is not on network {net.name!r}")
        if container_id in net.endpoints:
            manager.disconnect(net.id, container_id)
            if record.state.running:
                write_etc_files(manager, record, containers.store.dir(container_id),
                                record.config.get("Hostname") or record.id[:12])
        record.networks.pop(net.name, None)
        containers.store.save_config(record)


def network_settings(manager: Any, record: ContainerRecord) -> dict[str, Any]:
    """``NetworkSettings`` of ``inspect``: each network's address and gateway, and the ports."""
    networks: dict[str, Any] = {}
    ports: dict[str, Any] = {}
    joined = manager.networks_of(record.id) if manager is not None else []
    for net in joined:
        entry = net.endpoints[record.id]
        address, _, prefix = (entry.address or "").partition("/")
        networks[net.name] = {"NetworkID": net.id, "EndpointID": "", "Gateway": net.gateway or "",
                              "IPAddress": address, "IPPrefixLen": int(prefix) if prefix else 0,
                              "Aliases": list(entry.aliases), "DNSNames": [record.name, *entry.aliases]}
        for port in entry.ports:
            ports.setdefault(f"{port['container_port']}/{port['protocol']}", []).append(
                {"HostIp": port["host_ip"] or "0.0.0.0", "HostPort": str(port["host_port"])})
    for name, configured in record.networks.items():
        # a network the container joins at its start, not joined now: dockerd lists it, with
        # no address (Compose reads this to know a created container is on its network)
        if name in networks or manager is None:
            continue
        try:
            net_id = manager.get(name).id
        except NotFound:
            continue
        aliases = list(configured.get("Aliases") or [])
        networks[name] = {"NetworkID": net_id, "EndpointID": "", "Gateway": "", "IPAddress": "",
                          "IPPrefixLen": 0, "Aliases": aliases, "DNSNames": None}
    for key in record.config.get("ExposedPorts") or {}:
        ports.setdefault(key if "/" in key else f"{key}/tcp", None)
    first: dict[str, Any] = next(iter(networks.values()), {})
    return {"Networks": networks, "Ports": ports, "IPAddress": first.get("IPAddress", ""),
            "IPPrefixLen": first.get("IPPrefixLen", 0), "Gateway": first.get("Gateway", ""),
            "SandboxKey": f"/proc/{record.state.pid}/ns/net" if record.state.running else ""}


def port_lines(manager: Any, record: ContainerRecord, private: str | None = None) -> list[str]:
    """``pyengine port``: ``8080/tcp -> 0.0.0.0:18080`` for each published port."""
    lines = []
    for net in manager.networks_of(record.id):
        for port in net.endpoints[record.id].ports:
            key = f"{port['container_port']}/{port['protocol']}"
            if private and private not in (key, str(port["container_port"])):
                continue
            lines.append(f"{key} -> {port['host_ip'] or '0.0.0.0'}:{port['host_port']}")
    return lines
