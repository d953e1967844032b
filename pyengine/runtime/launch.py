"""The launcher: starts a container's process from an OCI runtime spec, and joins a running
container for ``exec``.

Owns the fork, the child-side setup (namespaces, rootfs + pivot_root, /proc masks, minimal
/dev, the terminal, hostname, rlimits, user, capabilities, no_new_privs, seccomp, exec) and the
pipes that report a setup failure as one line. Calls only ``pyengine.runtime.kernel`` for the
kernel and the isolators' ``prepare``/``enter`` on the host side.

A terminal is made the runc way: the child opens /dev/ptmx *inside* the container (its own
devpts instance), makes the slave its controlling terminal and stdio, and sends the master
back over a Unix socketpair (the console socket); no host pty or host devpts is handed in.

The container's PID 1 is a direct child of the caller: the caller unshares its pid namespace
*for children* only, forks, and moves its children's namespace back, so no intermediate
process stays alive (and costs memory) per container.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import signal
import socket
import stat
import struct
import termios
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from pyengine.errors import PyEngineError
from pyengine.log import get_logger
from pyengine.runtime import kernel as k

# Imported here, not in the child: after pivot_root the host's modules are out of reach.
from pyengine.runtime.spec import RLIMIT_NAMES


def _log_info(event: str, **fields: Any) -> None:
    get_logger("pyengine.runtime").info(event, **fields)


_SETUP_FAILED = 125
_CANNOT_EXECUTE = 126
_NOT_FOUND = 127


class ContainerStartError(PyEngineError):
    """The container's process could not be set up or executed; ``exit_code`` is Docker's
    (125 setup, 126 cannot execute, 127 not found)."""

    def __init__(self, message: str, exit_code: int = _SETUP_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Process:
    """A started container process (or exec'd process): the caller is its parent."""

    def __init__(self, pid: int, tty_master: int | None, isolator_state: dict[str, Any] | None = None) -> None:
        self.pid = pid
        self.tty_master = tty_master
        self.isolator_state = isolator_state or {}
        self.returncode: int | None = None

    def _status(self, status: int) -> int:
        code = os.waitstatus_to_exitcode(status)
        # Docker reports a death by signal N as 128+N.
        self.returncode = 128 - code if code < 0 else code
        return self.returncode

    def wait(self) -> int:
        """Reap the process; its exit code, 128+N for a death by signal N."""
        if self.returncode is None:
            while True:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    break
                except InterruptedError:
                    continue
            return self._status(status)
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status(status)
        return self.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def resize(self, rows: int, cols: int) -> None:
        """Set the pty's window size (the process gets SIGWINCH)."""
        if self.tty_master is not None:
            set_window_size(self.tty_master, rows, cols)


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# -- host side ----------------------------------------------------------------------------
def check_rlimits(spec: dict[str, Any]) -> None:
    """Refuse, before forking, rlimits this host cannot grant: a hard limit above the
    current one needs CAP_SYS_RESOURCE, which this process's bounding set may lack."""
    can_raise = bool(k.capget()[0] & (1 << k.CAPABILITIES["CAP_SYS_RESOURCE"]))
    for rlimit in spec.get("process", {}).get("rlimits") or []:
        name = rlimit.get("type", "")
        if name not in RLIMIT_NAMES:
            raise ContainerStartError(f"unknown rlimit {name!r}")
        soft, hard = int(rlimit["soft"]), int(rlimit["hard"])
        short = name[len("RLIMIT_"):].lower()
        if soft > hard and hard != resource.RLIM_INFINITY:
            raise ContainerStartError(f"ulimit {short}: soft limit {soft} is above the hard limit {hard}")
        _, current = resource.getrlimit(RLIMIT_NAMES[name])
        above = current != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > current)
        if above and not can_raise:
            raise ContainerStartError(
                f"ulimit {short}={soft}:{hard}: the hard limit is above this host's {current} and this "
                f"host cannot raise it (no CAP_SYS_RESOURCE); use at most {current}")


def _namespaces(spec: dict[str, Any]) -> list[dict[str, Any]]:
    entries = spec.get("linux", {}).get("namespaces") or []
    for entry in entries:
        if entry.get("type") not in k.NAMESPACES:
            raise ContainerStartError(f"unknown namespace type {entry.get('type')!r}")
        if entry["type"] == "user":
            raise ContainerStartError("user namespaces are not supported by this runtime")
    return entries


