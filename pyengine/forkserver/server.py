"""The fork server process: ``python -m pyengine.forkserver.server --socket PATH``.

One per socket (an flock on ``PATH.lock`` keeps a second from starting). It imports the engine
and the bundled plugins, freezes the heap for the garbage collector (so forks share its pages),
then answers each connection:

    client -> server   one message: a JSON request {argv, env, cwd, umask, exe, path} and, as
                       SCM_RIGHTS, the client's stdin, stdout and stderr
    server -> client   ``P<pid>\\n`` once the fork runs the command, or ``F<reason>\\n`` (run it
                       yourself); after ``P``, ``S<status>\\n`` when the fork has exited

If the client's connection closes before its fork has exited (the client was killed), the
fork is killed with SIGKILL, as the command would have been in-process.
"""

from __future__ import annotations

import argparse
import array
import fcntl
import gc
import importlib
import os
import pkgutil
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Any

from pyengine import forkserver
from pyengine.forkserver import DEFAULT_IDLE_SECONDS, IDLE_ENV, context_mismatch, pid_file

MAX_REQUEST = 1 << 20


def preload() -> None:
    """Import the engine, every CLI command and the bundled plugins (not the test helpers)."""
    import pyengine
    import pyengine_plugins

    for package in (pyengine, pyengine_plugins):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if ".testing" in info.name or info.name.endswith("__main__") or info.name.startswith("pyengine.forkserver"):
                continue
            try:
                importlib.import_module(info.name)
            except Exception:  # noqa: BLE001 - an optional dependency missing: the fork imports it, or fails as in-process
                pass
    for optional in ("tomllib", "structlog", "pyroute2"):
        try:
            importlib.import_module(optional)
        except Exception:  # noqa: BLE001 - not installed: nothing to warm
            pass


def code_fingerprint() -> dict[str, float]:
    """mtime of every loaded module file of the engine and plugins, and of sys.path entries
    (a pip install or uninstall changes a site-packages directory)."""
    stamps: dict[str, float] = {}
    for entry in sys.path:
        try:
            stamps[entry or "."] = os.stat(entry or ".").st_mtime
        except OSError:
            stamps[entry or "."] = -1.0
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and (name.startswith("pyengine") or name.startswith("pyengine_plugins")):
            try:
                stamps[path] = os.stat(path).st_mtime
            except OSError:
                stamps[path] = -1.0
    return stamps


