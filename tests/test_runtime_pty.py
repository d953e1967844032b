"""The container's terminal is a pty of the container's own devpts, made the runc way: the
container's process opens /dev/ptmx inside, takes the slave as its controlling terminal and
stdio (PID 1's is bind-mounted on /dev/console too) and sends the master back over the console
socket. Inside, ``tty`` says /dev/pts/N as under Docker; no host pty is ever reachable.

Checked against the real kernel: the pty and descriptor-passing seam, the launcher for
``run`` and ``exec``, and the CLI (daemonless and through the daemon) on a real pty.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from containers_support import busybox_engine, busybox_rootfs_tar
from daemon_support import start_daemon

from conftest import EngineEnv, need_root
from tests.test_runtime_launch import rootfs, spec_for  # noqa: F401 - rootfs is a fixture

pytestmark = pytest.mark.root


# -- the kernel seam ----------------------------------------------------------------------------
def test_pty_ioctls_open_the_peer_and_descriptors_pass_over_a_socket() -> None:
    from pyengine.runtime import kernel

    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    ours, theirs = (s.detach() for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
    try:
        kernel.pty_unlock(master)
        number = kernel.pty_number(master)
        slave = kernel.pty_peer(master, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            assert os.ttyname(slave) == f"/dev/pts/{number}"
            assert not os.get_inheritable(slave)
            os.write(slave, b"through\n")
            assert b"through" in os.read(master, 100)
        finally:
            os.close(slave)
        kernel.send_fd(theirs, master)
        received = kernel.recv_fd(ours)
        assert received is not None and received != master
        try:
            assert (os.fstat(received).st_ino, os.fstat(received).st_rdev) == \
                (os.fstat(master).st_ino, os.fstat(master).st_rdev)
            assert kernel.pty_number(received) == number
            assert not os.get_inheritable(received), "a received descriptor must close on exec"
        finally:
            os.close(received)
        os.close(theirs)
        theirs = -1
        assert kernel.recv_fd(ours) is None, "EOF without a descriptor is None"
    finally:
        for fd in (master, ours, theirs):
            if fd >= 0:
                os.close(fd)


# -- the launcher -------------------------------------------------------------------------------
def _read_all(fd: int, until: bytes | None = None, timeout: float = 20) -> bytes:
    """What a pty master gives until ``until`` appears, its other side closes, or the timeout."""
    output = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end and (until is None or until not in output):
        if select.select([fd], [], [], 0.2)[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: every slave closed
                break
            if not data:
                break
            output += data
    return output


def test_run_terminal_is_a_pty_of_the_containers_own_devpts(rootfs: Path) -> None:  # noqa: F811
    from pyengine.runtime import kernel
    from pyengine.runtime.launch import launch

    host_master, host_slave = os.openpty()  # the host has a pty of its own meanwhile
    script = ("tty; readlink /proc/self/fd/0; echo /dev/pts/*; stat -c '%t:%T' /dev/console /dev/pts/0; "
              "stat -c 'fs=%d' /dev/pts; stty size; echo end")
    spec = spec_for(rootfs, "sh", "-c", script, terminal=True)
    spec["process"]["consoleSize"] = {"height": 30, "width": 100}
    try:
        process = launch("test", spec, [])
        try:
            master = process.tty_master
            assert kernel.pty_number(master) == 0, "not the first pty of a devpts of its own"
            devpts = os.fstat(master).st_dev  # the master is /dev/pts/ptmx of the container's devpts
            assert devpts not in (os.stat("/dev/pts").st_dev, os.stat("/dev/ptmx").st_dev)
            lines = _read_all(master, b"end").decode().replace("\r", "").splitlines()
            assert process.wait() == 0
        finally:
            os.close(process.tty_master)
    finally:
        os.close(host_master)
        os.close(host_slave)
    assert lines[:3] == ["/dev/pts/0", "/dev/pts/0", "/dev/pts/0 /dev/pts/ptmx"], lines
    assert lines[3] == lines[4] == "88:0", "/dev/console is not the container's pty (c 136:0)"
    assert lines[5] == f"fs={devpts}", "the container's /dev/pts is not the devpts its pty came from"
    assert lines[6] == "30 100", lines


def test_exec_terminal_is_the_containers_pty_owned_by_its_user(rootfs: Path) -> None:  # noqa: F811
    from pyengine.runtime.launch import exec_in, launch

    container = launch("test", spec_for(rootfs, "sleep", "30"), [])
    try:
        before = sorted(os.listdir("/proc/self/fd"))
        spec = spec_for(rootfs, "sh", "-c", "tty; stat -c %u $(tty); echo /dev/pts/*; stty size; echo end",
                        terminal=True, uid=1000, gid=1000)
        spec["process"]["consoleSize"] = {"height": 25, "width": 90}
        process = exec_in(container.pid, spec)
        try:
            lines = _read_all(process.tty_master, b"end").decode().replace("\r", "").splitlines()
            assert process.wait() == 0
        finally:
            os.close(process.tty_master)
        assert sorted(os.listdir("/proc/self/fd")) == before
    finally:
        container.kill()
        container.wait()
    assert lines[:4] == ["/dev/pts/0", "1000", "/dev/pts/0 /dev/pts/ptmx", "25 90"], lines


def test_exec_refuses_a_dev_ptmx_that_is_not_the_multiplexer(rootfs: Path) -> None:  # noqa: F811
    from pyengine.runtime.launch import ContainerStartError, exec_in, launch

    container = launch("test", spec_for(rootfs, "sh", "-c", "rm /dev/ptmx; mkfifo /dev/ptmx; sleep 30"), [])
    try:
        fifo = f"/proc/{container.pid}/root/dev/ptmx"
        end = time.monotonic() + 10
        while not (os.path.lexists(fifo) and not os.path.islink(fifo)) and time.monotonic() < end:
            time.sleep(0.02)
        before = sorted(os.listdir("/proc/self/fd"))
        started = time.monotonic()
        with pytest.raises(ContainerStartError) as refused:
            exec_in(container.pid, spec_for(rootfs, "true", terminal=True))
        assert time.monotonic() - started < 10
        assert refused.value.exit_code == 125
        assert str(refused.value) == "cannot allocate the container's terminal: /dev/ptmx is not the pty multiplexer"
        assert sorted(os.listdir("/proc/self/fd")) == before
    finally:
        container.kill()
        container.wait()


# -- the CLI on a real pty, daemonless and through the daemon -----------------------------------
@pytest.fixture(params=["local", "daemon"])
def engine(request: pytest.FixtureRequest, engine_env: EngineEnv,
           tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    yield from busybox_engine(engine_env, tmp_path_factory, request.param)


def _on_a_pty(command: list[str], env: dict[str, str], rows: int = 33, cols: int = 77) -> tuple[int, list[str]]:
    """``command`` with a fresh rows x cols pty as its stdio, as a user at a terminal runs it:
    its exit status and the lines it printed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    client = subprocess.Popen(command, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        output = _read_all(master, timeout=60)
        code = client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        os.close(master)
    return code, [line for line in output.decode(errors="replace").replace("\r", "").splitlines() if line]


def _pyengine(engine: EngineEnv, *args: str) -> tuple[int, list[str]]:
    return _on_a_pty([sys.executable, "-m", "pyengine", *args], engine.env)


def test_run_t_tty_says_dev_pts_0(engine: EngineEnv) -> None:
    through_daemon = "PYENGINE_HOST" in engine.env
    # pyengine -H resizes right after the start and fails when the container has already gone
    # (client/remote.py; the docker CLI ignores that): through the daemon the command lingers.
    linger = "sleep 1; " if through_daemon else ""
    if not through_daemon:
        assert _pyengine(engine, "run", "--rm", "-t", "busybox", "tty") == (0, ["/dev/pts/0"])
    code, lines = _pyengine(engine, "run", "--rm", "-t", "busybox", "sh", "-c",
                            linger + "tty; readlink /proc/self/fd/0; echo /dev/pts/*; ls /dev/pts | wc -w")
    assert (code, lines) == (0, ["/dev/pts/0", "/dev/pts/0", "/dev/pts/0 /dev/pts/ptmx", "2"])


def test_exec_t_is_a_container_pty_sized_by_the_client(engine: EngineEnv) -> None:
    engine.run("run", "-d", "--name", "box", "busybox", "sleep", "120", check=True)
    code, lines = _pyengine(engine, "exec", "-t", "box", "sh", "-c",
                            "tty; readlink /proc/self/fd/1; echo /dev/pts/*; stty size")
    assert (code, lines) == (0, ["/dev/pts/0", "/dev/pts/0", "/dev/pts/0 /dev/pts/ptmx", "33 77"])
    # a container run with -t: its PID 1 holds pts/0 (and /dev/console), an exec gets the next one
    engine.run("run", "-d", "-t", "--name", "ttybox", "busybox", "sleep", "120", check=True)
    code, lines = _pyengine(engine, "exec", "-t", "ttybox", "sh", "-c",
                            "tty; echo /dev/pts/*; stat -c %t:%T /dev/console; readlink /proc/1/fd/0; stty size")
    assert (code, lines) == (0, ["/dev/pts/1", "/dev/pts/0 /dev/pts/1 /dev/pts/ptmx", "88:0", "/dev/pts/0",
                                 "33 77"])


def test_docker_run_t_starts_with_the_clients_window_size(engine_env: EngineEnv,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    """The docker CLI sends its terminal's size in HostConfig.ConsoleSize at create: the pty has
    it before the command runs (no race with a later resize)."""
    need_root()
    engine_env.env["PYENGINE_STORAGE_DRIVER"] = "overlay"
    daemon = start_daemon(engine_env)
    try:
        engine_env.run("-H", daemon.url, "import", str(busybox_rootfs_tar(tmp_path_factory.getbasetemp())),
                       "busybox:latest", check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "PYENGINE_"))}
        env.update({"DOCKER_HOST": daemon.url, "DOCKER_CONFIG": str(daemon.docker_config),
                    "DOCKER_CLI_HINTS": "false"})
        code, lines = _on_a_pty(["docker", "run", "--rm", "-t", "busybox", "sh", "-c", "tty; stty size"], env,
                                rows=41, cols=93)
        assert (code, lines) == (0, ["/dev/pts/0", "41 93"]), daemon.log()[-3000:]
    finally:
        assert daemon.stop() == 0


