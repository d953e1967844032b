"""The ``oci-layout`` registry plugin: ``oci:DIR[:TAG]`` references name an OCI image layout
directory; pull and push go through ``pyengine.registry.layout``."""

from __future__ import annotations

from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.plugin import hookimpl


class OciLayoutRegistry:
    name = "oci-layout"

    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx

    def handles(self, reference: str) -> bool:
        return reference.startswith("oci:")

    def status(self) -> list[tuple[str, str]]:
        return [("references", "oci:DIR[:TAG]")]


@hookimpl
def pyengine_register_registries(register: Register) -> None:
    register(DriverSpec(name="oci-layout", factory=OciLayoutRegistry,
                        description="OCI image layout directories (oci:DIR[:TAG])"))
