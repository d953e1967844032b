"""The devicemapper storage driver plugin: registration, options and the host probe.

Layers live on a dm-thin pool (an existing one, or a development pool built from sparse
loop-backed files); the driver itself is in ``driver.py`` and is imported only when started.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.plugin import hookimpl

FILESYSTEMS = ("ext4", "xfs")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """``"10G"`` -> bytes (binary units K, M, G, T, optionally followed by B or iB; a plain
    number is bytes)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"invalid size {text!r} (use e.g. 512M, 10G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass
class DevicemapperOptions:
    """``[storage.devicemapper]``: the pool to use, or the sizes of the one to build."""

    #: an existing thin pool (a name under /dev/mapper); None: build one from loop files
    pool: str | None = None
    #: size of the sparse data file of the development pool
    data_size: str = "100G"
    #: size of the sparse metadata file of the development pool
    metadata_size: str = "2G"
    #: size of the base device, hence of every layer's filesystem unless grown
    base_size: str = "10G"
    #: filesystem of the base device: ext4 or xfs
    fs: str = "ext4"

    def __post_init__(self) -> None:
        if self.fs not in FILESYSTEMS:
            raise ValueError(f"fs must be one of {', '.join(FILESYSTEMS)}, not {self.fs!r}")
        for name in ("data_size", "metadata_size", "base_size"):
            parse_size(getattr(self, name))


def _options(ctx: DriverContext) -> DevicemapperOptions:
    return ctx.options if ctx.options is not None else DevicemapperOptions()


def _probe(ctx: DriverContext) -> None:
    from pyengine_plugins.devicemapper.dm import probe

    probe(_options(ctx))


def _factory(ctx: DriverContext):  # noqa: ANN202 - the driver class is imported lazily
    from pyengine_plugins.devicemapper.driver import DevicemapperDriver

    return DevicemapperDriver(ctx, _options(ctx))


def _auto_select(ctx: DriverContext) -> bool:
    # A thin pool takes real resources; only pick it when the user asked for it in the config.
    return ctx.configured


@hookimpl
def pyengine_register_storage_drivers(register: Register) -> None:
    register(DriverSpec(name="devicemapper", factory=_factory, probe=_probe,
                        options=DevicemapperOptions, priority=20, auto_select=_auto_select,
                        description="dm-thin snapshots per layer (needs device-mapper)"))