def launch(container_id: str, spec: dict[str, Any], isolators: Iterable[Any] = (),
           stdin: int | None = None, stdout: int | None = None, stderr: int | None = None) -> Process:
    """Start ``spec``'s process: prepare the isolators, fork the container's PID 1, let each
    isolator ``enter`` it while it waits, then let it exec. Raises ContainerStartError with
    Docker's exit code and the child's one-line reason when setup or exec fails.

    With ``process.terminal`` the child allocates a pty of the container's own devpts (the
    slave is also bind-mounted on /dev/console, as runc does) and its master is
    ``Process.tty_master``; otherwise the given fds become the process's stdio (None:
    /dev/null for stdin, the caller's own for stdout/stderr)."""
    started = time.monotonic()
    isolators = list(isolators)
    namespaces = _namespaces(spec)
    root = spec.get("root", {}).get("path")
    if not root or not os.path.isdir(root):
        raise ContainerStartError(f"the container's root filesystem {root!r} does not exist")
    if not any(n["type"] == "mount" for n in namespaces):
        raise ContainerStartError("a mount namespace is required to pivot into the root filesystem")
    check_rlimits(spec)
    if spec.get("linux", {}).get("seccomp") and k.libseccomp() is not None:
        # compiled here (and cached): the child only installs it; after pivot_root the host's
        # library would be out of its reach anyway
        k.seccomp_compile(spec["linux"]["seccomp"])
    state: dict[str, Any] = {}
    for isolator in isolators:
        state[isolator.name] = isolator.prepare(container_id, spec)
    init_fd = init_program() if spec.get("annotations", {}).get("pyengine.init") == "true" else None

    console_ours, console_theirs = _console_socket(spec)
    pid_entry = next((n for n in namespaces if n["type"] == "pid"), None)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    # The child says "my namespaces exist" on this pipe, so that isolators entering it (a
    # network driver moving a veth into its network namespace) find them.
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _fork_in_pid_ns(pid_entry)
    except BaseException:
        for fd in (err_r, err_w, sync_r, sync_w, ready_r, ready_w, console_ours, console_theirs):
            if fd is not None:
                os.close(fd)
        raise
    if pid == 0:  # pragma: no cover - the child never returns
        os.close(err_r)
        os.close(sync_w)
        os.close(ready_r)
        if console_ours is not None:
            os.close(console_ours)
        _child_main(spec, namespaces, err_w, sync_r, console_theirs, (stdin, stdout, stderr), ready_w, init_fd)
    os.close(err_w)
    os.close(sync_r)
    os.close(ready_w)
    if console_theirs is not None:
        os.close(console_theirs)
    process = Process(pid, None, state)
    try:
        ready = os.read(ready_r, 1)
    finally:
        os.close(ready_r)
    try:
        if ready:  # else the child failed before its namespaces existed: _await_exec says why
            for isolator in isolators:
                isolator.enter(container_id, spec, pid)
            os.write(sync_w, b"g")
    except BaseException:
        os.close(sync_w)
        os.close(err_r)
        if console_ours is not None:
            os.close(console_ours)  # and with it a master the child may have sent
        process.kill()
        process.wait()
        raise
    os.close(sync_w)
    _await_exec(process, err_r, console_ours)
    _log_info("container.launched", container=container_id, pid=pid,
             ms=round((time.monotonic() - started) * 1000, 1))
    return process


def _fork_in_pid_ns(entry: dict[str, Any] | None) -> int:
    """fork(), with the child in a new pid namespace (or the one at ``entry['path']``), born
    non-dumpable (see ``_fork_nondumpable``).

    unshare/setns of a pid namespace only changes where the caller's *next children* go, so
    the caller moves back to its own namespace right after the fork."""
    if entry is None:
        return _fork_nondumpable()
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    pid = -1
    try:
        if entry.get("path"):
            target = os.open(entry["path"], os.O_RDONLY | os.O_CLOEXEC)
            try:
                k.setns(target, k.CLONE_NEWPID)
            finally:
                os.close(target)
        else:
            k.unshare(k.CLONE_NEWPID)
        pid = _fork_nondumpable()
        return pid
    finally:
        if pid != 0:
            k.setns(own, k.CLONE_NEWPID)
        os.close(own)


