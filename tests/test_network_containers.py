"""Real containers on networks, through the CLI, inside a "test host": a network namespace
made for the test, which the engine runs in (``nsenter --net``, so mounts stay in the
machine's mount namespace as in every other container test). Bridges, veths, addresses and
nftables rules all live in the test host; traffic never leaves it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers

from conftest import EngineEnv, need_root, need_tool
from pyengine.procfs import parent_of


def _machine_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


class NetTestHost:
    """A network namespace the engine and its containers run in."""

    def __init__(self, engine_env: EngineEnv) -> None:
        self.env = dict(engine_env.env)
        self.env.pop("PYENGINE_NETWORK_DEFAULT")  # inside the test host, the real default
        self.name = f"pyt-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        self.prefix = ["nsenter", f"--net=/run/netns/{self.name}"]

    def cli(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.prefix, sys.executable, "-m", "pyengine", *args], env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"pyengine {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def sh(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=timeout)

    def http_get(self, url: str) -> subprocess.CompletedProcess:
        """GET from the test host itself (python's client: Debian's static busybox wget
        segfaults on a refused connection here)."""
        return self.sh(sys.executable, "-c", "import urllib.request, sys; sys.stdout.write("
                       f"urllib.request.urlopen({url!r}, timeout=3).read().decode())")

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def host(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> NetTestHost:
    need_root()
    need_tool("ip", "nft", "nsenter")
    before = _machine_links()
    test_host = NetTestHost(engine_env)
    try:
        tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
        test_host.cli("import", str(tar), "busybox:latest", check=True)
        yield test_host
        remove_all_containers(test_host.cli)
        test_host.cli("network", "prune", "-f")
        # every endpoint is gone: no veth is left in the test host
        links = test_host.sh("ip", "-o", "link").stdout
        assert "veth" not in links, links
    finally:
        test_host.close()
    leaked = {n for n in _machine_links() - before if n.startswith(("pyengine", "veth"))}
    assert not leaked, f"links leaked into the machine's namespace: {leaked}"


def _ip(host: NetTestHost, ref: str, network: str) -> str:
    doc = json.loads(host.cli("inspect", ref, check=True).stdout)[0]
    return doc["NetworkSettings"]["Networks"][network]["IPAddress"]


def test_default_run_gets_eth0_on_the_default_bridge_with_address_route_and_hosts(host: NetTestHost) -> None:
    out = host.cli("run", "--rm", "--hostname", "box", "busybox", "sh", "-c",
                   "ls /sys/class/net; ip -4 -o addr show eth0; ip route; cat /etc/hosts", check=True).stdout
    assert out.split()[:2] == ["eth0", "lo"]
    assert "inet 10.199.0." in out and "default via 10.199.0.1 dev eth0" in out
    address = out.split("inet ")[1].split("/")[0]
    assert any(line.split()[:2] == [address, "box"] for line in out.splitlines())
    assert "pyengine0" in host.sh("ip", "-o", "link").stdout
    refused = host.cli("run", "--rm", "--ip", "10.199.0.77", "busybox", "true")
    assert refused.returncode == 2 and "user-defined networks only" in refused.stderr
    host.cli("network", "create", "--subnet", "10.97.0.0/24", "macs", check=True)
    mac = host.cli("run", "--rm", "--network", "macs", "--ip", "10.97.0.77", "busybox", "cat",
                   "/sys/class/net/eth0/address", check=True).stdout.strip()
    assert mac == "02:42:0a:61:00:4d"  # made from the address, as Docker does
    chain = host.sh("nft", "list", "chain", "ip", "pyengine", "postrouting").stdout
    assert 'ip saddr 10.199.0.0/24 oifname != "pyengine0" masquerade' in chain, chain


def test_two_containers_on_a_network_ping_by_name_and_ip_but_not_from_another_network(host: NetTestHost) -> None:
    host.cli("network", "create", "front", check=True)
    host.cli("network", "create", "back", check=True)
    host.cli("run", "-d", "--name", "web", "--network", "front", "--network-alias", "www",
             "busybox", "sleep", "300", check=True)
    web_ip = _ip(host, "web", "front")
    out = host.cli("run", "--rm", "--name", "client", "--network", "front", "busybox", "sh", "-c",
                   f"ping -c1 -W2 web && ping -c1 -W2 www && ping -c1 -W2 {web_ip} && echo ALL-OK").stdout
    assert "ALL-OK" in out, out
    # the running peer learns the new container's name as it joins, and forgets it after
    host.cli("run", "-d", "--name", "late", "--network", "front", "busybox", "sleep", "300", check=True)
    late_ip = _ip(host, "late", "front")
    seen = host.cli("exec", "web", "sh", "-c", "ping -c1 -W2 late >/dev/null && echo LATE-OK")
    assert "LATE-OK" in seen.stdout, seen.stdout + seen.stderr
    host.cli("rm", "-f", "late", check=True)
    assert late_ip not in host.cli("exec", "web", "cat", "/etc/hosts", check=True).stdout
    across = host.cli("run", "--rm", "--network", "back", "busybox", "sh", "-c",
                      f"ping -c1 -W1 {web_ip} >/dev/null && echo REACHED || echo UNREACHABLE; "
                      "ping -c1 -W1 web >/dev/null 2>&1 || echo NO-NAME")
    assert across.stdout.split() == ["UNREACHABLE", "NO-NAME"], across.stdout + across.stderr


def test_internal_network_has_no_outbound_route(host: NetTestHost) -> None:
    host.cli("network", "create", "--internal", "quiet", check=True)
    out = host.cli("run", "--rm", "--network", "quiet", "busybox", "sh", "-c",
                   "ip route; ping -c1 -W1 198.51.100.1 >/dev/null 2>&1 || echo NO-ROUTE", check=True).stdout
    assert "default" not in out and "eth0" in out and "NO-ROUTE" in out


def test_published_port_reachable_at_gateway_and_localhost_then_closed_on_stop(host: NetTestHost) -> None:
    host.cli("network", "create", "pub", check=True)
    host.cli("run", "-d", "--name", "srv", "--network", "pub", "-p", "18080:8080", "busybox", "sh", "-c",
             "mkdir /www && echo hello-from-srv > /www/index.html && exec httpd -f -p 8080 -h /www", check=True)
    assert host.cli("port", "srv", check=True).stdout.strip() == "8080/tcp -> 0.0.0.0:18080"
    assert host.cli("port", "srv", "8080", check=True).stdout.strip() == "0.0.0.0:18080"
    assert host.cli("ps", "--format", "{{.Names}} {{.Ports}}", check=True).stdout.strip() == \
        "srv 0.0.0.0:18080->8080/tcp"
    gateway = json.loads(host.cli("network", "inspect", "pub", check=True).stdout)[0]["IPAM"]["Config"][0]["Gateway"]
    for address in (gateway, "127.0.0.1"):
        for _ in range(50):  # httpd may still be starting
            got = host.http_get(f"http://{address}:18080/index.html")
            if got.returncode == 0:
                break
            time.sleep(0.1)
        assert got.stdout == "hello-from-srv\n", (address, got.stderr)
    # another container reaches the published port through the gateway too
    other = host.cli("run", "--rm", "--network", "pub", "busybox", "sh", "-c",
                     f"nc -w 2 {gateway} 18080 </dev/null && echo CONNECTED")
    assert "CONNECTED" in other.stdout, other.stdout + other.stderr
    assert "18080" in host.sh("nft", "list", "table", "ip", "pyengine").stdout
    host.cli("stop", "-t", "1", "srv", check=True)
    assert host.http_get("http://127.0.0.1:18080/index.html").returncode != 0
    assert "18080" not in host.sh("nft", "list", "table", "ip", "pyengine").stdout
    assert host.cli("port", "srv").stdout == ""


def test_publish_all_takes_exposed_ports_on_random_host_ports(host: NetTestHost) -> None:
    host.cli("run", "-d", "--name", "svc", "-P", "--expose", "9000", "--expose", "9001/udp",
             "busybox", "sleep", "300", check=True)
    lines = sorted(host.cli("port", "svc", check=True).stdout.splitlines())
    assert [line.split(" -> ")[0] for line in lines] == ["9000/tcp", "9001/udp"]
    ports = {int(line.rsplit(":", 1)[1]) for line in lines}
    assert all(0 < p < 65536 for p in ports)


def test_ip_flag_sets_the_address_and_a_taken_one_is_refused(host: NetTestHost) -> None:
    host.cli("network", "create", "--subnet", "10.98.0.0/24", "fixed", check=True)
    host.cli("run", "-d", "--name", "a", "--network", "fixed", "--ip", "10.98.0.50", "busybox", "sleep", "300",
             check=True)
    assert _ip(host, "a", "fixed") == "10.98.0.50"
    taken = host.cli("run", "--rm", "--network", "fixed", "--ip", "10.98.0.50", "busybox", "true")
    assert taken.returncode != 0 and "10.98.0.50" in taken.stderr and taken.stderr.count("\n") == 1


def test_thirty_concurrent_containers_get_distinct_addresses_freed_on_stop_and_after_monitor_kill(
        host: NetTestHost) -> None:
    host.cli("network", "create", "many", check=True)

    def start(i: int) -> str:
        return host.cli("run", "-d", "--name", f"m{i}", "--network", "many", "busybox", "sleep", "300",
                        check=True, timeout=240).stdout.strip()

    for round_ in ("stop", "sigkill"):
        with ThreadPoolExecutor(30) as pool:
            ids = list(pool.map(start, range(30)))
        network = json.loads(host.cli("network", "inspect", "many", check=True).stdout)[0]
        addresses = {e["IPv4Address"] for e in network["Containers"].values()}
        assert len(network["Containers"]) == 30 and len(addresses) == 30
        if round_ == "stop":
            host.cli("stop", "-t", "1", *ids, check=True, timeout=240)
        else:
            for cid in ids:
                pid = json.loads(host.cli("inspect", cid, check=True).stdout)[0]["State"]["Pid"]
                os.kill(parent_of(pid), signal.SIGKILL)
            time.sleep(0.5)
        # the next command (here: network inspect) reconciles what the dead monitors held
        network = json.loads(host.cli("network", "inspect", "many", check=True).stdout)[0]
        assert network["Containers"] == {}, f"{round_}: {len(network['Containers'])} endpoints left"
        host.cli("rm", "-f", *ids, check=True, timeout=240)
    assert "veth" not in host.sh("ip", "-o", "link").stdout


def test_none_has_only_lo_and_host_sees_the_test_hosts_interfaces(host: NetTestHost) -> None:
    host.sh("ip", "link", "add", "pyt-br0", "type", "bridge")
    none = host.cli("run", "--rm", "--network", "none", "busybox", "ls", "/sys/class/net", check=True)
    assert none.stdout.split() == ["lo"]
    shared = host.cli("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net", check=True)
    test_host_links = [line.split(":")[1].strip().split("@")[0]
                       for line in host.sh("ip", "-o", "link").stdout.splitlines()]
    assert sorted(shared.stdout.split()) == sorted(test_host_links)
    assert "pyt-br0" in shared.stdout


def test_container_network_mode_shares_the_other_containers_namespace(host: NetTestHost) -> None:
    host.cli("run", "-d", "--name", "owner", "busybox", "sleep", "300", check=True)
    owner_ip = _ip(host, "owner", "bridge")
    out = host.cli("run", "--rm", "--network", "container:owner", "busybox", "ip", "-4", "-o", "addr",
                   check=True).stdout
    assert owner_ip in out


def test_network_connect_and_disconnect_a_running_container(host: NetTestHost) -> None:
    host.cli("network", "create", "extra", check=True)
    host.cli("run", "-d", "--name", "box", "busybox", "sleep", "300", check=True)
    host.cli("network", "connect", "--alias", "boxy", "extra", "box", check=True)
    links = host.cli("exec", "box", "ls", "/sys/class/net", check=True).stdout.split()
    assert len([n for n in links if n.startswith("eth")]) == 2
    extra_ip = _ip(host, "box", "extra")
    peer = host.cli("run", "--rm", "--network", "extra", "busybox", "sh", "-c",
                    f"ping -c1 -W2 boxy >/dev/null && ping -c1 -W2 {extra_ip} >/dev/null && echo OK")
    assert "OK" in peer.stdout, peer.stdout + peer.stderr
    refused = host.cli("network", "rm", "extra")
    assert refused.returncode == 1 and "in use" in refused.stderr
    host.cli("network", "disconnect", "extra", "box", check=True)
    links = host.cli("exec", "box", "ls", "/sys/class/net", check=True).stdout.split()
    assert len([n for n in links if n.startswith("eth")]) == 1
    assert host.cli("network", "rm", "extra").returncode == 0


def test_network_flags_are_refused_with_one_line(host: NetTestHost) -> None:
    for argv, needle in ((["--network", "nosuch"], "nosuch"),
                         (["-p", "99999:80"], "99999"),
                         (["--network", "none", "--ip", "10.0.0.5"], "--ip"),
                         (["--add-host", "nocolon"], "--add-host")):
        result = host.cli("run", "--rm", *argv, "busybox", "true")
        assert result.returncode != 0, argv
        # One line saying what is wrong; a flag refused while it is parsed adds the docker CLI's
        # "See '... --help'." line.
        lines = result.stderr.splitlines()
        assert lines[0].startswith("pyengine: error:") and needle in lines[0], (argv, result.stderr)
        assert lines[1:] in ([], ["See 'pyengine run --help'."]), (argv, result.stderr)
    assert not host.cli("ps", "-aq").stdout.split()  # nothing was created by a refused run
    plugins = json.loads(host.cli("plugins", "--json", check=True).stdout)
    network_rows = {d["name"]: d for p in plugins for d in p.get("drivers", []) if d.get("kind") == "network"}
    assert {"bridge", "host", "none"} <= set(network_rows)


def test_bridge_config_pool_mtu_and_masquerade_reach_the_container(host: NetTestHost,
                                                                   engine_env: EngineEnv) -> None:
    engine_env.write_config('[network.bridge]\nsubnet-pool = ["10.123.0.0/16"]\nsubnet-size = 26\n'
                            'mtu = 1400\nip-masq = false\n')
    out = host.cli("run", "--rm", "busybox", "sh", "-c", "cat /sys/class/net/eth0/mtu; ip -4 -o addr show eth0",
                   check=True).stdout
    assert out.split()[0] == "1400"
    assert "inet 10.123.0." in out and "/26" in out
    # no outbound masquerading (only the rules published ports need remain)
    chain = host.sh("nft", "list", "chain", "ip", "pyengine", "postrouting").stdout
    assert "postrouting" in chain
    assert not [line for line in chain.splitlines() if "oifname !=" in line and "masquerade" in line], chain


def test_dns_search_option_add_host_and_hostname_reach_the_containers_files(host: NetTestHost) -> None:
    out = host.cli("run", "--rm", "--hostname", "web1", "--dns", "192.0.2.53", "--dns-search", "example.test",
                   "--dns-option", "ndots:2", "--add-host", "db.local:192.0.2.10", "busybox", "sh", "-c",
                   "hostname; cat /etc/resolv.conf /etc/hosts", check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "web1"
    assert "nameserver 192.0.2.53" in lines and "search example.test" in lines and "options ndots:2" in lines
    assert "192.0.2.10\tdb.local" in lines


def test_restarted_container_rejoins_its_network_and_leaves_nothing_behind(host: NetTestHost) -> None:
    host.cli("network", "create", "flaky", check=True)
    host.cli("run", "-d", "--name", "r", "--network", "flaky", "-p", "18081:80", "--restart", "on-failure:2",
             "busybox", "sh", "-c", "ip -4 -o addr show eth0; exit 3", check=True)
    assert host.cli("wait", "r", check=True, timeout=60).stdout.strip() == "3"
    doc = json.loads(host.cli("inspect", "r", check=True).stdout)[0]
    assert doc["RestartCount"] == 2
    logs = host.cli("logs", "r", check=True).stdout
    assert len(logs.splitlines()) == 3 and logs.count("inet 10.199.") == 3, logs
    network = json.loads(host.cli("network", "inspect", "flaky", check=True).stdout)[0]
    assert network["Containers"] == {}
    assert "18081" not in host.sh("nft", "list", "table", "ip", "pyengine").stdout
