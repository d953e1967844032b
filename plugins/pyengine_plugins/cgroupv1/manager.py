"""The cgroup v1 manager: one directory per container in each v1 controller hierarchy, under
the engine's parent cgroup there; writes the OCI spec's limits into the controller files,
moves processes in, reads usage back, freezes and removes. Kernel access only through a
:class:`pyengine.cgroups.fs.CgroupFS`; it never writes outside the parent directories (the
exceptions: a new parent's cpuset.cpus/mems, copied from the directory above, and ``warm``'s
no-op move of the engine's own process into the cgroup it is already in)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from pyengine.cgroups import CgroupOptions, check_container_id, options_of
from pyengine.cgroups.convert import limit_value, parse_flat_keyed
from pyengine.cgroups.devices import v1_writes
from pyengine.cgroups.fs import CgroupFS, KernelFS, ensure_path, remove_cgroup
from pyengine.cgroups.host import V1_OPTIONAL, V1_REQUIRED, HostCgroups, discover, require_version
from pyengine.cgroups.record import PathRecords
from pyengine.drivers import DriverContext
from pyengine.errors import DriverError, DriverNotSupported
from pyengine.log import get_logger

log = get_logger(__name__)


def probe(ctx: DriverContext, host: HostCgroups | None = None) -> None:
    """Raise DriverNotSupported unless the v1 controllers are mounted and ours to use."""
    options = options_of(ctx.options)
    require_version(options, "1")
    host = host or discover()
    missing = [c for c in V1_REQUIRED if c not in host.v1]
    if len(missing) == len(V1_REQUIRED):
        raise DriverNotSupported("no cgroup v1 controller hierarchies are mounted (the host uses cgroup v2)")
    if missing:
        raise DriverNotSupported(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
    import os

    own = host.own_dir("memory")
    if not os.access(own, os.W_OK):
        raise DriverNotSupported(f"cannot create cgroups under {own} (needs root)")


class CgroupV1Isolator:
    """Limits, stats, freezing and cleanup for containers on cgroup v1."""

    name = "cgroupv1"

    def __init__(self, ctx: DriverContext | None = None, *, options: CgroupOptions | None = None,
                 host: HostCgroups | None = None, fs: CgroupFS | None = None) -> None:
        if ctx is not None:
            probe(ctx, host)
        self.options = options or options_of(ctx.options if ctx else None)
        self.host = host or discover()
        self.fs = fs or KernelFS()
        self.controllers = [c for c in V1_REQUIRED + V1_OPTIONAL if c in self.host.v1]
        #: controller -> the parent directory in its hierarchy
        self.parents = {c: self.host.parent_dir(c, self.options) for c in self.controllers}
        self.records = PathRecords(ctx.state_dir if ctx else None)
        self._recorded: dict[str, dict[str, str]] = {}

    # -- paths ---------------------------------------------------------------------------
    def path(self, controller: str, container_id: str) -> Path:
        """The container's directory in ``controller``'s hierarchy: where ``prepare`` put it
        (recorded), else where this process would put it."""
        if container_id not in self._recorded:
            self._recorded[container_id] = self.records.load(container_id) or {}
        recorded = self._recorded[container_id].get(controller)
        if recorded is not None:
            path = Path(recorded)
            # a record is only trusted for this container's own directory in the hierarchy
            if path.name == container_id and self.host.v1[controller].mountpoint in path.parents:
                return path
        return self._new_path(controller, container_id)

    def _new_path(self, controller: str, container_id: str) -> Path:
        return self.parents[controller] / check_container_id(container_id)

    def _dirs(self, container_id: str) -> list[Path]:
        """Each hierarchy's container directory once (co-mounted controllers share one)."""
        seen: list[Path] = []
        for controller in self.controllers:
            path = self.path(controller, container_id)
            if path not in seen:
                seen.append(path)
        return seen

    def _file(self, controller: str, container_id: str, name: str) -> Path:
        return self.path(controller, container_id) / name

    # -- lifecycle -----------------------------------------------------------------------
    def _ensure_parents(self) -> None:
        for controller in self.controllers:
            parent = self.parents[controller]
            if self.fs.exists(parent):
                continue
            base = self.host.own_dir(controller) if not (self.options.parent or "").startswith("/") \
                else self.host.v1[controller].mountpoint
            copy = self._copy_cpuset if controller == "cpuset" else None
            ensure_path(self.fs, base, parent, copy)

    def _copy_cpuset(self, above: Path, created: Path) -> None:
        """v1 cpusets start empty and refuse tasks until cpus and mems are set: inherit them."""
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not self.fs.read(created / name).strip():
                self.fs.write(created / name, self.fs.read(above / name).strip())

    def prepare(self, container_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Create the container's cgroups and write its limits; returns their paths."""
        started = time.monotonic()
        check_container_id(container_id)
        self._ensure_parents()
        self._recorded[container_id] = {c: str(self._new_path(c, container_id)) for c in self.controllers}
        created: list[Path] = []
        try:
            for controller in self.controllers:
                path = self.path(controller, container_id)
                if path in created:
                    continue
                self.fs.mkdir(path)
                created.append(path)
                if controller == "cpuset":
                    self._copy_cpuset(self.parents["cpuset"], path)
            self._apply(container_id, ((spec.get("linux") or {}).get("resources") or {}))
        except BaseException:
            for path in reversed(created):
                try:
                    self.fs.rmdir(path)
                except DriverError:
                    pass
            del self._recorded[container_id]
            raise
        paths = {c: str(self.path(c, container_id)) for c in self.controllers}
        self.records.save(container_id, paths)
        log.info("cgroup.prepared", version=1, container_id=container_id,
                 ms=round((time.monotonic() - started) * 1000, 1))
        return {"version": "1", "paths": paths}

    def _write(self, controller: str, container_id: str, name: str, value: Any) -> None:
        self.fs.write(self._file(controller, container_id, name), str(value))

    def _apply(self, container_id: str, resources: dict[str, Any]) -> None:
        memory = resources.get("memory") or {}
        if memory.get("limit") is not None:
            self._write("memory", container_id, "memory.limit_in_bytes", limit_value(memory["limit"], "-1"))
        if memory.get("swap") is not None and memory["swap"] != 0:
            memsw = self._file("memory", container_id, "memory.memsw.limit_in_bytes")
            if self.fs.exists(memsw):
                self.fs.write(memsw, limit_value(memory["swap"], "-1"))
            else:
                log.warning("cgroup.unsupported", setting="memory.swap", reason="no swap accounting")
        if memory.get("reservation") is not None:
            self._write("memory", container_id, "memory.soft_limit_in_bytes",
                        limit_value(memory["reservation"], "-1"))
        if memory.get("disableOOMKiller"):
            self._write("memory", container_id, "memory.oom_control", "1")
        if memory.get("swappiness") is not None:
            self._write("memory", container_id, "memory.swappiness", memory["swappiness"])

        cpu = resources.get("cpu") or {}
        if cpu.get("shares"):
            self._write("cpu", container_id, "cpu.shares", cpu["shares"])
        if cpu.get("period"):
            self._write("cpu", container_id, "cpu.cfs_period_us", cpu["period"])
        if cpu.get("quota") is not None and cpu["quota"] != 0:
            self._write("cpu", container_id, "cpu.cfs_quota_us", limit_value(cpu["quota"], "-1"))
        if cpu.get("cpus"):
            self._write("cpuset", container_id, "cpuset.cpus", cpu["cpus"])
        if cpu.get("mems"):
            self._write("cpuset", container_id, "cpuset.mems", cpu["mems"])

        pids = resources.get("pids") or {}
        if pids.get("limit") is not None and pids["limit"] != 0:
            self._write("pids", container_id, "pids.max", limit_value(pids["limit"], "max"))

        devices = resources.get("devices")
        if devices and "devices" in self.controllers:
            for name, line in v1_writes(devices):
                self._write("devices", container_id, name, line)

        block_io = resources.get("blockIO") or {}
        if block_io.get("weight"):
            self._write_blkio_weight(container_id, block_io["weight"])
        for key, name in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                          ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                          ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                          ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device")):
            for device in block_io.get(key) or []:
                self._write("blkio", container_id, name, f"{device['major']}:{device['minor']} {device['rate']}")

    def _write_blkio_weight(self, container_id: str, weight: int) -> None:
        if "blkio" not in self.controllers:
            log.warning("cgroup.unsupported", setting="blockIO.weight", reason="blkio not mounted")
            return
        # CFQ's blkio.weight is gone from current kernels; BFQ offers the same knob
        for name in ("blkio.weight", "blkio.bfq.weight"):
            path = self._file("blkio", container_id, name)
            if self.fs.exists(path):
                self.fs.write(path, str(weight))
                return
        log.warning("cgroup.unsupported", setting="blockIO.weight", reason="no weight-based I/O scheduler")

    def warm(self) -> threading.Thread | None:
        """Start paying, in the background, for the first cgroup move of the coming launch.

        On cgroup v1 a write to ``cgroup.procs`` takes the kernel's cgroup threadgroup lock
        for writing, and the first writer after a quiet spell waits out an RCU grace period
        (9-17 ms here; the moves right after it cost 0.1 ms). This thread moves this process
        into the cgroup it is already in (writing ``0``: a no-op move, in our own cgroup),
        so the grace period runs while the engine mounts the rootfs and forks the monitor,
        and the container's own moves find the lock warm.
        """
        controller = next(iter(self.controllers), None)
        if controller is None:
            return None
        try:
            procs = self.host.own_dir(controller) / "cgroup.procs"
        except (KeyError, OSError):
            return None

        def move_self() -> None:
            try:
                with open(procs, "w") as f:
                    f.write("0")
            except OSError:
                pass  # only an optimisation

        thread = threading.Thread(target=move_self, name="cgroup-warm", daemon=True)
        thread.start()
        return thread

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Write changed limits (OCI ``linux.resources``, only the keys that change) to a
        running container's cgroup: the engine's ``update`` verb (``docker update``)."""
        self._apply(container_id, resources)
        log.info("cgroup.updated", version=1, container_id=container_id)

    def enter(self, container_id: str, spec: dict[str, Any], pid: int) -> None:
        """Move ``pid`` into the container's cgroup in every hierarchy."""
        for path in self._dirs(container_id):
            self.fs.write(path / "cgroup.procs", str(pid))
        log.info("cgroup.entered", version=1, container_id=container_id, pid=pid)

    def pids(self, container_id: str) -> list[int]:
        """The processes in the container's cgroup (the pids hierarchy's view)."""
        path = self._file("pids", container_id, "cgroup.procs")
        if not self.fs.exists(path):
            return []
        return [int(p) for p in self.fs.read(path).split()]

    def _read_int(self, controller: str, container_id: str, name: str) -> int | None:
        if controller not in self.controllers:
            return None
        path = self._file(controller, container_id, name)
        if not self.fs.exists(path):
            return None
        text = self.fs.read(path).strip()
        return None if text == "max" else int(text)

    def stats(self, container_id: str) -> dict[str, Any]:
        """Memory, cpu and pids usage, read from the v1 controller files."""
        oom = parse_flat_keyed(self.fs.read(self._file("memory", container_id, "memory.oom_control")))
        cpu_stat = parse_flat_keyed(self.fs.read(self._file("cpu", container_id, "cpu.stat")))
        return {
            "memory": {
                "usage": self._read_int("memory", container_id, "memory.usage_in_bytes"),
                "limit": self._read_int("memory", container_id, "memory.limit_in_bytes"),
                "max_usage": self._read_int("memory", container_id, "memory.max_usage_in_bytes"),
                "failcnt": self._read_int("memory", container_id, "memory.failcnt"),
                "oom_kill": oom.get("oom_kill", 0),
            },
            "cpu": {
                "usage_ns": self._read_int("cpuacct", container_id, "cpuacct.usage"),
                "throttled_periods": cpu_stat.get("nr_throttled", 0),
                "throttled_ns": cpu_stat.get("throttled_time", 0),
            },
            "pids": {
                "current": self._read_int("pids", container_id, "pids.current"),
                "limit": self._read_int("pids", container_id, "pids.max"),
            },
        }

    def oom_killed(self, container_id: str) -> bool:
        """True when the kernel's OOM killer killed a process of the container."""
        path = self._file("memory", container_id, "memory.oom_control")
        if not self.fs.exists(path):
            return False
        return parse_flat_keyed(self.fs.read(path)).get("oom_kill", 0) > 0

    def _set_freezer(self, container_id: str, state: str, timeout: float = 10.0) -> None:
        if "freezer" not in self.controllers:
            raise DriverError("cannot pause: the cgroup v1 freezer hierarchy is not mounted")
        path = self._file("freezer", container_id, "freezer.state")
        deadline = time.monotonic() + timeout
        while True:
            # FREEZING can stall on a task in uninterruptible sleep: asking again retries it
            self.fs.write(path, state)
            if self.fs.read(path).strip() == state:
                return
            if time.monotonic() >= deadline:
                raise DriverError(f"container {container_id} did not reach {state} in {timeout:g}s")
            time.sleep(0.01)

    def freeze(self, container_id: str) -> None:
        """Stop every process of the container (``pause``)."""
        self._set_freezer(container_id, "FROZEN")
        log.info("cgroup.frozen", version=1, container_id=container_id)

    def thaw(self, container_id: str) -> None:
        """Let the container's processes run again (``unpause``)."""
        self._set_freezer(container_id, "THAWED")
        log.info("cgroup.thawed", version=1, container_id=container_id)

    def release(self, container_id: str) -> None:
        """Remove the container's cgroups once its processes are gone; safe to call twice."""
        for path in reversed(self._dirs(container_id)):
            remove_cgroup(self.fs, path)
        self.records.forget(container_id)
        self._recorded.pop(container_id, None)
        log.info("cgroup.released", version=1, container_id=container_id)

    def status(self) -> list[tuple[str, str]]:
        """Version, parent and controllers, for ``info``."""
        return [("cgroup version", "1"),
                ("cgroup parent", str(self.parents["memory"])),
                ("cgroup controllers", ",".join(self.controllers))]
