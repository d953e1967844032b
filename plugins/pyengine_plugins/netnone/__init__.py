"""The ``none`` network driver: the container gets its own network namespace with only
loopback, up."""

from __future__ import annotations

from typing import Any

from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.drivers.network import Endpoint
from pyengine.errors import DriverNotSupported
from pyengine.plugin import hookimpl


class NoneNetwork:
    """Loopback only."""

    name = "none"

    def __init__(self, ctx: DriverContext) -> None:
        _probe(ctx)

    def create_network(self, network_id: str, options: dict[str, Any]) -> dict[str, Any]:
        return {}

    def delete_network(self, network_id: str, state: dict[str, Any]) -> None:
        pass

    def join(self, network_id: str, container_id: str, netns_path: str | None, *,
             state: dict[str, Any] | None = None, address: str | None = None,
             ports: list[dict[str, Any]] | None = None) -> Endpoint:
        if netns_path is None:
            raise ValueError("the none network needs the container's own network namespace")
        from pyroute2 import NetNS

        with NetNS(netns_path) as ns:
            (index,) = ns.link_lookup(ifname="lo")
            ns.link("set", index=index, state="up")
        return Endpoint(netns_path=netns_path, interfaces={"lo": ["127.0.0.1/8"]})

    def leave(self, endpoint: Endpoint) -> None:
        pass

    def status(self) -> list[tuple[str, str]]:
        return []


def _probe(ctx: DriverContext) -> None:
    import os

    if not os.path.exists("/proc/self/ns/net"):
        raise DriverNotSupported("the kernel has no network namespaces")


@hookimpl
def pyengine_register_network_drivers(register: Register) -> None:
    register(DriverSpec(name="none", factory=NoneNetwork, probe=_probe,
                        description="own network namespace with loopback only"))
