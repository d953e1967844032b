"""The network and volume endpoints through the real clients. Networks run in a "test host":
a network namespace made for the test, which the daemon runs in (``nsenter --net``, as the
network CLI tests run the engine), so bridges, veths and rules never touch the machine's own
interfaces. Volumes need no network and run on the machine's namespace."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers
from daemon_support import Daemon, start_daemon, wait_for_socket

from conftest import EngineEnv, need_root, need_tool

pytestmark = [pytest.mark.root]


class NetnsDaemonHost:
    """A network namespace of the test with ``pyengine daemon`` (and the daemonless CLI) in it."""

    def __init__(self, engine_env: EngineEnv) -> None:
        self.env = dict(engine_env.env)
        self.env.pop("PYENGINE_NETWORK_DEFAULT")  # inside the test host, the real default (bridge)
        self.name = f"pyd-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        self.prefix = ["nsenter", f"--net=/run/netns/{self.name}"]
        self.root = engine_env.root

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.prefix, sys.executable, "-m", "pyengine", *args], env=self.env,
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"pyengine {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def sh(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=30)

    def start_daemon(self) -> Daemon:
        socket_path = self.root / "netns-daemon.sock"
        docker_config = self.root / "docker-config"
        docker_config.mkdir(exist_ok=True)
        log_path = self.root / "netns-daemon.log"
        with open(log_path, "wb") as log:
            # nsenter execs the daemon (no fork for a network namespace): its pid is the daemon's.
            process = subprocess.Popen([*self.prefix, sys.executable, "-m", "pyengine", "daemon", "-H",
                                        f"unix://{socket_path}"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        wait_for_socket(socket_path, process, log_path)
        return Daemon(process, socket_path, self.env, docker_config, log_path)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def test_host(engine_env: EngineEnv, tmp_path):
    need_root()
    need_tool("ip", "nsenter", "nft")
    engine_env.run("import", str(busybox_rootfs_tar(tmp_path)), "busybox:latest", check=True)
    machine_links = set(os.listdir("/sys/class/net"))
    host = NetnsDaemonHost(engine_env)
    daemon = host.start_daemon()
    try:
        yield host, daemon
    finally:
        remove_all_containers(host.cli)
        try:
            assert daemon.stop() == 0
        finally:
            host.close()
    assert set(os.listdir("/sys/class/net")) == machine_links, "links were made outside the test host"


def test_docker_network_ls_create_inspect_connect_rm(test_host) -> None:
    host, daemon = test_host
    listed = daemon.docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}", check=True).stdout
    assert sorted(listed.splitlines()) == ["bridge bridge local", "host host local", "none none local"]
    assert "pyengine0" in host.sh("ip", "-o", "link").stdout  # the default bridge lives in the test host

    created = daemon.docker("network", "create", "--subnet", "10.88.0.0/24", "--label", "team=a", "app", check=True)
    network_id = created.stdout.strip()
    assert len(network_id) == 64
    shown = daemon.docker("network", "inspect", "-f",
                          "{{.Name}} {{.Id}} {{.Driver}} {{.Scope}} {{(index .IPAM.Config 0).Subnet}} "
                          "{{(index .IPAM.Config 0).Gateway}} {{.Labels.team}}", "app", check=True).stdout.split()
    assert shown == ["app", network_id, "bridge", "local", "10.88.0.0/24", "10.88.0.1", "a"]
    again = daemon.docker("network", "create", "app")
    assert again.returncode == 1 and "network with name app already exists" in again.stderr
    by_label = daemon.docker("network", "ls", "--filter", "label=team=a", "--format", "{{.Name}}", check=True)
    assert by_label.stdout.split() == ["app"]
    custom = daemon.docker("network", "ls", "--filter", "type=custom", "-q", "--no-trunc", check=True)
    assert custom.stdout.split() == [network_id]

    container = host.cli("run", "-d", "--name", "box", "busybox", "sleep", "300", check=True).stdout.strip()
    daemon.docker("network", "connect", "--alias", "boxy", "app", "box", check=True)
    members = json.loads(daemon.docker("network", "inspect", "-f", "{{json .Containers}}", "app", check=True).stdout)
    assert list(members) == [container]
    assert members[container]["Name"] == "box" and members[container]["IPv4Address"].startswith("10.88.0.")
    inside = host.cli("exec", "box", "ip", "-o", "-4", "addr", check=True).stdout
    assert members[container]["IPv4Address"] in inside
    refused = daemon.docker("network", "rm", "app")
    assert refused.returncode == 1 and "has active endpoints" in refused.stderr, refused.stderr
    predefined = daemon.docker("network", "rm", "bridge")
    assert predefined.returncode == 1 and "bridge is a pre-defined network and cannot be removed" in predefined.stderr
    daemon.docker("network", "disconnect", "app", "box", check=True)
    assert json.loads(daemon.docker("network", "inspect", "-f", "{{json .Containers}}", "app",
                                    check=True).stdout) == {}
    assert daemon.docker("network", "rm", "app", check=True).stdout.strip() == "app"
    missing = daemon.docker("network", "inspect", "app")
    assert missing.returncode == 1 and "network app not found" in missing.stderr


def test_docker_py_networks(test_host) -> None:
    import docker.errors

    host, daemon = test_host
    client = daemon.client()
    network = client.networks.create("pynet", driver="bridge", labels={"k": "v"},
                                     ipam=docker.types.IPAMConfig(pool_configs=[
                                         docker.types.IPAMPool(subnet="10.89.0.0/24", gateway="10.89.0.254")]))
    assert network.name == "pynet" and network.attrs["Labels"] == {"k": "v"}
    assert network.attrs["IPAM"]["Config"] == [{"Subnet": "10.89.0.0/24", "Gateway": "10.89.0.254"}]
    assert {n.name for n in client.networks.list()} == {"bridge", "host", "none", "pynet"}
    assert [n.name for n in client.networks.list(names=["pynet"])] == ["pynet"]
    assert client.networks.get(network.id[:12]).name == "pynet"
    client.networks.create("spare")
    pruned = client.networks.prune()
    assert sorted(pruned["NetworksDeleted"]) == ["pynet", "spare"]
    with pytest.raises(docker.errors.NotFound):
        client.networks.get("pynet")
    with pytest.raises(docker.errors.APIError, match="IPv6"):
        client.networks.create("v6", enable_ipv6=True)
    assert "v6" not in {n.name for n in client.networks.list()}


@pytest.fixture
def daemon(engine_env: EngineEnv, tmp_path):
    need_root()
    engine_env.run("import", str(busybox_rootfs_tar(tmp_path)), "busybox:latest", check=True)
    d = start_daemon(engine_env)
    yield d
    remove_all_containers(engine_env.run)
    assert d.stop() == 0


def test_docker_volume_create_ls_inspect_rm_and_in_use_refusal(daemon, engine_env) -> None:
    assert daemon.docker("volume", "create", "--label", "team=a", "data", check=True).stdout.strip() == "data"
    listed = daemon.docker("volume", "ls", "--format", "{{.Driver}} {{.Name}}", check=True).stdout.splitlines()
    assert listed == ["local data"]
    fmt = "{{.Name}} {{.Driver}} {{.Scope}} {{.Labels.team}} {{.Mountpoint}}"
    shown = daemon.docker("volume", "inspect", "-f", fmt, "data", check=True).stdout.split()
    assert shown[:4] == ["data", "local", "local", "a"]
    assert shown[4] == str(engine_env.data_root / "volumes" / "data" / "_data") and os.path.isdir(shown[4])
    assert daemon.docker("volume", "ls", "-q", "--filter", "label=team=b", check=True).stdout.strip() == ""
    container = engine_env.run("create", "-v", "data:/data", "busybox", "true", check=True).stdout.strip()
    assert daemon.docker("volume", "ls", "-q", "--filter", "dangling=true", check=True).stdout.strip() == ""
    refused = daemon.docker("volume", "rm", "data")
    assert refused.returncode == 1 and f"remove data: volume is in use - [{container}]" in refused.stderr
    forced = daemon.docker("volume", "rm", "-f", "data")
    assert forced.returncode == 1 and "volume is in use" in forced.stderr  # as dockerd: force does not override
    engine_env.run("rm", container, check=True)
    assert daemon.docker("volume", "rm", "data", check=True).stdout.strip() == "data"
    assert not (engine_env.data_root / "volumes" / "data").exists()
    missing = daemon.docker("volume", "inspect", "data")
    assert missing.returncode == 1 and "no such volume" in missing.stderr
    assert daemon.docker("volume", "rm", "-f", "data").returncode == 0  # force: a missing volume is no error


def test_docker_py_volumes(daemon, engine_env) -> None:
    import docker.errors

    client = daemon.client()
    named = client.volumes.create("keep", labels={"k": "v"})
    assert named.name == "keep" and named.attrs["Labels"] == {"k": "v"} and named.attrs["Driver"] == "local"
    anonymous = client.volumes.create()
    assert len(anonymous.name) == 64
    with open(os.path.join(anonymous.attrs["Mountpoint"], "blob"), "wb") as f:
        f.write(b"x" * 5000)
    assert {v.name for v in client.volumes.list()} == {"keep", anonymous.name}
    assert client.volumes.get("keep").attrs["Mountpoint"].endswith("/volumes/keep/_data")
    pruned = client.volumes.prune()  # API 1.42+: only anonymous volumes unless all=true
    assert pruned == {"VolumesDeleted": [anonymous.name], "SpaceReclaimed": 5000}
    assert client.volumes.prune(filters={"all": "true"})["VolumesDeleted"] == ["keep"]
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get("keep")
    with pytest.raises(docker.errors.APIError, match="only the local driver"):
        client.volumes.create("other", driver="nfs")
    client.volumes.create("gone").remove()
    assert client.volumes.list() == []


def test_bad_network_and_volume_requests_are_docker_errors(daemon) -> None:
    from test_daemon_images import _request

    status, body = _request(daemon, "POST", "/v1.45/volumes/create", b"{not json")
    assert status == 400 and "invalid JSON" in json.loads(body)["message"]
    status, body = _request(daemon, "POST", "/v1.45/volumes/create", b'{"Name": 5}')
    assert status == 400 and "cannot unmarshal" in json.loads(body)["message"]
    status, body = _request(daemon, "POST", "/v1.45/volumes/create", b'{"Name": "../escape"}')
    assert status == 400 and "invalid volume name" in json.loads(body)["message"]
    status, body = _request(daemon, "GET", '/v1.45/volumes?filters={"colour":["red"]}')
    assert status == 400 and json.loads(body) == {"message": "invalid filter 'colour'"}
    status, body = _request(daemon, "GET", "/v1.45/volumes/nosuch")
    assert status == 404 and json.loads(body) == {"message": "get nosuch: no such volume"}
    status, body = _request(daemon, "POST", "/v1.45/networks/create", b'{"Name": "n", "Internal": "yes"}')
    assert status == 400 and "cannot unmarshal" in json.loads(body)["message"]
    status, body = _request(daemon, "POST", "/v1.45/networks/create", b"")
    assert status == 400 and "JSON body is required" in json.loads(body)["message"]
    status, body = _request(daemon, "GET", "/v1.45/networks/nosuch")
    assert status == 404 and json.loads(body) == {"message": "network nosuch not found"}
    status, body = _request(daemon, "DELETE", "/v1.45/networks/none")
    assert status == 403 and "pre-defined network" in json.loads(body)["message"]
    assert not (daemon.socket_path.parent / "data" / "volumes" / "escape").exists()
    assert _request(daemon, "GET", "/_ping")[0] == 200
