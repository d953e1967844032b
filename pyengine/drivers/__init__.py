"""Driver protocols: what each kind of plugin implements, and the spec a plugin registers.

The core talks to drivers only through these protocols. Plugins import from here, from
``pyengine.errors`` and from small helpers in the core, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DriverKind = Literal["storage", "network", "isolation", "registry"]
DRIVER_KINDS: tuple[DriverKind, ...] = ("storage", "network", "isolation", "registry")


@dataclass(frozen=True)
class DriverContext:
    """What a driver is handed when it is probed or started.

    :param name: the driver's registered name
    :param options: the validated options from the driver's config table (an instance of
        the spec's ``options`` dataclass), or None when the spec declares no options
    :param configured: True when the config file has a table for this driver
    :param data_root: the engine's data root
    :param run_root: the engine's run root
    :param state_dir: where the driver keeps its persistent state
        (``<data-root>/<kind>/<name>``); the driver creates it when it first writes
    """

    name: str
    options: Any
    configured: bool
    data_root: Path
    run_root: Path
    state_dir: Path


@dataclass
class DriverSpec:
    """A driver as a plugin registers it.

    :param name: the name users select it by (``--storage-driver NAME``)
    :param factory: called with a :class:`DriverContext` to start the driver; raises
        :class:`~pyengine.errors.DriverNotSupported` when the host cannot run it
    :param probe: called with a :class:`DriverContext` to learn, without side effects,
        whether the host can run it; raises ``DriverNotSupported``; None means "always can"
    :param options: a dataclass whose fields are the keys allowed in the driver's config
        table; field types are checked; None means the table must not exist
    :param config_section: the dotted table name holding the options; default
        ``<kind>.<name>`` (``storage.overlay``)
    :param config_keyed: the table holds one sub-table per key (``[registries."host:5000"]``),
        each validated against ``options``
    :param priority: order in automatic selection, lowest first; None: never chosen
        automatically
    :param auto_select: an extra condition for automatic selection (devicemapper: only when
        configured)
    :param description: one line for ``plugins`` and ``info``
    :param plugin: filled in by the core: the plugin that registered the spec
    :param kind: filled in by the core
    """

    name: str
    factory: Callable[[DriverContext], Any]
    probe: Callable[[DriverContext], None] | None = None
    options: type | None = None
    config_section: str | None = None
    config_keyed: bool = False
    priority: int | None = None
    auto_select: Callable[[DriverContext], bool] | None = None
    description: str = ""
    plugin: str = ""
    kind: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def section(self) -> str:
        """The config table that holds this driver's options."""
        return self.config_section or f"{self.kind}.{self.name}"


#: the callable a registration hook receives: ``register(DriverSpec(...))``
Register = Callable[[DriverSpec], None]
