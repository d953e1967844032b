"""The vfs storage driver: every layer is a full copy of its parent's tree. Always works; the
last resort of automatic selection, and the reference the other drivers are tested against."""

from __future__ import annotations

from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.plugin import hookimpl


def _factory(ctx: DriverContext):  # noqa: ANN202 - the driver class is imported lazily
    from pyengine_plugins.vfs.driver import VfsDriver

    return VfsDriver(ctx)


@hookimpl
def pyengine_register_storage_drivers(register: Register) -> None:
    register(DriverSpec(name="vfs", factory=_factory, priority=90,
                        description="a full copy of the tree per layer; works everywhere"))
