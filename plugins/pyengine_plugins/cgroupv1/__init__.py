"""The ``cgroupv1`` isolator: registers it; the manager lives in ``manager.py``. It runs on
hosts that mount the v1 memory, cpu, pids and cpuset hierarchies (legacy or hybrid mode)."""

from __future__ import annotations

from pyengine.cgroups import CgroupOptions
from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.plugin import hookimpl


def _factory(ctx: DriverContext):  # noqa: ANN202 - the manager class is imported lazily
    from pyengine_plugins.cgroupv1.manager import CgroupV1Isolator

    return CgroupV1Isolator(ctx)


def _probe(ctx: DriverContext) -> None:
    from pyengine_plugins.cgroupv1.manager import probe

    probe(ctx)


@hookimpl
def pyengine_register_isolators(register: Register) -> None:
    register(DriverSpec(name="cgroupv1", factory=_factory, probe=_probe, options=CgroupOptions,
                        config_section="cgroups",
                        description="resource limits through the cgroup v1 controllers "
                                    "(memory, cpu, cpuset, pids, blkio, freezer)"))
