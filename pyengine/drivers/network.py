"""The network driver protocol: networks, and the endpoint a container joins them through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Endpoint:
    """A container's attachment to a network, as the driver made it.

    :param netns_path: the network namespace the container must join; None means the
        host's own namespace (the ``host`` driver)
    :param interfaces: name -> list of CIDR addresses inside the container
    :param gateway: the default gateway, if any
    :param data: driver-private data the driver needs to undo the join
    """

    netns_path: str | None
    interfaces: dict[str, list[str]] = field(default_factory=dict)
    gateway: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class NetworkDriver(Protocol):
    """What every network driver implements."""

    name: str

    def create_network(self, network_id: str, options: dict[str, Any]) -> dict[str, Any]:
        """Create the network's host-side resources; return what must be persisted about it."""

    def delete_network(self, network_id: str, state: dict[str, Any]) -> None:
        """Remove everything ``create_network`` made."""

    def join(self, network_id: str, container_id: str, netns_path: str | None, *,
             state: dict[str, Any] | None = None, address: str | None = None,
             ports: list[dict[str, Any]] | None = None) -> Endpoint:
        """Attach the container's network namespace (made by the isolator) to the network.

        :param state: what ``create_network`` returned for this network (drivers keep no
            per-network memory of their own that the core must know about)
        :param address: the container's address as CIDR, chosen by the core's IPAM; None for
            drivers without subnets
        :param ports: published ports, dicts of container_port, host_port, host_ip, protocol
        """

    def leave(self, endpoint: Endpoint) -> None:
        """Undo ``join``: remove the container's links, addresses and rules."""

    def status(self) -> list[tuple[str, str]]:
        """Key/value pairs that describe the driver's state, for ``info``."""
