"""Containers through the daemon with the real docker CLI: run (attached, --rm, -i, -d), logs -f,
ps, inspect, exec (with and without a pty), attach, cp, stop, rm, as a user types them.

Each test asserts on what the docker CLI prints and its exit status; nothing is left running.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from daemon_support import busybox_daemon

from conftest import EngineEnv, need_tool


@pytest.fixture
def daemon(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory):
    yield from busybox_daemon(engine_env, tmp_path_factory)


def test_docker_run_rm_prints_output_and_returns_the_exit_code(daemon) -> None:
    result = daemon.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "out\n"
    assert "err" in result.stderr
    assert daemon.docker("ps", "-aq").stdout.strip() == "", "--rm left the container behind"


def test_docker_run_i_pipes_stdin_to_the_container(daemon) -> None:
    result = daemon.docker("run", "-i", "--rm", "busybox", "cat", input="hi\nthere\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\nthere\n"


def test_docker_run_d_ps_inspect_logs_follow_stop_and_rm(daemon) -> None:
    cid = daemon.docker("run", "-d", "--name", "ticker", "-l", "app=t", "busybox", "sh", "-c",
                        "trap 'echo bye; exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
                        check=True).stdout.strip()
    assert len(cid) == 64
    ps = daemon.docker("ps", "--format", "{{.Names}} {{.Status}}", check=True).stdout.strip()
    assert ps.startswith("ticker Up "), ps
    assert daemon.docker("ps", "-q", "--filter", "label=app=t", check=True).stdout.strip() == cid[:12]
    assert daemon.docker("ps", "-q", "--filter", "label=app=other", check=True).stdout.strip() == ""
    fmt = "{{.State.Running}} {{.HostConfig.CgroupnsMode}} {{.Config.Image}} {{.Name}} {{.HostConfig.LogConfig.Type}}"
    assert daemon.docker("inspect", "-f", fmt, "ticker", check=True).stdout.strip() == \
        "true private busybox /ticker json-file"
    env = {k: v for k, v in daemon.env.items() if not k.startswith("PYENGINE_")}
    env.update({"DOCKER_HOST": daemon.url, "DOCKER_CONFIG": str(daemon.docker_config)})
    follower = subprocess.Popen(["docker", "logs", "-f", "ticker"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        seen = [follower.stdout.readline() for _ in range(5)]
        assert seen == [f"tick {i}\n" for i in range(5)], seen
        refused = daemon.docker("rm", "ticker")
        assert refused.returncode != 0
        assert 'cannot remove container "/ticker": container is running: stop the container before removing ' \
               "or force remove" in refused.stderr
        assert daemon.docker("stop", "-t", "5", "ticker", check=True).stdout.strip() == "ticker"
        follower.wait(timeout=15)  # the follow ends with the container
        assert follower.stdout.read().rstrip().endswith("bye")
    finally:
        follower.kill()
        follower.wait()
    assert daemon.docker("inspect", "-f", "{{.State.ExitCode}} {{.State.Status}}", "ticker",
                         check=True).stdout.strip() == "0 exited"
    status = daemon.docker("ps", "-a", "--format", "{{.Names}} {{.Status}}", check=True).stdout.strip()
    assert status.startswith("ticker Exited (0) "), status
    assert daemon.docker("logs", "--tail", "1", "ticker", check=True).stdout == "bye\n"
    assert daemon.docker("rm", "ticker", check=True).stdout.strip() == "ticker"
    missing = daemon.docker("container", "inspect", "ticker")
    assert missing.returncode != 0 and "No such container: ticker" in missing.stderr


def test_docker_create_name_conflict_in_dockerds_words(daemon) -> None:
    first = daemon.docker("create", "--name", "twin", "busybox", "true", check=True).stdout.strip()
    again = daemon.docker("create", "--name", "twin", "busybox", "true")
    assert again.returncode != 0
    assert f'Conflict. The container name "/twin" is already in use by container "{first}". You have to ' \
           "remove (or rename) that container to be able to reuse that name." in again.stderr
    assert daemon.docker("inspect", "-f", "{{.State.Status}} {{.State.StartedAt}}", "twin",
                         check=True).stdout.strip() == "created 0001-01-01T00:00:00Z"


def test_docker_exec_output_exit_code_stdin_and_pty(daemon) -> None:
    need_tool("script")
    daemon.docker("run", "-d", "--name", "box", "busybox", "sleep", "300", check=True)
    result = daemon.docker("exec", "box", "sh", "-c", "echo in-exec; echo oops >&2; exit 4")
    assert result.returncode == 4
    assert result.stdout == "in-exec\n" and "oops" in result.stderr
    assert daemon.docker("exec", "-i", "box", "cat", input="piped\n", check=True).stdout == "piped\n"
    assert daemon.docker("exec", "box", "sh", "-c", "[ -t 0 ] && echo tty || echo notty",
                         check=True).stdout == "notty\n"
    env = {k: v for k, v in daemon.env.items() if not k.startswith("PYENGINE_")}
    env.update({"DOCKER_HOST": daemon.url, "DOCKER_CONFIG": str(daemon.docker_config)})
    pty = subprocess.run(["script", "-eqc", "docker exec -it box sh -c '[ -t 0 ] && echo IS-A-TTY; exit 6'",
                          "/dev/null"], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert pty.returncode == 6, (pty.stdout, pty.stderr)
    assert "IS-A-TTY" in pty.stdout
    top = daemon.docker("top", "box", check=True).stdout
    assert "sleep 300" in top and "PID" in top.splitlines()[0]


def test_docker_attach_streams_output_and_returns_the_exit_code(daemon) -> None:
    daemon.docker("run", "-d", "--name", "late", "busybox", "sh", "-c", "sleep 1; echo attached-out; exit 5",
                  check=True)
    result = daemon.docker("attach", "--no-stdin", "late", timeout=30)
    assert result.stdout == "attached-out\n"
    assert result.returncode == 5
    assert daemon.docker("wait", "late", check=True).stdout.strip() == "5"


def test_docker_cp_into_and_out_of_a_container(daemon, tmp_path: Path) -> None:
    daemon.docker("run", "-d", "--name", "files", "busybox", "sh", "-c", "echo inside > /tmp/made; sleep 300",
                  check=True)
    source = tmp_path / "hello.txt"
    source.write_text("from the host\n")
    daemon.docker("cp", str(source), "files:/tmp/", check=True)
    assert daemon.docker("exec", "files", "cat", "/tmp/hello.txt", check=True).stdout == "from the host\n"
    for _ in range(50):
        if daemon.docker("exec", "files", "test", "-f", "/tmp/made").returncode == 0:
            break
        time.sleep(0.1)
    out = tmp_path / "out"
    out.mkdir()
    daemon.docker("cp", "files:/tmp/made", str(out / "copied"), check=True)
    assert (out / "copied").read_text() == "inside\n"
    missing = daemon.docker("cp", "files:/no/such/file", str(out))
    assert missing.returncode != 0 and "/no/such/file" in missing.stderr


def test_docker_kill_update_pause_and_wait(daemon) -> None:
    daemon.docker("run", "-d", "--name", "limits", "busybox", "sleep", "300", check=True)
    daemon.docker("update", "--memory", "64m", "--memory-swap", "128m", "--pids-limit", "40", "limits", check=True)
    doc = json.loads(daemon.docker("inspect", "limits", check=True).stdout)[0]
    assert doc["HostConfig"]["Memory"] == 64 * 1024 * 1024 and doc["HostConfig"]["PidsLimit"] == 40
    pids_max = next(Path("/sys/fs/cgroup").rglob(f"{doc['Id']}/pids.max"), None)
    assert pids_max is not None and pids_max.read_text().strip() == "40"
    daemon.docker("pause", "limits", check=True)
    assert daemon.docker("inspect", "-f", "{{.State.Status}}", "limits", check=True).stdout.strip() == "paused"
    daemon.docker("unpause", "limits", check=True)
    daemon.docker("kill", "limits", check=True)
    assert daemon.docker("wait", "limits", check=True).stdout.strip() == "137"
    again = daemon.docker("kill", "limits")
    assert again.returncode != 0 and "is not running" in again.stderr