class Server:
    def __init__(self, sock_path: str, idle: float) -> None:
        self.path = sock_path
        self.idle = idle
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, socket.socket] = {}  # fork pid -> client connection
        self.conn_child: dict[socket.socket, int] = {}
        self.last_activity = time.monotonic()
        self.listener: socket.socket | None = None
        self.fingerprint: dict[str, float] = {}
        self.wake_r, self.wake_w = os.pipe()
        self.stopping = False
        self.lock_fd = -1

    # -- set-up ------------------------------------------------------------------------------
    def listen(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(self.path)
        finally:
            os.umask(old)
        self.sock_ino = os.stat(self.path).st_ino  # to unlink only our own socket file later
        listener.listen(64)
        listener.setblocking(False)
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._terminate)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "signal")

    def stop_listening(self) -> None:
        """Stop taking commands: the socket, the pid file and the lock go at once, so a new
        server can start while this one waits for the commands it still runs."""
        if self.listener is None:
            return
        release(self.path, self.lock_fd)
        self.lock_fd = -1
        self.selector.unregister(self.listener)
        try:
            if os.stat(self.path).st_ino == self.sock_ino:
                os.unlink(self.path)
        except OSError:
            pass
        self.listener.close()
        self.listener = None

    def _terminate(self, *_: Any) -> None:
        self.stopping = True

    # -- the loop ----------------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            if self.stopping:
                self.stop_listening()
            if self.listener is None and not self.children:
                return
            if self.listener is not None and not self.children and \
                    time.monotonic() - self.last_activity > self.idle:
                self.stop_listening()
                continue
            for key, _ in self.selector.select(timeout=min(self.idle, 5.0)):
                if key.data == "accept":
                    self.accept()
                elif key.data == "signal":
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                else:
                    self.client_readable(key.fileobj)  # type: ignore[arg-type]
            self.reap()

    def accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        self.last_activity = time.monotonic()
        conn.setblocking(True)
        fds: list[int] = []
        try:
            request, fds = self.receive(conn)
            reason = self.refusal(conn, request)
            if reason:
                if reason == "stale":
                    self.stop_listening()  # before the answer: the client starts the next server
                conn.sendall(f"F{reason}\n".encode())
                conn.close()
                return
            pid = os.fork()
            if pid == 0:
                self.child(conn, request, fds)  # never returns
            self.children[pid] = conn
            self.conn_child[conn] = pid
            self.selector.register(conn, selectors.EVENT_READ, "client")
        except Exception as exc:  # noqa: BLE001 - one bad client must not stop the server
            try:
                conn.sendall(f"F{type(exc).__name__}\n".encode())
            except OSError:
                pass
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def receive(self, conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
        """One request (see pyengine.forkserver.client) and the file descriptors passed with it."""
        fds = array.array("i")
        msg, ancdata, _, _ = conn.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(3 * fds.itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        head, _, body = msg.partition(b"\n")
        size = int(head)
        while len(body) < size:
            more = conn.recv(size - len(body))
            if not more:
                raise ConnectionError("short request")
            body += more
        fields = body.split(b"\0")
        exe, cwd, umask, ttys = fields[:4]
        rest = fields[4:]
        lists = []
        for _ in range(3):
            count = int(rest[0])
            lists.append(rest[1:1 + count])
            rest = rest[1 + count:]
        argv, env, path = lists
        request = {"exe": os.fsdecode(exe), "cwd": cwd, "umask": int(umask, 8),
                   "ttys": [c == ord("1") for c in ttys], "argv": [os.fsdecode(a) for a in argv],
                   "env": dict(entry.split(b"=", 1) for entry in env if b"=" in entry),
                   "path": [os.fsdecode(p) for p in path]}
        return request, list(fds)

    def refusal(self, conn: socket.socket, request: dict[str, Any]) -> str | None:
        """Why this server must not run the request, or None."""
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        client_pid, uid, _ = array.array("i", creds)
        if uid != os.geteuid():
            return "user"
        if os.path.realpath(request.get("exe", "")) != os.path.realpath(sys.executable) \
                or request.get("path") != sys.path:
            return "interpreter"
        if code_fingerprint() != self.fingerprint:
            return "stale"
        mismatch = context_mismatch(client_pid)
        return f"context {mismatch}" if mismatch else None

    def client_readable(self, conn: socket.socket) -> None:
        """The client closed (or broke) its end while its fork runs: end the fork."""
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if data:
            return
        pid = self.conn_child.pop(conn, None)
        self.selector.unregister(conn)
        conn.close()
        if pid is not None and pid in self.children:
            self.children[pid] = None  # type: ignore[assignment]
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            self.last_activity = time.monotonic()
            if conn is None:
                continue
            self.conn_child.pop(conn, None)
            self.selector.unregister(conn)
            code = os.waitstatus_to_exitcode(status)
            try:
                conn.sendall(f"S{code if code >= 0 else 128 - code}\n".encode())
            except OSError:
                pass
            conn.close()

    # -- the fork ----------------------------------------------------------------------------
    def child(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        code = 125
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.selector.close()
            if self.listener is not None:
                self.listener.close()
            for other in list(self.children.values()):
                if other is not None:
                    other.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            setup_stdio(fds, request.get("ttys", []))
            os.chdir(request["cwd"])
            os.umask(request["umask"])
            os.environb.clear()
            os.environb.update(request["env"])
            sys.argv = ["pyengine", *request["argv"]]
            forkserver.SERVED_BY = os.getppid()
            conn.sendall(f"P{os.getpid()}\n".encode())
            conn.close()
            from pyengine.cli import main

            try:
                main(request["argv"])
                code = 0
            except SystemExit as exc:
                if exc.code is None:
                    code = 0
                elif isinstance(exc.code, int):
                    code = exc.code
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
            except KeyboardInterrupt:
                code = 130
        except BaseException as exc:  # noqa: BLE001 - report and exit, never return into the server
            try:
                print(f"pyengine: error: {exc}", file=sys.stderr)
            except Exception:  # noqa: BLE001
                pass
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001
                    pass
            os._exit(code)


def setup_stdio(fds: list[int], ttys: list[bool]) -> None:
    """Make the client's stdin, stdout and stderr this process's fds 0-2 and sys.std*."""
    import io

    devnull = os.open(os.devnull, os.O_RDWR)
    for target in range(3):
        os.dup2(fds[target] if target < len(fds) and fds[target] >= 0 else devnull, target)
    os.close(devnull)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    fds.clear()  # closed: the caller must not close them again
    encoding = "utf-8"
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding=encoding,
                                 errors="surrogateescape")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding=encoding,
                                  errors="surrogateescape", line_buffering=bool(ttys and ttys[1]))
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding=encoding,
                                  errors="backslashreplace", line_buffering=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="pyengine's fork server (started by the pyengine command)")
    parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    try:
        idle = float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_SECONDS))
    except ValueError:
        idle = DEFAULT_IDLE_SECONDS
    lock_fd = os.open(args.socket + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another server has this socket
    with open(pid_file(args.socket) + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(pid_file(args.socket) + ".tmp", pid_file(args.socket))
    server: Server | None = None
    try:
        preload()
        if threading.active_count() != 1:
            return  # an import started a thread: forking would copy it half-way; stay off
        server = Server(args.socket, idle)
        server.lock_fd = lock_fd
        server.fingerprint = code_fingerprint()
        gc.collect()
        gc.freeze()  # the collector will not touch (and so not copy) the warm heap in forks
        server.listen()
        server.serve()
    finally:
        release(args.socket, lock_fd if server is None else server.lock_fd)


def release(sock: str, lock_fd: int) -> None:
    """Remove our pid file (only if it is still ours) and drop the server lock."""
    try:
        with open(pid_file(sock)) as f:
            if f.read().strip() == str(os.getpid()):
                os.unlink(pid_file(sock))
    except OSError:
        pass
    if lock_fd >= 0:
        os.close(lock_fd)


if __name__ == "__main__":
    main()
