"""The ``docker-archive`` registry plugin: ``docker-archive:FILE`` and ``oci-archive:FILE``
references name tarballs; pull and push are the image store's load and save
(``pyengine.images.archive``)."""

from __future__ import annotations

from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.plugin import hookimpl


class DockerArchiveRegistry:
    name = "docker-archive"

    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx

    def handles(self, reference: str) -> bool:
        return reference.startswith(("docker-archive:", "oci-archive:"))

    def status(self) -> list[tuple[str, str]]:
        return [("references", "docker-archive:FILE, oci-archive:FILE")]


@hookimpl
def pyengine_register_registries(register: Register) -> None:
    register(DriverSpec(name="docker-archive", factory=DockerArchiveRegistry,
                        description="docker save / OCI archive tarballs (docker-archive:FILE, oci-archive:FILE)"))
