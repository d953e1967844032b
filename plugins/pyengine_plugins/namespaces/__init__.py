"""The ``namespaces`` isolator: registers it; the isolator lives in ``isolator.py`` and the
child-side work (unshare, pivot_root, masks, capabilities, seccomp) in ``pyengine.runtime``."""

from __future__ import annotations

from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.plugin import hookimpl


def _factory(ctx: DriverContext):  # noqa: ANN202 - the isolator class is imported lazily
    from pyengine_plugins.namespaces.isolator import NamespacesIsolator

    return NamespacesIsolator(ctx)


def _probe(ctx: DriverContext) -> None:
    from pyengine_plugins.namespaces.isolator import probe

    probe(ctx)


@hookimpl
def pyengine_register_isolators(register: Register) -> None:
    register(DriverSpec(name="namespaces", factory=_factory, probe=_probe,
                        description="pid, mount, uts, ipc, net and cgroup namespaces; Docker's "
                                    "capabilities, masked paths and seccomp profile"))
