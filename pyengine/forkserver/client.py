"""The ``pyengine`` command's entry point: ask the fork server to run it, else run it here.

This module imports almost nothing (``_socket`` and ``signal``; not click, not json) so that a
command served by the fork server costs little more than the interpreter's start. The request
is NUL-separated bytes (argv and the environment cannot contain NUL), preceded by its length:

    exe, cwd, umask (octal), ttys ("010": which of fds 0-2 are terminals),
    len(argv), *argv, len(env), *("KEY=VALUE"), len(path), *sys.path[1:]
"""

from __future__ import annotations

import os
import sys

from pyengine.forkserver import IN_PROCESS_ONLY, MAX_PASS_FDS, PASS_FDS_ENV, pid_file, socket_path

#: Signals the client passes on to the fork that runs its command (SIGKILL cannot be caught:
#: the server sees the connection close and kills the fork itself).
RELAYED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")


def main() -> None:
    sock = socket_path()
    if sock is not None and not IN_PROCESS_ONLY.intersection(sys.argv[1:]):
        code = run_by_server(sock, sys.argv[1:])
        if code is not None:
            # The fork did the work and flushed its output; the interpreter's orderly shutdown
            # here would add some milliseconds to every command for nothing to clean up.
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(code & 0xFF)
        start_server(sock)
    from pyengine.cli import main as cli_main

    cli_main()


def encode_request(argv: list[str]) -> bytes:
    umask = os.umask(0)
    os.umask(umask)
    ttys = "".join("1" if _isatty(fd) else "0" for fd in range(3))
    env = [k + b"=" + v for k, v in os.environb.items()]
    path = [os.fsencode(p) for p in sys.path[1:]]
    fields = [os.fsencode(sys.executable), os.fsencode(os.getcwd()), b"%o" % umask, ttys.encode(),
              b"%d" % len(argv), *(os.fsencode(a) for a in argv), b"%d" % len(env), *env, b"%d" % len(path), *path]
    payload = b"\0".join(fields)
    return b"%d\n" % len(payload) + payload


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def run_by_server(sock: str, argv: list[str]) -> int | None:
    """The command's exit status from the server, or None to run it in this process."""
    import _socket

    try:
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        try:
            conn.connect(sock)
            request = encode_request(argv)
        except OSError:
            return None
        fds = [fd for fd in range(3) if _valid_fd(fd)]
        if len(fds) != 3:
            return None  # a closed std stream: keep its exact meaning by running here
        passed = passed_fds()
        if passed is None:
            return None
        fds += passed
        rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        try:
            conn.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        except OSError:
            return None
        reader = _Lines(conn)
        first = reader.line()
        if not first.startswith(b"P"):
            return None  # refused, or the server went away before running it: run it here
        pid = int(first[1:])
        _relay_signals(pid)
        last = reader.line()
        if last.startswith(b"S"):
            return int(last[1:])
        os.write(2, b"pyengine: error: the fork server ended before the command did\n")
        return 125
    finally:
        conn.close()


def passed_fds() -> list[int] | None:
    """The descriptors named by PYENGINE_PASS_FDS ([] without it), or None when one is not
    open or there are too many: then the command runs here, where it has them all."""
    text = os.environ.get(PASS_FDS_ENV, "")
    try:
        fds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return None
    if len(fds) > MAX_PASS_FDS or not all(fd > 2 and _valid_fd(fd) for fd in fds):
        return None
    return fds


def _valid_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


class _Lines:
    def __init__(self, conn: object) -> None:
        self.conn = conn
        self.buffer = b""

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            try:
                chunk = self.conn.recv(256)  # type: ignore[attr-defined]
            except OSError:
                chunk = b""
            if not chunk:
                return b""
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line


def _relay_signals(pid: int) -> None:
    # _signal, not signal: the latter builds its enums on import, ~4 ms of every command
    import _signal as signal

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for name in RELAYED:
        signal.signal(getattr(signal, name), forward)


def start_server(sock: str) -> None:
    """Start a fork server for the next command, in the background, unless one is starting."""
    try:
        with open(pid_file(sock)) as f:
            os.kill(int(f.read().strip() or 0), 0)
        return  # alive: it is still warming up, or it refused us for a reason of its own
    except (OSError, ValueError):
        pass
    directory = os.path.dirname(sock)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if os.stat(directory).st_uid != os.geteuid():
            return  # not ours: never put a socket that runs our commands in someone else's dir
    except OSError:
        return
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.chdir("/")
                devnull = os.open(os.devnull, os.O_RDWR)
                log = os.open(sock + ".log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(devnull, 0)
                os.dup2(devnull, 1)
                os.dup2(log, 2)
                os.closerange(3, 1 << 16)
                os.execv(sys.executable, [sys.executable, "-P", "-m", "pyengine.forkserver.server",
                                          "--socket", sock])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
