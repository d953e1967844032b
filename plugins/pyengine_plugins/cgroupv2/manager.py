"""The cgroup v2 manager: one directory per container in the unified hierarchy, under the
engine's parent cgroup; enables the controllers down to it, writes the OCI spec's limits
(converted as runc does), moves processes in, reads usage back, freezes and removes. Kernel
access only through a :class:`pyengine.cgroups.fs.CgroupFS`; the only writes outside the
parent are to the engine's own cgroup's ``cgroup.subtree_control``, which v2 requires."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pyengine.cgroups import CgroupOptions, check_container_id, options_of
from pyengine.cgroups.convert import (
    blkio_weight_to_io_weight,
    limit_value,
    parse_flat_keyed,
    shares_to_weight,
    swap_to_v2,
)
from pyengine.cgroups.devices import allows_everything
from pyengine.cgroups.fs import CgroupFS, KernelFS, ensure_path, remove_cgroup
from pyengine.cgroups.host import V2_OPTIONAL, V2_REQUIRED, HostCgroups, discover, require_version
from pyengine.cgroups.record import PathRecords
from pyengine.drivers import DriverContext
from pyengine.errors import DriverError, DriverNotSupported
from pyengine.log import get_logger

log = get_logger(__name__)


def probe(ctx: DriverContext, host: HostCgroups | None = None, fs: CgroupFS | None = None) -> None:
    """Raise DriverNotSupported unless a cgroup v2 hierarchy with the needed controllers is
    mounted and the engine's own cgroup can delegate them."""
    options = options_of(ctx.options)
    require_version(options, "2")
    host = host or discover()
    fs = fs or KernelFS()
    if host.v2 is None:
        raise DriverNotSupported("no cgroup v2 hierarchy is mounted")
    own = host.own_dir("")
    available = fs.read(own / "cgroup.controllers").split() if fs.exists(own / "cgroup.controllers") else []
    missing = [c for c in V2_REQUIRED if c not in available]
    if len(missing) == len(V2_REQUIRED):
        raise DriverNotSupported(f"v2 hierarchy at {host.v2.mountpoint} has no controllers")
    if missing:
        raise DriverNotSupported(f"v2 hierarchy at {host.v2.mountpoint} lacks controllers: {', '.join(missing)}")
    if isinstance(fs, KernelFS) and not os.access(own, os.W_OK):
        raise DriverNotSupported(f"cannot create cgroups under {own} (needs root or delegation)")


