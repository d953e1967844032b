"""The ``host`` network driver: the container shares the host's network namespace."""

from __future__ import annotations

from typing import Any

from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.drivers.network import Endpoint
from pyengine.plugin import hookimpl


class HostNetwork:
    """No namespace of its own: the container sees and uses the host's interfaces."""

    name = "host"

    def __init__(self, ctx: DriverContext) -> None:
        pass

    def create_network(self, network_id: str, options: dict[str, Any]) -> dict[str, Any]:
        return {}

    def delete_network(self, network_id: str, state: dict[str, Any]) -> None:
        pass

    def join(self, network_id: str, container_id: str, netns_path: str | None, *,
             state: dict[str, Any] | None = None, address: str | None = None,
             ports: list[dict[str, Any]] | None = None) -> Endpoint:
        return Endpoint(netns_path=None)

    def leave(self, endpoint: Endpoint) -> None:
        pass

    def status(self) -> list[tuple[str, str]]:
        return []


@hookimpl
def pyengine_register_network_drivers(register: Register) -> None:
    register(DriverSpec(name="host", factory=HostNetwork,
                        description="the host's own network namespace"))
