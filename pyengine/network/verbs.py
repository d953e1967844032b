"""The network verbs the CLI and the daemon share: a reconciled manager, networks in Docker's
inspect shape, listing with Docker's filters, create from Docker's request fields, removal
and prune with dockerd's refusals.

Calls the NetworkManager and, to learn which containers still run, the container engine.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pyengine.errors import Conflict, UsageError
from pyengine.network.manager import PREDEFINED, NetworkManager
from pyengine.network.store import NetworkRecord

#: the filters ``GET /networks`` accepts
LIST_FILTERS = ("driver", "id", "label", "name", "scope", "type", "dangling")


class NetworkRefused(Conflict):
    """dockerd's 403: a predefined network, or one with active endpoints, cannot be removed."""


def reconciled_manager(engine: Any) -> NetworkManager:
    """A NetworkManager after freeing the endpoints of containers whose monitor is gone, so
    addresses, ports and rules never outlive their container."""
    from pyengine.containers.engine import Containers
    from pyengine.errors import NotFound

    manager = NetworkManager(engine)
    containers = Containers(engine)
    # Only the containers that hold an endpoint matter, not every container (each network
    # verb read a thousand records when a thousand containers were created).
    live = []
    for container_id in {cid for record in manager.store.all() for cid in record.endpoints}:
        try:
            record = containers.store.load(container_id, shared=True)
            if record.state.running and not record.state.monitor_alive():
                record = containers.get(container_id)  # its monitor died: reconciled, under its lock
        except NotFound:
            continue
        if record.state.running:
            live.append(container_id)
    manager.reconcile(live)
    return manager


def ensure_predefined(engine: Any, manager: NetworkManager) -> None:
    """``host`` and ``none`` always; ``bridge`` too when it is the engine's default network
    (as dockerd makes docker0 at start), so listing never builds a bridge a host did not want."""
    from pyengine.containers.networking import default_network_mode

    manager.list()
    if default_network_mode(engine) == "bridge":
        manager.default_network()


def inspect(record: NetworkRecord, verbose: bool = True) -> dict[str, Any]:
    """A network as ``GET /networks/{id}`` answers it (Docker's NetworkResource)."""
    containers: dict[str, Any] = {}
    if verbose:
        for cid, entry in record.endpoints.items():
            mac = str(((entry.endpoint or {}).get("data") or {}).get("mac") or "")
            containers[cid] = {"Name": entry.name, "EndpointID": _endpoint_id(record, cid),
                               "MacAddress": mac, "IPv4Address": entry.address or "", "IPv6Address": ""}
    config = [{k: v for k, v in (("Subnet", record.subnet), ("IPRange", record.ip_range),
                                 ("Gateway", record.gateway)) if v}] if record.subnet else []
    return {
        "Name": record.name, "Id": record.id, "Created": record.created, "Scope": "local",
        "Driver": record.driver, "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": config},
        "Internal": record.internal, "Attachable": False, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
        "Containers": containers, "Options": dict(record.options), "Labels": dict(record.labels),
    }


def _endpoint_id(record: NetworkRecord, container_id: str) -> str:
    import hashlib

    return hashlib.sha256(f"{record.id}/{container_id}".encode()).hexdigest()


