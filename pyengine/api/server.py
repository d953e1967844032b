"""Listeners and the daemon's life: Unix sockets (root:GROUP 0660), TCP (mutual TLS, or plain
on loopback only unless ``insecure_tcp``), systemd socket activation (``fd://``), the pid file,
SIGTERM (stop accepting, finish requests in flight, exit) and SIGHUP (re-read the config).

Containers do not depend on the daemon: their monitors are their own processes.
"""

from __future__ import annotations

import asyncio
import grp
import ipaddress
import os
import signal
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyengine.errors import PyEngineError, UsageError
from pyengine.log import get_logger

log = get_logger("pyengine.daemon")

#: systemd passes activated sockets from this descriptor on (sd_listen_fds)
SD_LISTEN_FDS_START = 3


@dataclass
class DaemonOptions:
    """What ``pyengine daemon`` was asked for (flags over the ``[daemon]`` table)."""

    hosts: list[str] = field(default_factory=list)
    group: str = "pyengine"
    tlsverify: bool = False
    tlscacert: str | None = None
    tlscert: str | None = None
    tlskey: str | None = None
    insecure_tcp: bool = False
    pidfile: str | None = None
    shutdown_timeout: float = 15.0


def default_socket(run_root: Path) -> str:
    return f"unix://{run_root / 'pyengine.sock'}"


#: the ``[daemon]`` keys, as written in the file, and their DaemonOptions field
DAEMON_KEYS = ("hosts", "group", "tlsverify", "tlscacert", "tlscert", "tlskey", "insecure-tcp", "pidfile")


def resolve_options(config: Any, flags: dict[str, Any]) -> tuple[DaemonOptions, dict[str, tuple[Any, str]]]:
    """The daemon's options from its flags over the config's ``[daemon]`` table over defaults,
    and for each key its value and source (``flag``, ``file:<path>``, ``default``).

    :param flags: key (as in the file) -> the flag's value, None (or empty) when not given
    """
    table = config.table("daemon") or {}
    defaults = DaemonOptions(hosts=[default_socket(config.run_root)])
    kwargs: dict[str, Any] = {}
    sources: dict[str, tuple[Any, str]] = {}
    for key in DAEMON_KEYS:
        name = key.replace("-", "_")
        flag = flags.get(key)
        if flag not in (None, (), []):
            value, source = (list(flag) if key == "hosts" else flag), "flag"
        elif key in table:
            value, source = table[key], f"file:{config.path}"
        else:
            value, source = getattr(defaults, name), "default"
        kwargs[name] = list(value) if key == "hosts" else value
        sources[key] = (value, source)
    return DaemonOptions(**kwargs), sources


def _unix_path(host: str) -> str:
    path = host[len("unix://"):]
    if not path.startswith("/"):
        raise UsageError(f"invalid host {host!r}: a unix socket needs an absolute path")
    return path


def parse_tcp(host: str) -> tuple[str, int]:
    rest = host[len("tcp://"):].rstrip("/")
    address, sep, port = rest.rpartition(":")
    if not sep:
        address, port = rest, "2375"
    address = address.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid host {host!r}: bad port")
    return address, int(port)


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_hosts(options: DaemonOptions) -> None:
    """Refuse what would be unsafe or cannot work, before anything listens."""
    for host in options.hosts:
        if host.startswith("unix://"):
            _unix_path(host)
        elif host.startswith("tcp://"):
            address, _ = parse_tcp(host)
            if options.tlsverify:
                if not (options.tlscacert and options.tlscert and options.tlskey):
                    raise UsageError("--tlsverify needs --tlscacert, --tlscert and --tlskey")
            elif not _is_loopback(address) and not options.insecure_tcp:
                raise UsageError(f"refusing to serve {host} without TLS: anyone who can reach it is root "
                                 "on this host; use --tlsverify with certificates, a loopback address, or "
                                 "--insecure-tcp if you really mean it")
        elif host.startswith("fd://"):
            pass
        else:
            raise UsageError(f"invalid host {host!r}: use unix:///path, tcp://ADDR:PORT or fd://")


