"""The engine: one configuration, one plugin host, and the drivers chosen from them.

Owns driver selection (flag > env > file > existing state > priority) and every driver's state
(ok / skip / error / disabled). Calls drivers only through the protocols in ``pyengine.drivers``;
never imports a plugin module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pyengine.config import Config, validate_tables
from pyengine.drivers import DRIVER_KINDS, DriverContext, DriverSpec
from pyengine.errors import DriverNotSupported, PluginError, PyEngineError, UsageError
from pyengine.fsutil import secure_roots
from pyengine.log import get_logger
from pyengine.plugin.manager import PluginHost, _reason

log = get_logger("pyengine.engine")


@dataclass
class DriverState:
    """A driver's state as ``info`` and ``plugins`` show it."""

    kind: str
    name: str
    plugin: str
    state: str  # ok | skip | error | disabled
    reason: str = ""

    def label(self) -> str:
        return f"{self.state}: {self.reason}" if self.reason else self.state

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "plugin": self.plugin,
                "state": self.state, "reason": self.reason}


#: A plugin host with every entry point loaded and nothing disabled, built by the fork server
#: before it forks (``prebuild_plugin_host``): the first engine of a served command takes it
#: instead of importing and registering every plugin again (~5 ms of each command). Plugins
#: are stateless hook modules, and every fork gets its own copy of the host.
_prebuilt_host: PluginHost | None = None


def prebuild_plugin_host() -> None:
    """Build ``_prebuilt_host`` (in the fork server, once; its code fingerprint notices an
    install that would add or remove a plugin, and the server then restarts)."""
    global _prebuilt_host
    host = PluginHost()
    host.load_entry_points()
    for kind in DRIVER_KINDS:
        host.specs(kind)
    _prebuilt_host = host


def make_plugin_host(config: Config, environ: dict[str, str] | None = None) -> PluginHost:
    """A plugin host with every entry point loaded, honouring both ways of disabling."""
    global _prebuilt_host
    # Before the entry-point cache is written into the run root, which may make it.
    secure_roots(config.data_root, config.run_root)
    environ = dict(os.environ) if environ is None else environ
    from_env = [n for n in environ.get("PYENGINE_DISABLE_PLUGINS", "").split(",") if n.strip()]
    from_file = config.disabled_plugins
    if _prebuilt_host is not None and not from_env and not from_file:
        host, _prebuilt_host = _prebuilt_host, None  # one engine's: a second one builds its own
        host.log_loaded(prebuilt=True)
        return host
    sources = []
    if from_env:
        sources.append("PYENGINE_DISABLE_PLUGINS")
    if from_file:
        sources.append(f"[plugins] disabled in {config.path}")
    host = PluginHost(disabled=from_env + from_file, disabled_source=" and ".join(sources))
    host.load_entry_points(cache_dir=config.run_root)
    return host


