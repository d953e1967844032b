"""The overlay storage driver: kernel overlayfs, each layer's own changes in a ``diff``
directory and the layers below stacked as lower directories. The first choice of automatic
selection where the kernel can mount it."""

from __future__ import annotations

from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.plugin import hookimpl


def _factory(ctx: DriverContext):  # noqa: ANN202 - the driver class is imported lazily
    from pyengine_plugins.overlay.driver import OverlayDriver

    return OverlayDriver(ctx)


def _probe(ctx: DriverContext) -> None:
    from pyengine_plugins.overlay.driver import probe

    probe(ctx)


@hookimpl
def pyengine_register_storage_drivers(register: Register) -> None:
    register(DriverSpec(name="overlay", factory=_factory, probe=_probe, priority=10,
                        description="kernel overlayfs: layers stacked, no copies"))