class CgroupV2Isolator:
    """Limits, stats, freezing and cleanup for containers on the unified hierarchy."""

    name = "cgroupv2"

    def __init__(self, ctx: DriverContext | None = None, *, options: CgroupOptions | None = None,
                 host: HostCgroups | None = None, fs: CgroupFS | None = None) -> None:
        self.fs = fs or KernelFS()
        if ctx is not None:
            probe(ctx, host, self.fs)
        self.options = options or options_of(ctx.options if ctx else None)
        self.host = host or discover()
        if self.host.v2 is None:
            raise DriverNotSupported("no cgroup v2 hierarchy is mounted")
        self.parent = self.host.parent_dir("", self.options)
        self.records = PathRecords(ctx.state_dir if ctx else None)
        self._recorded: dict[str, Path | None] = {}

    # -- paths ---------------------------------------------------------------------------
    def path(self, container_id: str) -> Path:
        """The container's cgroup directory: where ``prepare`` put it (recorded), else where
        this process would put it."""
        if container_id not in self._recorded:
            recorded = (self.records.load(container_id) or {}).get("unified")
            self._recorded[container_id] = Path(recorded) if recorded else None
        path = self._recorded[container_id]
        # a record is only trusted for this container's own directory in the hierarchy
        if path is not None and path.name == container_id and self.host.v2.mountpoint in path.parents:  # type: ignore[union-attr]
            return path
        return self._new_path(container_id)

    def _new_path(self, container_id: str) -> Path:
        return self.parent / check_container_id(container_id)

    def _file(self, container_id: str, name: str) -> Path:
        return self.path(container_id) / name

    # -- lifecycle -----------------------------------------------------------------------
    def _enable_controllers(self, directory: Path) -> None:
        """Delegate the controllers we use from ``directory`` to its children."""
        available = self.fs.read(directory / "cgroup.controllers").split()
        enabled = self.fs.read(directory / "cgroup.subtree_control").split()
        wanted = [c for c in V2_OPTIONAL[:1] + V2_REQUIRED + V2_OPTIONAL[1:]
                  if c in available and c not in enabled]
        if not wanted:
            return
        try:
            self.fs.write(directory / "cgroup.subtree_control", " ".join("+" + c for c in wanted))
        except DriverError as exc:
            # the no-internal-processes rule: a cgroup with member processes cannot delegate
            raise DriverError(f"cannot enable cgroup controllers {', '.join(wanted)} in {directory} "
                              f"({exc}); if it holds processes, set [cgroups] parent to a cgroup "
                              f"without any") from None

    def _ensure_parent(self) -> Path:
        base = self.host.own_dir("") if not (self.options.parent or "").startswith("/") \
            else self.host.v2.mountpoint  # type: ignore[union-attr]
        if not self.fs.exists(self.parent):
            ensure_path(self.fs, base, self.parent)
        relative = self.parent.relative_to(base)
        current = base
        self._enable_controllers(current)
        for part in relative.parts:
            current = current / part
            self._enable_controllers(current)
        return self.parent

    def prepare(self, container_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Create the container's cgroup and write its limits; returns its path."""
        started = time.monotonic()
        path = self._new_path(container_id)
        self._recorded[container_id] = path
        self._ensure_parent()
        self.fs.mkdir(path)
        try:
            self._apply(container_id, ((spec.get("linux") or {}).get("resources") or {}))
        except BaseException:
            try:
                self.fs.rmdir(path)
            except DriverError:
                pass
            del self._recorded[container_id]
            raise
        self.records.save(container_id, {"unified": str(path)})
        log.info("cgroup.prepared", version=2, container_id=container_id,
                 ms=round((time.monotonic() - started) * 1000, 1))
        return {"version": "2", "paths": {"unified": str(path)}}

    def _write(self, container_id: str, name: str, value: Any) -> None:
        path = self._file(container_id, name)
        if not self.fs.exists(path):
            raise DriverError(f"cannot set {name}: the controller is not enabled in {self.parent}")
        self.fs.write(path, str(value))

    def _apply(self, container_id: str, resources: dict[str, Any]) -> None:
        memory = resources.get("memory") or {}
        if memory.get("limit") is not None:
            self._write(container_id, "memory.max", limit_value(memory["limit"], "max"))
        try:
            swap = swap_to_v2(memory.get("swap"), memory.get("limit"))
        except ValueError as exc:
            raise DriverError(str(exc)) from None
        if swap is not None:
            if self.fs.exists(self._file(container_id, "memory.swap.max")):
                self._write(container_id, "memory.swap.max", limit_value(swap, "max"))
            else:
                log.warning("cgroup.unsupported", setting="memory.swap", reason="no swap accounting")
        if memory.get("reservation") is not None:
            self._write(container_id, "memory.low", limit_value(memory["reservation"], "max"))
        if memory.get("disableOOMKiller"):
            # v2 has no per-cgroup switch for the OOM killer (runc ignores it as well)
            log.warning("cgroup.unsupported", setting="memory.disableOOMKiller", reason="cgroup v2")

        cpu = resources.get("cpu") or {}
        if cpu.get("shares"):
            self._write(container_id, "cpu.weight", shares_to_weight(cpu["shares"]))
        quota, period = cpu.get("quota"), cpu.get("period")
        if (quota is not None and quota != 0) or period:
            current_quota, current_period = self.fs.read(self._file(container_id, "cpu.max")).split()
            quota_text = limit_value(quota, "max") if quota is not None and quota != 0 else current_quota
            self._write(container_id, "cpu.max", f"{quota_text} {period or current_period}")
        if cpu.get("cpus"):
            self._write(container_id, "cpuset.cpus", cpu["cpus"])
        if cpu.get("mems"):
            self._write(container_id, "cpuset.mems", cpu["mems"])

        pids = resources.get("pids") or {}
        if pids.get("limit") is not None and pids["limit"] != 0:
            self._write(container_id, "pids.max", limit_value(pids["limit"], "max"))

        block_io = resources.get("blockIO") or {}
        if block_io.get("weight"):
            # BFQ takes the v1 scale directly; io.weight (iocost) has runc's 1..10000 scale
            if self.fs.exists(self._file(container_id, "io.bfq.weight")):
                self._write(container_id, "io.bfq.weight", block_io["weight"])
            elif self.fs.exists(self._file(container_id, "io.weight")):
                self._write(container_id, "io.weight", blkio_weight_to_io_weight(block_io["weight"]))
            else:
                log.warning("cgroup.unsupported", setting="blockIO.weight", reason="no io weight file")
        devices = resources.get("devices")
        if devices and not allows_everything(devices):
            self.fs.attach_device_program(self.path(container_id), devices)
        for key, field in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                           ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
            for device in block_io.get(key) or []:
                self._write(container_id, "io.max", f"{device['major']}:{device['minor']} {field}={device['rate']}")

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Write changed limits (OCI ``linux.resources``, only the keys that change) to a
        running container's cgroup: the engine's ``update`` verb (``docker update``)."""
        self._apply(container_id, resources)
        log.info("cgroup.updated", version=2, container_id=container_id)

    def enter(self, container_id: str, spec: dict[str, Any], pid: int) -> None:
        """Move ``pid`` into the container's cgroup."""
        self.fs.write(self._file(container_id, "cgroup.procs"), str(pid))
        log.info("cgroup.entered", version=2, container_id=container_id, pid=pid)

    def pids(self, container_id: str) -> list[int]:
        """The processes in the container's cgroup."""
        path = self._file(container_id, "cgroup.procs")
        if not self.fs.exists(path):
            return []
        return [int(p) for p in self.fs.read(path).split()]

    def _read_int(self, container_id: str, name: str) -> int | None:
        path = self._file(container_id, name)
        if not self.fs.exists(path):
            return None
        text = self.fs.read(path).strip()
        return None if text == "max" else int(text)

    def _keyed(self, container_id: str, name: str) -> dict[str, int]:
        path = self._file(container_id, name)
        return parse_flat_keyed(self.fs.read(path)) if self.fs.exists(path) else {}

    def stats(self, container_id: str) -> dict[str, Any]:
        """Memory, cpu and pids usage, read from the v2 interface files."""
        events = self._keyed(container_id, "memory.events")
        cpu_stat = self._keyed(container_id, "cpu.stat")
        usage_usec = cpu_stat.get("usage_usec")
        return {
            "memory": {
                "usage": self._read_int(container_id, "memory.current"),
                "limit": self._read_int(container_id, "memory.max"),
                # memory.peak arrived in Linux 5.19
                "max_usage": self._read_int(container_id, "memory.peak"),
                "failcnt": events.get("max", 0),
                "oom_kill": events.get("oom_kill", 0),
            },
            "cpu": {
                "usage_ns": usage_usec * 1000 if usage_usec is not None else None,
                "throttled_periods": cpu_stat.get("nr_throttled", 0),
                "throttled_ns": cpu_stat.get("throttled_usec", 0) * 1000,
            },
            "pids": {
                "current": self._read_int(container_id, "pids.current"),
                "limit": self._read_int(container_id, "pids.max"),
            },
        }

    def oom_killed(self, container_id: str) -> bool:
        """True when the kernel's OOM killer killed a process of the container."""
        return self._keyed(container_id, "memory.events").get("oom_kill", 0) > 0

    def _set_frozen(self, container_id: str, frozen: bool, timeout: float = 10.0) -> None:
        self._write(container_id, "cgroup.freeze", "1" if frozen else "0")
        deadline = time.monotonic() + timeout
        # cgroup.freeze is a request; cgroup.events says when every task has stopped
        while self._keyed(container_id, "cgroup.events").get("frozen", 0) != int(frozen):
            if time.monotonic() >= deadline:
                state = "frozen" if frozen else "thawed"
                raise DriverError(f"container {container_id} was not {state} after {timeout:g}s")
            time.sleep(0.01)

    def freeze(self, container_id: str) -> None:
        """Stop every process of the container (``pause``)."""
        self._set_frozen(container_id, True)
        log.info("cgroup.frozen", version=2, container_id=container_id)

    def thaw(self, container_id: str) -> None:
        """Let the container's processes run again (``unpause``)."""
        self._set_frozen(container_id, False)
        log.info("cgroup.thawed", version=2, container_id=container_id)

    def release(self, container_id: str) -> None:
        """Remove the container's cgroup once its processes are gone; safe to call twice."""
        remove_cgroup(self.fs, self.path(container_id))
        self.records.forget(container_id)
        self._recorded.pop(container_id, None)
        log.info("cgroup.released", version=2, container_id=container_id)

    def status(self) -> list[tuple[str, str]]:
        """Version, parent and the controllers delegated to containers, for ``info``."""
        own = self.host.own_dir("")
        controllers = self.fs.read(own / "cgroup.controllers").split() if self.fs.exists(own) else []
        return [("cgroup version", "2"), ("cgroup parent", str(self.parent)),
                ("cgroup controllers", ",".join(controllers))]
