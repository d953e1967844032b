"""pyengine's nftables table, ``table ip pyengine``: rendered whole from the driver's state files
and replaced in one ``nft -f -`` transaction. No other table is ever read or written."""

from __future__ import annotations

import subprocess
from typing import Any

from pyengine.errors import DriverError

TABLE = "pyengine"


def render(networks: list[dict[str, Any]], endpoints: list[dict[str, Any]]) -> str:
    """The table's rules for the given network states and endpoint port lists.

    DNAT happens in prerouting (traffic from containers and other hosts) and in output (the
    host's own connections, 127.0.0.1 included: route_localnet on the bridge lets such packets
    be routed, and the masquerade below gives them a source the container can answer).
    """
    dnat, post, forward = [], [], []
    for net in networks:
        bridge, subnet = net["bridge"], net["subnet"]
        if net.get("internal"):
            forward.append(f'iifname "{bridge}" oifname != "{bridge}" drop')
            forward.append(f'oifname "{bridge}" iifname != "{bridge}" drop')
        else:
            # networks are isolated from each other, not from the outside
            forward.append(f'iifname "{bridge}" oifname "pyengine*" oifname != "{bridge}" drop')
            if net.get("masquerade", True):
                post.append(f'ip saddr {subnet} oifname != "{bridge}" masquerade')
        post.append(f'oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade')
        post.append(f'oifname "{bridge}" ip saddr {subnet} ct status dnat masquerade')
    for ep in endpoints:
        address = ep["address"].split("/")[0]
        for port in ep["ports"]:
            match = f'ip daddr {port["host_ip"]} ' if port.get("host_ip") else ""
            dnat.append(f'{match}{port["protocol"]} dport {port["host_port"]} '
                        f'dnat to {address}:{port["container_port"]}')
    if not networks:
        return ""
    lines = [f"table ip {TABLE} {{",
             "  chain ports {", *(f"    {r}" for r in dnat), "  }",
             "  chain prerouting {", "    type nat hook prerouting priority dstnat; policy accept;",
             "    fib daddr type local jump ports", "  }",
             "  chain output {", "    type nat hook output priority -100; policy accept;",
             "    fib daddr type local jump ports", "  }",
             "  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;",
             *(f"    {r}" for r in post), "  }",
             "  chain forward {", "    type filter hook forward priority filter; policy accept;",
             *(f"    {r}" for r in forward), "  }",
             "}"]
    return "\n".join(lines) + "\n"


def apply(ruleset: str) -> None:
    """Replace the table with ``ruleset`` atomically; an empty ruleset removes the table."""
    # "table ...; delete table ..." deletes it whether or not it existed, in the same
    # transaction as the new content, so no packet ever sees a half-built table.
    script = f"table ip {TABLE}\ndelete table ip {TABLE}\n{ruleset}"
    result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if result.returncode != 0:
        raise DriverError(f"nft refused pyengine's rules: {result.stderr.strip().splitlines()[-1:]}")
