"""Exec: start a process inside a running container, relay its stdio through descriptors the
engine owns, and keep the exec records the Docker API creates, starts and inspects.

A caller's own descriptors never reach the container: the process gets pipes made here (or,
with a tty, a pty of the container's own devpts, whose master the launcher hands back), and
``relay`` copies between them and the caller's stdin, stdout and stderr, as Docker's and
podman's exec do. Otherwise a container could read back, seek or truncate the
host file a user redirected ``pyengine exec ... >> file`` to, or learn its path from
/proc/self/fd. Calls the runtime launcher (``exec_in``) and the container spec builder; used
by the CLI's ``exec`` and the daemon's exec routes.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyengine.containers.store import now_iso
from pyengine.errors import Conflict, NotFound, UsageError
from pyengine.fsutil import flocked, write_json_atomic

if TYPE_CHECKING:
    from pyengine.containers.engine import Containers

#: after the process exited, how long quiet output pipes are waited on: its background
#: children may hold them open for ever (the monitor does the same)
_DRAIN_AFTER_EXIT = 0.2
_CHUNK = 65536


class ExecSession:
    """A process started inside a container by ``exec``; the caller is its parent.

    ``stdin_w`` is the write end of its stdin pipe (None unless interactive without a tty:
    close it for EOF); ``stdout_r``/``stderr_r`` the read ends of its output pipes (None with
    a tty or detached); ``tty_master`` the master of the pty it runs on, a pty the process
    opened in the container's /dev/pts (None without a tty)."""

    def __init__(self, process: Any, stdin_w: int | None, stdout_r: int | None, stderr_r: int | None,
                 store: ExecStore | None = None, exec_id: str | None = None) -> None:
        self.process = process
        self.pid: int = process.pid
        self.tty_master: int | None = process.tty_master
        self.stdin_w = stdin_w
        self.stdout_r = stdout_r
        self.stderr_r = stderr_r
        self.store = store
        self.exec_id = exec_id

    def wait(self) -> int:
        """Reap the process; its exit code, 128+N for a death by signal N."""
        return self._ended(self.process.wait())

    def poll(self) -> int | None:
        """The exit code when the process has ended (reaping it), else None."""
        code = self.process.poll()
        return None if code is None else self._ended(code)

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size of its pty (it gets SIGWINCH); nothing without a tty."""
        self.process.resize(rows, cols)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.process.kill(sig)

    def close(self) -> None:
        """Close the engine's ends of the process's stdio (idempotent)."""
        for name in ("stdin_w", "stdout_r", "stderr_r", "tty_master"):
            fd = getattr(self, name)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, None)

    def _ended(self, code: int) -> int:
        if self.store is not None and self.exec_id is not None:
            self.store.update(self.exec_id, Running=False, ExitCode=code)
            self.exec_id = None  # recorded once
        return code


def exec_container(containers: Containers, ref: str, cmd: list[str], *, user: str | None = None,
                   env: list[str] | tuple[str, ...] = (), workdir: str | None = None, tty: bool = False,
                   privileged: bool = False, interactive: bool = False, detach: bool = False,
                   console_size: tuple[int, int] | None = None, exec_id: str | None = None) -> ExecSession:
    """Start ``cmd`` in the running container ``ref`` with stdio the engine owns (see
    ``Containers.exec``). Conflict when the container is not running or is paused."""
    from pyengine.containers.spec import exec_spec
    from pyengine.runtime import kernel
    from pyengine.runtime.launch import exec_in

    kernel.use_seccomp_cache(containers.engine.config.run_root)  # compiled filters kept across processes
    if not cmd or not all(isinstance(arg, str) for arg in cmd):
        raise UsageError("no exec command specified")
    record = containers.get(ref)
    if record.state.status == "paused":
        raise Conflict(f"container {record.name} is paused, unpause the container before exec")
    if record.state.status != "running" or not record.state.pid:
        raise Conflict(f"container {record.name} is not running")
    tty = tty and not detach  # a detached exec has no one on the other end of a pty
    spec = exec_spec(record, list(cmd), user=user, env=list(env), workdir=workdir, tty=tty, privileged=privileged)
    if tty and console_size and console_size[0] and console_size[1]:
        spec["process"]["consoleSize"] = {"height": int(console_size[0]), "width": int(console_size[1])}
    ours: list[int] = []
    theirs: list[int] = []
    stdin_r = stdin_w = stdout_r = stdout_w = stderr_r = stderr_w = None
    try:
        if detach:
            devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            theirs.append(devnull)
            stdio: tuple[int | None, int | None, int | None] = (devnull, devnull, devnull)
        elif tty:
            stdio = (None, None, None)  # the launcher gives it the pty
        else:
            if interactive:
                stdin_r, stdin_w = os.pipe()
            stdout_r, stdout_w = os.pipe()
            stderr_r, stderr_w = os.pipe()
            ours += [fd for fd in (stdin_w, stdout_r, stderr_r) if fd is not None]
            theirs += [fd for fd in (stdin_r, stdout_w, stderr_w) if fd is not None]
            stdio = (stdin_r, stdout_w, stderr_w)
        process = exec_in(record.state.pid, spec, *stdio, isolators=containers.isolators(), container_id=record.id)
    except BaseException as exc:
        for fd in ours:
            os.close(fd)
        if exec_id is not None:  # Docker records a command that could not run as the exec's exit
            ExecStore(containers.engine.config.run_root).update(
                exec_id, Running=False, ExitCode=getattr(exc, "exit_code", 125))
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    store = None
    if exec_id is not None:
        store = ExecStore(containers.engine.config.run_root)
        store.update(exec_id, Running=True, Pid=process.pid)
    return ExecSession(process, stdin_w, stdout_r, stderr_r, store, exec_id)


def relay(session: ExecSession, stdin_fd: int | None, stdout_fd: int | None, stderr_fd: int | None) -> int:
    """Pump the caller's descriptors to and from the session's pipes (or pty): ``stdin_fd``
    into its stdin (its EOF closes ``stdin_w``; on a pty it sends ^D), its stdout and stderr
    out to ``stdout_fd`` and ``stderr_fd`` (None, or a caller's output that failed: read and
    dropped). Returns the exit code once the output reached EOF (or stayed quiet for a moment
    after the process ended: background children may hold it open) and the process was
    reaped; closes the session's descriptors."""
    # poll, not epoll: a caller's stdin may be a regular file, which epoll refuses
    selector = selectors.PollSelector()
    pidfd = os.pidfd_open(session.pid)
    outputs: dict[int, int | None] = {}
    if session.tty_master is not None:
        outputs[session.tty_master] = stdout_fd
        feed = session.tty_master if stdin_fd is not None else None
    else:
        for source, target in ((session.stdout_r, stdout_fd), (session.stderr_r, stderr_fd)):
            if source is not None:
                outputs[source] = target
        feed = session.stdin_w if stdin_fd is not None else None
    if feed is not None:
        os.set_blocking(feed, False)
    stdin_open = feed is not None
    pending = b""
    exited_at: float | None = None
    try:
        while outputs:
            interest: dict[int, int] = {}
            for source in outputs:
                interest[source] = selectors.EVENT_READ
            if stdin_open and len(pending) < 4 * _CHUNK:
                assert stdin_fd is not None
                interest[stdin_fd] = interest.get(stdin_fd, 0) | selectors.EVENT_READ
            if pending and feed is not None:
                interest[feed] = interest.get(feed, 0) | selectors.EVENT_WRITE
            if exited_at is None:
                interest[pidfd] = selectors.EVENT_READ
            _set_interest(selector, interest)
            timeout = None if exited_at is None else max(0.0, exited_at + _DRAIN_AFTER_EXIT - time.monotonic())
            events = selector.select(timeout)
            if not events and exited_at is not None:
                break  # the process ended and its output stayed quiet
            for key, mask in events:
                fd = key.fd
                if fd == pidfd:
                    exited_at = time.monotonic()
                    continue
                if mask & selectors.EVENT_WRITE and fd == feed and pending:
                    try:
                        pending = pending[os.write(fd, pending[:_CHUNK]):]
                    except BlockingIOError:
                        pass
                    except OSError:  # it closed its stdin: the rest has no reader
                        pending, stdin_open = b"", False
                if not mask & selectors.EVENT_READ:
                    continue
                if fd == stdin_fd and stdin_open:
                    data = _read(fd)
                    if data is None:
                        pass
                    elif data:
                        pending += data
                    else:
                        stdin_open = False
                        if feed == session.tty_master:
                            pending += b"\x04"  # end of input for the terminal's reader
                if fd in outputs:
                    data = _read(fd)
                    if data is None:
                        continue
                    if not data:
                        del outputs[fd]
                        if fd == feed:
                            feed, pending, stdin_open = None, b"", False
                        continue
                    target = outputs[fd]
                    if target is not None:
                        try:
                            _write_all(target, data)
                        except OSError:  # the caller's end went away: keep draining
                            outputs[fd] = None
            if feed is not None and feed == session.stdin_w and not stdin_open and not pending:
                _set_interest(selector, {k: v for k, v in interest.items() if k != feed})
                os.close(feed)
                session.stdin_w = feed = None
    finally:
        selector.close()
        os.close(pidfd)
        session.close()
    return session.wait()


