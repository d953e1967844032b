"""The monitor's native idle half, pyengine-shim: a container that runs past
``SHIM_AFTER`` is watched by the C program (same pid, still the container's parent), which logs,
relays attach traffic and, when the container exits, resumes in Python to record the exit,
clean up and restart. What a user sees must not change across the hand-over.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from containers_support import busybox_engine

from conftest import EngineEnv
from pyengine import shim
from pyengine.containers.monitor import SHIM_AFTER
from pyengine.containers.store import pid_alive

#: long enough that the monitor has handed over before the container does the next thing
PAST_HANDOFF = SHIM_AFTER + 0.8


@pytest.fixture
def engine(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    yield from busybox_engine(engine_env, tmp_path_factory)


def _state(engine: EngineEnv, cid: str) -> dict:
    return json.loads((engine.data_root / "containers" / cid / "state.json").read_text())


def _wait_for_shim(engine: EngineEnv, cid: str, deadline: float = 20) -> int:
    """The monitor's pid once it is pyengine-shim (polls; not a timing assertion)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        pid = _state(engine, cid).get("monitor_pid") or 0
        try:
            if pid and os.readlink(f"/proc/{pid}/exe") == shim.PROGRAM:
                return pid
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the monitor of {cid[:12]} did not become {shim.PROGRAM}")


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))


