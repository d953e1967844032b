"""The engine behind the daemon: one Engine for the daemon's life (rebuilt on SIGHUP), the
engine verbs the routes call, and a thread pool so that blocking engine work (a pull, an
extraction, a container start) never runs on the event loop.

Routes reach it as ``request.app["backend"]``; they call ``await backend.run(fn, *args)``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import selectors
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pyengine.config import Config
    from pyengine.containers.engine import Containers
    from pyengine.engine import Engine

T = TypeVar("T")

#: What a container's monitor imports after the daemon forked it, imported once in the daemon
#: instead (a monitor is a fork of the daemon: it finds them loaded)
MONITOR_MODULES = ("pyengine.containers.monitor", "pyengine.containers.exec", "pyengine.containers.spec",
                   "pyengine.containers.networking", "pyengine.runtime.launch", "pyengine.runtime.spec",
                   "pyengine.shim", "termios")


class Backend:
    """What the routes call: the engine and its verbs, off the event loop."""

    def __init__(self, config_loader: Callable[[], Config], workers: int = 64) -> None:
        self._config_loader = config_loader
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="api")
        self.engine: Engine = self._build()
        warm_monitors()
        self.reaper = MonitorReaper()
        from pyengine.containers.engine import watch_monitors

        watch_monitors(self.reaper.watch)

    def _build(self) -> Engine:
        from pyengine.engine import Engine

        engine = Engine(self._config_loader())
        # First use of these cached properties happens here, not racing in two threads.
        engine.storage  # noqa: B018
        engine.isolators  # noqa: B018
        return engine

    def reload(self) -> None:
        """Re-read the configuration (SIGHUP): later requests use the new engine."""
        old, self.engine = self.engine, self._build()
        del old  # requests in flight keep their reference; its drivers stay usable

    @property
    def config(self) -> Config:
        return self.engine.config

    def containers(self) -> Containers:
        from pyengine.containers.engine import Containers

        return Containers(self.engine)

    def networks(self) -> Any:
        from pyengine.network.manager import NetworkManager

        return NetworkManager(self.engine)

    def volumes(self) -> Any:
        from pyengine.containers.volumes import VolumeStore

        return VolumeStore(self.engine.config.data_root, events_root=self.engine.config.run_root)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the pool; its result or its exception."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        # Not waiting: work whose client went away may block on (a wait on a running container);
        # run_daemon exits past it.
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()


def warm_monitors() -> None:
    """Do once, in the daemon, what every container start would otherwise do in its freshly
    forked monitor: import the monitor's modules and compile Docker's default seccomp filter
    (~15 ms of each start; ``kernel.seccomp_compile`` caches it per process, and each monitor,
    a fork of the daemon, inherits the cache). Only an optimisation: a failure is the start's
    to report."""
    import importlib

    try:
        for name in MONITOR_MODULES:
            importlib.import_module(name)
        from pyengine.runtime import kernel
        from pyengine.runtime.spec import DEFAULT_CAPABILITIES, default_seccomp

        if kernel.libseccomp() is not None:
            kernel.seccomp_compile(default_seccomp(DEFAULT_CAPABILITIES))
    except Exception as exc:  # noqa: BLE001 - the monitor imports and compiles it then
        from pyengine.log import get_logger

        get_logger("pyengine.api").debug("daemon.warm_failed", reason=str(exc))


class MonitorReaper:
    """Reaps the container monitors the daemon forks. A monitor stays the daemon's child until
    it exits (setsid does not re-parent it); unreaped, each would stay a zombie for the
    daemon's life, one per container run. One thread waits on their pidfds and reaps each
    exited monitor by its pid (never another child: a subprocess's status stays its own)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._new: list[int] = []
        threading.Thread(target=self._run, name="monitor-reaper", daemon=True).start()

    def watch(self, pid: int) -> None:
        with self._lock:
            self._new.append(pid)
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    self._take_new()
                    continue
                self._selector.unregister(key.fd)
                os.close(key.fd)
                try:
                    os.waitpid(key.data, os.WNOHANG)
                except ChildProcessError:
                    pass

    def _take_new(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        with self._lock:
            pids, self._new = self._new, []
        for pid in pids:
            try:
                pidfd = os.pidfd_open(pid)  # an exited, unreaped monitor has one too
            except OSError:
                continue
            self._selector.register(pidfd, selectors.EVENT_READ, pid)
