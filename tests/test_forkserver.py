"""The fork server (pyengine/forkserver): commands run in a fork of a warm engine, with the
client's stdio, working directory, environment and signals; anything that is not exactly the
client's context, or not the installed code, runs in-process instead.

Each test has its own server socket and stops its server at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest
from containers_support import busybox_rootfs_tar, remove_all_containers

from conftest import EngineEnv, need_root
from pyengine.forkserver import pid_file, stop_server
from pyengine.procfs import children_map


@pytest.fixture
def fork(engine_env: EngineEnv, tmp_path: Path) -> EngineEnv:
    """engine_env with a fork server of its own (started by its first command)."""
    sock = tmp_path / "fork" / "fork.sock"
    engine_env.env["PYENGINE_FORK_SOCKET"] = str(sock)
    yield engine_env
    stop_server(str(sock))


def _sock(env: EngineEnv) -> Path:
    return Path(env.env["PYENGINE_FORK_SOCKET"])


def _server_pid(env: EngineEnv) -> int:
    return int(Path(pid_file(str(_sock(env)))).read_text())


def _wait_for(predicate, timeout: float = 15.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _served(env: EngineEnv, **kwargs) -> dict:  # noqa: ANN003
    result = env.run("info", "--format", "json", check=True, **kwargs)
    return json.loads(result.stdout)["fork_server"]


def _start(env: EngineEnv) -> int:
    """Run a first command (it starts the server), wait until the server listens."""
    assert not _served(env)["served"], "a first command cannot have a server yet"
    assert _wait_for(_sock(env).exists), "the fork server did not start"
    info = _served(env)
    assert info["served"], info
    return int(info["pid"])


@pytest.fixture
def box(fork: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    need_root()
    tar = busybox_rootfs_tar(tmp_path_factory.getbasetemp())
    # in-process and starting no server: the test's own first command is the one that does
    fork.run("import", str(tar), "busybox:latest", check=True, env={"PYENGINE_FORK_SERVER": "0"})
    yield fork
    remove_all_containers(fork.run)


def test_second_command_is_served_with_docker_exit_codes(box: EngineEnv) -> None:
    pid = _start(box)
    assert pid == _server_pid(box)
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[2:4] == [b"-m", b"pyengine.forkserver.server"]
    assert box.run("run", "--rm", "busybox", "sh", "-c", "exit 3").returncode == 3
    missing = box.run("run", "--rm", "no-such-image")
    assert missing.returncode == 125 and missing.stderr.count("\n") == 1, missing.stderr
    assert box.run("run", "--rm", "busybox", "no-such-command").returncode == 127
    assert box.run("run", "--rm", "busybox", "/etc/passwd").returncode == 126
    out = box.run("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2")
    assert (out.returncode, out.stdout, out.stderr) == (0, "out\n", "err\n")
    assert _served(box)["pid"] == pid, "the server was replaced"


def test_stdin_cwd_and_environment_are_the_clients(box: EngineEnv, tmp_path: Path) -> None:
    _start(box)
    echoed = box.run("run", "-i", "--rm", "busybox", "cat", input="line one\nline two\n", check=True)
    assert echoed.stdout == "line one\nline two\n"
    work = tmp_path / "work"
    work.mkdir()
    (work / "vars.env").write_text("FROM_FILE=file-value\n")
    result = subprocess.run([sys.executable, "-m", "pyengine", "run", "--rm", "--env-file", "vars.env",
                             "-e", "FROM_CLIENT", "busybox", "sh", "-c", "echo $FROM_FILE $FROM_CLIENT"],
                            cwd=work, env={**box.env, "FROM_CLIENT": "client-value"},
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "file-value client-value\n"), result.stderr
    for mask, mode in ((0o077, 0o600), (0o022, 0o644)):
        out = work / f"saved-{mask:o}.tar"
        saved = subprocess.run([sys.executable, "-c", "import os, sys; os.umask(int(sys.argv[1], 8)); "
                                "os.execv(sys.argv[2], sys.argv[2:])", f"{mask:o}", sys.executable, "-m",
                                "pyengine", "save", "-o", out.name, "busybox"],
                               cwd=work, env=box.env, capture_output=True, text=True, timeout=60)
        assert saved.returncode == 0, saved.stderr
        assert out.stat().st_mode & 0o777 == mode, f"umask {mask:o}: the file got the server's umask"
    assert _served(box)["served"]


def test_signals_reach_the_container_through_the_fork(box: EngineEnv) -> None:
    _start(box)
    proc = subprocess.Popen([sys.executable, "-m", "pyengine", "run", "--rm", "busybox", "sh", "-c",
                             "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done"],
                            env=box.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 7, err
    assert out == "got TERM\n"


def test_a_killed_client_ends_its_fork_not_the_container(box: EngineEnv) -> None:
    server = _start(box)
    proc = subprocess.Popen([sys.executable, "-m", "pyengine", "run", "--name", "orphan", "busybox", "sh", "-c",
                             "echo ready; sleep 60"], env=box.env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    # the fork that runs it has the client's stdout (a pipe); the server's standby has not
    forks = [pid for pid in children_map().get(server, [])
             if os.readlink(f"/proc/{pid}/fd/1").startswith("pipe:")]
    assert len(forks) == 1, "no fork of the server runs the command"
    proc.kill()
    proc.wait()
    assert _wait_for(lambda: forks[0] not in children_map().get(server, [])), "the fork outlived its client"
    state = json.loads(box.run("inspect", "orphan", check=True).stdout)[0]["State"]
    assert state["Running"], "the container ended with the client (docker keeps it)"


def test_changed_code_replaces_the_server(fork: EngineEnv) -> None:
    old = _start(fork)
    module = Path(sys.modules["pyengine.procfs"].__file__)
    stat = module.stat()
    try:
        os.utime(module, (stat.st_atime, stat.st_mtime + 10))
        assert not _served(fork)["served"], "a server with older code ran the command"
        assert _wait_for(lambda: not Path(f"/proc/{old}").exists()), "the stale server did not exit"
        new_pid = Path(pid_file(str(_sock(fork))))
        assert _wait_for(lambda: _sock(fork).exists() and new_pid.exists() and _server_pid(fork) != old)
        info = _served(fork)
        assert info["served"] and info["pid"] != old
    finally:
        os.utime(module, (stat.st_atime, stat.st_mtime))


def test_another_namespace_or_user_is_not_served(fork: EngineEnv) -> None:
    need_root()
    server = _start(fork)
    other = subprocess.run(["unshare", "--net", "--", sys.executable, "-m", "pyengine", "info", "--format", "json"],
                           env=fork.env, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(other.stdout)["fork_server"]["served"] is False
    assert _served(fork)["pid"] == server, "a refused client disturbed the server"
    # Another user: a server whose socket everyone may reach (made so for this test); it
    # still refuses anyone but its own user.
    stop_server(str(_sock(fork)))
    public = Path(tempfile.mkdtemp(prefix="pyengine-fork-test-"))
    try:
        _refuses_another_user(fork, public)
    finally:
        stop_server(str(public / "fork.sock"))
        shutil.rmtree(public, ignore_errors=True)


def _refuses_another_user(fork: EngineEnv, public: Path) -> None:
    public.chmod(0o711)
    fork.env["PYENGINE_FORK_SOCKET"] = str(public / "fork.sock")
    server = _start(fork)
    sock = _sock(fork)
    sock.chmod(0o666)
    probe = ("import _socket, sys\n"
             "s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM); s.connect(sys.argv[1])\n"
             "from pyengine.forkserver.client import encode_request\n"
             "s.sendmsg([encode_request(['info'])], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,"
             " b''.join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2)))])\n"
             "print(s.recv(64).decode().strip())\n")
    nobody = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                             "-c", probe, str(sock)], env={**fork.env, "PYTHONPATH": os.pathsep.join(sys.path)},
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert nobody.stdout.strip() == "Fuser", (nobody.stdout, nobody.stderr)
    assert _served(fork)["pid"] == server, "a refused client disturbed the server"


def test_idle_server_exits_and_off_switch_starts_none(fork: EngineEnv) -> None:
    fork.env["PYENGINE_FORK_SERVER_IDLE"] = "1"
    pid = _start(fork)
    assert _wait_for(lambda: not Path(f"/proc/{pid}").exists()), "the idle server did not exit"
    assert not _sock(fork).exists() and not Path(pid_file(str(_sock(fork)))).exists()
    fork.env["PYENGINE_FORK_SERVER"] = "0"
    for _ in range(2):
        info = _served(fork)
        assert info == {"socket": None, "served": False, "pid": None}
    time.sleep(0.5)
    assert not _sock(fork).exists(), "a server started with PYENGINE_FORK_SERVER=0"


def test_a_running_container_does_not_hold_the_server(box: EngineEnv) -> None:
    # The monitor of a container started through the server is a fork of a fork of it: it
    # must hold none of the server's own files (its lock above all), or no server could
    # start again while the container runs.
    first = _start(box)
    box.run("run", "-d", "--name", "keeps", "busybox", "sleep", "60", check=True)
    stop_server(str(_sock(box)))
    assert not Path(f"/proc/{first}").exists()
    assert not _served(box)["served"]
    assert _wait_for(_sock(box).exists), "no new server while the container runs"
    info = _served(box)
    assert info["served"] and info["pid"] != first
    state = json.loads(box.run("inspect", "keeps", check=True).stdout)[0]["State"]
    assert state["Running"]


def _installation(where: Path) -> Path:
    """A second installation of the same code, as a tox env or a second venv is: a venv of
    its own (another sys.prefix and site-packages) whose site-packages adds this one's, so it
    imports the installed pyengine. Returns its interpreter."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True)
    (site,) = where.glob("lib/python*/site-packages")
    ours = sysconfig.get_path("purelib")  # where pyengine is installed (editable: its .pth)
    (site / "uses-pyengine.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return where / "bin" / "python"


def test_two_installations_are_each_served(engine_env: EngineEnv, tmp_path: Path) -> None:
    # Without PYENGINE_FORK_SOCKET each installation has its own default socket: the server of
    # one would refuse the other's commands ("interpreter") and leave it cold.
    env = dict(engine_env.env)
    del env["PYENGINE_FORK_SOCKET"]
    pythons = [_installation(tmp_path / name) for name in ("venv-a", "venv-b")]

    def info(python: Path, **extra: str) -> dict:
        result = subprocess.run([str(python), "-m", "pyengine", "info", "--format", "json"], cwd=tmp_path,
                                env=dict(env, **extra), capture_output=True, text=True, check=True)
        return json.loads(result.stdout)["fork_server"]

    socks = [info(python, PYENGINE_FORK_SERVER="0") for python in pythons]
    assert socks[0]["socket"] is None
    socks = [info(python)["socket"] for python in pythons]  # each starts its own server
    try:
        assert socks[0] != socks[1] and all(Path(s).parent == Path(socks[0]).parent for s in socks), socks
        assert all(_wait_for(Path(sock).exists) for sock in socks), "a server did not start"
        served = [info(python) for python in pythons for _ in range(2)]  # interleaved
        assert all(s["served"] for s in served), served
        assert served[0]["pid"] == served[1]["pid"] != served[2]["pid"] == served[3]["pid"], served
        # the same socket forced on both (the old shared default): the second is refused
        shared = {"PYENGINE_FORK_SOCKET": socks[0]}
        assert info(pythons[0], **shared)["served"]
        assert not info(pythons[1], **shared)["served"]
        assert "refused a command: interpreter" in Path(socks[0] + ".log").read_text()
    finally:
        for sock in socks:
            stop_server(sock)
            for leftover in (".lock", ".log"):
                Path(sock + leftover).unlink(missing_ok=True)
    assert not any(Path(sock).exists() or Path(pid_file(sock)).exists() for sock in socks)


def test_served_commands_see_the_plugins_an_in_process_command_sees(fork: EngineEnv) -> None:
    """A fork's engine takes the plugin host the server built in advance only when no plugin is
    disabled: served and in-process commands list the same plugins, disabled ones included."""
    def plugins(**env: str) -> dict:
        result = fork.run("plugins", "--json", env=env, check=True)
        return {p["name"]: (p["state"], p["drivers"]) for p in json.loads(result.stdout)}

    _start(fork)
    in_process = plugins(PYENGINE_FORK_SERVER="0")
    assert plugins() == in_process and in_process["vfs"][0] == "ok"
    disabled = plugins(PYENGINE_DISABLE_PLUGINS="vfs")
    assert disabled == plugins(PYENGINE_DISABLE_PLUGINS="vfs", PYENGINE_FORK_SERVER="0")
    assert disabled["vfs"] == ("disabled", [])
    fork.write_config('[plugins]\ndisabled = ["vfs"]\n')
    assert plugins()["vfs"] == ("disabled", [])
    fork.write_config("")
    assert plugins() == in_process, "a later command still gets every plugin"
    assert _served(fork)["served"]