def list_networks(engine: Any, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """``GET /networks``: every network in Docker's shape, filtered as dockerd filters."""
    filters = filters or {}
    for key in filters:
        if key not in LIST_FILTERS:
            raise UsageError(f"invalid filter '{key}'")
    manager = reconciled_manager(engine)
    ensure_predefined(engine, manager)
    records = manager.list()
    out = []
    for record in records:
        builtin = record.name in PREDEFINED
        if "driver" in filters and record.driver not in filters["driver"]:
            continue
        if "id" in filters and not any(record.id.startswith(v) for v in filters["id"]):
            continue
        if "name" in filters and not any(v in record.name for v in filters["name"]):
            continue
        if "scope" in filters and "local" not in filters["scope"]:
            continue
        if "type" in filters:
            for value in filters["type"]:
                if value not in ("custom", "builtin"):
                    raise UsageError(f"invalid filter: 'type'='{value}'")
            if ("builtin" if builtin else "custom") not in filters["type"]:
                continue
        if "label" in filters:
            from pyengine.images.verbs import labels_match

            if not labels_match(record.labels, filters["label"]):
                continue
        if "dangling" in filters:
            value = filters["dangling"][-1].lower()
            if value not in ("true", "1", "false", "0"):
                raise UsageError(f"invalid filter 'dangling={filters['dangling'][-1]}'")
            dangling = not builtin and not record.endpoints
            if dangling != (value in ("true", "1")):
                continue
        out.append(inspect(record))
    return out


def get_network(engine: Any, name_or_id: str) -> dict[str, Any]:
    from pyengine.errors import NotFound

    manager = reconciled_manager(engine)
    ensure_predefined(engine, manager)
    try:
        return inspect(manager.get(name_or_id))
    except NotFound:
        raise NotFound(f"network {name_or_id} not found") from None


def create_network(engine: Any, name: str, driver: str = "bridge", *, internal: bool = False,
                   ipam_config: list[dict[str, Any]] | None = None, options: dict[str, str] | None = None,
                   labels: dict[str, str] | None = None, enable_ipv6: bool = False) -> NetworkRecord:
    """``POST /networks/create``: Docker's fields onto the manager's create."""
    if not name:
        raise UsageError("network name is required")
    if enable_ipv6:
        raise UsageError("IPv6 networks are not supported by this engine")
    if len(ipam_config or []) > 1:
        raise UsageError("only one IPAM config (one IPv4 subnet) per network is supported")
    pool = (ipam_config or [{}])[0] or {}
    subnet = pool.get("Subnet") or None
    if subnet:
        try:
            if ipaddress.ip_network(subnet, strict=False).version == 6:
                raise UsageError("IPv6 subnets are not supported by this engine")
        except ValueError:
            raise UsageError(f"invalid subnet {subnet!r}") from None
    manager = reconciled_manager(engine)
    if name in PREDEFINED:
        raise NetworkRefused(f"{name} is a pre-defined network and cannot be created")
    existing = manager.store.find(name)
    if existing is not None and existing.name == name:
        raise Conflict(f"network with name {name} already exists")
    return manager.create(name, driver or "bridge", subnet=subnet, gateway=pool.get("Gateway") or None,
                          ip_range=pool.get("IPRange") or None, internal=internal, options=options,
                          labels=labels)


def remove_network(engine: Any, name_or_id: str) -> None:
    """``DELETE /networks/{id}`` with dockerd's refusals."""
    from pyengine.errors import NotFound

    manager = reconciled_manager(engine)
    try:
        record = manager.get(name_or_id)
    except NotFound:
        raise NotFound(f"network {name_or_id} not found") from None
    if record.name in PREDEFINED:
        raise NetworkRefused(f"{record.name} is a pre-defined network and cannot be removed")
    if record.endpoints:
        users = ", ".join(f'(name:"{e.name}" id:"{cid[:12]}")' for cid, e in record.endpoints.items())
        raise NetworkRefused(f"error while removing network: network {record.name} id {record.id} has active "
                             f"endpoints {users}")
    manager.remove(record.id)


def prune_networks(engine: Any, filters: dict[str, list[str]] | None = None) -> list[str]:
    """``POST /networks/prune``: user-defined networks no container uses; their names."""
    from pyengine.images.verbs import labels_match, unix_time

    filters = filters or {}
    for key in filters:
        if key not in ("label", "until"):
            raise UsageError(f"invalid filter '{key}'")
    manager = reconciled_manager(engine)
    until = [int(v) if v.isdigit() else unix_time(v) for v in filters.get("until", [])]
    removed = []
    for record in manager.list():
        if record.name in PREDEFINED or record.endpoints:
            continue
        if not labels_match(record.labels, filters.get("label", [])):
            continue
        if any(unix_time(record.created) >= u for u in until):
            continue
        manager.remove(record.id)
        removed.append(record.name)
    return removed
