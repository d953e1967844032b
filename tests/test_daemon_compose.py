"""Compose against the daemon: Debian's docker-compose 1.29 (Python, on docker-py) drives a
project of two busybox services through ``up -d``, ``ps``, ``logs``, ``exec``, ``run --rm``,
``stop`` and ``down -v``; what it prints and what the daemon then holds (the docker CLI's
``ps -a`` and ``volume ls``) are both checked.

Every service has ``network_mode: none`` (the tests' default network is none: a bridge would be
made in the machine's own namespace), so Compose makes no ``<project>_default`` network, and the
test checks that it made none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers
from daemon_support import Daemon, start_daemon

from conftest import EngineEnv, need_root, need_tool

pytestmark = [pytest.mark.root]

COMPOSE_FILE = """\
version: "3"
services:
  a:
    image: busybox:latest
    command: sh -c 'echo hello from a; sleep 300'
    network_mode: none
    labels:
      team: compose-test
    volumes:
      - data:/data
  b:
    image: busybox:latest
    command: sh -c 'echo "b sees $$GREETING"; ls /data; sleep 300'
    network_mode: none
    depends_on:
      - a
    environment:
      GREETING: hi-from-env
    volumes:
      - data:/data
volumes:
  data:
    labels:
      purpose: shared
"""


@pytest.fixture
def project(engine_env: EngineEnv, tmp_path: Path):
    need_root()
    if shutil.which("docker-compose") is None and os.environ.get("PYENGINE_NO_SKIP") != "1":
        pytest.skip("needs docker-compose (.ci/setup installs Debian's)")
    engine_env.run("import", str(busybox_rootfs_tar(tmp_path)), "busybox:latest", check=True)
    workdir = tmp_path / "proj"
    workdir.mkdir()
    (workdir / "docker-compose.yml").write_text(COMPOSE_FILE)
    daemon = start_daemon(engine_env)
    try:
        yield daemon, workdir
    finally:
        listed = daemon.docker("ps", "-aq", "--no-trunc").stdout.split()
        if listed:
            daemon.docker("rm", "-f", *listed)
        for volume in daemon.docker("volume", "ls", "-q").stdout.split():
            daemon.docker("volume", "rm", "-f", volume)
        assert daemon.docker("ps", "-aq").stdout.split() == []
        assert daemon.stop() == 0


def compose(daemon: Daemon, workdir: Path, *args: str, check: bool = True, timeout: float = 180,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "PYENGINE_", "COMPOSE_"))}
    full.update({"DOCKER_CONFIG": str(daemon.docker_config)})
    full.update(env or {})
    result = subprocess.run(["docker-compose", "-H", daemon.url, "-p", "proj", *args], cwd=workdir, env=full,
                            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"docker-compose {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n"
                             f"{result.stderr}\n--- daemon log ---\n{daemon.log()[-4000:]}")
    return result


def containers(daemon: Daemon) -> dict[str, str]:
    """name -> state, of every container the daemon holds."""
    out = daemon.docker("ps", "-a", "--format", "{{.Names}} {{.State}}", check=True).stdout
    return dict(line.split() for line in out.splitlines())


def test_compose_project_up_ps_logs_exec_run_stop_down(project) -> None:
    daemon, workdir = project
    up = compose(daemon, workdir, "up", "-d")
    output = up.stdout + up.stderr
    assert "Creating volume \"proj_data\" with default driver" in output
    assert "Creating proj_a_1" in output and "Creating proj_b_1" in output
    assert "Creating network" not in output
    assert containers(daemon) == {"proj_a_1": "running", "proj_b_1": "running"}
    labels = daemon.docker("inspect", "-f", '{{index .Config.Labels "com.docker.compose.project"}} '
                           '{{index .Config.Labels "com.docker.compose.service"}} {{index .Config.Labels "team"}}',
                           "proj_a_1", check=True).stdout.split()
    assert labels == ["proj", "a", "compose-test"]
    env = daemon.docker("inspect", "-f", "{{json .Config.Env}}", "proj_b_1", check=True).stdout
    assert "GREETING=hi-from-env" in env
    volumes = daemon.docker("volume", "ls", "--format", "{{.Name}} {{.Driver}}", check=True).stdout.splitlines()
    assert volumes == ["proj_data local"]
    volume_label = daemon.docker("volume", "inspect", "-f", '{{index .Labels "purpose"}} '
                                 '{{index .Labels "com.docker.compose.project"}}', "proj_data", check=True)
    assert volume_label.stdout.split() == ["shared", "proj"]
    assert "proj_default" not in daemon.docker("network", "ls", "--format", "{{.Name}}", check=True).stdout

    ps = compose(daemon, workdir, "ps").stdout.splitlines()
    rows = {line.split()[0]: line for line in ps[2:] if line.strip()}
    assert set(rows) == {"proj_a_1", "proj_b_1"}
    assert "Up" in rows["proj_a_1"] and "echo hello from a" in rows["proj_a_1"]
    assert sorted(compose(daemon, workdir, "ps", "-q").stdout.split()) == \
        sorted(daemon.docker("ps", "-q", "--no-trunc", "--filter", "label=com.docker.compose.project=proj",
                             check=True).stdout.split())
    assert sorted(compose(daemon, workdir, "ps", "--services").stdout.split()) == ["a", "b"]

    logs = compose(daemon, workdir, "logs", "--no-color", "a").stdout
    assert logs.splitlines()[1:] == ["a_1  | hello from a"]
    logs_b = compose(daemon, workdir, "logs", "--no-color", "b").stdout
    assert "b sees hi-from-env" in logs_b

    # exec and run hand over to the docker CLI (``docker exec``, ``docker start --attach``) by
    # default; with COMPOSE_INTERACTIVE_NO_CLI, Compose's own docker-py calls do it
    exec_out = compose(daemon, workdir, "exec", "-T", "a", "echo", "hi")
    assert exec_out.stdout == "hi\n"
    exec_py = compose(daemon, workdir, "exec", "-T", "a", "echo", "hi", env={"COMPOSE_INTERACTIVE_NO_CLI": "1"})
    assert exec_py.stdout == "hi\n"
    failed = compose(daemon, workdir, "exec", "-T", "a", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
    written = compose(daemon, workdir, "exec", "-T", "a", "sh", "-c", "echo shared > /data/note", check=True)
    assert written.returncode == 0

    ran = compose(daemon, workdir, "run", "--rm", "-T", "b", "cat", "/data/note")
    assert ran.stdout.strip().splitlines()[-1] == "shared"
    assert containers(daemon) == {"proj_a_1": "running", "proj_b_1": "running"}

    stopped = compose(daemon, workdir, "stop", "-t", "1")
    assert "Stopping proj_b_1" in stopped.stderr and "Stopping proj_a_1" in stopped.stderr
    assert containers(daemon) == {"proj_a_1": "exited", "proj_b_1": "exited"}

    down = compose(daemon, workdir, "down", "-v")
    assert "Removing proj_a_1" in down.stderr and "Removing proj_b_1" in down.stderr
    assert "Removing volume proj_data" in down.stderr
    assert containers(daemon) == {}
    assert daemon.docker("volume", "ls", "-q", check=True).stdout.split() == []


NETWORK_COMPOSE_FILE = """\
version: "3"
services:
  a:
    image: busybox:latest
    command: sh -c 'echo hello from a; sleep 300'
  b:
    image: busybox:latest
    command: sleep 300
    depends_on:
      - a
