"""The bridge driver, IPAM and the network store against the kernel, inside a "test host"
network namespace per test; "containers" are further namespaces made by the test."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import need_root, need_tool

PRELUDE = """
import json, sys
from pyengine.config import load
from pyengine.engine import Engine
from pyengine.network.manager import NetworkManager
from pyengine.network.ports import PortMapping
m = NetworkManager(Engine(load(None, {})))
"""


def _host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


class NetnsTestHost:
    """A network namespace the engine runs in, and the container namespaces of one test."""

    def __init__(self, engine_env) -> None:  # noqa: ANN001
        self.env = engine_env
        self.name = f"pyt-{secrets.token_hex(3)}"
        self.namespaces = [self.name]
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)

    def container(self, index: int) -> str:
        name = f"{self.name}-c{index}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.namespaces.append(name)
        return name

    def py(self, code: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run engine code (after PRELUDE) inside the test host; returns its output."""
        result = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c",
                                 PRELUDE + textwrap.dedent(code)], env=self.env.env,
                                capture_output=True, text=True, timeout=240)
        if check and result.returncode != 0:
            raise AssertionError(result.stderr)
        return result

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-m", "pyengine", *args],
                              env=self.env.env, capture_output=True, text=True, timeout=120)

    def sh(self, ns: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def test_host(engine_env):  # noqa: ANN001, ANN201
    need_root()
    need_tool("ip", "nft", "busybox")
    before = _host_links()
    host = NetnsTestHost(engine_env)
    try:
        yield host
    finally:
        host.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert host.name not in listed
    leaked = {n for n in _host_links() - before if n.startswith(("pyengine", "veth"))}
    assert not leaked, f"links leaked into the machine's namespace: {leaked}"


def _ping(host: NetnsTestHost, ns: str, target: str) -> bool:
    return host.sh(ns, "busybox", "ping", "-c1", "-W1", target).returncode == 0


def test_endpoints_on_one_network_ping_by_ip_and_name_but_not_across_networks(test_host, tmp_path):  # noqa: ANN001
    c1, c2, c3 = (test_host.container(i) for i in range(3))
    hosts = tmp_path / "hosts-c1"
    hosts.write_text("")
    out = test_host.py(f"""
        m.create("front"); m.create("back")
        a = m.connect("front", "a" * 64, "/run/netns/{c1}", name="web", hosts_path="{hosts}")
        b = m.connect("front", "b" * 64, "/run/netns/{c2}", name="db", aliases=["database"])
        c = m.connect("back", "c" * 64, "/run/netns/{c3}", name="other")
        print(json.dumps([e.interfaces["eth0"][0].split("/")[0] for e in (a, b, c)]))
    """).stdout
    ip1, ip2, ip3 = json.loads(out)
    assert len({ip1, ip2, ip3}) == 3
    assert _ping(test_host, c1, ip2) and _ping(test_host, c2, ip1)
    assert not _ping(test_host, c3, ip1)
    # the hosts file was rewritten in place when "db" joined: c1 resolves it by name and alias
    assert "database" in hosts.read_text()
    for name in ("db", "database"):
        ping = test_host.sh(c1, "sh", "-c", f"mount --bind {hosts} /etc/hosts && busybox ping -c1 -W1 {name}")
        assert ping.returncode == 0, ping.stdout + ping.stderr
    test_host.py("""
        for cid in ("a" * 64, "b" * 64, "c" * 64): m.disconnect_all(cid)
        m.remove("front"); m.remove("back")
    """)
    links = test_host.sh(test_host.name, "ip", "-o", "link").stdout
    assert "pyengine" not in links and "veth" not in links
    assert test_host.sh(test_host.name, "nft", "list", "table", "ip", "pyengine").returncode != 0


def test_internal_network_has_no_default_route(test_host):  # noqa: ANN001
    c1 = test_host.container(1)
    test_host.py(f"""
        m.create("quiet", internal=True)
        m.connect("quiet", "a" * 64, "/run/netns/{c1}")
    """)
    routes = test_host.sh(c1, "ip", "route").stdout
    assert "default" not in routes and "eth0" in routes
    assert not _ping(test_host, c1, "198.51.100.1")  # unreachable: no route, nothing is sent
    test_host.py('m.disconnect_all("a" * 64); m.remove("quiet")')


def test_thirty_concurrent_joins_get_distinct_addresses_and_all_are_freed(test_host):  # noqa: ANN001
    namespaces = [test_host.container(i) for i in range(30)]
    out = test_host.py(f"""
        from concurrent.futures import ProcessPoolExecutor
        m.create("many")
        namespaces = {namespaces!r}
        def join(i):
            mm = NetworkManager(Engine(load(None, {{}})))
            return mm.connect("many", f"{{i:064d}}", "/run/netns/" + namespaces[i]).interfaces["eth0"][0]
        def leave(i):
            NetworkManager(Engine(load(None, {{}}))).disconnect("many", f"{{i:064d}}")
        with ProcessPoolExecutor(10) as pool:
            joined = list(pool.map(join, range(30)))
        in_use = len(m.get("many").endpoints)
        with ProcessPoolExecutor(10) as pool:
            list(pool.map(leave, range(30)))
        print(json.dumps([joined, in_use, len(m.get("many").endpoints)]))
        m.remove("many")
    """).stdout
    joined, in_use, after = json.loads(out)
    assert len(set(joined)) == 30 and in_use == 30 and after == 0


def test_reconcile_frees_endpoints_of_containers_that_are_gone(test_host):  # noqa: ANN001
    c1, c2 = test_host.container(1), test_host.container(2)
    # a process that joins and dies without leaving, as a SIGKILLed monitor would
    crashed = test_host.py(f"""
        import os
        m.create("crashy")
        m.connect("crashy", "a" * 64, "/run/netns/{c1}")
        m.connect("crashy", "b" * 64, "/run/netns/{c2}")
        os.kill(os.getpid(), 9)
    """, check=False)
    assert crashed.returncode == -9
    out = test_host.py("""
        freed = m.reconcile({"b" * 64})
        print(json.dumps([freed, sorted(m.get("crashy").endpoints)]))
    """).stdout
    freed, left = json.loads(out)
    assert [f[1] for f in freed] == ["a" * 64] and left == ["b" * 64]
    assert "eth0" not in test_host.sh(c1, "ip", "-o", "link").stdout
    assert "eth0" in test_host.sh(c2, "ip", "-o", "link").stdout
    test_host.py('m.reconcile(set()); m.remove("crashy")')


def test_published_port_reachable_at_gateway_and_localhost_and_rules_go_on_leave(test_host, tmp_path):  # noqa: ANN001
    c1 = test_host.container(1)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello from the container\n")
    server = subprocess.Popen(["ip", "netns", "exec", c1, "busybox", "httpd", "-f", "-p", "8080",
                               "-h", str(tmp_path / "www")])
    try:
        out = test_host.py(f"""
            m.create("pub")
            m.connect("pub", "a" * 64, "/run/netns/{c1}", ports=[PortMapping(8080, 18080)])
            print(m.get("pub").gateway)
        """).stdout
        gateway = out.strip()
        time.sleep(0.3)
        for address in (gateway, "127.0.0.1"):
            # python's client: Debian's static busybox wget segfaults on this host
            got = test_host.sh(test_host.name, sys.executable, "-c",
                               "import urllib.request, sys; sys.stdout.write(urllib.request.urlopen("
                               f"'http://{address}:18080/index.html', timeout=3).read().decode())")
            assert got.stdout == "hello from the container\n", (address, got.stderr)
        test_host.py('m.disconnect("pub", "a" * 64)')
        table = test_host.sh(test_host.name, "nft", "list", "table", "ip", "pyengine").stdout
        assert "18080" not in table
        test_host.py('m.remove("pub")')
        assert test_host.sh(test_host.name, "nft", "list", "table", "ip", "pyengine").returncode != 0
    finally:
        server.kill()
        server.wait()


def test_network_cli_create_ls_inspect_rm_and_refusals(test_host):  # noqa: ANN001
    c1 = test_host.container(1)
    created = test_host.cli("network", "create", "--subnet", "10.77.0.0/24", "app")
    assert created.returncode == 0, created.stderr
    assert "app" in test_host.cli("network", "ls").stdout
    inspected = json.loads(test_host.cli("network", "inspect", "app").stdout)
    assert inspected[0]["IPAM"]["Config"][0]["Subnet"] == "10.77.0.0/24"
    overlap = test_host.cli("network", "create", "--subnet", "10.77.0.128/25", "clash")
    assert overlap.returncode != 0 and overlap.stderr.count("\n") == 1 and "overlaps" in overlap.stderr
    unknown = test_host.cli("network", "create", "-d", "nosuch", "x")
    assert unknown.returncode != 0 and "unknown network driver 'nosuch'" in unknown.stderr
    # An endpoint whose container does not exist (as after a crash) is freed by the next
    # network verb, so the network can go; refusal while a real container uses it is in
    # test_network_containers.py.
    test_host.py(f'm.connect("app", "a" * 64, "/run/netns/{c1}")')
    assert test_host.cli("network", "rm", "app").returncode == 0
    assert "eth0" not in test_host.sh(c1, "ip", "-o", "link").stdout
    assert "app" not in test_host.cli("network", "ls").stdout
