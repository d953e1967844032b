"""Escapes a container process could try (issue 13), each observed from inside the container
as an attacker would: host programs reachable through /proc/*/exe (the CVE-2019-5736
pattern), and the caller's own descriptors handed to ``exec``, ``run`` and ``start -a``.

Every test runs as root against the real kernel, with busybox images (tests/containers_support.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from containers_support import busybox_engine
from imagebuild import open_engine

from conftest import EngineEnv, need_root
from tests.test_runtime_launch import make_rootfs, spec_for

pytestmark = pytest.mark.root

SECRET = "SECRET-host-file-content"


@pytest.fixture
def engine(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    yield from busybox_engine(engine_env, tmp_path_factory)


def _pid(engine: EngineEnv, ref: str) -> int:
    return json.loads(engine.run("inspect", ref, check=True).stdout)[0]["State"]["Pid"]


def _wait_for(predicate, deadline: float = 20) -> bool:  # noqa: ANN001 - a callable
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# -- host programs inside a container (item 3) -----------------------------------------------
def _slow_execve(rootfs: Path, parent: int, real):  # noqa: ANN001, ANN202 - wraps os.execve
    """os.execve for the exec'd child: once confined (capabilities dropped, seccomp on: the
    last moment before the exec) it tells the probe inside its pid and waits until the probe
    has looked, then execs. In the test process itself, the real call."""

    def execve(path, args, env):  # noqa: ANN001, ANN202
        if os.getpid() != parent:
            status = Path("/proc/self/status").read_text()
            inner = [line.split()[-1] for line in status.splitlines() if line.startswith("NSpid:")][0]
            Path("/tmp/target").write_text(inner + "\n")  # the container's /tmp: we joined its mounts
            deadline = time.monotonic() + 20
            while not Path("/tmp/done").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return real(path, args, env)

    return execve


_PROBE = r"""
while [ ! -s /tmp/target ]; do usleep 10000; done
t=$(cat /tmp/target)
echo "comm=$(cat /proc/$t/comm)"
if l=$(readlink /proc/$t/exe 2>/dev/null); then echo "exe-link=$l"; else echo exe-link-denied; fi
if head -c 4 /proc/$t/exe > /tmp/head 2>/dev/null; then echo exe-read; else echo exe-read-denied; fi
if readlink /proc/$t/fd/0 > /dev/null 2>&1; then echo fd-link; else echo fd-denied; fi
if head -c 1 /proc/$t/environ > /dev/null 2>&1; then echo environ-read; else echo environ-denied; fi
echo done > /tmp/done
"""


def test_exec_child_hides_the_host_interpreter_until_it_execs(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Between joining the container and execve, the exec child is a copy of the host's Python
    in the container's pid namespace, and once confined it has no more capabilities than the
    container: a container process must not reach its exe, fd or environ then (it is
    non-dumpable until the exec)."""
    from pyengine.runtime import kernel
    from pyengine.runtime.launch import exec_in, launch

    need_root()
    rootfs = make_rootfs(tmp_path / "rootfs")
    out_r, out_w = os.pipe()
    container = launch("probe", spec_for(rootfs, "sh", "-c", _PROBE + "sleep 30"), [], stdout=out_w)
    os.close(out_w)
    try:
        monkeypatch.setattr(os, "execve", _slow_execve(rootfs, os.getpid(), os.execve))
        process = exec_in(container.pid, spec_for(rootfs, "true"))
        monkeypatch.undo()
        assert process.wait() == 0
        lines = []
        while not lines or lines[-1] != "environ-denied" and lines[-1] != "environ-read":
            chunk = os.read(out_r, 4096).decode()
            assert chunk, f"the probe stopped early: {lines}"
            lines += chunk.split()
    finally:
        container.kill()
        container.wait()
        os.close(out_r)
    assert lines[0].startswith("comm="), lines  # the probe found the child while it waited
    assert lines[1:] == ["exe-link-denied", "exe-read-denied", "fd-denied", "environ-denied"], lines
    assert kernel.get_dumpable(), "the caller stayed non-dumpable after the fork"


