"""The ``bridge`` network driver: a Linux bridge per network, a veth pair per container, NAT
and published ports in pyengine's own nftables table (``table ip pyengine``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.plugin import hookimpl


@dataclass
class BridgeOptions:
    """``[network.bridge]``: address pools, MTU and the host-wide policies."""

    #: pools the subnets of new networks come from; 10.199/16 collides with neither Docker's
    #: 172.17-31/16 and 192.168/16 nor Podman's 10.88-89/16 defaults
    subnet_pool: list[str] = field(default_factory=lambda: ["10.199.0.0/16"])
    #: prefix length of each network taken from a pool
    subnet_size: int = 24
    mtu: int = 1500
    #: masquerade outbound traffic of non-internal networks
    ip_masq: bool = True
    #: inter-container communication on one bridge (recorded; enforcing it needs br_netfilter)
    icc: bool = True


def _probe(ctx: DriverContext) -> None:
    from pyengine_plugins.bridge.driver import probe

    probe(ctx)


def _factory(ctx: DriverContext):  # noqa: ANN202 - the driver class is imported lazily
    from pyengine_plugins.bridge.driver import BridgeNetwork

    return BridgeNetwork(ctx)


@hookimpl
def pyengine_register_network_drivers(register: Register) -> None:
    register(DriverSpec(name="bridge", factory=_factory, probe=_probe, options=BridgeOptions,
                        extra={"ipam": True},
                        description="Linux bridge + veth per container, NAT and published ports"))