def _set_interest(selector: selectors.BaseSelector, interest: dict[int, int]) -> None:
    """Make the selector watch exactly ``interest`` (fd -> events)."""
    for key in list(selector.get_map().values()):
        if key.fd not in interest:
            selector.unregister(key.fd)
    for fd, events in interest.items():
        try:
            key = selector.get_key(fd)
        except KeyError:
            selector.register(fd, events)
            continue
        if key.events != events:
            selector.modify(fd, events)


def _read(fd: int) -> bytes | None:
    """What ``fd`` has: b"" at its end, None when nothing is there yet (non-blocking)."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno == errno.EIO:  # a pty whose other side is gone
            return b""
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:  # a non-blocking caller's descriptor: wait for room
            import select

            select.select([], [fd], [])


# -- exec records (the Docker API's exec create / start / inspect) -------------------------------
#: the keys of an exec's config, as the API's ExecConfig names them
EXEC_CONFIG_KEYS = ("Cmd", "User", "Env", "WorkingDir", "Tty", "Privileged", "AttachStdin", "AttachStdout",
                    "AttachStderr", "DetachKeys", "ConsoleSize")


class ExecStore:
    """Exec records under ``<run-root>/exec/<id>.json`` (the directory is root's alone, 0700):
    what the API's exec create asked for, and whether it runs, its pid and exit code. They
    live in the run root: an exec does not outlive a boot, as with Docker."""

    def __init__(self, run_root: Path) -> None:
        self.dir = run_root / "exec"

    def _path(self, exec_id: str) -> Path:
        if len(exec_id) != 64 or not all(c in "0123456789abcdef" for c in exec_id):
            raise NotFound(f"no such exec instance: {exec_id}")
        return self.dir / f"{exec_id}.json"

    def _ensure_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def create(self, container_id: str, config: dict[str, Any]) -> str:
        """Record a new exec of ``config`` (ExecConfig keys) in ``container_id``; its ID."""
        unknown = sorted(set(config) - set(EXEC_CONFIG_KEYS))
        if unknown:
            raise UsageError(f"unknown exec option {unknown[0]!r}")
        cmd = config.get("Cmd")
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd or not isinstance(cmd, list) or not all(isinstance(arg, str) for arg in cmd):
            raise UsageError("no exec command specified")
        env = config.get("Env") or []
        if not isinstance(env, list) or not all(isinstance(item, str) for item in env):
            raise UsageError("exec Env must be a list of KEY=VALUE strings")
        normalized = {
            "Cmd": list(cmd), "User": str(config.get("User") or ""), "Env": list(env),
            "WorkingDir": str(config.get("WorkingDir") or ""), "Tty": bool(config.get("Tty")),
            "Privileged": bool(config.get("Privileged")), "AttachStdin": bool(config.get("AttachStdin")),
            "AttachStdout": bool(config.get("AttachStdout")), "AttachStderr": bool(config.get("AttachStderr")),
            "DetachKeys": str(config.get("DetachKeys") or ""), "ConsoleSize": config.get("ConsoleSize"),
        }
        exec_id = os.urandom(32).hex()
        record = {"ID": exec_id, "ContainerID": container_id, "Config": normalized, "Running": False,
                  "ExitCode": None, "Pid": 0, "Created": now_iso()}
        self._ensure_dir()
        write_json_atomic(self._path(exec_id), record)
        return exec_id

    def load(self, exec_id: str) -> dict[str, Any]:
        try:
            return json.loads(self._path(exec_id).read_text())
        except FileNotFoundError:
            raise NotFound(f"no such exec instance: {exec_id}") from None
        except (ValueError, OSError) as exc:
            raise NotFound(f"exec instance {exec_id} is unreadable: {exc}") from None

    def update(self, exec_id: str, **fields: Any) -> dict[str, Any]:
        """Set ``fields`` (Running, ExitCode, Pid) of a record; the record."""
        unknown = sorted(set(fields) - {"Running", "ExitCode", "Pid"})
        if unknown:
            raise UsageError(f"an exec record has no field {unknown[0]!r}")
        self._ensure_dir()
        with flocked(self.dir / ".lock"):
            record = self.load(exec_id)
            record.update(fields)
            write_json_atomic(self._path(exec_id), record)
        return record

    def list(self, container_id: str | None = None) -> list[dict[str, Any]]:
        records = []
        for path in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            try:
                record = self.load(path.stem)
            except NotFound:
                continue
            if container_id is None or record.get("ContainerID") == container_id:
                records.append(record)
        return records

    def remove_container(self, container_id: str) -> None:
        """Drop the records of a container that is being removed."""
        for record in self.list(container_id):
            try:
                self._path(record["ID"]).unlink()
            except FileNotFoundError:
                pass


def start_exec(containers: Containers, exec_id: str, detach: bool = False,
               console_size: tuple[int, int] | None = None) -> ExecSession:
    """The API's exec start: run a created exec record's config; Conflict when it already
    ran (an exec starts once) or its container is not running."""
    store = ExecStore(containers.engine.config.run_root)
    record = store.load(exec_id)
    if record["Running"] or record["ExitCode"] is not None or record["Pid"]:
        raise Conflict(f"exec instance {exec_id} has already been started")
    config = record["Config"]
    size = console_size or config.get("ConsoleSize")
    return exec_container(containers, record["ContainerID"], config["Cmd"], user=config["User"] or None,
                          env=config["Env"], workdir=config["WorkingDir"] or None, tty=config["Tty"],
                          privileged=config["Privileged"], interactive=config["AttachStdin"], detach=detach,
                          console_size=tuple(size) if size else None, exec_id=exec_id)


def inspect_exec(record: dict[str, Any]) -> dict[str, Any]:
    """Docker's exec inspect document of an exec record."""
    config = record["Config"]
    cmd = config["Cmd"]
    return {
        "ID": record["ID"], "Running": record["Running"], "ExitCode": record["ExitCode"],
        "ProcessConfig": {"tty": config["Tty"], "entrypoint": cmd[0], "arguments": cmd[1:],
                          "privileged": config["Privileged"], "user": config["User"]},
        "OpenStdin": config["AttachStdin"], "OpenStderr": config["AttachStderr"],
        "OpenStdout": config["AttachStdout"], "CanRemove": False, "ContainerID": record["ContainerID"],
        "DetachKeys": config["DetachKeys"], "Pid": record["Pid"],
    }
