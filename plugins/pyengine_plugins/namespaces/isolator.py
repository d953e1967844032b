"""The namespaces isolator on the host side: checks that the host and the spec allow what the
launcher will do in the child, and reports what it applies. It holds no per-container
resources: the namespaces die with the container's last process."""

from __future__ import annotations

import os
from typing import Any

from pyengine.drivers import DriverContext
from pyengine.errors import DriverNotSupported
from pyengine.log import get_logger

log = get_logger("pyengine.namespaces")


def probe(ctx: DriverContext) -> None:
    """Raise DriverNotSupported unless this process can create every namespace kind we use."""
    from pyengine.runtime import kernel

    if os.geteuid() != 0:
        raise DriverNotSupported("needs root (rootless containers are not supported)")
    missing = [name for _, name in kernel.NAMESPACES.values()
               if name != "user" and not os.path.exists(f"/proc/self/ns/{name}")]
    if missing:
        raise DriverNotSupported(f"the kernel lacks namespaces: {', '.join(missing)}")


class NamespacesIsolator:
    """Applies ``linux.namespaces``, the rootfs, /proc masks, /dev, capabilities, seccomp and
    rlimits of a spec; the work happens in ``pyengine.runtime.launch``'s child."""

    name = "namespaces"

    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx

    def prepare(self, container_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        from pyengine.errors import UsageError
        from pyengine.runtime.launch import check_rlimits

        namespaces = spec.get("linux", {}).get("namespaces") or []
        for entry in namespaces:
            if entry.get("path") and not os.path.exists(entry["path"]):
                raise UsageError(f"the {entry['type']} namespace {entry['path']} does not exist")
        check_rlimits(spec)
        return {"namespaces": [n["type"] for n in namespaces]}

    def enter(self, container_id: str, spec: dict[str, Any], pid: int) -> None:
        # Nothing to do on the host side: the child unshares for itself.
        log.debug("namespaces.enter", container=container_id, pid=pid)

    def stats(self, container_id: str) -> dict[str, Any]:
        return {}

    def release(self, container_id: str) -> None:
        pass

    def status(self) -> list[tuple[str, str]]:
        from pyengine.runtime import kernel

        kinds = [name for _, name in kernel.NAMESPACES.values() if os.path.exists(f"/proc/self/ns/{name}")]
        lib = kernel.libseccomp()
        seccomp = "unavailable (libseccomp.so.2 not found)"
        if lib is not None:
            try:
                import ctypes

                class _Version(ctypes.Structure):
                    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

                lib.seccomp_version.restype = ctypes.POINTER(_Version)
                version = lib.seccomp_version().contents
                seccomp = f"libseccomp {version.major}.{version.minor}.{version.micro}"
            except (AttributeError, ValueError):
                seccomp = "libseccomp"
        return [("Namespaces", ",".join(kinds)), ("Seccomp", seccomp)]
