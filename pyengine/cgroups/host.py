"""Where this host's cgroups are: the hierarchies it mounts (``/proc/self/mountinfo``), the
engine's own cgroup in each (``/proc/self/cgroup``) and, from those, the parent directory
under which containers' cgroups go. Parsing takes text, so it is testable on any host."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pyengine.cgroups import CgroupOptions
from pyengine.errors import DriverNotSupported

#: the v1 controllers a container's limits need, and those it uses when present
V1_REQUIRED = ("memory", "cpu", "pids", "cpuset")
V1_OPTIONAL = ("cpuacct", "blkio", "freezer", "devices")
#: the v2 controllers a container's limits need, and those it uses when present
V2_REQUIRED = ("memory", "cpu", "pids")
V2_OPTIONAL = ("cpuset", "io")

_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One mounted cgroup hierarchy: where it is and which part of the hierarchy it shows."""

    mountpoint: Path
    root: str

    def dir_for(self, cgroup_path: str) -> Path:
        """The directory of ``cgroup_path`` (a path in /proc/self/cgroup) in this mount."""
        if self.root != "/" and (cgroup_path == self.root or cgroup_path.startswith(self.root + "/")):
            cgroup_path = cgroup_path[len(self.root):]
        return self.mountpoint / cgroup_path.lstrip("/")


@dataclass
class HostCgroups:
    """The cgroup layout as this process sees it."""

    #: v1 controller -> its mount (co-mounted controllers share one)
    v1: dict[str, Mount] = field(default_factory=dict)
    #: the cgroup2 mount, preferring /sys/fs/cgroup when several exist
    v2: Mount | None = None
    #: v1 controller -> own cgroup path; ``""`` is the v2 (unified) path
    own: dict[str, str] = field(default_factory=dict)

    @property
    def unified(self) -> bool:
        """True on a pure cgroup v2 host (no v1 controller hierarchies mounted)."""
        return self.v2 is not None and not any(c in self.v1 for c in V1_REQUIRED + V1_OPTIONAL)

    def own_dir(self, controller: str) -> Path:
        """The engine's own cgroup directory in ``controller``'s hierarchy ("" for v2)."""
        mount = self.v2 if controller == "" else self.v1[controller]
        assert mount is not None
        return mount.dir_for(self.own.get(controller, "/"))

    def parent_dir(self, controller: str, options: CgroupOptions) -> Path:
        """Where containers' cgroups go in ``controller``'s hierarchy: ``[cgroups] parent``
        (absolute: from the mount's root; relative: from the own cgroup), default
        ``<own cgroup>/pyengine``."""
        parent = options.parent or "pyengine"
        if parent.startswith("/"):
            mount = self.v2 if controller == "" else self.v1[controller]
            assert mount is not None
            return mount.mountpoint / parent.strip("/")
        return self.own_dir(controller) / parent.strip("/")


def _unescape(text: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> tuple[dict[str, Mount], Mount | None]:
    """/proc/self/mountinfo -> (v1 controller -> mount, the cgroup2 mount or None)."""
    v1: dict[str, Mount] = {}
    v2_mounts: list[Mount] = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount = Mount(Path(_unescape(fields[4])), _unescape(fields[3]))
        if tail[0] == "cgroup2":
            v2_mounts.append(mount)
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in V1_REQUIRED + V1_OPTIONAL and option not in v1:
                    v1[option] = mount
    v2_mounts.sort(key=lambda m: m.mountpoint != Path("/sys/fs/cgroup"))
    return v1, (v2_mounts[0] if v2_mounts else None)


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup -> controller -> path; the v2 entry (``0::/x``) is under ``""``."""
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            own[""] = path
        for controller in controllers.split(","):
            if controller and not controller.startswith("name="):
                own[controller] = path
    return own


def discover(mountinfo: str | None = None, proc_cgroup: str | None = None) -> HostCgroups:
    """This process's cgroup layout (or the one the given texts describe)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    if proc_cgroup is None:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    v1, v2 = parse_mountinfo(mountinfo)
    return HostCgroups(v1=v1, v2=v2, own=parse_proc_cgroup(proc_cgroup))


def require_version(options: CgroupOptions, version: str) -> None:
    """Skip the other manager when ``[cgroups] version`` forces one."""
    if options.version not in ("auto", version):
        raise DriverNotSupported(f"disabled by [cgroups] version = {options.version}")
