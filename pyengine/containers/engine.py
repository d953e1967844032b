"""The container verbs: create, start, stop, kill, remove, wait, inspect, and reconciliation.

Owns the container lifecycle on top of the container store; calls the storage driver for the
read-write layer, the isolators and network drivers through their protocols, the image store
for the image, and the runtime launcher to start the process. Used by the CLI and the daemon.
"""

from __future__ import annotations

import builtins
import os
import select
import signal as signals
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyengine.containers.store import DAMAGED, ContainerRecord, ContainerState, ContainerStore, now_iso, pid_alive
from pyengine.errors import Conflict, NoSpace, NotFound, PyEngineError, UsageError
from pyengine.fsutil import make_dirs
from pyengine.log import get_logger

if TYPE_CHECKING:
    from pyengine.engine import Engine

log = get_logger("pyengine.containers")


#: Docker's wait conditions
WAIT_CONDITIONS = ("not-running", "next-exit", "removed")

#: HostConfig limits ``update`` can change on a running container
UPDATABLE = ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "CpuQuota", "CpuPeriod",
             "CpusetCpus", "CpusetMems", "PidsLimit", "BlkioWeight")


class NotModified(Conflict):
    """The container is already in the state asked for (started, stopped): the API's 304."""


#: Starts made by this process, so that its waits wake at once (the daemon's wait route waits
#: before its client starts the container): a count, and a condition notified when it grows
_starts = threading.Condition()
_start_count = 0


#: Called with the pid of each monitor this process forks (``watch_monitors``)
_monitor_watchers: list[Callable[[int], None]] = []


def watch_monitors(callback: Callable[[int], None]) -> None:
    """Have ``callback(pid)`` called for every monitor this process forks from now on: a
    monitor stays its forker's child until it exits, and a long-lived forker (the daemon)
    reaps it. A CLI exits first and leaves its monitors to init."""
    _monitor_watchers.append(callback)


def _note_start() -> None:
    global _start_count
    with _starts:
        _start_count += 1
        _starts.notify_all()


class _MonitorWatch:
    """What a wait sleeps on between two looks at the container's state: the pidfd of the
    last monitor it saw (the monitor exits once the exit is recorded and ``--rm`` done, after
    it cleared its pid from the state), else this process's starts; a timeout at most."""

    def __init__(self) -> None:
        self.pidfd: int | None = None
        self.pid = 0

    def sleep(self, state: ContainerState, starts_seen: int, timeout: float) -> None:
        if state.monitor_pid and state.monitor_pid != self.pid and state.monitor_alive():
            self.close()
            try:
                pidfd = os.pidfd_open(state.monitor_pid)
            except OSError:  # gone meanwhile: look again now
                return
            if not state.monitor_alive():  # checked after the open: the pidfd is not a reuser's
                os.close(pidfd)
                return
            self.pidfd, self.pid = pidfd, state.monitor_pid
        if self.pidfd is not None:
            # poll, not select: a daemon with many connections has descriptors past 1024
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            if poller.poll(timeout * 1000):  # it exited: the next look sees what it left
                self.close()
            return
        with _starts:
            _starts.wait_for(lambda: _start_count != starts_seen, timeout)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
        self.pidfd, self.pid = None, 0


def parse_signal(value: str | int) -> int:
    """SIGTERM, TERM, 15 -> 15; a clear error for anything else."""
    if isinstance(value, int) or str(value).isdigit():
        number = int(value)
        if 0 < number < 65:
            return number
    else:
        name = str(value).upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if hasattr(signals.Signals, name):
            return int(signals.Signals[name])
    raise UsageError(f"invalid signal: {value}")


