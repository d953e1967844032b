"""Helpers for the cgroup tests: an in-memory stand-in for the kernel seam (for the unit
tests), and real-kernel fixtures support: a private parent cgroup per test, workloads started
so they join the container's cgroup before they run, and cleanup by pid."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pyengine.cgroups.fs import CgroupBusy
from pyengine.errors import DriverError

BUSYBOX = "/usr/bin/busybox"

V1_FILES = {
    "memory": {"memory.limit_in_bytes": "9223372036854771712", "memory.memsw.limit_in_bytes":
               "9223372036854771712", "memory.soft_limit_in_bytes": "9223372036854771712",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0",
               "memory.usage_in_bytes": "0", "memory.max_usage_in_bytes": "0",
               "memory.failcnt": "0", "memory.swappiness": "60"},
    "cpu": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000",
            "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0"},
    "cpuacct": {"cpuacct.usage": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "blkio": {"blkio.bfq.weight": "100", "blkio.throttle.read_bps_device": ""},
    "freezer": {"freezer.state": "THAWED"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
}

V2_FILES = {
    "memory": {"memory.max": "max", "memory.swap.max": "max", "memory.low": "0",
               "memory.current": "0", "memory.peak": "0",
               "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0"},
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.stat": "usage_usec 0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "io": {"io.weight": "default 100", "io.max": ""},
}


@dataclass
class FakeFS:
    """An in-memory cgroupfs: directories get their controllers' files on mkdir, every write
    is recorded, and rmdir of a cgroup with processes is EBUSY as in the kernel."""

    #: directory -> controller files it gets on mkdir
    templates: dict[Path, dict[str, str]]
    files: dict[Path, str] = field(default_factory=dict)
    dirs: set[Path] = field(default_factory=set)
    writes: list[tuple[Path, str]] = field(default_factory=list)

    def template_for(self, path: Path) -> dict[str, str]:
        for root, files in self.templates.items():
            if path == root or root in path.parents:
                return files
        return {}

    def add_dir(self, path: Path, **extra: str) -> None:
        self.dirs.add(path)
        for name, value in {**self.template_for(path), "cgroup.procs": "", **extra}.items():
            self.files[path / name] = value

    def read(self, path: Path) -> str:
        if path not in self.files:
            raise DriverError(f"cannot read {path}: No such file or directory")
        return self.files[path] + ("\n" if self.files[path] else "")

    def write(self, path: Path, value: str) -> None:
        if path not in self.files:
            raise DriverError(f"cannot open {path} to write {value!r}: No such file or directory")
        self.writes.append((path, value))
        if path.name == "cgroup.subtree_control":
            enabled = set(self.files[path].split())
            for word in value.split():
                (enabled.add if word[0] == "+" else enabled.discard)(word[1:])
            self.files[path] = " ".join(sorted(enabled))
            for child in [d for d in self.dirs if d.parent == path.parent]:
                self._expose(child)
        elif path.name == "cgroup.procs":
            self.files[path] = (self.files[path] + "\n" + value).strip()
        else:
            self.files[path] = value

    def _expose(self, directory: Path) -> None:
        """v2: a child shows the files of the controllers its parent delegates."""
        enabled = self.files.get(directory.parent / "cgroup.subtree_control", "").split()
        self.files[directory / "cgroup.controllers"] = " ".join(enabled)
        self.files.setdefault(directory / "cgroup.subtree_control", "")
        for controller in enabled:
            for name, value in V2_FILES.get(controller, {}).items():
                self.files.setdefault(directory / name, value)

    def exists(self, path: Path) -> bool:
        return path in self.dirs or path in self.files

    def mkdir(self, path: Path) -> bool:
        if path in self.dirs:
            return False
        if path.parent not in self.dirs:
            raise DriverError(f"cannot create cgroup {path}: No such file or directory")
        if (path.parent / "cgroup.subtree_control") in self.files:
            self.dirs.add(path)
            self.files[path / "cgroup.procs"] = ""
            self.files[path / "cgroup.freeze"] = "0"
            self.files[path / "cgroup.events"] = "populated 0\nfrozen 0"
            self._expose(path)
        else:
            self.add_dir(path)
        return True

    def rmdir(self, path: Path) -> bool:
        if path not in self.dirs:
            return False
        if self.files.get(path / "cgroup.procs") or any(d.parent == path for d in self.dirs):
            raise CgroupBusy(f"cgroup {path} still has processes or children")
        self.dirs.discard(path)
        for name in [f for f in self.files if f.parent == path]:
            del self.files[name]
        return True

    def listdir(self, path: Path) -> list[str]:
        return sorted(d.name for d in self.dirs if d.parent == path)

    def attach_device_program(self, path: Path, rules: list[dict]) -> None:
        if path not in self.dirs:
            raise DriverError(f"cannot open {path}: No such file or directory")
        self.writes.append((path / "<device program>", repr(rules)))


# -- the real kernel -------------------------------------------------------------------------
def private_parent_name() -> str:
    """A private parent for one test: ``pyengine/test-<random>`` under the own cgroup."""
    return f"pyengine/test-{uuid.uuid4().hex[:10]}"


def spawn_in(isolator, container_id: str, argv: list[str], **popen) -> subprocess.Popen:  # noqa: ANN001
    """Start ``argv`` so that it is inside the container's cgroup before it runs: a busybox
    shell waits on its stdin, joins the cgroup (``enter``), then execs the workload."""
    process = subprocess.Popen([BUSYBOX, "sh", "-c", 'read _go; exec "$@"', "sh", *argv],
                               stdin=subprocess.PIPE, **popen)
    isolator.enter(container_id, {}, process.pid)
    assert process.stdin is not None
    process.stdin.write(b"go\n")
    process.stdin.close()
    return process


def kill_cgroup(isolator, container_id: str, timeout: float = 10.0) -> None:  # noqa: ANN001
    """Kill, by pid, every process in the container's cgroup (all started by the test)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = isolator.pids(container_id)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    raise
        if time.monotonic() > deadline:
            raise AssertionError(f"processes left in the cgroup: {pids}")
        time.sleep(0.02)
