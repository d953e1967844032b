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
            if info.name.startswith("pyengine.api.") and info.name != "pyengine.api.server":
                # The daemon never runs in a fork (IN_PROCESS_ONLY); its routes and aiohttp would
                # be ~8 MB of every fork server's memory for nothing. `info` reads api.server.
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


def warm_engine() -> None:
    """Build one engine (config, plugin host, isolators) on scratch roots and drop it, so the
    lazy first-use work (third-party plugin imports, pluggy's and inspect's caches) is done
    here once instead of in every fork: ~3 ms of each command; compile the default seccomp
    filter; and make the sealed memfd copy of pyengine-shim that ``--init`` containers run
    (every fork inherits the descriptor); and build the plugin host that the first engine of
    each fork takes (``pyengine.engine.prebuild_plugin_host``). Nothing else of it is kept but
    what the imports left; a config that does not load is simply not warmed."""
    import shutil
    import tempfile

    from pyengine.cli import CliState

    scratch = tempfile.mkdtemp(prefix="pyengine-fork-warm-")
    try:
        state = CliState(None, {"data-root": f"{scratch}/data", "run-root": f"{scratch}/run"})
        _ = state.engine().isolators
        state.close()
        # Docker's seccomp profile for the default capabilities, compiled once (~10 ms):
        # every container started from a fork finds it in the cache
        from pyengine.runtime import kernel
        from pyengine.runtime.spec import DEFAULT_CAPABILITIES, default_seccomp

        if kernel.libseccomp() is not None:
            kernel.seccomp_compile(default_seccomp(DEFAULT_CAPABILITIES))
        from pyengine.runtime.launch import init_program

        init_program()
        # last: the scratch engine above must not take it
        from pyengine.engine import prebuild_plugin_host

        prebuild_plugin_host()
    except Exception:  # noqa: BLE001 - only an optimisation: the command will say what is wrong
        pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _installed_dirs() -> tuple[str, ...]:
    """The standard library and site-packages: what pip (or the system) installs. A change
    there shows in the mtime of a sys.path directory, so their files need no stat each."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    dirs = {paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"], *site.getsitepackages()}
    return tuple(os.path.join(d, "") for d in dirs if d)


_INSTALLED = _installed_dirs()


def watched_files() -> list[str]:
    """The sys.path directories (a pip install, upgrade or uninstall changes a site-packages
    directory) and every loaded module file outside the installed dirs (an editable
    install's source, where an edit changes only the file)."""
    files = [entry or "." for entry in sys.path]
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and not path.startswith(_INSTALLED):
            files.append(path)
    return files


def code_fingerprint(files: list[str]) -> list[float]:
    """The mtime of each watched file (-1 for one that is gone)."""
    stamps = []
    for path in files:
        try:
            stamps.append(os.stat(path).st_mtime)
        except OSError:
            stamps.append(-1.0)
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
        self.interpreter = os.path.realpath(sys.executable)  # fixed for the process's life
        self.watched: list[str] = []
        self.fingerprint: list[float] = []
        self.wake_r, self.wake_w = os.pipe()
        self.stopping = False
        self.lock_fd = -1
        #: a fork made ahead of the next command, waiting on a socketpair for it (pid, our end)
        self.standby: tuple[int, socket.socket] | None = None

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
        self.new_standby()

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
        if self.standby is not None:
            self.standby[1].close()  # it reads EOF and exits
            self.standby = None

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
            request, fds, raw = self.receive(conn)
            reason = self.refusal(conn, request)
            if reason:
                print(f"pyengine fork server: refused a command: {reason}", file=sys.stderr, flush=True)
                if reason == "stale":
                    self.stop_listening()  # before the answer: the client starts the next server
                conn.sendall(f"F{reason}\n".encode())
                conn.close()
                return
            pid = self.hand_over(conn, raw, request, fds)
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
        # The next standby only now: it must not inherit this client's stdio (a pipe's reader
        # would wait for it) nor hold its connection open (the server would miss its end).
        self.new_standby()

    def hand_over(self, conn: socket.socket, raw: bytes, request: dict[str, Any], fds: list[int]) -> int:
        """Give the request to the standby fork (made before it came, so the fork is off the
        command's path); without a standby, fork now. The fork's pid."""
        standby, self.standby = self.standby, None
        if standby is not None:
            pid, channel = standby
            try:
                channel.sendmsg([raw], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                         array.array("i", [conn.fileno(), *fds]))])
            except OSError:
                standby = None
            channel.close()
        if standby is None:
            pid = os.fork()
            if pid == 0:
                self.child(conn, request, list(fds))  # never returns
        return pid

    def new_standby(self) -> None:
        if self.listener is None or self.standby is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return
        if pid == 0:
            ours.close()
            self.wait_as_standby(theirs)  # never returns
        theirs.close()
        self.standby = (pid, ours)

    def wait_as_standby(self, channel: socket.socket) -> None:
        try:
            self.drop_server_state()
            try:
                request, fds, _ = self.receive(channel)
            except (OSError, ValueError):
                os._exit(0)  # the server closed our channel: no command is coming
            channel.close()
            conn = socket.socket(fileno=fds[0])
            self.child(conn, request, fds[1:])
        finally:
            os._exit(125)

    def receive(self, conn: socket.socket) -> tuple[dict[str, Any], list[int], bytes]:
        """One request (see pyengine.forkserver.client), the file descriptors passed with it,
        and its raw bytes."""
        fds = array.array("i")
        # the client's stdio and passed descriptors, plus the connection (server to standby)
        room = socket.CMSG_SPACE((4 + forkserver.MAX_PASS_FDS) * fds.itemsize)
        msg, ancdata, _, _ = conn.recvmsg(MAX_REQUEST, room)
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        if not msg:
            raise ConnectionError("no request")
        head, _, body = msg.partition(b"\n")
        size = int(head)
        while len(body) < size:
            more = conn.recv(size - len(body))
            if not more:
                raise ConnectionError("short request")
            body += more
        return self.parse(body), list(fds), head + b"\n" + body

    @staticmethod
    def parse(body: bytes) -> dict[str, Any]:
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
        return request

    def refusal(self, conn: socket.socket, request: dict[str, Any]) -> str | None:
        """Why this server must not run the request, or None."""
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        client_pid, uid, _ = array.array("i", creds)
        if uid != os.geteuid():
            return "user"
        if os.path.realpath(request.get("exe", "")) != self.interpreter or request.get("path") != sys.path:
            return "interpreter"
        if code_fingerprint(self.watched) != self.fingerprint:
            return "stale"
        # this process's own side is read again each time: an admin may move it to another
        # cgroup or change its limits, and its forks would run there
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
        while True:
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

    def drop_server_state(self) -> None:
        """In a fork: close what belongs to the server (idempotent: fds closed once)."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        self.selector.close()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.standby is not None:
            self.standby[1].close()
            self.standby = None
        for other in list(self.children.values()):
            if other is not None:
                other.close()
        self.children.clear()
        self.conn_child.clear()
        # the flock is on the open file: a fork (and the container monitors it forks) keeping
        # a copy would hold the server lock after the server is gone
        for fd in (self.wake_r, self.wake_w, self.lock_fd):
            if fd >= 0:
                os.close(fd)
        self.wake_r = self.wake_w = self.lock_fd = -1

    # -- the fork ----------------------------------------------------------------------------
    def child(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        code = 125
        try:
            self.drop_server_state()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            passed = fds[3:]
            del fds[3:]
            setup_stdio(fds, request.get("ttys", []))
            os.chdir(request["cwd"])
            os.umask(request["umask"])
            os.environb.clear()
            os.environb.update(request["env"])
            if passed:
                os.environ[forkserver.PASS_FDS_ENV] = ",".join(str(fd) for fd in passed)
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
        warm_engine()
        if threading.active_count() != 1:
            return  # an import started a thread: forking would copy it half-way; stay off
        server = Server(args.socket, idle)
        server.lock_fd = lock_fd
        server.watched = watched_files()
        server.fingerprint = code_fingerprint(server.watched)
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
