"""IPAM: subnet pools, overlap checks and address allocation inside one subnet.

Pure logic on ``ipaddress`` objects; persistence and locking belong to ``store``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pyengine.errors import Conflict, UsageError

IPv4Network = ipaddress.IPv4Network


def parse_subnet(text: str, what: str = "--subnet") -> IPv4Network:
    """``text`` as an IPv4 network, or a UsageError that names the flag."""
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise UsageError(f"invalid {what} {text!r}: {exc}") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise UsageError(f"invalid {what} {text!r}: only IPv4 is supported")
    if network.prefixlen > 30:
        raise UsageError(f"invalid {what} {text!r}: a network needs at least a /30")
    return network


def check_no_overlap(subnet: IPv4Network, taken: dict[str, IPv4Network]) -> None:
    """Refuse ``subnet`` when it overlaps any subnet in ``taken`` (label -> subnet)."""
    for label, other in taken.items():
        if subnet.overlaps(other):
            raise Conflict(f"subnet {subnet} overlaps {other} of {label}; choose another --subnet")


def pick_subnet(pools: Iterable[str], size: int, taken: Iterable[IPv4Network]) -> IPv4Network:
    """The first /``size`` of the pools that overlaps nothing in ``taken``."""
    taken = list(taken)
    for pool_text in pools:
        pool = parse_subnet(pool_text, "subnet-pool entry")
        if size < pool.prefixlen:
            raise UsageError(f"subnet-pool entry {pool} is smaller than a /{size}")
        for candidate in pool.subnets(new_prefix=size):
            if not any(candidate.overlaps(t) for t in taken):
                return candidate
    raise Conflict("every subnet of the subnet pool is in use; add a pool with "
                   "[network.bridge] subnet-pool or pass --subnet")


def default_gateway(subnet: IPv4Network) -> ipaddress.IPv4Address:
    """The gateway Docker would choose: the first host address."""
    return subnet.network_address + 1


def allocate(subnet: IPv4Network, ip_range: IPv4Network | None, used: Iterable[str],
             wanted: str | None = None) -> ipaddress.IPv4Address:
    """A free host address of ``subnet`` (inside ``ip_range`` when given), or ``wanted``.

    ``used`` holds the addresses already taken, the gateway included.
    """
    used_set = {ipaddress.IPv4Address(u) for u in used}
    if wanted is not None:
        try:
            address = ipaddress.IPv4Address(wanted)
        except ValueError as exc:
            raise UsageError(f"invalid --ip {wanted!r}: {exc}") from None
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
            raise UsageError(f"--ip {address} is not a host address of {subnet}")
        if address in used_set:
            raise Conflict(f"address {address} is already in use on this network")
        return address
    for address in (ip_range or subnet).hosts():
        if address in subnet and address not in used_set and address != subnet.broadcast_address:
            return address
    raise Conflict(f"no free address left in {ip_range or subnet}")
