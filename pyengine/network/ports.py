"""Published ports: parsing ``-p [ip:]hostPort:containerPort[/proto]`` and choosing random host
ports for ``-p containerPort``."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import asdict, dataclass
from typing import Any

from pyengine.errors import UsageError


@dataclass
class PortMapping:
    """One published port; ``host_port`` 0 means "pick a free one when the container joins"."""

    container_port: int
    host_port: int = 0
    host_ip: str = ""
    protocol: str = "tcp"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.container_port}/{self.protocol} -> {self.host_ip or '0.0.0.0'}:{self.host_port}"


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"invalid -p {spec!r}: {text!r} is not a port number (1-65535)")
    return int(text)


def parse_publish(spec: str) -> PortMapping:
    """``[ip:][hostPort:]containerPort[/tcp|udp]`` as a PortMapping."""
    body, _, protocol = spec.partition("/")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp"):
        raise UsageError(f"invalid -p {spec!r}: protocol must be tcp or udp")
    parts = body.split(":")
    if len(parts) > 3:
        raise UsageError(f"invalid -p {spec!r}: expected [ip:]hostPort:containerPort[/proto]")
    host_ip = parts[0] if len(parts) == 3 else ""
    if host_ip:
        try:
            ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise UsageError(f"invalid -p {spec!r}: {host_ip!r} is not an IPv4 address") from None
    host_port = _port(parts[-2], spec) if len(parts) >= 2 and parts[-2] else 0
    return PortMapping(_port(parts[-1], spec), host_port, host_ip, protocol)


def free_host_port(protocol: str, host_ip: str = "") -> int:
    """A port the kernel says is free now (the same way ``-p containerPort`` does in Docker)."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host_ip or "0.0.0.0", 0))
        return probe.getsockname()[1]
