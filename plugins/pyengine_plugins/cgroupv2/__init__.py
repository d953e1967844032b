"""The ``cgroupv2`` isolator: registers it; the manager lives in ``manager.py``. It runs on
hosts whose cgroup v2 hierarchy (pure v2 mode) has the memory, cpu and pids
controllers enabled."""

from __future__ import annotations

from pyengine.cgroups import CgroupOptions
from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.plugin import hookimpl


def _factory(ctx: DriverContext):  # noqa: ANN202 - the manager class is imported lazily
    from pyengine_plugins.cgroupv2.manager import CgroupV2Isolator

    return CgroupV2Isolator(ctx)


def _probe(ctx: DriverContext) -> None:
    from pyengine_plugins.cgroupv2.manager import probe

    probe(ctx)


@hookimpl
def pyengine_register_isolators(register: Register) -> None:
    register(DriverSpec(name="cgroupv2", factory=_factory, probe=_probe, options=CgroupOptions,
                        config_section="cgroups",
                        description="resource limits through the unified cgroup v2 hierarchy "
                                    "(memory, cpu, cpuset, pids, io, freeze)"))
