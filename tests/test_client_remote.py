"""The pyengine CLI as a client of a Docker-API daemon (``-H``, PYENGINE_HOST, DOCKER_HOST):
run, ps, images, logs, exec, pull and push through ``pyengine daemon``, the daemon's errors as
the local engine's one-line errors, and commands that only make sense locally refusing in one
line. The daemon is pyengine's own, on the test's roots; the docker CLI checks what it did."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import registry_fixtures as rf
from containers_support import busybox_rootfs_tar, remove_all_containers
from daemon_support import start_daemon

from conftest import EngineEnv, need_root


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
        remove_all_containers(engine_env.run)
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