class Containers:
    """The container side of the engine, daemonless: every verb works on the stores directly."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = ContainerStore(engine.config.data_root, engine.config.run_root)
        self._warmed = False

    # -- helpers other parts call ----------------------------------------------------------
    def emit(self, record: ContainerRecord, event: str, **attributes: str) -> None:
        """Record the event in the journal (with the container's labels, as dockerd's), then
        tell the plugins (``pyengine_container_event``)."""
        from pyengine import events

        attrs = {"name": record.name, "image": record.image, **attributes}
        labels = record.config.get("Labels") or {}
        events.record(self.engine.config.run_root, "container", event, record.id, {**labels, **attrs})
        self.engine.plugins.emit_container_event(event, record.id, attrs)

    def isolators(self) -> list[Any]:
        return self.engine.isolators

    # -- create ----------------------------------------------------------------------------
    def create(self, image_ref: str, config: dict[str, Any], host_config: dict[str, Any],
               name: str | None = None, endpoint: dict[str, Any] | None = None) -> ContainerRecord:
        """Create a container from an image: its record and its read-write layer.

        :param endpoint: ``{"Aliases": [...], "IPAddress": ...}`` on its first network
        """
        from pyengine.containers.networking import resolve_network_config
        from pyengine.containers.spec import merge_image_config, parse_security_opts
        from pyengine.containers.validate import check_create

        parse_security_opts(host_config.get("SecurityOpt"))  # refused before anything is made
        check_create(image_ref, config, host_config)
        try:
            image = self.engine.images.resolve_image(image_ref)
        except NotFound as exc:
            # Docker's run and create exit 125 when the image is missing.
            error = NotFound(str(exc))
            error.exit_code = 125
            raise error from None
        config = merge_image_config(image.config, config)
        if not config.get("Cmd") and not config.get("Entrypoint"):
            raise UsageError(f"no command specified and image {image_ref} has none")
        networks = resolve_network_config(self.engine, host_config, config, endpoint or {})
        with self.store.lock():
            if name:
                self.store.check_name(name)
            record = ContainerRecord(
                id=self.store.new_id(), name=name or self.store.generate_name(), created=now_iso(),
                image=image_ref, image_id=image.id, config=config, host_config=host_config,
                layer_id="", networks=networks)
            record.layer_id = record.id
            storage_opts = host_config.get("StorageOpt") or {}
            size = storage_opts.get("size")
            self.engine.storage.create_read_write(record.layer_id, image.top_layer,
                                                  _parse_bytes(size) if size else None)
            try:
                self.store.add(record)
            except BaseException:
                self.engine.storage.remove(record.layer_id)
                raise
        self.emit(record, "create")
        return record

    # -- start -----------------------------------------------------------------------------
    def start(self, ref: str, client: Any = None, clients: list[Any] | None = None) -> ContainerRecord:
        """Start the container's monitor; return once the process runs (or failed to start).

        :param client: one end of a socketpair; the monitor relays the container's stdio to it
        :param clients: more such ends (attach requests waiting for the start, in the daemon)
        """
        from pyengine.containers.monitor import spawn_monitor

        container_id = self.store.resolve(ref)
        self.warm_isolators()
        with self.store.container_lock(container_id):
            record = self.reconcile(self.store.load(container_id))
            if record.state.running:
                raise NotModified(f"container {record.name} is already running")
            if record.state.stop_requested or record.state.status == DAMAGED:
                # Written only when it changes (an fsync'd write on every start's path); a
                # damaged record refuses the write, and the start fails with its reason.
                record.state.stop_requested = False
                self.store.save_state(container_id, record.state)
        from pyengine.containers.restore import note_boot

        note_boot(self.engine.config.run_root)  # so that a restore tells this boot's run root from an earlier one's
        monitor_pid, message = spawn_monitor(self, container_id, client, clients=list(clients or []) or None)
        for watcher in _monitor_watchers:
            watcher(monitor_pid)
        _note_start()  # the monitor saved its state (running, its pid) before it answered
        kind, _, rest = message.partition(" ")
        if kind != "ok":
            code, _, text = rest.partition(" ")
            error = PyEngineError(text or "the container failed to start")
            error.exit_code = int(code) if code.isdigit() else 125
            raise error
        try:
            return self.store.load(container_id)
        except NotFound:
            # A short command of a --rm container can end, and its monitor remove it, before
            # this reads the record again: the start worked all the same.
            record.state.status, record.state.pid = "exited", 0
            record.state.exit_code = self._removed_exit_code(container_id, 0)
            return record

    def warm_isolators(self) -> None:
        """Let isolators start slow kernel work a launch will wait for (cgroup v1's lock) now,
        in the background; once per process."""
        if self._warmed:
            return
        self._warmed = True
        for isolator in self.isolators():
            warm = getattr(isolator, "warm", None)
            if warm is not None:
                warm()

    def launch(self, record: ContainerRecord, stdio: tuple[int | None, int, int] | None) -> Any:
        """Called in the monitor: mount the rootfs, prepare isolators, start the process."""
        from pyengine.containers.networking import NetworkAttachment, joins_networks
        from pyengine.containers.spec import build_spec
        from pyengine.runtime.launch import launch

        mode = record.host_config.get("NetworkMode") or "none"
        isolators = list(self.isolators())
        shared = None
        if mode.startswith("container:"):
            other = self.reconcile(self.store.load(self.store.resolve(mode.split(":", 1)[1])))
            if not other.state.running:
                raise Conflict(f"cannot join the network of container {other.name}: it is not running")
            shared = (f"/proc/{other.state.pid}/ns/net", self.store.dir(other.id))
        elif joins_networks(mode):
            isolators.append(NetworkAttachment(self, record, self.store.dir(record.id)))
        rootfs = self.engine.storage.get(record.layer_id)
        try:
            spec = build_spec(record, rootfs, self.store.dir(record.id), shared_network=shared,
                              no_new_privileges=bool(self.engine.config["no-new-privileges"]))
            stdin, stdout, stderr = stdio if stdio else (None, None, None)
            return launch(record.id, spec, isolators, stdin=stdin, stdout=stdout, stderr=stderr)
        except BaseException as failure:
            self.engine.storage.put(record.layer_id)
            for isolator in isolators:
                try:
                    isolator.release(record.id)
                except Exception as exc:
                    log.warning("isolator.release_failed", container=record.id, isolator=isolator.name,
                                reason=str(exc))
            if NoSpace.is_full(failure):  # its /etc files, its spec: one clear line for `start`
                raise NoSpace(getattr(failure, "filename", None) or self.store.dir(record.id)) from None
            raise

    def oom_killed(self, record: ContainerRecord) -> bool:
        for isolator in self.isolators():
            check = getattr(isolator, "oom_killed", None)
            if check is not None:
                try:
                    if check(record.id):
                        return True
                except Exception as exc:
                    log.warning("oom_check_failed", container=record.id, reason=str(exc))
        return False

    def release_runtime(self, record: ContainerRecord) -> None:
        """Undo ``launch`` after the process is gone: networks, isolators, then the rootfs mount."""
        from pyengine.containers.networking import joins_networks, leave_networks

        if joins_networks(record.host_config.get("NetworkMode") or "none"):
            try:
                leave_networks(self, record.id)
            except Exception as exc:
                log.warning("network.leave_failed", container=record.id, reason=str(exc))
        for isolator in self.isolators():
            try:
                isolator.release(record.id)
            except Exception as exc:
                log.warning("isolator.release_failed", container=record.id, isolator=isolator.name,
                            reason=str(exc))
        try:
            self.engine.storage.put(record.layer_id)
        except Exception as exc:
            log.warning("storage.put_failed", container=record.id, reason=str(exc))

    # -- reconciliation --------------------------------------------------------------------
    def reconcile(self, record: ContainerRecord) -> ContainerRecord:
        """A container marked running whose monitor is gone ended with its monitor: record it
        as exited and release what the monitor held."""
        state = record.state
        if not _monitor_lost(state):
            return record
        if state.pid and state.process_alive():  # by start time: never a stranger with its pid
            try:
                os.kill(state.pid, signals.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(100):
                if not state.process_alive():
                    break
                time.sleep(0.01)
        log.info("container.reconciled", container=record.id, monitor=state.monitor_pid)
        state.status, state.pid, state.monitor_pid = "exited", 0, 0
        state.exit_code = state.exit_code or 137
        state.error = "the container's monitor died"
        state.finished_at = now_iso()
        try:
            self.store.save_state(record.id, state)
        except NoSpace as exc:  # a read shows the reconciled state anyway; the next one retries
            log.warning("container.reconcile_not_saved", container=record.id, reason=str(exc))
        self.release_runtime(record)
        return record

    def get(self, ref: str) -> ContainerRecord:
        container_id = self.store.resolve(ref)
        with self.store.container_lock(container_id):
            return self.reconcile(self.store.load(container_id))

    def list(self, all_: bool = False, *, shared: bool = False) -> list[ContainerRecord]:
        """The containers (running ones unless ``all_``), newest first. Their records are read
        once, without their locks (every record file is replaced whole, atomically); only one
        whose monitor died is read again under its lock, and reconciled.

        :param shared: the caller only reads the records (``ContainerStore.load``)
        """
        records = []
        for record in self.store.list(shared=shared):
            if _monitor_lost(record.state):
                try:
                    with self.store.container_lock(record.id):
                        record = self.reconcile(self.store.load(record.id))
                except NotFound:  # removed since the store listed it (a --rm container's monitor)
                    continue
            if all_ or record.state.running:
                records.append(record)
        return records

    # -- signals, stop, wait ---------------------------------------------------------------
    def kill(self, ref: str, signal: str | int = "KILL") -> ContainerRecord:
        number = parse_signal(signal)
        record = self.get(ref)
        if not record.state.running or not record.state.pid:
            raise Conflict(f"Container {record.id} is not running")
        if number in (signals.SIGKILL, signals.SIGTERM, signals.SIGINT):
            self._mark_stop(record.id)
        try:
            os.kill(record.state.pid, number)
        except ProcessLookupError:
            pass
        self.emit(record, "kill", signal=str(number))
        if number == signals.SIGKILL:
            self._wait_stopped(record.id, 30)  # as dockerd: a SIGKILL'd container is gone on return
        return record

    def exec(self, ref: str, cmd: builtins.list[str], *, user: str | None = None,
             env: builtins.list[str] | tuple[str, ...] = (), workdir: str | None = None, tty: bool = False,
             privileged: bool = False, interactive: bool = False, detach: bool = False,
             console_size: tuple[int, int] | None = None,
             exec_id: str | None = None) -> Any:
        """Start ``cmd`` in the running container ``ref``; an ``ExecSession`` whose pipes (or
        pty) the engine owns: the caller's descriptors never reach the container
        (``pyengine.containers.exec.relay`` pumps them). Conflict when it is not running.

        :param console_size: (rows, cols) of the pty, with ``tty``
        :param exec_id: an ExecStore record to keep up to date (Running, Pid, ExitCode)
        """
        from pyengine.containers.exec import exec_container

        return exec_container(self, ref, cmd, user=user, env=env, workdir=workdir, tty=tty, privileged=privileged,
                              interactive=interactive, detach=detach, console_size=console_size, exec_id=exec_id)

    def _mark_stop(self, container_id: str) -> None:
        with self.store.container_lock(container_id):
            state = self.store.load(container_id).state
            state.stop_requested = True
            try:
                self.store.save_state(container_id, state)
            except NoSpace as exc:  # stopping, and removing, must work on a full disk
                log.warning("container.stop_not_saved", container=container_id, reason=str(exc))

    def stop(self, ref: str, timeout: int | None = None, *, not_running_ok: bool = True) -> ContainerRecord:
        """SIGTERM (or the stop signal), then SIGKILL after ``timeout`` seconds.

        :param not_running_ok: False: a container that is not running is NotModified (the API's 304)
        """
        record = self.get(ref)
        if not record.state.running:
            if not not_running_ok:
                raise NotModified(f"container {record.name} is not running")
            return record
        if timeout is None:
            timeout = int(record.config.get("StopTimeout") or 10)
        self._mark_stop(record.id)
        sig = parse_signal(record.config.get("StopSignal") or "SIGTERM")
        pid = record.state.pid
        if record.state.status == "paused":
            self.unpause(record.id)
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not self._wait_stopped(record.id, timeout):
            pid = self.store.load(record.id).state.pid
            if pid:
                try:
                    os.kill(pid, signals.SIGKILL)
                except ProcessLookupError:
                    pass
            self._wait_stopped(record.id, 30)
        self.emit(record, "stop")
        return self.store.load(record.id)

    def _wait_stopped(self, container_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            record = self.store.load(container_id)
            record = self.reconcile(record)
            if not record.state.running and not record.state.monitor_alive():
                return True
            if record.state.status == "exited" and not record.state.monitor_pid:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def wait(self, ref: str, condition: str = "not-running", baseline: ContainerState | None = None) -> int:
        """Block until the container meets ``condition``; its exit code.

        :param condition: Docker's: ``not-running`` (now, if it is not running: its monitor is
            done), ``next-exit`` (its next exit from now), ``removed`` (it was removed: the exit
            code of its last run, as ``run --rm`` reports it)
        :param baseline: the state ``next-exit`` counts from (the daemon's, read when the
            request came, before the client starts the container); default: now
        """
        if condition not in WAIT_CONDITIONS:
            raise UsageError(f"invalid condition: {condition!r}: use one of {', '.join(WAIT_CONDITIONS)}")
        try:
            container_id = self.store.resolve(ref)
            first = baseline if baseline is not None else self.store.load(container_id).state
        except NotFound:
            # Removed already (a --rm container's monitor is quick): the exit code it left.
            kept = self._exits_dir() / ref
            if "/" in ref or not kept.is_file():
                raise
            return self._removed_exit_code(ref, 0)
        code = first.exit_code
        watch = _MonitorWatch()
        try:
            while True:
                starts_seen = _start_count
                try:
                    record = self.reconcile(self.store.load(container_id))
                except NotFound:
                    return self._removed_exit_code(container_id, code)
                state = record.state
                code = state.exit_code
                done = not state.running and not state.monitor_alive()
                if condition == "not-running" and done:
                    return code
                if condition == "next-exit" and state.status != "running" and (
                        state.finished_at != first.finished_at or state.restart_count != first.restart_count):
                    return code
                watch.sleep(state, starts_seen, 0.05)
        finally:
            watch.close()

    def _exits_dir(self) -> Any:
        return self.store.run_dir / ".exits"

    def _removed_exit_code(self, container_id: str, last_seen: int) -> int:
        """The exit code a removed container recorded last (kept briefly by ``remove``)."""
        try:
            return int((self._exits_dir() / container_id).read_text())
        except (OSError, ValueError):
            return last_seen

    def pause(self, ref: str) -> None:
        self._set_frozen(ref, "running", "freeze", "paused", "pause")

    def unpause(self, ref: str) -> None:
        self._set_frozen(ref, "paused", "thaw", "running", "unpause")

    def _set_frozen(self, ref: str, expected: str, action: str, status: str, event: str) -> None:
        record = self.get(ref)
        if record.state.status != expected:
            raise Conflict(f"container {record.name} is not {expected}")
        self._freezer(record, action)
        with self.store.container_lock(record.id):
            state = self.store.load(record.id).state
            state.status = status
            self.store.save_state(record.id, state)
        self.emit(record, event)

    def _freezer(self, record: ContainerRecord, action: str) -> None:
        for isolator in self.isolators():
            method = getattr(isolator, action, None)
            if method is not None:
                method(record.id)
                return
        raise UsageError("no isolator on this host can freeze a container (no cgroup freezer)")

    # -- remove, rename --------------------------------------------------------------------
    def remove(self, ref: str, force: bool = False, from_monitor: bool = False, volumes: bool = False) -> str:
        """Remove a container (killing it first with ``force``); ``volumes``: its anonymous
        volumes too (named volumes stay, as in Docker)."""
        container_id = self.store.resolve(ref)
        record = self.get(container_id)
        if record.state.status == DAMAGED and not from_monitor:
            self._end_damaged(record, force)
        if record.state.running and not from_monitor:
            if not force:
                raise Conflict(f"cannot remove container \"/{record.name}\": container is running: stop the "
                               "container before removing or force remove")
            self.kill(container_id, "KILL")
            self._wait_stopped(container_id, 30)
        with self.store.lock():
            try:
                if self.engine.storage.exists(record.layer_id):
                    self.engine.storage.remove(record.layer_id)
            except NotFound:
                pass
            self._keep_exit_code(self.store.load(container_id))
            self.store.remove_record(container_id)
        if volumes:
            self._remove_anonymous_volumes(record)
        from pyengine.containers.exec import ExecStore

        ExecStore(self.engine.config.run_root).remove_container(container_id)
        self.emit(record, "destroy")
        return container_id

    def _end_damaged(self, record: ContainerRecord, force: bool) -> None:
        """Before removing a damaged container: kill what its state says may still run (with
        ``force``) and release its networks, cgroups and rootfs mount by its ID."""
        from pyengine.containers.networking import leave_networks
        from pyengine.containers.store import process_alive

        s = record.state
        alive = [pid for pid, started in ((s.monitor_pid, s.monitor_start_time), (s.pid, s.pid_start_time))
                 if process_alive(pid, started)]
        if alive and not force:
            raise Conflict(f"cannot remove damaged container {record.id}: its processes may still run: "
                           "force remove")
        for pid in alive:
            try:
                os.kill(pid, signals.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while any(pid_alive(pid) for pid in alive) and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            leave_networks(self, record.id)
        except Exception as exc:  # noqa: BLE001 - what can be released is released
            log.warning("network.leave_failed", container=record.id, reason=str(exc))
        self.release_runtime(record)

    def _remove_anonymous_volumes(self, record: ContainerRecord) -> None:
        """The container's anonymous volumes (named by a random 64-hex ID) no other uses."""
        from pyengine.containers.volumes import VolumeStore, volumes_used

        anonymous = [n for n in volumes_used(record.host_config)
                     if len(n) == 64 and all(c in "0123456789abcdef" for c in n)]
        if not anonymous:
            return
        in_use = {n for other in self.store.list() for n in volumes_used(other.host_config)}
        store = VolumeStore(self.engine.config.data_root, events_root=self.engine.config.run_root)
        for name in anonymous:
            if name in in_use:
                continue
            try:
                store.remove(name)
            except NotFound:
                continue

    def _keep_exit_code(self, record: ContainerRecord) -> None:
        """Leave the exit code of a removed container for a minute, for ``wait(removed)``
        racing with ``--rm`` (Docker reports it to ``run --rm``)."""
        exits = self._exits_dir()
        try:
            make_dirs(exits)  # under the run root: root's only, as everything there
            now = time.time()
            for old in exits.iterdir():
                if now - old.stat().st_mtime > 60:
                    old.unlink(missing_ok=True)
            (exits / record.id).write_text(str(record.state.exit_code))
        except OSError as exc:
            log.warning("container.exit_code_not_kept", container=record.id, reason=str(exc))

    def attach(self, ref: str) -> Any:
        """A new attach client (a socket speaking ``pyengine.containers.attach`` frames) of the
        running container's monitor; Conflict when it is not running."""
        from pyengine.containers import attach

        record = self.get(ref)
        if not record.state.running or not record.state.monitor_alive():
            raise Conflict(f"Container {record.id} is not running")
        try:
            return attach.connect(str(self.store.run_path(record.id)))
        except OSError as exc:
            raise Conflict(f"cannot attach to container {record.name}: {exc.strerror or exc}") from None

    def resize(self, ref: str, height: int, width: int) -> None:
        """Set the terminal size of a container started with a tty (SIGWINCH reaches it)."""
        from pyengine.containers import attach

        if not (0 < height < 65536 and 0 < width < 65536):
            raise UsageError(f"invalid terminal size {height}x{width}")
        sock = self.attach(ref)
        try:
            attach.send_resize(sock, height, width)
        finally:
            sock.close()

    def restart(self, ref: str, timeout: int | None = None) -> ContainerRecord:
        """Stop (if running) and start again."""
        self.stop(ref, timeout)
        return self.start(ref)

    def update(self, ref: str, changes: dict[str, Any]) -> builtins.list[str]:
        """Change resource limits and the restart policy: written to the record and, while the
        container runs, to its live cgroup through every isolator that can (``update``).
        Zero and empty values mean "unchanged", as in Docker's update. Returns warnings.

        :raises UsageError: for a limit this engine cannot change or a value Docker refuses
        """
        from pyengine.containers.spec import resources

        wanted = {k: v for k, v in changes.items() if v not in (None, 0, "", [], {}) and k != "RestartPolicy"}
        unsupported = sorted(set(wanted) - set(UPDATABLE))
        if unsupported:
            raise UsageError(f"cannot update {', '.join(unsupported)}: pyengine can change {', '.join(UPDATABLE)} "
                             "and RestartPolicy")
        for key, value in wanted.items():
            if key != "CpusetCpus" and key != "CpusetMems" and (isinstance(value, bool) or not isinstance(value, int)):
                raise UsageError(f"invalid {key}: {value!r} is not an integer")
        policy = changes.get("RestartPolicy")
        if policy and policy.get("Name"):
            if policy["Name"] not in ("no", "always", "on-failure", "unless-stopped"):
                raise UsageError(f"invalid restart policy {policy['Name']!r}")
        warnings: list[str] = []
        container_id = self.store.resolve(ref)
        with self.store.container_lock(container_id):
            record = self.reconcile(self.store.load(container_id))
            host = record.host_config
            merged = {**host, **wanted}
            if wanted.get("NanoCpus") and (merged.get("CpuQuota") or merged.get("CpuPeriod")):
                raise UsageError("Conflicting options: Nano CPUs and CPU Period cannot both be set")
            if (wanted.get("CpuQuota") or wanted.get("CpuPeriod")) and merged.get("NanoCpus"):
                raise UsageError("Conflicting options: CPU Quota or CPU Period cannot be updated as NanoCPUs has "
                                 "already been set")
            if wanted.get("Memory") and wanted["Memory"] < 6 * 1024 * 1024:
                raise UsageError("Minimum memory limit allowed is 6MB")
            swap = merged.get("MemorySwap") or 0
            if swap > 0 and merged.get("Memory") and swap < merged["Memory"]:
                raise UsageError("Minimum memoryswap limit should be larger than memory limit, see usage")
            if policy and policy.get("Name"):
                if host.get("AutoRemove") and policy["Name"] != "no":
                    raise UsageError("Restart policy cannot be updated because AutoRemove is enabled for the "
                                     "container")
                merged["RestartPolicy"] = {"Name": policy["Name"],
                                           "MaximumRetryCount": int(policy.get("MaximumRetryCount") or 0)}
            if record.state.running and wanted:
                live = resources(wanted)
                if wanted.get("Memory") and not wanted.get("MemorySwap") and host.get("MemorySwap", 0) > 0:
                    live.setdefault("memory", {})["swap"] = merged["MemorySwap"]
                applied = False
                for isolator in self.isolators():
                    method = getattr(isolator, "update", None)
                    if method is not None:
                        method(record.id, live)
                        applied = True
                if not applied:
                    warnings.append("no isolator on this host can change the limits of a running container; "
                                    "they apply at its next start")
            record.host_config = merged
            self.store.save_config(record)
        self.emit(record, "update")
        return warnings

    def prune(self, filters: dict[str, builtins.list[str]] | None = None) -> tuple[builtins.list[str], int]:
        """Remove every stopped container the filters (``until``, ``label``, ``label!``) select;
        (their IDs, the bytes their writable layers held)."""
        from pyengine.containers.logs import parse_time

        filters = {k: v for k, v in (filters or {}).items() if v}
        for key in filters:
            if key not in ("until", "label", "label!"):
                raise UsageError(f"invalid filter '{key}'")
        until = min(parse_time(v) for v in filters["until"]) if filters.get("until") else None
        deleted: list[str] = []
        reclaimed = 0
        for record in self.list(all_=True):
            if record.state.running:
                continue
            if until is not None and _unix(record.created) >= until:
                continue
            labels = record.config.get("Labels") or {}
            if not all(_label_matches(labels, v) for v in filters.get("label") or []):
                continue
            if any(_label_matches(labels, v) for v in filters.get("label!") or []):
                continue
            size = self.size_rw(record)
            try:
                self.remove(record.id)
            except (NotFound, Conflict):
                continue
            deleted.append(record.id)
            reclaimed += size
        return deleted, reclaimed

    def size_rw(self, record: ContainerRecord) -> int:
        """Bytes in the container's writable layer (0 when the driver cannot tell)."""
        try:
            parent = self.engine.images.resolve_image(record.image_id).top_layer
        except PyEngineError:
            parent = None
        try:
            return int(self.engine.storage.diff_size(record.layer_id, parent))
        except Exception as exc:  # noqa: BLE001 - a size is informative only
            log.debug("container.size_unknown", container=record.id, reason=str(exc))
            return 0

    def rename(self, ref: str, new_name: str) -> None:
        self.store.check_name(new_name)
        with self.store.lock():
            record = self.store.load(self.store.resolve(ref))
            self.store.rename(record, new_name)  # Conflict when another container has the name
        self.emit(record, "rename", name=new_name)

    # -- inspect ---------------------------------------------------------------------------
    def inspect(self, ref: str) -> dict[str, Any]:
        """Docker's container inspect document (``pyengine inspect``, ``GET /containers/{id}/json``)."""
        from pyengine.containers.inspect import inspect_document

        record = self.get(ref)
        return inspect_document(self, record, self.exec_ids(record.id))

    def exec_ids(self, container_id: str) -> builtins.list[str]:
        """The IDs of the container's exec records (``ExecIDs``)."""
        try:
            from pyengine.containers.exec import ExecStore
        except ImportError:  # an engine without exec records
            return []
        return [entry["ID"] for entry in ExecStore(self.engine.config.run_root).list(container_id)]


def _monitor_lost(state: ContainerState) -> bool:
    """True when the state says the container runs but its monitor is gone: it ended with
    its monitor (``reconcile``)."""
    return state.status in ("running", "paused", "restarting") and not state.monitor_alive()


def _unix(iso: str) -> float:
    from pyengine.containers.inspect import unix_seconds

    return unix_seconds(iso)


def _label_matches(labels: dict[str, str], expression: str) -> bool:
    key, sep, value = expression.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _parse_bytes(value: str | int) -> int:
    from pyengine.containers.spec import parse_bytes

    return parse_bytes(value)


__all__ = ["Containers", "ContainerState", "parse_signal"]