def _fork_nondumpable() -> int:
    """fork() a child that is non-dumpable from its first instruction until it execs.

    The child is a copy of this host Python process and is visible in the container's pid
    namespace before it execs the container's program: were it dumpable, a container process
    could open its /proc/<pid>/exe (the host's interpreter, the CVE-2019-5736 pattern), fd/
    or mem. Dumpability is inherited through fork, so the parent drops it around the fork
    (a flag set in the child would leave a window); execve of the container's program (a
    readable, non-setuid file) makes the child dumpable again, as runc's init does.

    Dumpability is the whole process's: in a threaded caller (the daemon) one lock keeps a
    thread from restoring it while another forks."""
    with _DUMPABLE_LOCK:
        was_dumpable = k.get_dumpable()
        if was_dumpable:
            k.set_dumpable(False)
        try:
            pid = os.fork()
        except BaseException:
            if was_dumpable:
                k.set_dumpable(True)
            raise
        if pid != 0 and was_dumpable:
            k.set_dumpable(True)
    return pid


_DUMPABLE_LOCK = threading.Lock()


def _console_socket(spec: dict[str, Any]) -> tuple[int | None, int | None]:
    """With ``process.terminal``, the console socket: (the parent's end, the child's end),
    both close-on-exec; else (None, None)."""
    if not spec.get("process", {}).get("terminal"):
        return None, None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return ours.detach(), theirs.detach()


def _await_exec(process: Process, err_r: int, console: int | None = None) -> None:
    """Block until the child execs (its CLOEXEC error pipe closes) or reports a failure;
    with a console socket, then take the pty master the child sent on it (closing it)."""
    chunks = []
    try:
        while True:
            data = os.read(err_r, 4096)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(err_r)
    if chunks:
        if console is not None:
            os.close(console)
        text = b"".join(chunks).decode(errors="replace")
        code, _, message = text.partition(" ")
        process.wait()
        raise ContainerStartError(message.strip() or "the container failed to start",
                                  int(code) if code.isdigit() else _SETUP_FAILED)
    if console is None:
        return
    try:
        master = k.recv_fd(console)
    finally:
        os.close(console)
    if master is not None and not _is_pty_master(master):
        os.close(master)
        master = None
    if master is None:
        process.kill()
        process.wait()
        raise ContainerStartError("the container's process started without the terminal it was to allocate")
    process.tty_master = master


def _is_pty_master(fd: int) -> bool:
    try:
        info = os.fstat(fd)
        k.pty_number(fd)
    except OSError:
        return False
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(5, 2)


def exec_in(pid: int, spec: dict[str, Any], stdin: int | None = None, stdout: int | None = None,
            stderr: int | None = None, isolators: Iterable[Any] = (), container_id: str = "") -> Process:
    """Start ``spec``'s process inside the running container whose PID 1 is ``pid`` (host
    pid): it joins every namespace of ``pid`` (the mount namespace puts it in the container's
    root), each isolator ``enter``s it (cgroups), then it is confined like the container."""
    started = time.monotonic()
    check_rlimits(spec)
    if spec.get("linux", {}).get("seccomp") and k.libseccomp() is not None:
        k.seccomp_compile(spec["linux"]["seccomp"])  # here: after setns(mnt) the host's library is out of reach
    terminal = bool(spec.get("process", {}).get("terminal"))
    fds: list[tuple[int, int]] = []
    try:
        for kind in ("ipc", "uts", "network", "cgroup", "mount"):
            flag, name = k.NAMESPACES[kind]
            path = f"/proc/{pid}/ns/{name}"
            if os.stat(path).st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
                fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
    except FileNotFoundError:
        for fd, _ in fds:
            os.close(fd)
        raise ContainerStartError(f"the container's process {pid} is not running", 1) from None
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    console_ours, console_theirs = _console_socket(spec)
    pid_path = f"/proc/{pid}/ns/pid"
    same_pid_ns = os.stat(pid_path).st_ino == os.stat("/proc/self/ns/pid").st_ino
    child = _fork_in_pid_ns(None if same_pid_ns else {"type": "pid", "path": pid_path})
    if child == 0:  # pragma: no cover - the child never returns
        os.close(err_r)
        os.close(sync_w)
        if console_ours is not None:
            os.close(console_ours)
        try:
            _setup_stdio((stdin, stdout, stderr), terminal)
            for fd, flag in fds:
                k.setns(fd, flag)
                os.close(fd)
            if not os.read(sync_r, 1):
                os._exit(_SETUP_FAILED)
            os.close(sync_r)
            if console_theirs is not None:
                # in the container's mounts and cgroups now: its /dev/ptmx, its devpts
                _open_console(console_theirs, spec, bind_console=False)
            _confine_and_exec(spec, err_w)
        except BaseException as exc:  # noqa: BLE001 - everything becomes one line for the parent
            _fail(err_w, _SETUP_FAILED, _reason(exc))
    for fd, _ in fds:
        os.close(fd)
    os.close(err_w)
    os.close(sync_r)
    if console_theirs is not None:
        os.close(console_theirs)
    process = Process(child, None)
    try:
        for isolator in isolators:
            isolator.enter(container_id, spec, child)
        os.write(sync_w, b"g")
    except BaseException:
        os.close(sync_w)
        os.close(err_r)
        if console_ours is not None:
            os.close(console_ours)
        process.kill()
        process.wait()
        raise
    os.close(sync_w)
    _await_exec(process, err_r, console_ours)
    _log_info("container.exec", container=container_id, pid=child, ms=round((time.monotonic() - started) * 1000, 1))
    return process