def test_exec_makes_the_command_dumpable_again(engine: EngineEnv) -> None:
    """execve of the container's program ends the non-dumpable window: a process run as a
    user owns its /proc/<pid> as usual (ps, /proc/self/fd work for it)."""
    engine.run("run", "-d", "--name", "box", "busybox", "sleep", "60", check=True)
    result = engine.run("exec", "-u", "1000", "box", "sh", "-c", "stat -c %u /proc/self/; ls /proc/self/fd | wc -l",
                        check=True)
    owner, fds = result.stdout.split()
    assert owner == "1000" and int(fds) >= 3, result.stdout


def test_a_racing_container_loop_finds_no_host_exe_during_execs(engine: EngineEnv) -> None:
    """No fake delay: a loop inside the container tries every /proc/*/exe while execs run."""
    probe = ("while [ ! -e /tmp/stop ]; do for p in /proc/[0-9]*; do "
             "l=$(readlink $p/exe 2>/dev/null) && [ \"$l\" != /bin/busybox ] && echo \"$p $l\" >> /tmp/found; "
             "done; done; touch /tmp/stopped; sleep 60")
    engine.run("run", "-d", "--name", "racer", "busybox", "sh", "-c", probe, check=True)
    for _ in range(15):
        engine.run("exec", "racer", "true", check=True)
    engine.run("exec", "racer", "touch", "/tmp/stop", check=True)
    assert _wait_for(lambda: engine.run("exec", "racer", "test", "-e", "/tmp/stopped").returncode == 0)
    found = engine.run("exec", "racer", "sh", "-c", "cat /tmp/found 2>/dev/null; true", check=True).stdout
    assert found == "", f"host programs seen through /proc/*/exe:\n{found}"


def test_init_runs_from_a_sealed_memfd_not_the_host_shim(engine: EngineEnv) -> None:
    from pyengine import shim
    from pyengine.runtime import kernel

    engine.run("run", "-d", "--init", "--name", "inited", "busybox", "sleep", "60", check=True)
    link = engine.run("exec", "inited", "readlink", "/proc/1/exe", check=True).stdout.strip()
    assert link.startswith("/memfd:pyengine-shim"), link
    opened = engine.run("exec", "inited", "sh", "-c", ": >> /proc/1/exe")
    assert opened.returncode != 0, "PID 1's program was opened for writing from inside"
    pid = _pid(engine, "inited")
    exe = os.stat(f"/proc/{pid}/exe")
    host = os.stat(shim.PROGRAM)
    assert (exe.st_dev, exe.st_ino) != (host.st_dev, host.st_ino), "PID 1 runs the host's shim file"
    fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY)
    try:
        seals = fcntl.fcntl(fd, kernel.F_GET_SEALS)
        with open(shim.PROGRAM, "rb") as f:
            assert os.pread(fd, exe.st_size, 0) == f.read(), "not a copy of the shim"
    finally:
        os.close(fd)
    wanted = kernel.F_SEAL_SEAL | kernel.F_SEAL_SHRINK | kernel.F_SEAL_GROW | kernel.F_SEAL_WRITE
    assert seals & wanted == wanted, f"seals {seals:#x}"
    # it is still the init: it reaps and forwards signals
    assert engine.run("exec", "inited", "cat", "/proc/1/cmdline", check=True).stdout.startswith("pyengine-init")


