"""The per-container monitor: the process that starts a container and stays its parent.

It owns the container's stdio (logging it to the json-file log and relaying it to attached
clients), records the exit status and OOM kill, applies the restart policy with backoff, and
cleans up (rootfs, isolators, network) when the container ends. It is forked from the CLI
(daemonless) and detached with setsid, so a container outlives the command that started it.

Its life has three parts. Python starts the container and pumps its stdio. Once the container
has run for ``SHIM_AFTER`` seconds, the monitor exec()s ``pyengine-shim`` (pyengine/shim), a
small C program that does the same pumping in the same process — so the container stays its
child — for ~150 KiB instead of a Python process's ~10 MB. When the container exits, the shim
exec()s ``pyengine container monitor-resume`` (through the fork server when one answers),
which records the exit, cleans up, and on a restart spawns a fresh monitor (``resume``).
A container that ends within ``SHIM_AFTER`` never leaves Python.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, cast

from pyengine.containers import attach
from pyengine.containers.health import HealthSchedule, initial_health
from pyengine.containers.logfile import JsonLogWriter
from pyengine.containers.store import now_iso
from pyengine.errors import PyEngineError
from pyengine.log import get_logger

if TYPE_CHECKING:
    from pyengine.containers.engine import Containers

log = get_logger("pyengine.monitor")

#: Seconds a container runs before its monitor hands the idle pumping to pyengine-shim.
SHIM_AFTER = 1.0


def restart_wanted(policy: dict[str, Any], exit_code: int, restarts: int, stop_requested: bool) -> bool:
    """Docker's restart policies: no, on-failure[:N], always, unless-stopped."""
    name = policy.get("Name") or "no"
    if stop_requested or name == "no":
        return False
    if name == "on-failure":
        limit = int(policy.get("MaximumRetryCount") or 0)
        return exit_code != 0 and (limit == 0 or restarts < limit)
    return name in ("always", "unless-stopped")


