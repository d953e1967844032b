"""The bridge driver's work: bridges, veth pairs, addresses and routes through pyroute2 (imported
here, never at plugin registration), and the state files its nftables table is rendered from
(<state-dir>/networks/<network>.json, <state-dir>/endpoints/<network>-<container>.json)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyengine.drivers import DriverContext
from pyengine.drivers.network import Endpoint
from pyengine.errors import Conflict, DriverError, DriverNotSupported
from pyengine.fsutil import flocked, write_json_atomic
from pyengine.log import get_logger
from pyengine_plugins.bridge import nft

log = get_logger("pyengine.network.bridge")

BRIDGE_PREFIX = "pyengine"


def probe(ctx: DriverContext) -> None:
    """The host can run bridges: root, netlink, and the nft tool for NAT and ports."""
    if os.geteuid() != 0:
        raise DriverNotSupported("creating bridges and veth pairs needs root")
    if not os.path.isdir("/sys/class/net"):
        raise DriverNotSupported("no /sys/class/net: sysfs is not mounted")
    if shutil.which("nft") is None:
        raise DriverNotSupported("the nft tool is missing (apt-get install nftables)")
    try:
        import pyroute2  # noqa: F401
    except ImportError as exc:
        raise DriverNotSupported(f"pyroute2 is not installed: {exc}") from None


def _sysctl(path: str, value: str) -> None:
    with open(f"/proc/sys/{path}", "w") as f:
        f.write(value)


def _reason(exc: Exception) -> str:
    """A netlink error as words: NetlinkError(17, 'File exists') -> 'File exists'."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    return str(args[1]) if len(args) > 1 else str(exc)


def mac_for(address: ipaddress.IPv4Address) -> str:
    """A locally administered unicast MAC made from an IPv4 address: 02:42:a.b.c.d."""
    return "02:42:" + ":".join(f"{b:02x}" for b in address.packed)