class Engine:
    """The engine of one process: configuration, plugins and the selected drivers."""

    def __init__(self, config: Config, plugins: PluginHost | None = None) -> None:
        self.config = config
        # Once per process and root: an existing root left too open is tightened here, before
        # any driver or store looks inside it, and one made later gets its mode (fsutil).
        secure_roots(config.data_root, config.run_root)
        self.plugins = plugins if plugins is not None else make_plugin_host(config)
        sections = {}
        for kind in DRIVER_KINDS:
            for driver in self.plugins.specs(kind):
                sections[driver.section] = (driver.options, driver.config_keyed)
        self.options = validate_tables(config, sections, self.plugins.lenient_kinds())
        self._storage_choice: DriverSpec | None = None

    # -- contexts and states ---------------------------------------------------------------
    def context(self, driver: DriverSpec) -> DriverContext:
        """The context a driver is probed and started with."""
        from pyengine.config import build_options

        options = self.options.get(driver.section)
        if options is None and not driver.config_keyed:
            options = build_options(self.config, driver.section, driver.options, None)
        return DriverContext(
            name=driver.name, options=options,
            configured=self.config.table(driver.section) is not None,
            data_root=self.config.data_root, run_root=self.config.run_root,
            state_dir=self.config.data_root / driver.kind / driver.name)

    def probe(self, driver: DriverSpec) -> DriverState:
        """Ask the driver whether this host can run it; never raises."""
        state = DriverState(driver.kind, driver.name, driver.plugin, "ok")
        if driver.probe is None:
            return state
        try:
            driver.probe(self.context(driver))
        except DriverNotSupported as exc:
            state.state, state.reason = "skip", str(exc)
        except Exception as exc:
            state.state, state.reason = "error", _reason(exc)
        return state

    def driver_states(self) -> list[DriverState]:
        """Every registered driver's state, plus one ``disabled`` row per disabled plugin."""
        states = [self.probe(d) for kind in DRIVER_KINDS for d in self.plugins.specs(kind)]
        for record in self.plugins.records.values():
            if record.state == "disabled":
                states.append(DriverState("plugin", record.name, record.name, "disabled",
                                          self.plugins.disabled_source))
            elif record.state.startswith("error"):
                states.append(DriverState("plugin", record.name, record.name, "error",
                                          record.state[len("error: "):]))
        return states

    # -- storage ---------------------------------------------------------------------------
    def storage_spec(self) -> DriverSpec:
        """The storage driver this engine uses; records the choice as ``auto`` when it picked."""
        if self._storage_choice is not None:
            return self._storage_choice
        name = self.config["storage-driver"]
        if name:
            source = self.config.source("storage-driver")
            asked_by = {"flag": "--storage-driver", "env": "PYENGINE_STORAGE_DRIVER"}.get(
                source, f"storage-driver in {self.config.path}")
            driver = self.plugins.find_spec("storage", name, asked_by)
            state = self.probe(driver)
            if state.state == "skip":
                raise UsageError(f"storage driver {name!r} cannot run on this host: {state.reason}")
            if state.state == "error":
                raise PluginError(f"storage driver {name!r} (plugin {driver.plugin!r}) failed: "
                                  f"{state.reason}")
        else:
            driver = self._auto_storage()
            self.config.set_auto("storage-driver", driver.name)
        self._storage_choice = driver
        log.info("storage.selected", driver=driver.name, plugin=driver.plugin,
                 source=self.config.source("storage-driver"))
        return driver

    def _auto_storage(self) -> DriverSpec:
        specs = self.plugins.specs("storage")
        root = self.config.data_root / "storage"
        holding = [d for d in specs if (root / d.name).is_dir() and any((root / d.name).iterdir())]
        if len(holding) > 1:
            names = ", ".join(d.name for d in holding)
            raise UsageError(f"several storage drivers hold state under {root} ({names}); "
                             "choose one with --storage-driver")
        if holding:
            return holding[0]
        ranked = sorted((d for d in specs if d.priority is not None), key=lambda d: d.priority or 0)
        for driver in ranked:
            if self.probe(driver).state != "ok":
                continue
            if driver.auto_select is not None and not driver.auto_select(self.context(driver)):
                continue
            return driver
        raise UsageError("no storage driver can run on this host; see `pyengine info`")

    @cached_property
    def storage(self) -> Any:
        """The started storage driver."""
        driver = self.storage_spec()
        try:
            return driver.factory(self.context(driver))
        except DriverNotSupported as exc:
            raise UsageError(f"storage driver {driver.name!r} cannot run on this host: {exc}") from None
        except PyEngineError:
            raise
        except Exception as exc:
            raise PluginError(f"storage driver {driver.name!r} (plugin {driver.plugin!r}) failed "
                              f"to start: {_reason(exc)}") from None

    @cached_property
    def images(self) -> Any:
        """The image store of this data root, on the selected storage driver."""
        from pyengine.images.store import ImageStore

        return ImageStore.for_engine(self)

    # -- isolators ------------------------------------------------------------------------
    @cached_property
    def isolators(self) -> list[Any]:
        """Every isolator this host can run, started (namespaces and the matching cgroup
        manager); an isolator that skips is left out, one that errors is fatal."""
        started = []
        for driver in self.plugins.specs("isolation"):
            state = self.probe(driver)
            if state.state == "skip":
                continue
            if state.state == "error":
                raise PluginError(f"isolator {driver.name!r} (plugin {driver.plugin!r}) failed: {state.reason}")
            try:
                started.append(driver.factory(self.context(driver)))
            except DriverNotSupported:
                continue
        return started

    def close(self) -> None:
        """Release what the drivers hold in this process."""
        if "storage" in self.__dict__:
            try:
                self.storage.cleanup()
            except Exception as exc:
                log.warning("storage.cleanup_failed", reason=_reason(exc))