def test_run_t_ends_cleanly_while_the_terminal_is_being_resized(engine: EngineEnv) -> None:
    """Window sizes the client sends while the container ends (its pty gone, its exit not yet
    recorded) are dropped: the monitor records the exit and --rm removes the container."""
    for _ in range(8):
        master, slave = os.openpty()
        client = subprocess.Popen([sys.executable, "-m", "pyengine", "run", "--rm", "-t", "busybox", "sh", "-c",
                                   "echo up; exit 3"], env=engine.env, stdin=slave, stdout=slave, stderr=slave,
                                  start_new_session=True)
        os.close(slave)
        output, rows = b"", 20
        try:
            deadline = time.monotonic() + 60
            while client.poll() is None and time.monotonic() < deadline:
                rows = 20 if rows == 21 else 21
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 80, 0, 0))
                try:  # what the kernel sends a terminal's foreground group when its size changes
                    os.kill(client.pid, signal.SIGWINCH)
                except ProcessLookupError:
                    break
                if select.select([master], [], [], 0.002)[0]:
                    try:
                        output += os.read(master, 65536)
                    except OSError:
                        pass
            code = client.wait(timeout=30)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            os.close(master)
        assert (code, b"up" in output) == (3, True), output
    assert engine.run("ps", "-aq", check=True).stdout.split() == []