# -- child side ---------------------------------------------------------------------------
def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def _fail(err_w: int, code: int, message: str) -> None:
    try:
        os.write(err_w, f"{code} {message}".encode(errors="replace")[:4000])
    finally:
        os._exit(code)


def _setup_stdio(stdio: tuple[int | None, int | None, int | None], terminal: bool = False) -> None:
    """A new session, and ``stdio`` on 0-2. With ``terminal`` /dev/null holds 0-2 until
    ``_open_console`` puts the container's pty there: none of the caller's descriptors (a
    host terminal) goes with this process into the container."""
    os.setsid()
    if terminal:
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        for target in (0, 1, 2):
            os.dup2(null, target)
        os.close(null)
        return
    stdin, stdout, stderr = stdio
    if stdin is None:
        stdin = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    # Copy first: a source fd may be one of 0-2 and be overwritten by an earlier dup2.
    copies = [os.dup(fd) if fd is not None else None for fd in (stdin, stdout, stderr)]
    for target, copy in enumerate(copies):
        if copy is not None:
            os.dup2(copy, target)
            os.close(copy)


def _open_console(console: int, spec: dict[str, Any], bind_console: bool) -> None:
    """Allocate this process's terminal the runc way, in the container's mount namespace
    (after pivot_root, or after setns for exec): a pty of the container's own devpts through
    its /dev/ptmx, sized to ``process.consoleSize``, owned by the process's user, the
    controlling terminal and 0-2 of this process; with ``bind_console`` (the container's
    init) bind-mounted on /dev/console too. The master goes to the parent over the console
    socket, which is closed then."""
    process = spec.get("process", {})
    try:
        master = _open_ptmx()
        try:
            k.pty_unlock(master)
            number = k.pty_number(master)
            try:
                slave = k.pty_peer(master, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError as exc:  # a kernel before 4.13: by its name in this devpts
                if exc.errno not in (errno.EINVAL, errno.ENOTTY):
                    raise
                slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            size = process.get("consoleSize") or {}
            if size.get("height") and size.get("width"):
                set_window_size(master, int(size["height"]), int(size["width"]))
            # The slave is root's until now: the process's user owns its terminal (runc's
            # fixStdioPermissions), so it may reopen /dev/pts/N as Docker's processes can.
            os.fchown(slave, int((process.get("user") or {}).get("uid", 0)), -1)
            if bind_console:
                path = "/dev/console"
                if not os.path.lexists(path):
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
                k.mount(f"/dev/pts/{number}", path, None, k.MS_BIND)
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for target in (0, 1, 2):
                os.dup2(slave, target)
            os.close(slave)
            k.send_fd(console, master)
        finally:
            os.close(master)
    except OSError as exc:
        raise ContainerStartError(f"cannot allocate the container's terminal: {_reason(exc)}") from None
    os.close(console)


def _open_ptmx() -> int:
    """The container's /dev/ptmx, opened only when it is the pty multiplexer (c 5:2): an exec
    joins a container whose /dev its processes may have changed (a FIFO there would hang us,
    another device would be opened for nothing)."""
    info = os.stat("/dev/ptmx")
    if not stat.S_ISCHR(info.st_mode) or info.st_rdev != os.makedev(5, 2):
        raise ContainerStartError("cannot allocate the container's terminal: /dev/ptmx is not the pty multiplexer")
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    opened = os.fstat(master)
    if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
        os.close(master)
        raise ContainerStartError("cannot allocate the container's terminal: /dev/ptmx changed while it was opened")
    return master


def _child_main(spec: dict[str, Any], namespaces: list[dict[str, Any]], err_w: int, sync_r: int,
                console: int | None, stdio: tuple[int | None, int | None, int | None], ready_w: int,
                init_fd: int | None = None) -> None:
    """The container's PID 1 before exec: never returns. ``console``: the child's end of the
    console socket (with a terminal), or None; ``init_fd``: the sealed copy of pyengine-shim
    to run as init (``--init``), or None."""
    try:
        # PID 1 dies with its parent (the monitor), so a killed monitor never leaves an
        # unsupervised container behind; the next command records it as exited.
        k.prctl(k.PR_SET_PDEATHSIG, signal.SIGKILL)
        _setup_stdio(stdio, terminal=console is not None)
        joined = []
        unshare_flags = 0
        for entry in namespaces:
            flag, _ = k.NAMESPACES[entry["type"]]
            if entry["type"] == "pid":
                continue
            if entry.get("path"):
                joined.append((os.open(entry["path"], os.O_RDONLY | os.O_CLOEXEC), flag))
            elif entry["type"] != "cgroup":  # after the parent moved us into our cgroup
                unshare_flags |= flag
        for fd, flag in joined:
            k.setns(fd, flag)
            os.close(fd)
        if unshare_flags:
            k.unshare(unshare_flags)
        if unshare_flags & k.CLONE_NEWNET:
            k.loopback_up()  # Docker's "none" network: a namespace of its own, loopback up
        os.write(ready_w, b"r")
        os.close(ready_w)
        init = spec.get("annotations", {}).get("pyengine.init") == "true"
        _setup_rootfs(spec, console)
        if spec.get("hostname") and any(n["type"] == "uts" for n in namespaces):
            k.sethostname(spec["hostname"])
        if not os.read(sync_r, 1):  # the parent failed in enter(): stop here
            os._exit(_SETUP_FAILED)
        os.close(sync_r)
        if any(n["type"] == "cgroup" and not n.get("path") for n in namespaces):
            k.unshare(k.CLONE_NEWCGROUP)
        for mount in spec.get("mounts") or []:
            if mount.get("type") == "cgroup":
                _mount_cgroups(mount)
        if init:
            _become_init(err_w, spec, init_fd)
        _confine_and_exec(spec, err_w)
    except BaseException as exc:  # noqa: BLE001 - everything becomes one line for the parent
        _fail(err_w, _SETUP_FAILED, _reason(exc))


_FLAGS = {
    "ro": (k.MS_RDONLY, True), "rw": (k.MS_RDONLY, False), "nosuid": (k.MS_NOSUID, True),
    "suid": (k.MS_NOSUID, False), "nodev": (k.MS_NODEV, True), "dev": (k.MS_NODEV, False),
    "noexec": (k.MS_NOEXEC, True), "exec": (k.MS_NOEXEC, False), "sync": (k.MS_SYNCHRONOUS, True),
    "async": (k.MS_SYNCHRONOUS, False), "dirsync": (k.MS_DIRSYNC, True), "remount": (k.MS_REMOUNT, True),
    "bind": (k.MS_BIND, True), "rbind": (k.MS_BIND | k.MS_REC, True), "noatime": (k.MS_NOATIME, True),
    "atime": (k.MS_NOATIME, False), "nodiratime": (k.MS_NODIRATIME, True), "relatime": (k.MS_RELATIME, True),
    "norelatime": (k.MS_RELATIME, False), "strictatime": (k.MS_STRICTATIME, True), "mand": (k.MS_MANDLOCK, True),
}
_PROPAGATION = {
    "private": k.MS_PRIVATE, "rprivate": k.MS_PRIVATE | k.MS_REC, "slave": k.MS_SLAVE,
    "rslave": k.MS_SLAVE | k.MS_REC, "shared": k.MS_SHARED, "rshared": k.MS_SHARED | k.MS_REC,
    "unbindable": k.MS_UNBINDABLE, "runbindable": k.MS_UNBINDABLE | k.MS_REC,
}


def parse_mount_options(options: list[str]) -> tuple[int, int, str]:
    """OCI mount options -> (mount flags, propagation flags, data string)."""
    flags = propagation = 0
    data = []
    for option in options:
        if option in _FLAGS:
            bit, on = _FLAGS[option]
            flags = flags | bit if on else flags & ~bit
        elif option in _PROPAGATION:
            propagation |= _PROPAGATION[option]
        else:
            data.append(option)
    return flags, propagation, ",".join(data)


def resolve_in_root(root: str, path: str) -> str:
    """``path`` inside ``root`` with every symlink resolved as if ``root`` were ``/``: an image
    cannot point a mount destination outside its root filesystem."""
    parts = deque(p for p in path.split("/") if p)
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.popleft()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts.extendleft(reversed([p for p in target.split("/") if p]))
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _mount_one(root: str, mount: dict[str, Any]) -> None:
    destination = resolve_in_root(root, mount["destination"])
    kind = mount.get("type") or "bind"
    flags, propagation, data = parse_mount_options(list(mount.get("options") or []))
    source = mount.get("source") or kind
    is_bind = kind == "bind" or flags & k.MS_BIND
    if is_bind and not os.path.isdir(source):
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        if not os.path.lexists(destination):
            os.close(os.open(destination, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
    else:
        os.makedirs(destination, exist_ok=True)
    if is_bind:
        k.mount(source, destination, None, k.MS_BIND | (flags & k.MS_REC))
        extra = flags & ~(k.MS_BIND | k.MS_REC)
        if extra:
            # Bind mounts ignore flags on creation: a remount applies ro/nosuid/...
            k.mount(None, destination, None, k.MS_BIND | k.MS_REMOUNT | extra)
    else:
        k.mount(source, destination, kind, flags, data or None)
    if propagation:
        k.mount(None, destination, None, propagation)


def _mount_cgroups(mount: dict[str, Any]) -> None:
    """Mount the container's cgroups at ``mount['destination']`` (inside the new root), the
    hierarchies this process is in as /proc/self/cgroup lists them: cgroup2 alone on a
    unified host; on a v1 (or hybrid) host a tmpfs with one v1 mount per hierarchy (named by
    its controllers, with a symlink per controller of a shared one, as runc does) plus the
    unified one at ``unified``. Read-only unless the options say otherwise."""
    flags, _, _ = parse_mount_options(list(mount.get("options") or []))
    destination = mount["destination"]
    try:
        with open("/proc/self/cgroup") as f:
            entries = [line.rstrip("\n").split(":", 2) for line in f if line.strip()]
        v1 = [controllers for hierarchy, controllers, _ in entries if hierarchy != "0" and controllers]
        unified = any(hierarchy == "0" for hierarchy, _, _ in entries)
        if not v1:
            k.mount("cgroup2", destination, "cgroup2", flags)
            return
        k.mount("tmpfs", destination, "tmpfs", flags & ~k.MS_RDONLY, "mode=755")
        for controllers in v1:
            named = controllers.startswith("name=")
            name = controllers[len("name="):] if named else controllers
            path = os.path.join(destination, name)
            os.mkdir(path, 0o755)
            k.mount("cgroup", path, "cgroup", flags, f"none,{controllers}" if named else controllers)
            if "," in name:
                for controller in name.split(","):
                    _symlink(name, os.path.join(destination, controller))
        if unified:
            os.mkdir(os.path.join(destination, "unified"), 0o755)
            k.mount("cgroup2", os.path.join(destination, "unified"), "cgroup2", flags)
        if flags & k.MS_RDONLY:
            k.mount(None, destination, None, k.MS_REMOUNT | flags, "mode=755")
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ContainerStartError(f"cannot mount the container's cgroups on {destination}: {reason}") from None


def _setup_rootfs(spec: dict[str, Any], console: int | None) -> None:
    """Mount the spec's filesystems and devices in the root, pivot into it, and (``console``:
    the console socket) allocate the terminal there, before the masks and read-only remounts,
    as runc does."""
    linux = spec.get("linux", {})
    root = os.path.realpath(spec["root"]["path"])
    propagation = _PROPAGATION.get(linux.get("rootfsPropagation") or "rprivate", k.MS_PRIVATE | k.MS_REC)
    # Nothing we mount may leak to the host, and host mounts must not follow us in.
    k.mount(None, "/", None, k.MS_PRIVATE | k.MS_REC)
    k.mount(root, root, None, k.MS_BIND | k.MS_REC)
    for mount in spec.get("mounts") or []:
        if mount.get("type") == "cgroup":
            continue  # after the cgroup namespace exists: _mount_cgroups
        try:
            _mount_one(root, mount)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ContainerStartError(f"cannot mount {mount.get('source') or mount.get('type')} on "
                                      f"{mount['destination']}: {reason}") from None
    dev = resolve_in_root(root, "/dev")
    for device in linux.get("devices") or []:
        _make_device(root, device)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        _symlink(target, os.path.join(dev, name))
    if os.path.isdir(os.path.join(dev, "pts")):
        _symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    if propagation != k.MS_PRIVATE | k.MS_REC:
        k.mount(None, root, None, propagation)
    os.chdir(root)
    # pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only ours.
    k.pivot_root(".", ".")
    k.umount2(".", k.MNT_DETACH)
    os.chdir("/")
    if console is not None:
        _open_console(console, spec, bind_console=True)
    for key, value in (linux.get("sysctl") or {}).items():
        # Before /proc/sys turns read-only; namespaced keys only change this container.
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(str(value))
    for path in linux.get("maskedPaths") or []:
        _mask(path)
    for path in linux.get("readonlyPaths") or []:
        _readonly(path)
    if spec["root"].get("readonly"):
        k.mount(None, "/", None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY)


def _symlink(target: str, path: str) -> None:
    try:
        os.symlink(target, path)
    except FileExistsError:
        pass


def _make_device(root: str, device: dict[str, Any]) -> None:
    path = resolve_in_root(root, device["path"])
    kind = stat.S_IFCHR if device.get("type", "c") == "c" else stat.S_IFBLK
    mode = int(device.get("fileMode", 0o666)) & 0o7777
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    try:
        os.mknod(path, kind | mode, os.makedev(int(device["major"]), int(device["minor"])))
    except PermissionError:
        # Without CAP_MKNOD (or on a nodev mount) bind the host's node instead.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        k.mount(device["path"], path, None, k.MS_BIND)
        return
    os.chmod(path, mode)  # mknod's mode went through the umask
    os.chown(path, int(device.get("uid", 0)), int(device.get("gid", 0)))


def _mask(path: str) -> None:
    try:
        if os.path.isdir(path):
            k.mount("tmpfs", path, "tmpfs", k.MS_RDONLY)
        else:
            k.mount("/dev/null", path, None, k.MS_BIND)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def _readonly(path: str) -> None:
    try:
        k.mount(path, path, None, k.MS_BIND | k.MS_REC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise
    k.mount(None, path, None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC)


def _cap_mask(names: list[str] | None) -> int:
    mask = 0
    for name in names or []:
        number = k.CAPABILITIES.get(name if name.startswith("CAP_") else "CAP_" + name)
        if number is None:
            raise ValueError(f"unknown capability {name!r}")
        mask |= 1 << number
    return mask


def _confine_and_exec(spec: dict[str, Any], err_w: int) -> None:
    """rlimits, cwd, capabilities, seccomp, user, no_new_privs, then exec: never returns."""
    _exec(_confine(spec, err_w), err_w)


def _confine(spec: dict[str, Any], err_w: int) -> dict[str, Any]:
    """Apply the spec's rlimits, cwd, capabilities, seccomp, user and no_new_privs to this
    process; returns the process spec."""
    process = spec.get("process", {})
    if process.get("oomScoreAdj") is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(int(process["oomScoreAdj"])))
    for rlimit in process.get("rlimits") or []:
        try:
            resource.setrlimit(RLIMIT_NAMES[rlimit["type"]], (int(rlimit["soft"]), int(rlimit["hard"])))
        except (ValueError, OSError) as exc:
            _fail(err_w, _SETUP_FAILED, f"setrlimit {rlimit['type']} {rlimit['soft']}:{rlimit['hard']}: {exc}")
    cwd = process.get("cwd") or "/"
    os.makedirs(cwd, exist_ok=True)
    os.chdir(cwd)
    caps = process.get("capabilities")
    permitted_before = k.capget()[1]
    if caps is not None:
        bounding = _cap_mask(caps.get("bounding"))
        k.bounding_drop({n for n in range(64) if bounding >> n & 1})
    seccomp = spec.get("linux", {}).get("seccomp")
    if seccomp and k.libseccomp() is not None:
        # From here on only the profile's calls: setgroups, setuid, capset, prctl and execve are in it.
        k.seccomp_load_profile(seccomp, set_nnp=bool(process.get("noNewPrivileges")))
    user = process.get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    if caps is not None:
        # Keep the permitted set across setuid to a non-root user; capset trims it below.
        k.prctl(k.PR_SET_KEEPCAPS, 1)
    os.setgroups([int(g) for g in user.get("additionalGids") or []])
    os.setgid(gid)
    os.setuid(uid)
    if caps is not None:
        # A capability the host itself lacks (here CAP_SYS_RESOURCE) cannot be granted:
        # --privileged means every capability this host has.
        available = permitted_before
        k.capset(_cap_mask(caps.get("effective")) & available, _cap_mask(caps.get("permitted")) & available,
                 _cap_mask(caps.get("inheritable")) & available)
        ambient = _cap_mask(caps.get("ambient"))
        if ambient:
            k.ambient_raise({n for n in range(64) if ambient >> n & 1})
    if process.get("noNewPrivileges"):
        k.set_no_new_privs()
    return process


def _exec(process: dict[str, Any], err_w: int) -> None:
    args = list(process.get("args") or [])
    if not args:
        _fail(err_w, _SETUP_FAILED, "no command specified")
    env = dict(item.partition("=")[::2] for item in process.get("env") or [])
    command = args[0]
    if "/" in command:
        candidates = [command]
    else:
        search = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        candidates = [os.path.join(d or ".", command) for d in search.split(":")]
        candidates = [c for c in candidates if os.path.isfile(c)]
        if not candidates:
            _fail(err_w, _NOT_FOUND, f'exec: "{command}": executable file not found in $PATH')
    # Python ignores SIGPIPE and SIGXFSZ, and the caller may block or ignore more: an ignored
    # signal or a blocked mask would survive exec, so the command starts with defaults.
    for sig in range(1, signal.NSIG):
        try:
            if signal.getsignal(sig) is signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    # Only stdio crosses into the container: every other fd the caller had closes on exec.
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:
            try:
                os.set_inheritable(int(name), False)
            except OSError:
                pass
    try:
        os.execve(candidates[0], args, env)
    except FileNotFoundError:
        _fail(err_w, _NOT_FOUND, f'exec: "{command}": no such file or directory')
    except OSError as exc:
        _fail(err_w, _CANNOT_EXECUTE, f'exec: "{command}": {(exc.strerror or str(exc)).lower()}')


#: the sealed memfd copy of pyengine-shim this process hands to every --init container, and
#: the (device, inode, size, mtime) of the file it was copied from
_init_copy: tuple[int, tuple[int, int, int, int]] | None = None


def init_program() -> int | None:
    """A descriptor of a sealed memfd copy of the static pyengine-shim, the ``--init`` of a
    container; None when the shim is not built (PID 1 then stays the Python init).

    The container's PID 1 runs the copy, never the host's file: /proc/1/exe is a memfd that
    no one can write, not a host binary a container could read, hold open or overwrite. One
    copy per process (~0.2 ms for the 0.9 MB shim): made again only when the file changed, and
    the fork server makes it before its forks, so the commands it runs share one. The fd is
    close-on-exec: only PID 1's execveat uses it."""
    global _init_copy
    from pyengine import shim

    program = shim.program()
    if program is None:
        return None
    try:
        info = os.stat(program)
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if _init_copy is not None and _init_copy[1] == key:
            return _init_copy[0]
        fd = k.sealed_copy(program, "pyengine-shim")
    except OSError:
        return None
    if _init_copy is not None:
        os.close(_init_copy[0])
    _init_copy = (fd, key)
    return fd


def _become_init(err_w: int, spec: dict[str, Any], init_fd: int | None) -> None:
    """``--init``: stay PID 1 as a minimal init that forwards signals to the command and reaps
    zombies; the command runs in a child. Returns in that child only.

    PID 1 confines itself as the command is confined and execs ``pyengine-shim --init`` from
    its sealed memfd copy (``init_program``; Docker runs tini by descriptor too); should that
    fail (a dynamically linked build in a root without the host's libc), it stays the Python
    loop below, still non-dumpable: its /proc/1/exe stays closed to the container.

    The command waits until PID 1 is the init (its exec closed the gate pipe), as under tini,
    which forks the command once it runs: what the command sees as PID 1 is never a
    half-exec'd copy of the monitor."""
    gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()  # non-dumpable, as this process is, until the command's exec
    if child == 0:
        if init_fd is not None:
            os.close(init_fd)
        os.close(gate_w)
        while True:
            try:
                os.read(gate_r, 1)  # EOF: PID 1 exec'd the init, or gave up and stays Python
                break
            except InterruptedError:
                continue
        os.close(gate_r)
        return
    os.close(gate_r)
    os.close(err_w)  # the command's exec closes its copy: the parent sees EOF then
    if init_fd is not None:
        try:
            _confine(spec, -1)
            k.execveat(init_fd, ["pyengine-init", "--init", str(child)], {})
        except Exception:  # noqa: BLE001 - the Python init below still does the job
            pass
    os.close(gate_w)
    forwarded = [s for s in signal.Signals if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)]
    for sig in forwarded:
        try:
            signal.signal(sig, lambda number, _frame: os.kill(child, number))
        except (OSError, ValueError):
            pass
    while True:
        try:
            pid, status = os.wait()
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)
