"""The container verbs: create, start, stop, kill, remove, wait, inspect, and reconciliation.

Owns the container lifecycle on top of the container store; calls the storage driver for the
read-write layer, the isolators and network drivers through their protocols, the image store
for the image, and the runtime launcher to start the process. Used by the CLI and the daemon.
"""

from __future__ import annotations

import os
import signal as signals
import time
from typing import TYPE_CHECKING, Any

from pyengine.containers.store import ContainerRecord, ContainerState, ContainerStore, now_iso, pid_alive
from pyengine.errors import Conflict, NotFound, PyEngineError, UsageError
from pyengine.log import get_logger

if TYPE_CHECKING:
    from pyengine.engine import Engine

log = get_logger("pyengine.containers")


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

        parse_security_opts(host_config.get("SecurityOpt"))  # refused before anything is made
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
    def start(self, ref: str, client: Any = None) -> ContainerRecord:
        """Start the container's monitor; return once the process runs (or failed to start).

        :param client: one end of a socketpair; the monitor relays the container's stdio to it
        """
        from pyengine.containers.monitor import spawn_monitor

        container_id = self.store.resolve(ref)
        self.warm_isolators()
        with self.store.container_lock(container_id):
            record = self.reconcile(self.store.load(container_id))
            if record.state.running:
                raise Conflict(f"container {record.name} is already running")
            record.state.stop_requested = False
            self.store.save_state(container_id, record.state)
        _, message = spawn_monitor(self, container_id, client)
        kind, _, rest = message.partition(" ")
        if kind != "ok":
            code, _, text = rest.partition(" ")
            error = PyEngineError(text or "the container failed to start")
            error.exit_code = int(code) if code.isdigit() else 125
            raise error
        return self.store.load(container_id)

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
        except BaseException:
            self.engine.storage.put(record.layer_id)
            for isolator in isolators:
                try:
                    isolator.release(record.id)
                except Exception as exc:
                    log.warning("isolator.release_failed", container=record.id, isolator=isolator.name,
                                reason=str(exc))
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
        if state.status not in ("running", "paused", "restarting") or pid_alive(state.monitor_pid):
            return record
        if state.pid and pid_alive(state.pid):
            try:
                os.kill(state.pid, signals.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(100):
                if not pid_alive(state.pid):
                    break
                time.sleep(0.01)
        log.info("container.reconciled", container=record.id, monitor=state.monitor_pid)
        state.status, state.pid, state.monitor_pid = "exited", 0, 0
        state.exit_code = state.exit_code or 137
        state.error = "the container's monitor died"
        state.finished_at = now_iso()
        self.store.save_state(record.id, state)
        self.release_runtime(record)
        return record

    def get(self, ref: str) -> ContainerRecord:
        container_id = self.store.resolve(ref)
        with self.store.container_lock(container_id):
            return self.reconcile(self.store.load(container_id))

    def list(self, all_: bool = False) -> list[ContainerRecord]:
        records = []
        for record in self.store.list():
            with self.store.container_lock(record.id):
                record = self.reconcile(self.store.load(record.id))
            if all_ or record.state.running:
                records.append(record)
        return records

    # -- signals, stop, wait ---------------------------------------------------------------
    def kill(self, ref: str, signal: str | int = "KILL") -> ContainerRecord:
        number = parse_signal(signal)
        record = self.get(ref)
        if not record.state.running or not record.state.pid:
            raise Conflict(f"container {record.name} is not running")
        if number in (signals.SIGKILL, signals.SIGTERM, signals.SIGINT):
            self._mark_stop(record.id)
        try:
            os.kill(record.state.pid, number)
        except ProcessLookupError:
            pass
        self.emit(record, "kill", signal=str(number))
        return record

    def _mark_stop(self, container_id: str) -> None:
        with self.store.container_lock(container_id):
            state = self.store.load(container_id).state
            state.stop_requested = True
            self.store.save_state(container_id, state)

    def stop(self, ref: str, timeout: int | None = None) -> ContainerRecord:
        """SIGTERM (or the stop signal), then SIGKILL after ``timeout`` seconds."""
        record = self.get(ref)
        if not record.state.running:
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
            if not record.state.running and not pid_alive(record.state.monitor_pid):
                return True
            if record.state.status == "exited" and not record.state.monitor_pid:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def wait(self, ref: str) -> int:
        """Block until the container is not running (and its monitor is done); its exit code."""
        container_id = self.store.resolve(ref)
        while True:
            record = self.store.load(container_id)
            record = self.reconcile(record)
            if not record.state.running and not pid_alive(record.state.monitor_pid):
                return record.state.exit_code
            time.sleep(0.05)

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
    def remove(self, ref: str, force: bool = False, from_monitor: bool = False) -> str:
        container_id = self.store.resolve(ref)
        record = self.get(container_id)
        if record.state.running and not from_monitor:
            if not force:
                raise Conflict(f"container {record.name} is running: stop it first or use -f")
            self.kill(container_id, "KILL")
            self._wait_stopped(container_id, 30)
        with self.store.lock():
            try:
                if self.engine.storage.exists(record.layer_id):
                    self.engine.storage.remove(record.layer_id)
            except NotFound:
                pass
            self.store.remove_record(container_id)
        self.emit(record, "destroy")
        return container_id

    def rename(self, ref: str, new_name: str) -> None:
        self.store.check_name(new_name)
        with self.store.lock():
            record = self.store.load(self.store.resolve(ref))
            for other in self.store.list():
                if other.name == new_name and other.id != record.id:
                    raise Conflict(f"the container name {new_name!r} is already in use")
            record.name = new_name
            self.store.save_config(record)
        self.emit(record, "rename", name=new_name)

    # -- inspect ---------------------------------------------------------------------------
    def inspect(self, ref: str) -> dict[str, Any]:
        """Docker's container inspect document, as far as the engine knows it."""
        record = self.get(ref)
        s = record.state
        return {
            "Id": record.id, "Created": record.created, "Name": "/" + record.name,
            "Path": (record.config.get("Entrypoint") or record.config.get("Cmd") or [""])[0],
            "Args": ((record.config.get("Entrypoint") or []) + (record.config.get("Cmd") or []))[1:],
            "State": {"Status": s.status, "Running": s.status in ("running", "paused"),
                      "Paused": s.status == "paused", "Restarting": s.status == "restarting",
                      "OOMKilled": s.oom_killed, "Dead": s.status == "dead", "Pid": s.pid,
                      "ExitCode": s.exit_code, "Error": s.error, "StartedAt": s.started_at,
                      "FinishedAt": s.finished_at},
            "Image": record.image_id, "ImageName": record.image,
            "RestartCount": s.restart_count, "Driver": self.engine.storage_spec().name,
            "LogPath": str(self.store.log_path(record.id)),
            "Config": record.config, "HostConfig": record.host_config,
            "GraphDriver": {"Name": self.engine.storage_spec().name, "Data": {"LayerId": record.layer_id}},
            "NetworkSettings": self._network_settings(record),
        }

    def _network_settings(self, record: ContainerRecord) -> dict[str, Any]:
        from pyengine.containers.networking import joins_networks, network_settings

        if not joins_networks(record.host_config.get("NetworkMode") or "none"):
            return network_settings(None, record)
        from pyengine.network.manager import NetworkManager

        return network_settings(NetworkManager(self.engine), record)


def _parse_bytes(value: str | int) -> int:
    from pyengine.containers.spec import parse_bytes

    return parse_bytes(value)


__all__ = ["Containers", "ContainerState", "parse_signal"]