class Monitor:
    """One container's monitor; ``run`` never returns (the process exits)."""

    def __init__(self, containers: Containers, container_id: str, client: socket.socket | None,
                 ready_fd: int | None, listener: socket.socket | None = None,
                 clients: list[socket.socket] | None = None, delay: float = 0.1) -> None:
        self.containers = containers
        self.store = containers.store
        self.id = container_id
        self.clients: list[socket.socket] = list(clients or [])
        if client is not None:
            self.clients.append(client)
        self.readers: dict[socket.socket, attach.FrameReader] = {}
        self.ready_fd = ready_fd
        self.selector = selectors.DefaultSelector()
        self.listener = listener
        self.delay = delay
        self.process: Any = None
        self.stdin_w: int | None = None
        self.tty_master: int | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        code = 0
        try:
            code = self._run()
        except BaseException as exc:  # the monitor must record what happened, whatever it was
            import traceback

            log.error("monitor.failed", container=self.id, reason=repr(exc), traceback=traceback.format_exc())
            self._notify_ready(f"error 125 {exc}")
            code = 125
        finally:
            os._exit(0 if code == 0 else 1)

    def _run(self) -> int:
        record = self.store.load(self.id)
        host_config = record.host_config
        log_opts = host_config.get("LogConfig", {}).get("Config", {})
        self.log = JsonLogWriter(self.store.log_path(self.id),
                                 max_size=_parse_size(log_opts.get("max-size", "10m")),
                                 max_files=int(log_opts.get("max-file", "2")))
        if self.listener is None:
            self._listen()
        else:
            self.selector.register(self.listener, selectors.EVENT_READ, ("listen", None))
        for client in list(self.clients):
            self._add_client(client)
        delay: float | None = self.delay
        final_code = 0
        while delay is not None:
            try:
                self._start_once()
            except PyEngineError as exc:
                self._record_failure(exc)
                self._notify_ready(f"error {exc.exit_code} {exc}")
                final_code = exc.exit_code
                break
            self._notify_ready(f"ok {self.process.pid}")
            started = time.monotonic()
            final_code = self._pump(started, delay)
            delay = self.after_exit(final_code, started, delay)
        self.log.close()
        # Clients learn the exit code only after cleanup (and --rm) are done, so that a
        # `run --rm` that returned leaves nothing of the container behind.
        self._finish()
        self._send_exit(final_code)
        return 0

    def after_exit(self, exit_code: int, started: float, delay: float) -> float | None:
        """Record the exit; when the restart policy wants another run, wait out the backoff
        and return the delay used, else None."""
        state = self._record_exit(exit_code)
        policy = self.store.load(self.id).host_config.get("RestartPolicy") or {"Name": "no"}
        if not restart_wanted(policy, exit_code, state.restart_count, state.stop_requested):
            return None
        # Docker's backoff: double from 100 ms; reset after a run of 10 s or more.
        delay = 0.1 if time.monotonic() - started >= 10 else min(delay * 2, 60.0)
        with self.store.container_lock(self.id):
            state = self.store.load(self.id).state
            state.status, state.restart_count = "restarting", state.restart_count + 1
            self.store.save_state(self.id, state)
        time.sleep(delay)
        if self.store.load(self.id).state.stop_requested:
            return None
        return delay

    def _start_once(self) -> None:
        record = self.store.load(self.id)
        interactive = record.config.get("OpenStdin", False)
        tty = record.config.get("Tty", False)
        stdout_w = stderr_w = None
        outputs: list[tuple[int, str]] = []
        stdin_r = None
        if tty:
            stdio = None
        else:
            stdout_r, stdout_w = os.pipe()
            stderr_r, stderr_w = os.pipe()
            outputs = [(stdout_r, "stdout"), (stderr_r, "stderr")]
            if interactive:
                stdin_r, self.stdin_w = os.pipe()
            stdio = (stdin_r, stdout_w, stderr_w)
        from pyengine.runtime import kernel

        kernel.use_seccomp_cache(self.containers.engine.config.run_root)  # the filter compiled by an earlier monitor
        with self.store.container_lock(self.id):
            state = self.store.load(self.id).state
            try:
                self.process = self.containers.launch(record, stdio)
            finally:
                for fd in (stdin_r, stdout_w, stderr_w):
                    if fd is not None:
                        os.close(fd)
            state.status, state.pid, state.monitor_pid = "running", self.process.pid, os.getpid()
            # with the pids, when they started: a pid reused later is not ours (reconcile)
            state.pid_start_time = _start_time(self.process.pid)
            state.monitor_start_time = _start_time(os.getpid())
            state.started_at, state.error, state.oom_killed = now_iso(), "", False
            state.health = initial_health(record.config)  # each run starts "starting" again
            self.store.save_state(self.id, state)
        self.containers.emit(record, "start")
        if tty:
            self.tty_master = self.process.tty_master
            if interactive:
                self.stdin_w = self.tty_master
            self.selector.register(self.tty_master, selectors.EVENT_READ, ("out", "stdout"))
        else:
            for fd, stream in outputs:
                self.selector.register(fd, selectors.EVENT_READ, ("out", stream))

    def _pump(self, started: float, delay: float) -> int:
        """Relay output and input until the container exits; return its exit code. After
        SHIM_AFTER seconds, hand the rest to pyengine-shim (this never returns then)."""
        from pyengine import shim

        pidfd = os.pidfd_open(self.process.pid)
        self.selector.register(pidfd, selectors.EVENT_READ, ("exit", None))
        outputs = sum(1 for k in self.selector.get_map().values() if k.data[0] == "out")
        exited = False
        program = shim.program()
        handoff = started + SHIM_AFTER if program else None
        health = HealthSchedule(self.containers, self.id, self.store.load(self.id).config, started)
        while outputs or not exited:
            timeout = None if handoff is None else max(0.0, handoff - time.monotonic())
            if not exited and health.active:
                due = health.timeout(time.monotonic())
                if due is not None:  # never None while active
                    timeout = due if timeout is None else min(timeout, due)
            if exited:
                timeout = 0.5
            events = self.selector.select(timeout=timeout)
            if not exited:
                health.tick(time.monotonic())
                if health.pidfd is not None and health.pidfd not in self.selector.get_map():
                    self.selector.register(health.pidfd, selectors.EVENT_READ, ("health", None))
            if not events and not exited and handoff is not None and time.monotonic() >= handoff:
                if any(self.log.partial.values()) or health.pid:
                    # not in the middle of a line (the shim starts with none), nor of a check
                    handoff += 1.0 if not health.pid else 0.05
                else:
                    assert program is not None
                    self._exec_shim(program, started, delay, health)
                    handoff = None  # it could not be exec()d: stay in Python
            for key, _ in events:
                kind, stream = key.data
                if kind == "health":
                    if health.pidfd == key.fd:  # not already ended with the container
                        self.selector.unregister(key.fd)
                        health.reap(time.monotonic())
                elif kind == "exit":
                    self.selector.unregister(pidfd)
                    os.close(pidfd)
                    exited = True
                    if health.pidfd is not None:
                        self.selector.unregister(health.pidfd)
                    health.stop()
                elif kind == "out":
                    try:
                        data = os.read(key.fd, 65536)
                    except OSError:  # EIO from a pty whose slave side is gone
                        data = b""
                    if not data:
                        self._close_output(key.fd)
                        outputs -= 1
                        continue
                    self.log.write(stream, data)
                    self._broadcast(attach.STDOUT if stream == "stdout" else attach.STDERR, data)
                elif kind == "listen" and self.listener is not None:
                    conn, _ = self.listener.accept()
                    self._add_client(conn)
                elif kind == "client":
                    self._client_input(cast(socket.socket, key.fileobj))
            if exited and outputs:
                # Background children may hold the pipes open after PID 1 died: drain what is
                # there, then stop waiting for them.
                ready = self.selector.select(timeout=0.2)
                if not any(k.data[0] == "out" for k, _ in ready):
                    for key in list(self.selector.get_map().values()):
                        if key.data[0] == "out":
                            self._close_output(key.fd)
                    outputs = 0
        self.log.flush()
        if self.stdin_w is not None and self.stdin_w != self.tty_master:
            os.close(self.stdin_w)
        self.stdin_w = self.tty_master = None
        return self.process.wait()

    def _close_output(self, fd: int) -> None:
        """Stop reading an output that ended. When it is the pty master, input and window
        sizes that clients still send have nowhere to go now: forget the descriptor, so that
        they are dropped instead of reaching a closed (or reused) descriptor."""
        self.selector.unregister(fd)
        os.close(fd)
        if fd == self.tty_master:
            if self.stdin_w == fd:
                self.stdin_w = None
            self.tty_master = None

    def _exec_shim(self, program: str, started: float, delay: float, health: HealthSchedule | None = None) -> None:
        """Become pyengine-shim (same pid: the container stays our child), handing it the
        log, the container's stdio, the attach listener and clients, the healthcheck's
        schedule, and how to resume."""
        args = [program, "--pid", str(self.process.pid), "--log", str(self.log.path),
                "--max-size", str(self.log.max_size), "--max-files", str(self.log.max_files)]
        if health is not None:
            args += health.shim_args(time.monotonic())
        keep: list[int] = []
        if self.listener is not None:
            args += ["--listen", str(self.listener.fileno())]
            keep.append(self.listener.fileno())
        for key in self.selector.get_map().values():
            if key.data[0] == "out":
                flag = "--tty" if key.fd == self.tty_master else f"--{key.data[1]}"
                args += [flag, str(key.fd)]
                keep.append(key.fd)
        if self.stdin_w is not None:
            args += ["--stdin", str(self.stdin_w)]
            keep.append(self.stdin_w)
        for conn in self.clients:
            args += ["--client", str(conn.fileno())]
            keep.append(conn.fileno())
        args += ["--", *resume_command(self.containers, self.id, started, delay)]
        for fd in keep:
            os.set_inheritable(fd, True)
        log.debug("monitor.shim", container=self.id, program=program)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            # the log and the pidfd are close-on-exec: the shim opens the log itself
            os.execv(program, args)
        except OSError as exc:
            log.warning("monitor.shim_failed", container=self.id, program=program, reason=str(exc))
            for fd in keep:
                os.set_inheritable(fd, False)

    # -- attach clients --------------------------------------------------------------------
    def _listen(self) -> None:
        path = self.store.run_path(self.id) / "attach.sock"
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A run root plus a 64-hex ID is longer than sun_path's 108 bytes: bind through a
        # descriptor of the directory instead.
        dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            self.listener.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
        finally:
            os.close(dir_fd)
        os.chmod(path, 0o600)
        self.listener.listen(8)
        self.selector.register(self.listener, selectors.EVENT_READ, ("listen", None))

    def _add_client(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        self.readers[conn] = attach.FrameReader()
        if conn not in self.clients:
            self.clients.append(conn)
        self.selector.register(conn, selectors.EVENT_READ, ("client", None))

    def _drop_client(self, conn: socket.socket) -> None:
        try:
            self.selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        self.readers.pop(conn, None)
        if conn in self.clients:
            self.clients.remove(conn)
        conn.close()

    def _client_input(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop_client(conn)
            return
        for stream, payload in self.readers[conn].feed(data):
            if stream == attach.STDIN and self.stdin_w is not None:
                try:
                    os.write(self.stdin_w, payload)
                except OSError:
                    pass
            elif stream == attach.STDIN_EOF and self.stdin_w is not None:
                if self.stdin_w == self.tty_master:
                    try:
                        os.write(self.stdin_w, b"\x04")
                    except OSError:  # EIO: the terminal's container side is gone
                        pass
                else:
                    os.close(self.stdin_w)
                    self.stdin_w = None
            elif stream == attach.RESIZE and self.tty_master is not None:
                import fcntl
                import struct
                import termios

                rows, cols = struct.unpack(">HH", payload)
                try:
                    fcntl.ioctl(self.tty_master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                except OSError:
                    pass

    def _broadcast(self, stream: int, data: bytes) -> None:
        for conn in list(self.clients):
            try:
                attach.send_frame(conn, stream, data)
            except OSError:
                self._drop_client(conn)

    def _send_exit(self, code: int) -> None:
        self._broadcast(attach.EXIT, str(code).encode())
        for conn in list(self.clients):
            self._drop_client(conn)

    def _notify_ready(self, message: str) -> None:
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, message.encode()[:4000])
                os.close(self.ready_fd)
            except OSError:
                pass
            self.ready_fd = None

    # -- state -----------------------------------------------------------------------------
    def _record_exit(self, exit_code: int) -> Any:
        record = self.store.load(self.id)
        oom = self.containers.oom_killed(record)
        with self.store.container_lock(self.id):
            state = self.store.load(self.id).state
            state.status, state.exit_code, state.pid, state.pid_start_time = "exited", exit_code, 0, 0
            state.oom_killed, state.finished_at = oom, now_iso()
            self.store.save_state(self.id, state)
        self.containers.release_runtime(record)
        self.containers.emit(record, "die", exitCode=str(exit_code))
        if oom:
            self.containers.emit(record, "oom")
        return state

    def _record_failure(self, exc: PyEngineError) -> None:
        record = self.store.load(self.id)
        with self.store.container_lock(self.id):
            state = self.store.load(self.id).state
            state.status, state.exit_code, state.pid, state.pid_start_time = "exited", exc.exit_code, 0, 0
            state.error, state.finished_at = str(exc), now_iso()
            self.store.save_state(self.id, state)
        self.containers.release_runtime(record)

    def _finish(self) -> None:
        record = self.store.load(self.id)
        if self.listener is not None:
            self.listener.close()
        if record.host_config.get("AutoRemove"):
            try:
                self.containers.remove(self.id, force=True, from_monitor=True)
                return  # nothing left to record this monitor's end in
            except PyEngineError as exc:
                log.warning("container.autoremove_failed", container=self.id, reason=str(exc))
        with self.store.container_lock(self.id):
            state = self.store.load(self.id).state
            state.monitor_pid = state.monitor_start_time = 0
            self.store.save_state(self.id, state)


def _drop_inherited_locks(keep: set[int]) -> None:
    """In a fresh fork: let go of what other threads of the parent held at the fork (the
    daemon forks monitors while other requests run). A flock belongs to the open file, so the
    fork's copy of a locked descriptor would hold the lock for the monitor's life, and the
    monitor, taking that lock itself, would wait for itself forever; a copy of a socket or a
    pipe (another client's connection, another container's attach, an exec's output) would
    keep its other end from seeing EOF. Each such descriptor is pointed at /dev/null instead
    of closed, so that its number is not reused while a stale object of the parent might still
    close it. The forking thread holds no lock of its own here (``Containers.start`` forks
    outside its locks); /proc/self/fdinfo lists a descriptor's own locks."""
    import stat

    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    devnull = -1
    try:
        for name in names:
            fd = int(name)
            if fd <= 2 or fd in keep:
                continue
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
                    held = True
                else:
                    with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
                        text = info.read()
                    held = b"FLOCK" in text or b"OFDLCK" in text
            except OSError:  # the listing's own descriptor, closed already
                continue
            if held:
                if devnull < 0:
                    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                os.dup2(devnull, fd, inheritable=False)
    finally:
        if devnull >= 0:
            os.close(devnull)


def _start_time(pid: int) -> int:
    from pyengine.procfs import start_time

    try:
        return start_time(pid)
    except OSError:  # gone already; 0 is "not known": the pid alone is then checked
        return 0


def _parse_size(text: str) -> int:
    text = str(text).strip().lower()
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def spawn_monitor(containers: Containers, container_id: str, client: socket.socket | None,
                  listener: socket.socket | None = None, clients: list[socket.socket] | None = None,
                  delay: float = 0.1) -> tuple[int, str]:
    """Fork a detached monitor for the container; wait until it started the process.

    ``listener`` and ``clients`` are a previous monitor's attach socket and clients (a restart
    after ``resume``); ``delay`` the restart backoff so far.

    :return: (monitor pid, the monitor's first message: ``ok <pid>`` or ``error <code> <msg>``)
    """
    ready_r, ready_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            keep = {ready_w, *(sock.fileno() for sock in (client, listener, *(clients or ())) if sock is not None)}
            _drop_inherited_locks(keep)
            os.setsid()
            # The monitor outlives the CLI: it must not hold the CLI's terminal or pipes.
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1):
                os.dup2(devnull, fd)
            monitor_log = containers.store.run_path(container_id) / "monitor.log"
            err = os.open(monitor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(err, 2)
            os.close(devnull)
            os.close(err)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            Monitor(containers, container_id, client, ready_w, listener, clients, delay).run()
        finally:
            os._exit(1)
    os.close(ready_w)
    if client is not None:
        client_fd_owner = client  # the parent keeps its end; the child's copy is the monitor's
        del client_fd_owner
    chunks = []
    while True:
        chunk = os.read(ready_r, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(ready_r)
    return pid, b"".join(chunks).decode(errors="replace") or "error 125 the monitor died while starting"


def resume_command(containers: Containers, container_id: str, started: float, delay: float) -> list[str]:
    """What the shim exec()s when the container has exited (it appends the exit code): the
    ``pyengine`` command, with the global options this engine was built with, running
    ``container monitor-resume``."""
    config = containers.engine.config
    argv = [sys.executable, "-m", "pyengine"]
    if config.path is not None:
        argv += ["--config", str(config.path)]
    for name in ("storage-driver", "data-root", "run-root", "log-level", "log-format"):
        if config.source(name) in ("flag", "auto"):
            argv += [f"--{name}", str(config[name])]
    return [*argv, "container", "monitor-resume", container_id, repr(started), repr(delay)]


def resume(containers: Containers, container_id: str, exit_code: int, started: float, delay: float,
           fds: list[int]) -> None:
    """After the shim reaped the container: record the exit, then either restart it in a new
    monitor (handing over the attach listener and clients) or clean up and tell the clients.

    :param fds: the attach listener (-1 for none), then the attach clients
    """
    from pyengine import forkserver

    log.info("monitor.resumed", container=container_id, exit_code=exit_code, served_by=forkserver.SERVED_BY)
    listener = socket.socket(fileno=fds[0]) if fds and fds[0] >= 0 else None
    clients = [socket.socket(fileno=fd) for fd in fds[1:]]
    monitor = Monitor(containers, container_id, None, None, listener, clients)
    next_delay = monitor.after_exit(exit_code, started, delay)
    if next_delay is not None:
        _, message = spawn_monitor(containers, container_id, None, listener, clients, next_delay)
        if not message.startswith("ok"):
            log.warning("container.restart_failed", container=container_id, reason=message)
        return
    monitor._finish()
    monitor._send_exit(exit_code)