def tls_context(options: DaemonOptions) -> ssl.SSLContext:
    """Mutual TLS: the server's certificate, and client certificates that must chain to the CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=options.tlscacert)
    context.load_cert_chain(options.tlscert, options.tlskey)  # type: ignore[arg-type]
    context.verify_mode = ssl.CERT_REQUIRED if options.tlsverify else ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _group_exists(group: str) -> bool:
    try:
        grp.getgrnam(group)
    except KeyError:
        return False
    return True


def _socket_dir(path: str, warn: bool) -> None:
    """Make the socket's directory when missing, passable (0711) so that the group reaches the
    socket and nothing else in it; warn when an existing one keeps the group out."""
    parent = Path(path).parent
    if not parent.is_dir():
        parent.mkdir(parents=True, exist_ok=True)
        os.chmod(parent, 0o711)
        return
    probe = parent
    while warn and probe != probe.parent:
        mode = probe.stat().st_mode
        if not mode & 0o011:
            log.warning("daemon.socket_unreachable", socket=path, directory=str(probe), mode=oct(mode & 0o777),
                        hint="members of the socket's group cannot pass this directory; make it 0711")
            return
        probe = probe.parent


def unix_listener(path: str, group: str) -> socket.socket:
    """A listening Unix socket at ``path``, root:GROUP 0660 (0600 and a warning without the group)."""
    _socket_dir(path, warn=_group_exists(group))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        log.warning("daemon.group_missing", group=group, socket=path,
                    hint=f"groupadd {group} to let its members use the socket; it is 0600 root:root")
        os.chmod(path, 0o600)
    else:
        os.chown(path, 0, gid)
        os.chmod(path, 0o660)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def activated_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed (``LISTEN_PID`` must be us); empty when none."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get("LISTEN_PID") not in (None, str(os.getpid())):
        return []
    count = int(environ.get("LISTEN_FDS") or 0)
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        socks.append(sock)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socks


class Daemon:
    """One daemon process: the app, its listeners, its signals."""

    def __init__(self, backend: Any, options: DaemonOptions) -> None:
        self.backend = backend
        self.options = options
        self.runner: Any = None
        self.stopping = asyncio.Event()
        self.unix_paths: list[str] = []
        self._tls: ssl.SSLContext | None = None

    async def start(self) -> None:
        """Listen on every host; a host that cannot be served is a one-line error."""
        for host in self.options.hosts:
            try:
                await self._listen(host)
            except OSError as exc:
                raise PyEngineError(f"cannot listen on {host}: {exc.strerror or exc}") from None
            except ssl.SSLError as exc:
                raise PyEngineError(f"cannot serve TLS on {host}: {exc.reason or exc}") from None
        if self.options.pidfile:
            Path(self.options.pidfile).write_text(f"{os.getpid()}\n")
        log.info("daemon.listening", hosts=self.options.hosts, pid=os.getpid())
        # as dockerd at its start: containers whose restart policy brings them back (after a
        # reboot, a stale run root cleared first); in the pool, so requests are served meanwhile
        self._restoring = asyncio.get_running_loop().run_in_executor(self.backend.pool, _restore, self.backend)

    async def _setup(self) -> None:
        from aiohttp import web

        from pyengine.api.app import make_app

        check_hosts(self.options)
        app = make_app(self.backend)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                    shutdown_timeout=self.options.shutdown_timeout)
        await self.runner.setup()

    async def _listen(self, host: str) -> None:
        from aiohttp import web

        if self.runner is None:
            await self._setup()
        if host.startswith("unix://"):
            path = _unix_path(host)
            sock = unix_listener(path, self.options.group)
            self.unix_paths.append(path)
            await web.SockSite(self.runner, sock).start()
        elif host.startswith("tcp://"):
            address, port = parse_tcp(host)
            tls = None
            if self.options.tlsverify or self.options.tlscert:
                self._tls = self._tls or tls_context(self.options)
                tls = self._tls
            elif not _is_loopback(address):
                log.warning("daemon.insecure_tcp", host=host,
                            warning="plain TCP without TLS: anyone who can reach it controls this host")
            await web.TCPSite(self.runner, address, port, ssl_context=tls, reuse_address=True).start()
        else:  # fd://
            socks = activated_sockets()
            if not socks:
                raise UsageError("fd:// given but systemd passed no sockets (LISTEN_FDS)")
            for sock in socks:
                await web.SockSite(self.runner, sock).start()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        os.register_at_fork(after_in_child=_forget_daemon_signals)
        try:
            await self.start()
        except BaseException:
            await self.stop()  # what did listen stops, and its socket files go
            raise
        print(f"pyengine daemon listening on {', '.join(self.options.hosts)}", file=sys.stderr, flush=True)
        await self.stopping.wait()
        await self.stop()

    def _reload(self) -> None:
        try:
            self.backend.reload()
            log.warning("daemon.reloaded")
        except Exception as exc:  # a bad config keeps the old one
            log.warning("daemon.reload_failed", reason=str(exc))

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to the shutdown timeout), exit."""
        if self.runner is not None:
            await self.runner.cleanup()
        for path in self.unix_paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if self.options.pidfile:
            try:
                os.unlink(self.options.pidfile)
            except FileNotFoundError:
                pass


def _restore(backend: Any) -> None:
    from pyengine.containers.restore import restore

    try:
        result = restore(backend.containers())
    except Exception as exc:  # noqa: BLE001 - the daemon serves on; the log says why
        log.error("daemon.restore_failed", reason=str(exc))
        return
    log.info("daemon.restored", started=len(result.started), failed=len(result.failed), stale=len(result.stale))


def _forget_daemon_signals() -> None:
    """In a fork of the daemon (pyroute2's namespace helpers, a container's monitor): the
    loop's wakeup fd is shared with the daemon, so a SIGTERM the fork gets would be read by the
    daemon's loop as its own and stop it. The fork takes the default actions instead."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def run_daemon(backend: Any, options: DaemonOptions) -> None:
    """Serve until SIGTERM; then exit even if engine work of a request whose client went away
    is still blocking in a pool thread (a ``wait`` on a container that runs on)."""
    import threading

    daemon = Daemon(backend, options)
    asyncio.run(daemon.serve())
    deadline = time.monotonic() + 1.0
    busy = [t for t in threading.enumerate() if t.name.startswith("api") and t.is_alive()]
    for thread in busy:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in busy if t.is_alive()]
    if left:
        # Interpreter exit would join them (concurrent.futures does) and never return.
        log.warning("daemon.abandoned_work", threads=left)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