def test_the_init_copy_is_made_once_per_process_and_again_when_the_shim_changes() -> None:
    from pyengine import shim
    from pyengine.runtime.launch import init_program

    need_root()
    first = init_program()
    assert first is not None and init_program() == first, "a second copy for the second start"
    stat = os.stat(shim.PROGRAM)
    try:
        os.utime(shim.PROGRAM, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        second = init_program()
    finally:
        os.utime(shim.PROGRAM, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert second is not None and os.readlink(f"/proc/self/fd/{second}").startswith("/memfd:pyengine-shim")
    with open(shim.PROGRAM, "rb") as f:
        assert os.pread(second, stat.st_size + 1, 0) == f.read()
    assert init_program() is not None, "the restored file gets a copy again"


# -- the caller's descriptors (item 4) --------------------------------------------------------
# Run inside: where fd 1 and 2 lead, whether the host file behind them can be read back
# (into a container file, never into stdout: that would feed itself) and truncated.
_FD_PROBE = ("for n in 0 1 2; do echo fd$n=$(readlink /proc/$$/fd/$n); done; "
             "timeout 1 cat /proc/$$/fd/1 > /tmp/readback 2>/dev/null; "
             f"grep -q {SECRET} /tmp/readback && echo READ-BACK; "
             ": > /proc/$$/fd/1 2>/dev/null; : > /proc/$$/fd/2 2>/dev/null; echo probed")


def _links(lines: list[str]) -> dict[int, str]:
    """What the probe's readlink of its fds 0-2 said."""
    return {int(line[2]): line[4:] for line in lines if line[:2] == "fd" and line[3:4] == "="}


def _host_file(path: Path) -> Path:
    path.write_text(SECRET + "\n")
    return path


def _run_with_file_stdio(engine: EngineEnv, path: Path, *args: str, stdin: int | None = None) -> int:
    """``pyengine ARGS`` with stdout and stderr a host file opened O_APPEND (as ``>>``)."""
    with open(path, "a") as out:
        proc = subprocess.run([sys.executable, "-m", "pyengine", *args], env=engine.env, stdout=out,
                              stderr=out, stdin=stdin if stdin is not None else subprocess.DEVNULL, timeout=120)
    return proc.returncode


def _assert_not_reachable(path: Path, tty: bool = False) -> dict[int, str]:
    """The host file still starts with the secret, the container could not read it back,
    and its fds 1 and 2 were pipes (or the pty), not the file."""
    lines = path.read_text().splitlines()
    assert lines[0] == SECRET, f"the host file was truncated: {lines}"
    assert "probed" in lines, lines
    assert "READ-BACK" not in lines, f"the container read the host file back: {lines}"
    links = _links(lines)
    for fd in (1, 2):
        assert links[fd].startswith("/dev/pts/" if tty else "pipe:["), links
    assert str(path) not in "".join(links.values())
    return links


@pytest.mark.parametrize("served", [True, False], ids=["fork-server", "in-process"])
def test_exec_gives_the_container_pipes_not_the_callers_file(engine: EngineEnv, tmp_path: Path,
                                                              served: bool) -> None:
    engine.run("run", "-d", "--name", "box", "busybox", "sleep", "60", check=True)
    if not served:
        engine.env["PYENGINE_FORK_SERVER"] = "0"
    out = _host_file(tmp_path / "hostfile")
    assert _run_with_file_stdio(engine, out, "exec", "box", "sh", "-c", _FD_PROBE) == 0, out.read_text()
    assert _assert_not_reachable(out)[0] == "/dev/null"


def test_exec_interactive_stdin_is_a_pipe_and_still_delivers(engine: EngineEnv, tmp_path: Path) -> None:
    engine.run("run", "-d", "--name", "box", "busybox", "sleep", "60", check=True)
    source = tmp_path / "input"
    source.write_bytes(b"line one\n" + b"x" * 300000 + b"\nlast\n")
    out = _host_file(tmp_path / "hostfile")
    with open(source, "r+b") as stdin:  # read-write: a container must not be able to write it either
        code = _run_with_file_stdio(engine, out, "exec", "-i", "box", "sh", "-c",
                                    "wc -c; tail -n 1; " + _FD_PROBE, stdin=stdin.fileno())
    assert code == 0, out.read_text()
    assert _assert_not_reachable(out)[0].startswith("pipe:[")
    assert source.read_bytes().startswith(b"line one\n")
    text = out.read_text()
    assert f"{source.stat().st_size}\n" in text  # wc -c saw all of it; tail had nothing left


def test_exec_tty_gives_a_pty_not_the_callers_file(engine: EngineEnv, tmp_path: Path) -> None:
    engine.run("run", "-d", "--name", "box", "busybox", "sleep", "60", check=True)
    out = _host_file(tmp_path / "hostfile")
    assert _run_with_file_stdio(engine, out, "exec", "-t", "box", "sh", "-c", _FD_PROBE) == 0, out.read_text()
    _assert_not_reachable(out, tty=True)


def test_exec_exit_codes_and_output_order_through_the_relay(engine: EngineEnv) -> None:
    engine.run("run", "-d", "--name", "box", "busybox", "sleep", "60", check=True)
    result = engine.run("exec", "box", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert engine.run("exec", "box", "sh", "-c", "kill -9 $$").returncode == 128 + signal.SIGKILL
    missing = engine.run("exec", "box", "nosuch")
    assert missing.returncode == 127 and "executable file not found" in missing.stderr
    big = engine.run("exec", "box", "sh", "-c", "head -c 2000000 /dev/zero | tr '\\0' a")
    assert big.returncode == 0 and len(big.stdout) == 2000000
    # a background child keeping the pipes open does not hold exec up
    started = time.monotonic()
    bg = engine.run("exec", "box", "sh", "-c", "sleep 30 & echo started")
    assert bg.returncode == 0 and bg.stdout == "started\n" and time.monotonic() - started < 20
    assert engine.run("exec", "-d", "box", "sleep", "1").returncode == 0
    engine.run("stop", "-t", "0", "box", check=True)
    stopped = engine.run("exec", "box", "true")
    assert stopped.returncode == 1 and "is not running" in stopped.stderr


@pytest.mark.parametrize("mode", ["run", "run-interactive", "start-attach"])
def test_attached_run_gives_the_container_pipes(engine: EngineEnv, tmp_path: Path, mode: str) -> None:
    out = _host_file(tmp_path / "hostfile")
    if mode == "start-attach":
        engine.run("create", "--name", "later", "busybox", "sh", "-c", _FD_PROBE, check=True)
        code = _run_with_file_stdio(engine, out, "start", "-a", "later")
    else:
        flags = ["-i"] if mode == "run-interactive" else []
        code = _run_with_file_stdio(engine, out, "run", "--rm", *flags, "busybox", "sh", "-c", _FD_PROBE)
    assert code == 0, out.read_text()
    _assert_not_reachable(out)


def test_detached_run_gives_the_container_pipes(engine: EngineEnv, tmp_path: Path) -> None:
    out = _host_file(tmp_path / "hostfile")
    code = _run_with_file_stdio(engine, out, "run", "-d", "--name", "bg", "busybox", "sh", "-c", _FD_PROBE)
    assert code == 0, out.read_text()
    assert engine.run("wait", "bg", check=True).stdout.strip() == "0"
    logs = engine.run("logs", "bg", check=True).stdout.splitlines()
    links = _links(logs)
    assert links[1].startswith("pipe:[") and links[2].startswith("pipe:["), logs
    assert "READ-BACK" not in logs and "probed" in logs
    lines = out.read_text().splitlines()
    assert lines[0] == SECRET and len(lines) == 2, lines  # the secret and the container's ID


# -- the engine verb and the exec records the API uses -----------------------------------------
def test_exec_verb_records_and_inspect_shape(engine: EngineEnv) -> None:
    from pyengine.containers.engine import Containers
    from pyengine.containers.exec import ExecStore, inspect_exec, relay, start_exec
    from pyengine.errors import Conflict, NotFound, UsageError

    cid = engine.run("run", "-d", "--name", "box", "busybox", "sleep", "60", check=True).stdout.strip()
    containers = Containers(open_engine(engine))
    store = ExecStore(engine.run_root)
    with pytest.raises(UsageError):
        store.create(cid, {"Cmd": []})
    exec_id = store.create(cid, {"Cmd": ["sh", "-c", "read x; echo got $x; echo e >&2; exit 3"],
                                 "AttachStdin": True, "AttachStdout": True, "AttachStderr": True, "User": "1000"})
    assert len(exec_id) == 64 and (store.dir.stat().st_mode & 0o777) == 0o700
    before = inspect_exec(store.load(exec_id))
    assert before == {"ID": exec_id, "Running": False, "ExitCode": None,
                      "ProcessConfig": {"tty": False, "entrypoint": "sh",
                                        "arguments": ["-c", "read x; echo got $x; echo e >&2; exit 3"],
                                        "privileged": False, "user": "1000"},
                      "OpenStdin": True, "OpenStderr": True, "OpenStdout": True, "CanRemove": False,
                      "ContainerID": cid, "DetachKeys": "", "Pid": 0}
    session = start_exec(containers, exec_id)
    running = store.load(exec_id)
    assert running["Running"] and running["Pid"] == session.pid
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(in_w, b"hello\n")
    os.close(in_w)
    assert relay(session, in_r, out_w, err_w) == 3
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    assert os.read(out_r, 100) == b"got hello\n" and os.read(err_r, 100) == b"e\n"
    os.close(out_r)
    os.close(err_r)
    after = inspect_exec(store.load(exec_id))
    assert after["Running"] is False and after["ExitCode"] == 3
    with pytest.raises(Conflict):
        start_exec(containers, exec_id)
    with pytest.raises(NotFound):
        store.load("0" * 64)
    engine.run("stop", "-t", "0", "box", check=True)
    with pytest.raises(Conflict):
        containers.exec("box", ["true"])
    engine.run("rm", "box", check=True)
    with pytest.raises(NotFound):
        store.load(exec_id)


# -- pid reuse (item 8) ------------------------------------------------------------------------
def _start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_a_reused_monitor_pid_is_not_a_live_monitor(engine: EngineEnv) -> None:
    """A record names a monitor and a container process by pid; after a reboot or a long time
    those numbers belong to other processes. The recorded start times tell them apart: the
    container is reconciled as exited, and the unrelated process is not killed."""
    cid = engine.run("run", "-d", "--name", "gone", "busybox", "true", check=True).stdout.strip()
    assert engine.run("wait", cid, check=True).stdout.strip() == "0"
    strangers = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    try:
        path = engine.data_root / "containers" / cid / "state.json"
        state = json.loads(path.read_text())
        state.update(status="running", monitor_pid=strangers[0].pid, pid=strangers[1].pid,
                     monitor_start_time=_start_time(strangers[0].pid) - 1000,
                     pid_start_time=_start_time(strangers[1].pid) - 1000)
        path.write_text(json.dumps(state))
        doc = json.loads(engine.run("inspect", "gone", check=True).stdout)[0]["State"]
        assert doc["Status"] == "exited" and doc["Pid"] == 0, doc
        assert "monitor died" in doc["Error"]
        for stranger in strangers:
            assert stranger.poll() is None, "reconcile killed an unrelated process that got the pid"
        engine.run("rm", "gone", check=True)
    finally:
        for stranger in strangers:
            stranger.kill()
            stranger.wait()


def test_a_running_container_records_its_start_times_and_stays_running(engine: EngineEnv) -> None:
    cid = engine.run("run", "-d", "--name", "alive", "busybox", "sleep", "60", check=True).stdout.strip()
    time.sleep(1.5)  # past the hand-over to pyengine-shim: the same process, the same start time
    state = json.loads((engine.data_root / "containers" / cid / "state.json").read_text())
    assert state["monitor_start_time"] == _start_time(state["monitor_pid"])
    assert state["pid_start_time"] == _start_time(state["pid"])
    doc = json.loads(engine.run("inspect", "alive", check=True).stdout)[0]["State"]
    assert doc["Running"] and doc["Pid"] == state["pid"]
