"""``attach``, the detach keys of ``run -it``, ``start -ai`` and ``attach``, and ``wait
--condition``: each through a real pty (or pipes), daemonless and through the daemon.

On the detach sequence (ctrl-p ctrl-q unless ``--detach-keys`` says otherwise) the client
leaves with Docker's ``read escape sequence`` and status 0, and the container runs on.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
from containers_support import busybox_engine

from conftest import EngineEnv

CTRL_P, CTRL_Q = b"\x10", b"\x11"
#: a shell without a line editor (ash's asks the terminal where its cursor is): each line typed is run
SHELL = 'echo ready; while read -r line; do eval "$line"; done'


@pytest.fixture(params=["local", "daemon"])
def engine(request: pytest.FixtureRequest, engine_env: EngineEnv,
           tmp_path_factory: pytest.TempPathFactory) -> EngineEnv:
    yield from busybox_engine(engine_env, tmp_path_factory, request.param)


class Terminal:
    """``pyengine ARGS`` on a fresh pty (24x80): what a user at a terminal types and sees."""

    def __init__(self, engine: EngineEnv, *args: str) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.process = subprocess.Popen([sys.executable, "-m", "pyengine", *args], env=engine.env, stdin=slave,
                                        stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.seen = b""

    def raw(self, timeout: float = 30) -> None:
        """Wait until the client put the terminal in raw mode (it flushes what was typed before)."""
        end = time.monotonic() + timeout
        while termios.tcgetattr(self.master)[3] & termios.ECHO:
            if time.monotonic() > end or self.process.poll() is not None:
                raise AssertionError(f"the client never made the terminal raw; it shows {self.seen!r}")
            time.sleep(0.02)

    def ready(self) -> None:
        """Wait for the client's raw mode and the container's first words."""
        self.raw()
        self.expect(b"ready")

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, wanted: bytes, timeout: float = 30) -> bytes:
        end = time.monotonic() + timeout
        while wanted not in self.seen:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{wanted!r} did not appear; the terminal shows {self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: the command ended and closed its side
                    data = b""
                if not data:
                    raise AssertionError(f"{wanted!r} did not appear before the end; saw {self.seen!r}")
                self.seen += data
        return self.seen

    def finish(self, timeout: float = 30) -> int:
        """The command's exit status, once it ended (what it printed is kept in ``seen``)."""
        end = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < end:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:
                    pass
        code = self.process.wait(timeout=5)
        try:
            while select.select([self.master], [], [], 0.1)[0]:
                data = os.read(self.master, 65536)
                if not data:
                    break
                self.seen += data
        except OSError:
            pass
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _state(engine: EngineEnv, ref: str) -> dict:
    return json.loads(engine.run("inspect", ref, check=True).stdout)[0]["State"]


def test_run_it_detaches_on_ctrl_p_ctrl_q_and_attach_comes_back(engine: EngineEnv) -> None:
    term = Terminal(engine, "run", "-it", "--name", "box", "busybox", "sh", "-c", SHELL)
    try:
        term.ready()
        term.type(b"echo $((6*7))\n")
        term.expect(b"42")
        term.type(CTRL_P)
        time.sleep(0.3)  # the first key alone is held back, not yet a detach
        term.type(CTRL_Q)
        assert term.finish() == 0, term.seen
    finally:
        term.kill()
    assert b"read escape sequence" in term.seen
    state = _state(engine, "box")
    assert state["Running"], state

    # attach brings the same shell back; the default keys detach again
    again = Terminal(engine, "attach", "box")
    try:
        again.raw()
        again.type(b"echo again$((1+1))\n")
        again.expect(b"again2")
        again.type(CTRL_P + CTRL_Q)
        assert again.finish() == 0, again.seen
    finally:
        again.kill()
    assert b"read escape sequence" in again.seen and _state(engine, "box")["Running"]

    # with other keys, ctrl-p passes through to the shell, and the exit code is the container's
    other = Terminal(engine, "attach", "--detach-keys", "ctrl-x,y", "box")
    try:
        other.raw()
        other.type(b'case "x' + CTRL_P + b'y" in x?y) echo passed-through;; esac\n')
        other.expect(b"passed-through\r\n")
        other.type(b"exit 3\n")
        assert other.finish() == 3, other.seen
    finally:
        other.kill()
    assert b"read escape sequence" not in other.seen
    assert _state(engine, "box")["ExitCode"] == 3


def test_start_ai_detaches_with_custom_keys(engine: EngineEnv) -> None:
    cid = engine.run("create", "-it", "busybox", "sh", "-c", SHELL, check=True).stdout.strip()
    term = Terminal(engine, "start", "-ai", "--detach-keys", "ctrl-a,d", cid)
    try:
        term.ready()
        term.type(b"echo started$((2+3))\n")
        term.expect(b"started5")
        term.type(b"\x01d")
        assert term.finish() == 0, term.seen
    finally:
        term.kill()
    assert b"read escape sequence" in term.seen
    assert _state(engine, cid)["Running"]


def test_attach_without_a_tty_proxies_signals_and_returns_the_exit_code(engine: EngineEnv) -> None:
    script = "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.1; done"
    cid = engine.run("run", "-d", "-i", "busybox", "sh", "-c", script, check=True).stdout.strip()
    client = subprocess.Popen([sys.executable, "-m", "pyengine", "attach", "--no-stdin", cid], env=engine.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)  # attached; "ready" was printed before, so it is not replayed
        client.send_signal(signal.SIGTERM)
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 7, err
    assert out == b"got TERM\n", (out, err)
    assert not _state(engine, cid)["Running"]


def test_attach_refusals_are_one_line(engine: EngineEnv) -> None:
    cid = engine.run("create", "busybox", "true", check=True).stdout.strip()
    stopped = engine.run("attach", cid)
    assert stopped.returncode == 1 and "start it first" in stopped.stderr, stopped.stderr
    for args in (["attach", "--detach-keys", "ctrl-1", cid], ["run", "--detach-keys", "ctrl-", "busybox", "true"],
                 ["start", "-a", "--detach-keys", "alt-x", cid]):
        bad = engine.run(*args)
        assert bad.returncode == 2, (args, bad.stderr)
        assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and "Invalid detach keys" in bad.stderr
    assert len(engine.run("ps", "-aq").stdout.split()) == 1, "a refused run created a container"


def test_wait_conditions(engine: EngineEnv) -> None:
    cid = engine.run("run", "-d", "busybox", "sleep", "60", check=True).stdout.strip()
    next_exit = subprocess.Popen([sys.executable, "-m", "pyengine", "wait", "--condition", "next-exit", cid],
                                 env=engine.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    removed = subprocess.Popen([sys.executable, "-m", "pyengine", "wait", "--condition", "removed", cid],
                               env=engine.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        assert next_exit.poll() is None and removed.poll() is None
        engine.run("kill", cid, check=True)
        out, err = next_exit.communicate(timeout=30)
        assert next_exit.returncode == 0 and out.strip() == "137", err
        # not-running answers at once for a stopped container; removed waits for the rm
        assert engine.run("wait", "--condition", "not-running", cid, check=True).stdout.strip() == "137"
        time.sleep(0.5)
        assert removed.poll() is None, "removed answered before the container was removed"
        engine.run("rm", cid, check=True)
        out, err = removed.communicate(timeout=30)
        assert removed.returncode == 0 and out.strip() == "137", err
    finally:
        for waiter in (next_exit, removed):
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait()
    bad = engine.run("wait", "--condition", "sometime", "x")
    assert bad.returncode == 2 and "sometime" in bad.stderr
