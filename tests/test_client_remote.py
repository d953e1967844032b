"""The pyengine CLI as a client of a Docker-API daemon (``-H``, PYENGINE_HOST, DOCKER_HOST):
run, ps, images, logs, exec, pull and push through ``pyengine daemon``, the daemon's errors as
the local engine's one-line errors, and commands that only make sense locally refusing in one
line. The daemon is pyengine's own, on the test's roots; the docker CLI checks what it did."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import registry_fixtures as rf
from containers_support import busybox_rootfs_tar, remove_all_containers
from daemon_support import start_daemon

from conftest import EngineEnv, need_root, need_tool


@pytest.fixture
def daemon(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory):
    """A daemon with busybox, and the test engine's CLI pointed at it by PYENGINE_HOST."""
    need_root()
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = "overlay"
    engine_env.run("import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())), "busybox:latest", check=True)
    d = start_daemon(engine_env)
    engine_env.env["PYENGINE_HOST"] = d.url
    try:
        yield d
    finally:
        try:
            remove_all_containers(engine_env.run)  # a failed test's containers too
        finally:
            engine_env.env.pop("PYENGINE_HOST")
            assert d.stop() == 0


def one_line_error(result: subprocess.CompletedProcess, status: int) -> str:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_run_rm_prints_output_and_returns_the_exit_code(engine_env: EngineEnv, daemon) -> None:
    result = engine_env.run("run", "--rm", "busybox", "echo", "hi", check=True)
    assert result.stdout == "hi\n"
    assert engine_env.run("run", "--rm", "busybox", "sh", "-c", "echo err >&2; exit 3").returncode == 3
    piped = engine_env.run("run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z", input="hello\n", check=True)
    assert piped.stdout == "HELLO\n"
    # --rm went through the daemon: nothing left there, as the docker CLI sees it
    assert daemon.docker("ps", "-aq", check=True).stdout.strip() == ""


def test_detached_container_in_ps_logs_exec_stop_rm(engine_env: EngineEnv, daemon) -> None:
    cid = engine_env.run("run", "-d", "--name", "web", "busybox", "sh", "-c",
                         "echo started; echo oops >&2; exec sleep 300", check=True).stdout.strip()
    assert len(cid) == 64
    listed = daemon.docker("ps", "--format", "{{.ID}} {{.Names}}", check=True).stdout.split()
    assert listed == [cid[:12], "web"], "the container is the daemon's"
    ps = engine_env.run("ps", "--format", "{{.Names}} {{.State}}", check=True).stdout
    assert ps.strip() == "web running"
    assert cid[:12] in engine_env.run("ps", "-q", check=True).stdout
    for _ in range(50):
        logs = engine_env.run("logs", "web", check=True)
        if "started" in logs.stdout and "oops" in logs.stderr:
            break
        time.sleep(0.1)
    assert logs.stdout == "started\n" and logs.stderr == "oops\n"
    exec_out = engine_env.run("exec", "web", "sh", "-c", "echo in $(hostname); exit 4")
    assert exec_out.returncode == 4 and exec_out.stdout == f"in {cid[:12]}\n", exec_out.stderr
    fed = engine_env.run("exec", "-i", "web", "wc", "-c", input="12345", check=True)
    assert fed.stdout.strip() == "5"
    doc = json.loads(engine_env.run("inspect", "web", check=True).stdout)[0]
    assert doc["Id"] == cid and doc["State"]["Running"] is True
    assert engine_env.run("inspect", "-f", "{{.State.Status}}", "web", check=True).stdout.strip() == "running"
    assert "sleep 300" in engine_env.run("top", "web", check=True).stdout
    engine_env.run("stop", "-t", "1", "web", check=True)
    assert engine_env.run("wait", "web", check=True).stdout.strip() == "137"
    assert engine_env.run("ps", "-a", "--format", "{{.State}}", check=True).stdout.strip() == "exited"
    engine_env.run("rm", "web", check=True)
    assert daemon.docker("ps", "-aq", check=True).stdout.strip() == ""


def test_logs_follow_ends_when_the_container_does(engine_env: EngineEnv, daemon) -> None:
    engine_env.run("run", "-d", "--name", "ticker", "busybox", "sh", "-c",
                   "for i in 1 2 3; do echo tick $i; sleep 0.3; done", check=True)
    follower = subprocess.run([sys.executable, "-m", "pyengine", "logs", "-f", "ticker"], env=engine_env.env,
                              capture_output=True, text=True, timeout=30)
    assert follower.returncode == 0, follower.stderr
    assert follower.stdout.splitlines() == ["tick 1", "tick 2", "tick 3"]


def test_images_and_image_verbs_through_the_daemon(engine_env: EngineEnv, daemon) -> None:
    listing = engine_env.run("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout.split()
    assert listing == ["busybox:latest"]
    engine_env.run("tag", "busybox", "mybox:1", check=True)
    assert "mybox:1" in daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout
    doc = json.loads(engine_env.run("image", "inspect", "mybox:1", check=True).stdout)[0]
    assert "mybox:1" in doc["RepoTags"]
    assert engine_env.run("rmi", "mybox:1", check=True).stdout.strip() == "Untagged: mybox:1"


def test_errors_are_the_local_engines_one_liners(engine_env: EngineEnv, daemon) -> None:
    missing = engine_env.run("inspect", "nosuch")
    assert one_line_error(missing, 1) == "pyengine: error: No such container: nosuch"
    assert "No such image" in one_line_error(engine_env.run("image", "inspect", "absent:1"), 1)
    engine_env.run("run", "-d", "--name", "busy", "busybox", "sleep", "300", check=True)
    refused = engine_env.run("rm", "busy")
    message = one_line_error(refused, 1).lower()
    assert "container is running" in message and "force remove" in message
    engine_env.run("rm", "-f", "busy", check=True)
    unreachable = engine_env.run("-H", f"unix://{engine_env.root}/nobody.sock", "ps")
    assert "cannot connect to the daemon" in one_line_error(unreachable, 1)


def test_local_only_commands_refuse_in_one_line(engine_env: EngineEnv, daemon) -> None:
    for args in (("system", "check"), ("plugins",)):
        refused = engine_env.run(*args)
        assert "works on this machine's engine only" in one_line_error(refused, 2), args


def test_info_shows_the_daemon_and_docker_host_is_honoured(engine_env: EngineEnv, daemon) -> None:
    info = engine_env.run("info", check=True).stdout
    assert f"Daemon: {daemon.url} (API 1.45)" in info
    assert "Storage Driver: overlay" in info
    doc = json.loads(engine_env.run("info", "--format", "json", check=True).stdout)
    assert doc["Images"] == 1
    # DOCKER_HOST, as the docker CLI reads it, when PYENGINE_HOST is not set
    env = {k: v for k, v in engine_env.env.items() if k != "PYENGINE_HOST"}
    env["DOCKER_HOST"] = daemon.url
    via_docker_host = subprocess.run([sys.executable, "-m", "pyengine", "info"], env=env, capture_output=True,
                                     text=True, timeout=60)
    assert f"Daemon: {daemon.url}" in via_docker_host.stdout, via_docker_host.stderr


@pytest.mark.registry
def test_pull_and_push_through_the_daemon(engine_env: EngineEnv, tmp_path, tmp_path_factory) -> None:
    need_root()
    registry = rf.start_registry(tmp_path / "registry")
    try:
        engine_env.write_config(f'[registries."{registry.host}"]\ninsecure = true\n')
        engine_env.env["PYENGINE_STORAGE_DRIVER"] = "overlay"
        engine_env.run("import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())), "busybox:latest",
                       check=True)
        d = start_daemon(engine_env)
        engine_env.env["PYENGINE_HOST"] = d.url
        try:
            target = f"{registry.host}/tests/box:v1"
            pushed = engine_env.run("push", "busybox", target, check=True).stdout
            assert f"The push refers to repository [{registry.host}/tests/box]" in pushed
            assert "v1: digest: sha256:" in pushed
            found = engine_env.run("search", f"{registry.host}/box", check=True).stdout.splitlines()
            assert found[0].split() == ["NAME", "DESCRIPTION", "STARS", "OFFICIAL"]
            assert [line.split() for line in found[1:]] == [[f"{registry.host}/tests/box", "0"]], found
            engine_env.run("rmi", "busybox", check=True)
            pulled = engine_env.run("pull", target, check=True).stdout.splitlines()
            assert pulled[0] == "v1: Pulling from tests/box"
            assert any(line.startswith("Digest: sha256:") for line in pulled)
            assert pulled[-1] == target
            ran = engine_env.run("run", "--rm", target, "echo", "pulled", check=True)
            assert ran.stdout == "pulled\n"
        finally:
            remove_all_containers(engine_env.run)
            engine_env.env.pop("PYENGINE_HOST")
            assert d.stop() == 0
    finally:
        registry.stop()


# -- the commands ported to the client layer: each through the daemon, checked on what it prints
def _wait_for(check, what: str, timeout: float = 15):  # noqa: ANN001, ANN202 - a predicate
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_diff_cp_export_commit_through_the_daemon(engine_env: EngineEnv, daemon, tmp_path) -> None:
    import tarfile

    engine_env.run("run", "-d", "--name", "box", "busybox", "sh", "-c",
                   "mkdir /data && echo x > /data/f && ln -s /data/f /link && echo changed > /etc/motd"
                   " && touch /ready && exec sleep 300", check=True)
    _wait_for(lambda: "A /ready" in engine_env.run("diff", "box").stdout, "the container's changes")
    changes = engine_env.run("diff", "box", check=True).stdout.splitlines()
    for line in ("A /data", "A /data/f", "A /link", "C /etc", "A /etc/motd"):
        assert line in changes, changes
    assert changes == daemon.docker("diff", "box", check=True).stdout.splitlines()

    # cp out: a file, a directory, a symlink as itself and (-L) as its target, a tar to stdout
    out = tmp_path / "out"
    out.mkdir()
    engine_env.run("cp", "box:/data/f", str(out / "copied.txt"), check=True)
    assert (out / "copied.txt").read_text() == "x\n"
    engine_env.run("cp", "box:/data", str(out), check=True)
    assert (out / "data" / "f").read_text() == "x\n"
    engine_env.run("cp", "box:/link", str(out / "as-link"), check=True)
    assert (out / "as-link").is_symlink() and os.readlink(out / "as-link") == "/data/f"
    engine_env.run("cp", "-L", "box:/link", str(out), check=True)
    assert not (out / "link").is_symlink() and (out / "link").read_text() == "x\n"
    streamed = subprocess.run([sys.executable, "-m", "pyengine", "cp", "box:/etc/motd", "-"], env=engine_env.env,
                              capture_output=True, timeout=60, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(streamed)) as tar:
        assert tar.getnames() == ["motd"] and tar.extractfile("motd").read() == b"changed\n"
    missing = engine_env.run("cp", "box:/nosuch", str(out))
    assert "Could not find the file /nosuch in container" in one_line_error(missing, 1)

    # cp in: into a directory, onto a new name, and a tar from stdin; the docker CLI sees them
    (tmp_path / "in.txt").write_text("from the host\n")
    engine_env.run("cp", str(tmp_path / "in.txt"), "box:/data/", check=True)
    engine_env.run("cp", str(tmp_path / "in.txt"), "box:/renamed.txt", check=True)
    assert daemon.docker("exec", "box", "cat", "/data/in.txt", "/renamed.txt", check=True).stdout == \
        "from the host\n" * 2
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("piped.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"piped\n"))
    engine_env.run("cp", "-", "box:/data", input=buffer.getvalue(), check=True)
    assert daemon.docker("exec", "box", "cat", "/data/piped.txt", check=True).stdout == "piped\n"
    nowhere = engine_env.run("cp", str(tmp_path / "in.txt"), "box:/no/such/dir/")
    assert "does not exist" in one_line_error(nowhere, 1)

    # export: the whole filesystem as a tar
    engine_env.run("export", "-o", str(tmp_path / "fs.tar"), "box", check=True)
    with tarfile.open(tmp_path / "fs.tar") as tar:
        names = set(tar.getnames())
    assert {"data/f", "etc/motd", "bin/busybox", "renamed.txt"} <= names

    # commit, with a change; the image is the daemon's and runs
    image_id = engine_env.run("commit", "-c", 'CMD ["cat", "/data/f", "/data/in.txt"]', "-m", "snap", "box",
                              "snap:1", check=True).stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert "snap:1" in daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout
    assert engine_env.run("run", "--rm", "snap:1", check=True).stdout == "x\nfrom the host\n"
    assert "no such container: nobox" in one_line_error(engine_env.run("commit", "nobox"), 1).lower()
    assert "No such container: nobox" in one_line_error(engine_env.run("diff", "nobox"), 1)


def test_port_without_published_ports(engine_env: EngineEnv, daemon) -> None:
    engine_env.run("run", "-d", "--name", "quiet", "--expose", "80", "busybox", "sleep", "300", check=True)
    assert engine_env.run("port", "quiet", check=True).stdout == ""
    refused = engine_env.run("port", "quiet", "80")
    assert one_line_error(refused, 1) == "pyengine: error: no public port '80' published for quiet"


def test_network_commands_with_the_none_and_host_drivers(engine_env: EngineEnv, daemon) -> None:
    listed = engine_env.run("network", "ls", check=True).stdout.splitlines()
    assert listed[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SUBNET", "CONTAINERS"]
    names = {line.split()[1]: line.split()[2] for line in listed[1:]}
    assert {"host", "none"} <= set(names) and names["host"] == "host", names
    doc = json.loads(engine_env.run("network", "inspect", "host", check=True).stdout)[0]
    assert doc["Name"] == "host" and doc["Scope"] == "local"
    assert engine_env.run("network", "ls", "-q", check=True).stdout.split() == [
        line.split()[0] for line in listed[1:]]
    refused = engine_env.run("network", "rm", "host")
    assert "pre-defined network and cannot be removed" in one_line_error(refused, 1)
    missing = engine_env.run("network", "inspect", "nonet")
    assert "nonet not found" in one_line_error(missing, 1)
    assert engine_env.run("network", "prune", "-f", check=True).stdout == ""


def test_build_through_the_daemon(engine_env: EngineEnv, daemon, tmp_path) -> None:
    context = tmp_path / "ctx"
    (context / "sub").mkdir(parents=True)
    (context / "keep.txt").write_text("kept\n")
    (context / "secret.txt").write_text("not sent\n")
    (context / "sub" / "a.txt").write_text("a\n")
    (context / "sub" / "b.log").write_text("b\n")
    (context / ".dockerignore").write_text("secret.txt\nsub/*.log\nDockerfile\n")
    (context / "Dockerfile").write_text(
        "FROM busybox AS base\nARG GREETING=hello\nCOPY . /ctx\nRUN echo \"$GREETING\" > /greeting\n"
        "LABEL stage=base\nFROM base AS final\nRUN echo final > /final\n")
    built = engine_env.run("build", "-t", "built:1", "--build-arg", "GREETING=hi", "--label", "team=a",
                           "--target", "base", str(context), check=True)
    assert built.stdout.startswith("Step 1/5 : FROM busybox AS base\n"), built.stdout
    assert "Successfully tagged built:1" in built.stdout
    ran = engine_env.run("run", "--rm", "built:1", "sh", "-c", "cat /greeting; ls -a /ctx /ctx/sub; ls /final",
                         check=False)
    # the Dockerfile was sent (as the docker CLI always does) but is excluded from COPY as dockerd excludes it
    assert ran.stdout.split() == ["hi", "/ctx:", ".", "..", ".dockerignore", "keep.txt", "sub",
                                  "/ctx/sub:", ".", "..", "a.txt"], ran.stdout
    labels = json.loads(engine_env.run("image", "inspect", "built:1", check=True).stdout)[0]["Config"]["Labels"]
    assert labels == {"stage": "base", "team": "a"}

    # a Dockerfile outside the context, -q (only the ID), --no-cache; the image is the daemon's
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "Dockerfile.alt").write_text("FROM busybox\nCOPY keep.txt /\nRUN cat /keep.txt\n")
    quiet = engine_env.run("build", "-q", "--no-cache", "-t", "alt:1", "-f", str(elsewhere / "Dockerfile.alt"),
                           str(context), check=True)
    image_id = quiet.stdout.strip()
    assert image_id.startswith("sha256:") and "\n" not in image_id, quiet.stdout
    assert daemon.docker("image", "inspect", "-f", "{{.Id}}", "alt:1", check=True).stdout.strip() == image_id
    # the Dockerfile from stdin; a tar context from stdin
    piped = engine_env.run("build", "-t", "piped:1", "-f", "-", str(context),
                           input="FROM busybox\nCOPY sub /s\nCMD [\"ls\", \"/s\"]\n", check=True)
    assert "Successfully tagged piped:1" in piped.stdout
    assert engine_env.run("run", "--rm", "piped:1", check=True).stdout.split() == ["a.txt"]
    tar_path = tmp_path / "ctx.tar"
    subprocess.run(["tar", "-C", str(context), "-cf", str(tar_path), "."], check=True)
    from_tar = engine_env.run("build", "-q", "-", input=tar_path.read_bytes(), check=True)
    assert from_tar.stdout.decode().strip().startswith("sha256:")

    # a failing RUN: the local build's one line and exit status
    (context / "Dockerfile").write_text("FROM busybox\nRUN exit 3\n")
    failed = engine_env.run("build", str(context))
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert failed.stderr.strip().splitlines()[-1] == \
        "pyengine: error: The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    assert "Traceback" not in failed.stderr
    missing = engine_env.run("build", "-f", str(tmp_path / "nosuch"), str(context))
    assert "does not exist" in one_line_error(missing, 1)
    refused = engine_env.run("build", "--secret", f"id=s,src={context / 'keep.txt'}", str(context))
    assert "--secret" in one_line_error(refused, 2)
    pruned = engine_env.run("builder", "prune", "-f", check=True).stdout
    assert pruned.splitlines()[-1].startswith("Total reclaimed space:")


def test_events_since_until_and_streaming_through_the_daemon(engine_env: EngineEnv, daemon) -> None:
    start = time.time()
    cid = engine_env.run("create", "--name", "evbox", "busybox", "true", check=True).stdout.strip()
    engine_env.run("start", "-a", "evbox", check=True)
    engine_env.run("rm", "evbox", check=True)
    until = f"{time.time():.6f}"
    shown = engine_env.run("events", "--since", f"{start:.6f}", "--until", until, check=True).stdout.splitlines()
    actions = [line.split()[1:4] for line in shown if f" {cid} " in line]
    assert [a[:2] for a in actions][:1] == [["container", "create"]], shown
    assert ["container", "destroy", cid] in actions and ["container", "die", cid] in actions, shown
    filtered = engine_env.run("events", "--since", f"{start:.6f}", "--until", until, "--filter", "event=create",
                              "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}", check=True)
    assert filtered.stdout.splitlines() == ["container create evbox"]
    bad = engine_env.run("events", "--filter", "nosuch=1", "--until", until)
    assert "invalid filter 'nosuch'" in one_line_error(bad, 2)
    # streaming: a follower started before the container sees it, and ends at --until
    follower = subprocess.Popen([sys.executable, "-m", "pyengine", "events", "--until", f"{time.time() + 6:.6f}",
                                 "--format", "{{.Action}} {{.Actor.Attributes.name}}"], env=engine_env.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        engine_env.run("run", "--rm", "--name", "live", "busybox", "true", check=True)
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert "create live" in out.splitlines() and "destroy live" in out.splitlines(), out


def test_version_shows_client_and_server(engine_env: EngineEnv, daemon) -> None:
    from pyengine import __version__

    shown = engine_env.run("version", check=True).stdout
    lines = shown.splitlines()
    assert lines[0] == "Client: pyengine"
    assert f" Version:           {__version__}" in lines and " API version:       1.45" in lines
    assert "Server: pyengine" in lines and " Engine:" in lines
    assert "  API version:      1.45 (minimum version 1.24)" in lines
    assert engine_env.run("version", "--format", "{{.Server.Version}}", check=True).stdout.strip() == __version__
    assert engine_env.run("version", "-f", "{{.Client.APIVersion}}", check=True).stdout.strip() == "1.45"
    doc = json.loads(engine_env.run("version", "--format", "json", check=True).stdout)
    assert doc["Server"]["ApiVersion"] == "1.45" and doc["Client"]["Version"] == __version__
    # daemonless: the client alone
    local_env = {k: v for k, v in engine_env.env.items() if k != "PYENGINE_HOST"}
    alone = subprocess.run([sys.executable, "-m", "pyengine", "version"], env=local_env, capture_output=True,
                           text=True, timeout=60, check=True).stdout
    assert alone.startswith("Client: pyengine\n") and "Server" not in alone


@pytest.mark.root
def test_network_commands_and_port_on_a_bridge_in_a_test_host(engine_env: EngineEnv, tmp_path) -> None:
    """The daemon runs in a network namespace of the test (its bridges, veths and rules stay
    there); the client runs in the machine's namespace and only talks to the daemon's socket."""
    need_root()
    need_tool("ip", "nsenter", "nft")
    from test_daemon_networks import NetnsDaemonHost

    engine_env.run("import", str(busybox_rootfs_tar(tmp_path)), "busybox:latest", check=True)
    machine_links = set(os.listdir("/sys/class/net"))
    host = NetnsDaemonHost(engine_env)
    daemon = host.start_daemon()
    env = dict(host.env, PYENGINE_HOST=daemon.url)

    def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
        return engine_env.run(*args, env=env, check=check)

    try:
        network_id = cli("network", "create", "--subnet", "10.89.0.0/24", "--label", "team=a", "app",
                         check=True).stdout.strip()
        assert len(network_id) == 64
        cli("network", "create", "spare", check=True)
        rows = {line.split()[1]: line.split() for line in cli("network", "ls", check=True).stdout.splitlines()[1:]}
        assert rows["app"] == [network_id[:12], "app", "bridge", "10.89.0.0/24", "0"], rows
        doc = json.loads(cli("network", "inspect", "app", check=True).stdout)[0]
        assert doc["IPAM"]["Config"][0]["Subnet"] == "10.89.0.0/24" and doc["Labels"] == {"team": "a"}
        assert "already exists" in one_line_error(cli("network", "create", "app"), 1)

        cli("run", "-d", "--name", "srv", "--network", "app", "-p", "18080:8080", "busybox", "sleep", "300",
            check=True)
        assert cli("port", "srv", check=True).stdout == "8080/tcp -> 0.0.0.0:18080\n"
        assert cli("port", "srv", "8080/tcp", check=True).stdout == "0.0.0.0:18080\n"
        assert "18080" in host.sh("nft", "list", "table", "ip", "pyengine").stdout, "the rule is in the test host"

        cli("run", "-d", "--name", "box", "busybox", "sleep", "300", check=True)
        cli("network", "connect", "--alias", "boxy", "app", "box", check=True)
        members = json.loads(daemon.docker("network", "inspect", "-f", "{{json .Containers}}", "app",
                                           check=True).stdout)
        assert sorted(m["Name"] for m in members.values()) == ["box", "srv"]
        assert "boxy" in daemon.docker("inspect", "-f", "{{json .NetworkSettings.Networks.app.Aliases}}", "box",
                                       check=True).stdout
        assert "active endpoints" in one_line_error(cli("network", "rm", "app"), 1)
        cli("network", "disconnect", "app", "box", check=True)
        cli("rm", "-f", "srv", check=True)
        assert sorted(cli("network", "prune", "-f", check=True).stdout.split()) == ["app", "spare"]
        assert "app not found" in one_line_error(cli("network", "inspect", "app"), 1)
    finally:
        try:
            remove_all_containers(cli)
            assert daemon.stop() == 0
        finally:
            host.close()
    assert set(os.listdir("/sys/class/net")) == machine_links, "links were made outside the test host"


def _read_until(fd: int, needle: bytes, timeout: float = 20) -> bytes:
    import select

    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {needle!r} in {data!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side is closed
                chunk = b""
            if not chunk:
                raise AssertionError(f"the terminal closed before {needle!r}: {data!r}")
            data += chunk
    return data


def _set_window(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_exec_detached_options_and_refusals_through_the_daemon(engine_env: EngineEnv, daemon) -> None:
    engine_env.run("run", "-d", "--name", "ex", "busybox", "sleep", "300", check=True)
    assert engine_env.run("exec", "-d", "ex", "sh", "-c", "sleep 0.2; echo bg > /bg", check=True).stdout == ""
    _wait_for(lambda: daemon.docker("exec", "ex", "cat", "/bg").stdout == "bg\n", "the detached exec's file")
    shown = engine_env.run("exec", "-e", "GREETING=hi", "-w", "/tmp", "-u", "65534", "ex", "sh", "-c",
                           "echo $GREETING $(pwd) $(id -u)", check=True)
    assert shown.stdout == "hi /tmp 65534\n"
    split = engine_env.run("exec", "ex", "sh", "-c", "echo out; echo err >&2")
    assert (split.stdout, split.stderr) == ("out\n", "err\n")
    engine_env.run("stop", "-t", "0", "ex", check=True)
    stopped = engine_env.run("exec", "ex", "true")
    assert "is not running" in one_line_error(stopped, 1)
    assert "No such container: nobody" in one_line_error(engine_env.run("exec", "nobody", "true"), 1)


def test_exec_tty_through_a_pty_is_raw_and_follows_the_window(engine_env: EngineEnv, daemon) -> None:
    import pty
    import signal
    import termios

    engine_env.run("run", "-d", "--name", "tty", "busybox", "sleep", "300", check=True)
    master, slave = pty.openpty()
    _set_window(slave, 30, 100)
    process = subprocess.Popen([sys.executable, "-m", "pyengine", "exec", "-it", "tty", "sh", "-c",
                                "stty size; read line; stty size; echo got:$line; exit 7"],
                               env=engine_env.env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    try:
        assert b"30 100" in _read_until(master, b"30 100")
        # our side of the terminal is raw while the exec runs: no echo, no line editing here
        assert not termios.tcgetattr(slave)[3] & termios.ECHO
        _set_window(master, 40, 120)
        process.send_signal(signal.SIGWINCH)
        time.sleep(1)  # the resize reaches the daemon (POST /exec/{id}/resize) before the line
        os.write(master, b"hello\r")
        rest = _read_until(master, b"got:hello")
        assert b"40 120" in rest, rest
        assert process.wait(timeout=30) == 7
        assert termios.tcgetattr(slave)[3] & termios.ECHO, "the terminal's modes are restored"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
        os.close(slave)


# -- podman's Docker-compatible service as the daemon -------------------------------------------
_PODMAN_ENTER = r"""
import json, os, sys
args = json.loads(sys.argv[1])
for procs in args["procs"]:  # into the test's own cgroups first: they become the namespace's roots
    with open(procs, "w") as f:
        f.write(str(os.getpid()))
os.execvp("unshare", ["unshare", "--mount", "--cgroup", "--propagation", "private", sys.executable, "-c",
                      args["remount"], sys.argv[1]])
"""

_PODMAN_REMOUNT = r"""
import json, os, subprocess, sys
args = json.loads(sys.argv[1])
# cgroup file systems mounted afresh in the new cgroup namespace show its root, the test's own
# cgroup: whatever podman, conmon and runc make (libpod_parent/...) lands below it
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/sys/fs/cgroup"], check=True)
for point, fstype, options in args["mounts"]:
    os.makedirs(point, exist_ok=True)
    subprocess.run(["mount", "-t", fstype, *(["-o", options] if options else []), fstype, point], check=True)
os.execvp(args["podman"][0], args["podman"])
"""


def _cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, options) of each cgroup hierarchy under /sys/fs/cgroup."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4]
            fstype, _, super_options = right.split()[:3]
            if fstype in ("cgroup", "cgroup2") and point.startswith("/sys/fs/cgroup/"):
                options = ",".join(o for o in super_options.split(",") if o not in ("rw", "ro"))
                if options.startswith("name="):
                    options = "none," + options
                found.append((point, fstype, options))
    return found


def _own_cgroup(fstype: str, options: str) -> str:
    wanted = {o for o in options.split(",") if o != "none"}
    with open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if fstype == "cgroup2" and hierarchy == "0":
                return path
            if fstype == "cgroup" and controllers and set(controllers.split(",")) == wanted:
                return path
    raise AssertionError(f"no cgroup of this process for {fstype} {options}")


class PodmanService:
    """``podman system service`` on temp roots, in a mount and cgroup namespace of its own whose
    cgroup roots are a ``pyengine/podman-*`` child of the test's own cgroups."""

    def __init__(self) -> None:
        import secrets
        import tempfile

        # podman refuses a run root of 50 characters or more: pytest's temp dirs are longer
        base = self.base = Path(tempfile.mkdtemp(prefix="pyengine-podman-", dir="/tmp"))
        self.socket_path = base / "podman.sock"
        self.cgroups: list[Path] = []
        self.log = open(base / "podman.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process: subprocess.Popen | None = None
        try:
            self._start(base, f"podman-{secrets.token_hex(4)}")
        except BaseException:
            self.stop()
            raise

    def _start(self, base: Path, name: str) -> None:
        for point, fstype, options in _cgroup_mounts():
            top = Path(point + _own_cgroup(fstype, options).rstrip("/")) / "pyengine"
            for level in (top, top / name):
                if not level.exists():
                    level.mkdir()
                    if (level / "cpuset.cpus").exists():  # a v1 cpuset takes no task before these
                        for key in ("cpuset.cpus", "cpuset.mems"):
                            (level / key).write_text((level.parent / key).read_text())
            self.cgroups.append(top / name)
        for sub in ("root", "runroot", "tmp"):
            (base / sub).mkdir(parents=True)
        podman = ["podman", "--root", str(base / "root"), "--runroot", str(base / "runroot"), "--tmpdir",
                  str(base / "tmp"), "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend",
                  "file", "system", "service", "--time", "0", f"unix://{self.socket_path}"]
        args = {"procs": [str(c / "cgroup.procs") for c in self.cgroups], "remount": _PODMAN_REMOUNT,
                "mounts": _cgroup_mounts(), "podman": podman}
        self.process = subprocess.Popen([sys.executable, "-c", _PODMAN_ENTER, json.dumps(args)],
                                        stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        from daemon_support import wait_for_socket

        wait_for_socket(self.socket_path, self.process, base / "podman.log")

    def stop(self) -> None:
        """SIGTERM the service (its pid: unshare and the launcher exec'd it), kill what is left
        in its cgroups by pid, remove the cgroups; its mounts go with its mount namespace."""
        import shutil
        import signal

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        for _ in range(100):
            left = [int(pid) for cgroup in self.cgroups for procs in cgroup.rglob("cgroup.procs")
                    for pid in procs.read_text().split()]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for cgroup in self.cgroups:
            for directory in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                directory.rmdir()
            cgroup.rmdir()
        left_mounted = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                        if line.split()[4].startswith(str(self.base))]
        for point in reversed(left_mounted):
            subprocess.run(["umount", "-l", point], capture_output=True)
        if not left_mounted:
            shutil.rmtree(self.base)
        assert not left_mounted, left_mounted


@pytest.mark.root
def test_pyengine_drives_podmans_docker_compatible_service(engine_env: EngineEnv, tmp_path) -> None:
    need_root()
    need_tool("podman", "runc", "unshare")
    engine_env.run("import", str(busybox_rootfs_tar(tmp_path)), "busybox:latest", check=True)
    archive = tmp_path / "busybox-archive.tar"
    engine_env.run("save", "-o", str(archive), "busybox:latest", check=True)
    service = PodmanService()
    env = dict(engine_env.env, PYENGINE_HOST=f"unix://{service.socket_path}")

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return engine_env.run(*args, env=env, check=check)

    try:
        lines = cli("version").stdout.splitlines()
        assert " API version:       1.41 (downgraded from 1.45)" in lines, lines
        assert " Podman Engine:" in lines and "  Version:          " + cli(
            "version", "--format", "{{.Server.Version}}").stdout.strip() in lines
        assert cli("images").stdout.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
        assert cli("load", "-i", str(archive)).stdout.strip() == "Loaded image: docker.io/library/busybox:latest"
        assert cli("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split() == [
            "docker.io/library/busybox:latest"]
        # no network (podman's bridge would be made on this machine) and limits this host can grant
        ran = cli("run", "--rm", "--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit",
                  "nproc=32768:32768", "busybox", "echo", "hi")
        assert ran.stdout == "hi\n"
        assert cli("ps", "-aq").stdout == ""
    finally:
        service.stop()
