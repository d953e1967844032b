"""What the cgroup v1 and v2 isolators share: their ``[cgroups]`` options, container-id checks
and the errors they raise. The kernel seam is in ``fs``, host discovery in ``host``, the
runc-compatible value conversions in ``convert``. Cheap to import; no kernel access here."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyengine.errors import UsageError

#: a container id is one path component: no slashes, no dot-dot, nothing that escapes the parent
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class CgroupOptions:
    """The ``[cgroups]`` table.

    :param version: ``auto`` (the hierarchy the host mounts), ``1`` or ``2``
    :param parent: the cgroup under which every container gets ``<parent>/<container_id>``;
        absolute paths are from the hierarchy's root, relative ones from the engine's own
        cgroup; default ``pyengine`` (a child of the engine's own cgroup)
    """

    version: str = "auto"
    parent: str | None = None

    def __post_init__(self) -> None:
        if str(self.version) not in ("auto", "1", "2"):
            raise ValueError(f"[cgroups] version must be \"auto\", \"1\" or \"2\", not {self.version!r}")
        self.version = str(self.version)
        if self.parent is not None and ".." in self.parent.split("/"):
            raise ValueError(f"[cgroups] parent must not contain '..': {self.parent!r}")


def check_container_id(container_id: str) -> str:
    """Return ``container_id`` if it is safe as one cgroup directory name, else raise."""
    if not _CONTAINER_ID.match(container_id) or container_id in (".", ".."):
        raise UsageError(f"invalid container id for a cgroup: {container_id!r}")
    return container_id


def options_of(ctx_options: object) -> CgroupOptions:
    """The options a driver context carries, or the defaults when there is no table."""
    return ctx_options if isinstance(ctx_options, CgroupOptions) else CgroupOptions()