class BridgeNetwork:
    """One Linux bridge per network in the engine's own network namespace."""

    name = "bridge"

    def __init__(self, ctx: DriverContext) -> None:
        probe(ctx)
        self.options = ctx.options
        self.state_dir = Path(ctx.state_dir)

    # -- state files and the nftables table ------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with flocked(self.state_dir / ".lock"):
            yield

    def _write(self, kind: str, key: str, payload: dict[str, Any] | None) -> None:
        path = self.state_dir / kind / f"{key}.json"
        if payload is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        write_json_atomic(path, payload, indent=None)

    def _read_all(self, kind: str) -> list[dict[str, Any]]:
        directory = self.state_dir / kind
        if not directory.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]

    def _update(self, kind: str, key: str, payload: dict[str, Any] | None, sync: bool = True) -> None:
        """Change one state file and re-render the table from all of them, under one lock."""
        with self._locked():
            self._write(kind, key, payload)
            if sync:
                nft.apply(nft.render(self._read_all("networks"), self._read_all("endpoints")))

    # -- the protocol ------------------------------------------------------------------------
    def subnet_pool(self) -> tuple[list[str], int]:
        """The pools and prefix length new networks take their subnets from."""
        return list(self.options.subnet_pool), int(self.options.subnet_size)

    def host_subnets(self) -> list[ipaddress.IPv4Network]:
        """Subnets this namespace already routes, except through pyengine's bridges."""
        from pyroute2 import IPRoute

        found = []
        with IPRoute() as ipr:
            names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
            for route in ipr.get_routes(family=2, table=254):
                if route["dst_len"] == 0 or not route.get("dst"):
                    continue
                if str(names.get(route.get("oif"), "")).startswith(BRIDGE_PREFIX):
                    continue
                found.append(ipaddress.IPv4Network(f"{route.get('dst')}/{route['dst_len']}", strict=False))
        return found

    def create_network(self, network_id: str, options: dict[str, Any]) -> dict[str, Any]:
        from pyroute2 import IPRoute

        user_opts = options.get("options") or {}
        bridge = (options.get("bridge") or user_opts.get("com.docker.network.bridge.name")
                  or f"{BRIDGE_PREFIX}-{network_id[:6]}")
        if len(bridge) > 15:
            raise Conflict(f"bridge name {bridge!r} is longer than the kernel's 15 characters")
        subnet = ipaddress.IPv4Network(options["subnet"])
        mtu = int(user_opts.get("com.docker.network.driver.mtu", self.options.mtu))
        internal = bool(options.get("internal"))
        with IPRoute() as ipr:
            existing = ipr.link_lookup(ifname=bridge)
            if existing and not bridge.startswith(BRIDGE_PREFIX):
                raise Conflict(f"interface {bridge!r} already exists on this host")
            if not existing:
                ipr.link("add", ifname=bridge, kind="bridge")
            (index,) = ipr.link_lookup(ifname=bridge)
            ipr.link("set", index=index, mtu=mtu)
            with contextlib.suppress(Exception):  # already there after a crash
                ipr.addr("add", index=index, address=options["gateway"], prefixlen=subnet.prefixlen)
            ipr.link("set", index=index, state="up")
        # 127.0.0.1:PORT reaches published ports: the kernel must route loopback-sourced packets
        # out of the bridge (they are masqueraded on the way, see nft.render)
        _sysctl(f"net/ipv4/conf/{bridge}/route_localnet", "1")
        if not internal:
            _sysctl("net/ipv4/ip_forward", "1")
        state = {"network_id": network_id, "bridge": bridge, "subnet": str(subnet),
                 "gateway": options["gateway"], "internal": internal, "mtu": mtu,
                 "masquerade": bool(self.options.ip_masq), "icc": bool(self.options.icc)}
        self._update("networks", network_id, state)
        log.info("bridge.created", bridge=bridge, subnet=str(subnet), internal=internal)
        return state

    def delete_network(self, network_id: str, state: dict[str, Any]) -> None:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=state["bridge"]):
                ipr.link("del", index=index)
        self._update("networks", network_id, None)
        log.info("bridge.deleted", bridge=state["bridge"])

    def join(self, network_id: str, container_id: str, netns_path: str | None, *,
             state: dict[str, Any] | None = None, address: str | None = None,
             ports: list[dict[str, Any]] | None = None) -> Endpoint:
        from pyroute2 import IPRoute, NetNS
        from pyroute2.netlink.exceptions import NetlinkError

        if netns_path is None or state is None or address is None:
            raise DriverError("the bridge driver needs the container's network namespace, "
                              "the network's state and an address")
        ports = list(ports or [])
        suffix = secrets.token_hex(4)[:7]
        host_veth, peer = f"veth{suffix}", f"vpe{suffix}"
        with IPRoute() as ipr:
            (bridge_index,) = ipr.link_lookup(ifname=state["bridge"])
            ipr.link("add", ifname=host_veth, kind="veth", peer={"ifname": peer})
            try:
                (host_index,) = ipr.link_lookup(ifname=host_veth)
                ipr.link("set", index=host_index, master=bridge_index, mtu=state["mtu"])
                (peer_index,) = ipr.link_lookup(ifname=peer)
                ipr.link("set", index=peer_index, mtu=state["mtu"], net_ns_fd=netns_path)
                ipr.link("set", index=host_index, state="up")
                interface = ipaddress.IPv4Interface(address)
                with NetNS(netns_path) as ns:
                    taken = {link.get_attr("IFLA_IFNAME") for link in ns.get_links()}
                    ifname = next(f"eth{n}" for n in range(len(taken) + 1) if f"eth{n}" not in taken)
                    (index,) = ns.link_lookup(ifname=peer)
                    # The MAC follows the address, as Docker's does: a peer that cached the
                    # neighbour entry of a container that left reaches the next holder of
                    # that address at once instead of after the entry goes stale.
                    ns.link("set", index=index, ifname=ifname, address=mac_for(interface.ip))
                    ns.addr("add", index=index, address=str(interface.ip),
                            prefixlen=interface.network.prefixlen)
                    ns.link("set", index=index, state="up")
                    (lo,) = ns.link_lookup(ifname="lo")
                    ns.link("set", index=lo, state="up")
                    # The first network with a gateway gives the default route, as in Docker.
                    has_default = any(r["dst_len"] == 0 for r in ns.get_routes(family=2, table=254))
                    if not state.get("internal") and not has_default:
                        ns.route("add", dst="0.0.0.0/0", gateway=state["gateway"])
            except BaseException as exc:
                for index in ipr.link_lookup(ifname=host_veth):
                    ipr.link("del", index=index)
                if isinstance(exc, NetlinkError):
                    raise DriverError(f"joining network bridge {state['bridge']} failed: {_reason(exc)}") from None
                raise
        data = {"network_id": network_id, "container_id": container_id, "host_veth": host_veth,
                "bridge": state["bridge"], "address": address, "ports": ports}
        if ports:
            self._update("endpoints", f"{network_id}-{container_id}", data)
        log.info("bridge.joined", bridge=state["bridge"], veth=host_veth, address=address,
                 ports=len(ports))
        return Endpoint(netns_path=netns_path, interfaces={ifname: [address]},
                        gateway=None if state.get("internal") else state["gateway"], data=data)

    def leave(self, endpoint: Endpoint) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        data = endpoint.data
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=data["host_veth"]):
                try:
                    ipr.link("del", index=index)  # takes the container's end with it
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:
                        raise
        if data.get("ports"):
            self._update("endpoints", f"{data['network_id']}-{data['container_id']}", None)
        log.info("bridge.left", veth=data["host_veth"], address=data.get("address"))

    def status(self) -> list[tuple[str, str]]:
        return [("subnet-pool", ", ".join(self.options.subnet_pool)),
                ("networks", str(len(self._read_all("networks")))),
                ("mtu", str(self.options.mtu))]