def test_the_shim_is_built() -> None:
    assert shim.program() == shim.PROGRAM, "pyengine-shim was not built by the install (needs a C compiler)"
    source = Path(shim.PROGRAM).with_name("shim.c")
    if source.exists():  # an editable install: the program must be rebuilt when its source changes
        assert os.stat(shim.PROGRAM).st_mtime >= source.stat().st_mtime, "pyengine-shim is older than shim.c: reinstall"
    bad = subprocess.run([shim.PROGRAM, "--pid"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr


@pytest.mark.parametrize("fork_server", ["on", "off"])
def test_idle_container_is_watched_by_the_shim_and_resumed(engine: EngineEnv, fork_server: str) -> None:
    env = {"PYENGINE_FORK_SERVER": "0"} if fork_server == "off" else None
    script = (f"echo before; sleep {PAST_HANDOFF}; "
              "printf 'after \"q\" \\\\ \\t \\303\\251 \\377 \\360\\237\\230\\200\\n'; echo oops >&2; "
              "printf partial; exec sleep 60")
    cid = engine.run("--log-level", "info", "--log-format", "json", "run", "-d", "--name", "idle", "busybox",
                     "sh", "-c", script, env=env, check=True).stdout.strip()
    monitor = _state(engine, cid)["monitor_pid"]
    assert _wait_for_shim(engine, cid) == monitor, "the hand-over must keep the monitor's pid"
    container = json.loads(engine.run("inspect", cid, check=True).stdout)[0]["State"]["Pid"]
    assert _parent(container) == monitor, "the shim must stay the container's parent"
    smaps = Path(f"/proc/{monitor}/maps").read_text()
    assert "libpython" not in smaps and "python" not in os.readlink(f"/proc/{monitor}/exe")

    # Output after the hand-over is in the json-file log, in Docker's format.
    end = time.monotonic() + 20
    while "oops" not in engine.run("logs", cid).stderr and time.monotonic() < end:
        time.sleep(0.1)
    logs = engine.run("logs", cid, check=True)
    assert logs.stdout == 'before\nafter "q" \\ \t \u00e9 \ufffd \U0001f600\n'
    assert logs.stderr == "oops\n"
    raw = (engine.data_root / "containers" / cid / f"{cid}-json.log").read_text().splitlines()
    entries = [json.loads(line) for line in raw]
    assert [e["stream"] for e in entries] == ["stdout", "stdout", "stderr"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", e["time"]) for e in entries)
    assert all(line.isascii() for line in raw), "entries are written with ensure_ascii, like Python's"

    # The exit goes back to Python: recorded, cleaned up, the partial line flushed.
    engine.run("stop", "-t", "1", cid, check=True)
    state = _state(engine, cid)
    assert state["status"] == "exited" and state["exit_code"] == 137 and state["monitor_pid"] == 0
    end = time.monotonic() + 30  # `stop` returns once the state is recorded; the resume then exits
    while pid_alive(monitor) and time.monotonic() < end:
        time.sleep(0.05)
    assert not pid_alive(monitor), "the monitor's process did not end"
    assert engine.run("logs", cid, check=True).stdout.endswith("partial")
    assert cid not in Path("/proc/self/mountinfo").read_text(), "the rootfs is still mounted"
    monitor_log = (engine.run_root / "containers" / cid / "monitor.log").read_text()
    resumed = [json.loads(line) for line in monitor_log.splitlines() if "monitor.resumed" in line]
    assert len(resumed) == 1 and resumed[0]["exit_code"] == 137, monitor_log
    if fork_server == "on":
        assert resumed[0]["served_by"], "the resume should run in the session's fork server"
    else:
        assert resumed[0]["served_by"] is None


def test_attached_client_talks_to_the_shim(engine: EngineEnv) -> None:
    client = subprocess.Popen([sys.executable, "-m", "pyengine", "run", "-i", "--rm", "--name", "chat", "busybox",
                               "sh", "-c", "read line; echo got $line; echo err >&2; exit 5"],
                              env=engine.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_shim(engine, _wait_for_name(engine, "chat"))
        out, err = client.communicate(b"hello\n", timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 5, err
    assert out == b"got hello\n"
    assert err == b"err\n"
    assert engine.run("ps", "-aq").stdout.strip() == "", "--rm left the container behind"


def _wait_for_name(engine: EngineEnv, name: str) -> str:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        result = engine.run("inspect", "--format", "{{.Id}}", name)
        if result.returncode == 0:
            return result.stdout.strip()
        time.sleep(0.1)
    raise AssertionError(f"no container {name}")


def test_tty_resize_and_input_through_the_shim(engine: EngineEnv) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    client = subprocess.Popen([sys.executable, "-m", "pyengine", "run", "-it", "--rm", "--name", "tty", "busybox",
                               "sh", "-c", "read line; stty size; echo got:$line; exit 4"],
                              env=engine.env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    output = b""
    try:
        _wait_for_shim(engine, _wait_for_name(engine, "tty"))
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 77, 0, 0))
        client.send_signal(signal.SIGWINCH)
        time.sleep(0.3)  # let the client pass the new size on before the container reads it
        os.write(master, b"typed\n")
        end = time.monotonic() + 60
        while client.poll() is None and time.monotonic() < end:
            try:
                output += os.read(master, 4096)
            except OSError:
                break
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        os.close(master)
    assert client.returncode == 4, output
    assert b"33 77" in output and b"got:typed" in output, output


def test_restart_policy_across_the_shim(engine: EngineEnv) -> None:
    cid = engine.run("run", "-d", "--restart", "on-failure:2", "busybox", "sh", "-c",
                     f"echo run; sleep {PAST_HANDOFF}; exit 1", check=True).stdout.strip()
    assert engine.run("wait", cid, check=True, timeout=120).stdout.strip() == "1"
    inspected = json.loads(engine.run("inspect", cid, check=True).stdout)[0]
    assert inspected["RestartCount"] == 2
    assert engine.run("logs", cid, check=True).stdout == "run\nrun\nrun\n"
    assert cid not in Path("/proc/self/mountinfo").read_text()


def test_the_shim_rotates_the_log(engine: EngineEnv) -> None:
    script = (f"sleep {PAST_HANDOFF}; i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done; "
              "echo done >&2; exec sleep 60")
    cid = engine.run("run", "-d", "--log-opt", "max-size=2k", "--log-opt", "max-file=3", "busybox", "sh", "-c",
                     script, check=True).stdout.strip()
    _wait_for_shim(engine, cid)
    end = time.monotonic() + 30
    while "done" not in engine.run("logs", cid).stderr and time.monotonic() < end:
        time.sleep(0.1)
    log = engine.data_root / "containers" / cid / f"{cid}-json.log"
    files = sorted(p.name for p in log.parent.iterdir() if p.name.startswith(log.name))
    assert files == [log.name, log.name + ".1", log.name + ".2"]
    assert all(p.stat().st_size <= 2048 for p in log.parent.iterdir() if p.name.startswith(log.name))
    lines = engine.run("logs", cid, check=True).stdout.splitlines()
    assert lines[-1] == "line-299"
    first = int(lines[0].split("-")[1])
    assert lines == [f"line-{n}" for n in range(first, 300)], "rotation lost or reordered lines"
    engine.run("rm", "-f", cid, check=True)
