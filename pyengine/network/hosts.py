"""The /etc/hosts and /etc/resolv.conf a container gets, made from the network store.

Name resolution between containers works through hosts entries kept current (no embedded DNS
server): the engine is daemonless, so there is no long-lived process to answer queries, and a
hosts file works with every libc and with busybox. The manager rewrites each running peer's
hosts file in place when a container joins or leaves a network it shares.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

HOST_RESOLV_CONF = Path("/etc/resolv.conf")


def hosts_content(own: list[tuple[str, list[str]]], peers: Iterable[tuple[str, list[str]]],
                  extra_hosts: Iterable[tuple[str, str]] = ()) -> str:
    """The text of a hosts file: loopback, the container's own addresses, its peers, --add-host.

    :param own: (address, names) for each network the container is on
    :param peers: (address, names) of the other containers on those networks
    :param extra_hosts: (name, address) pairs from ``--add-host``
    """
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    seen: set[tuple[str, str]] = set()
    for address, names in [*own, *peers]:
        fresh = [n for n in names if (address, n) not in seen]
        seen.update((address, n) for n in fresh)
        if fresh:
            lines.append(f"{address}\t{' '.join(fresh)}")
    lines.extend(f"{address}\t{name}" for name, address in extra_hosts)
    return "\n".join(lines) + "\n"


def resolv_conf_content(dns: Iterable[str] = (), search: Iterable[str] = (),
                        options: Iterable[str] = (), host_file: Path = HOST_RESOLV_CONF) -> str:
    """The text of a resolv.conf: the flags when given, else the host's own without loopback
    nameservers (a 127.x resolver on the host is unreachable from the container's namespace)."""
    dns, search, options = list(dns), list(search), list(options)
    host_servers: list[str] = []
    host_search: list[str] = []
    try:
        for line in host_file.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver" and not words[1].startswith("127."):
                host_servers.append(words[1])
            elif words and words[0] == "search":
                host_search = words[1:]
    except OSError:
        pass
    lines = [f"nameserver {s}" for s in (dns or host_servers)]
    if search or host_search:
        lines.append("search " + " ".join(search or host_search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"
