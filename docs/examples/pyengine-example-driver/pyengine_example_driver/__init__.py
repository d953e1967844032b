"""The example plugin's hooks: registers the ``example`` storage driver and its options.

This module is what the entry point names, so it stays cheap: the driver class is imported
only when the engine starts the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.plugin import hookimpl


@dataclass(frozen=True)
class ExampleOptions:
    """Keys allowed in ``[storage.example]``; the core checks names and types."""

    #: fsync every file this driver writes, so a crash never leaves a half-copied layer
    fsync: bool = True


def _start(ctx: DriverContext) -> Any:
    from pyengine_example_driver.driver import ExampleDriver

    return ExampleDriver(ctx)


@hookimpl
def pyengine_register_storage_drivers(register: Register) -> None:
    # priority None: never picked automatically, only when asked for by name.
    register(DriverSpec(name="example", factory=_start, options=ExampleOptions, priority=None,
                        description="example third-party driver: a directory copy per layer"))