"""


@pytest.fixture
def netns_project(engine_env: EngineEnv, tmp_path: Path):
    from test_daemon_networks import NetnsDaemonHost

    need_root()
    need_tool("ip", "nsenter", "nft")
    if shutil.which("docker-compose") is None and os.environ.get("PYENGINE_NO_SKIP") != "1":
        pytest.skip("needs docker-compose (.ci/setup installs Debian's)")
    engine_env.run("import", str(busybox_rootfs_tar(tmp_path)), "busybox:latest", check=True)
    workdir = tmp_path / "proj"
    workdir.mkdir()
    (workdir / "docker-compose.yml").write_text(NETWORK_COMPOSE_FILE)
    machine_links = set(os.listdir("/sys/class/net"))
    host = NetnsDaemonHost(engine_env)
    daemon = host.start_daemon()
    try:
        yield host, daemon, workdir
    finally:
        try:
            remove_all_containers(host.cli)
            for network in daemon.docker("network", "ls", "-q", "--filter", "type=custom").stdout.split():
                daemon.docker("network", "rm", network)
            assert daemon.stop() == 0
        finally:
            host.close()
    assert set(os.listdir("/sys/class/net")) == machine_links, "links were made outside the test host"


def test_compose_project_network_in_a_test_host(netns_project) -> None:
    host, daemon, workdir = netns_project
    up = compose(daemon, workdir, "up", "-d")
    assert 'Creating network "proj_default" with the default driver' in up.stderr
    shown = daemon.docker("network", "inspect", "-f", '{{.Driver}} {{index .Labels "com.docker.compose.network"}} '
                          '{{index .Labels "com.docker.compose.project"}}', "proj_default", check=True)
    assert shown.stdout.split() == ["bridge", "default", "proj"]
    assert containers(daemon) == {"proj_a_1": "running", "proj_b_1": "running"}
    address = daemon.docker("inspect", "-f", '{{(index .NetworkSettings.Networks "proj_default").IPAddress}}',
                            "proj_a_1", check=True).stdout.strip()
    assert address.count(".") == 3
    reached = compose(daemon, workdir, "exec", "-T", "b", "ping", "-c", "1", "-W", "5", "a", check=False)
    assert reached.returncode == 0, reached.stdout + reached.stderr
    assert address in reached.stdout
    ran = compose(daemon, workdir, "run", "--rm", "-T", "b", "ping", "-c", "1", "-W", "5", "a", check=False)
    assert ran.returncode == 0 and address in ran.stdout, ran.stdout + ran.stderr
    assert containers(daemon) == {"proj_a_1": "running", "proj_b_1": "running"}
    again = compose(daemon, workdir, "up", "-d")
    assert "proj_a_1 is up-to-date" in again.stderr and "proj_b_1 is up-to-date" in again.stderr
    # a recreate reads the image's ContainerConfig, which API 1.45 (what Compose negotiates
    # here) no longer has, as with dockerd 26: Compose 1.29 then needs an older API version
    old_id = daemon.docker("inspect", "-f", "{{.Id}}", "proj_a_1", check=True).stdout.strip()
    recreated = compose(daemon, workdir, "up", "-d", "--force-recreate", env={"COMPOSE_API_VERSION": "1.44"})
    assert "Recreating proj_a_1" in recreated.stderr and "Recreating proj_b_1" in recreated.stderr
    assert containers(daemon) == {"proj_a_1": "running", "proj_b_1": "running"}
    assert daemon.docker("inspect", "-f", "{{.Id}}", "proj_a_1", check=True).stdout.strip() != old_id
    reached = compose(daemon, workdir, "exec", "-T", "b", "ping", "-c", "1", "-W", "5", "a", check=False)
    assert reached.returncode == 0, reached.stdout + reached.stderr
    down = compose(daemon, workdir, "down")
    assert "Removing network proj_default" in down.stderr
    assert containers(daemon) == {}
    assert "proj_default" not in daemon.docker("network", "ls", "--format", "{{.Name}}", check=True).stdout
