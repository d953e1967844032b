"""Loads plugins and gives the core typed calls into them.

Loading order: blocked names (``PYENGINE_DISABLE_PLUGINS`` and ``[plugins] disabled``), then
every entry point of the group ``pyengine`` (bundled plugins are declared the same way as a
third party's), then ``check_pending()``. A plugin that fails to import, register or validate
is recorded with ``error: <reason>`` and left out; it never stops the engine by itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from pyengine.drivers import DRIVER_KINDS, DriverSpec
from pyengine.errors import PluginError
from pyengine.log import get_logger
from pyengine.plugin import NAME, spec

if TYPE_CHECKING:
    from importlib import metadata
    from pathlib import Path

    import click

    from pyengine.drivers.registry import Credentials
    from pyengine.plugin.discovery import PluginEntry

log = get_logger("pyengine.plugins")

#: every hook a plugin may implement
HOOK_NAMES = frozenset(name for name in dir(spec) if name.startswith("pyengine_"))

#: the distribution whose plugins are bundled with the engine
BUNDLED_DISTRIBUTION = "pyengine"

REGISTRATION_HOOKS = {
    "storage": "pyengine_register_storage_drivers",
    "network": "pyengine_register_network_drivers",
    "isolation": "pyengine_register_isolators",
    "registry": "pyengine_register_registries",
}


@dataclass
class PluginRecord:
    """What the engine knows of one plugin, for ``pyengine plugins``."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    state: str = "ok"
    hooks: list[str] = field(default_factory=list)
    drivers: list[DriverSpec] = field(default_factory=list)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PluginHost:
    """The engine's one plugin manager: loading, states, and typed wrappers for every hook."""

    def __init__(self, disabled: Iterable[str] = (), disabled_source: str = "") -> None:
        self.pm = pluggy.PluginManager(NAME)
        self.pm.add_hookspecs(spec)
        self.disabled = {d.strip() for d in disabled if d.strip()}
        self.disabled_source = disabled_source
        self.records: dict[str, PluginRecord] = {}
        self._specs: dict[str, list[DriverSpec]] | None = None
        self.load_ms = 0.0

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint | PluginEntry] | None = None,
                          cache_dir: Path | None = None) -> None:
        """Load every plugin of the ``pyengine`` entry-point group that is not disabled.

        :param cache_dir: where the entry-point cache lives (see ``pyengine.plugin.discovery``)
        """
        from pyengine.plugin.discovery import PluginEntry, discover

        started = time.monotonic()
        if entry_points is None:
            entry_points = discover(cache_dir)
        for ep in sorted(entry_points, key=lambda e: e.name):
            if ep.name in self.records:
                continue
            if isinstance(ep, PluginEntry):
                distribution, version = ep.distribution, ep.version
            else:
                dist = getattr(ep, "dist", None)
                distribution, version = (dist.name, dist.version) if dist else (None, None)
            record = PluginRecord(name=ep.name, module=ep.value, distribution=distribution, version=version)
            self.records[ep.name] = record
            if ep.name in self.disabled:
                record.state = "disabled"
                self.pm.set_blocked(ep.name)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a third party's import may raise anything
                self._fail(record, exc, "plugin.import_failed")
                continue
            self.register(plugin, ep.name, record)
        self._check_pending()
        self.load_ms = round((time.monotonic() - started) * 1000, 1)
        self.log_loaded()

    def log_loaded(self, **extra: Any) -> None:
        """The ``plugins.loaded`` debug event (again, for a host built in advance)."""
        log.debug("plugins.loaded", plugins=sorted(self.records),
                  failed=sorted(n for n, r in self.records.items() if r.state.startswith("error")),
                  disabled=sorted(self.disabled), ms=self.load_ms, **extra)

    def register(self, plugin: ModuleType | object, name: str, record: PluginRecord | None = None) -> None:
        """Register a plugin object directly (tests, and plugins that add plugins)."""
        record = record or self.records.setdefault(
            name, PluginRecord(name=name, module=getattr(plugin, "__name__", repr(plugin)),
                               distribution=None, version=None))
        if name in self.disabled:
            record.state = "disabled"
            return
        # A pyengine_* name that is no hook is a typo or a hook of a newer engine: either way
        # the plugin would silently do nothing, so it is refused whether decorated or not.
        unknown = sorted(attr for attr in dir(plugin)
                         if attr.startswith("pyengine_") and attr not in HOOK_NAMES
                         and callable(getattr(plugin, attr, None)))
        if unknown:
            self._fail(record, ValueError(f"unknown hook {unknown[0]}"), "plugin.unknown_hook")
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self._fail(record, exc, "plugin.register_failed")
            return
        record.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        self._specs = None

    def _check_pending(self) -> None:
        # Every plugin with an unknown hook was refused by register(), so this only guards
        # the invariant that every registered implementation has a spec.
        self.pm.check_pending()

    def _fail(self, record: PluginRecord, exc: BaseException, event: str) -> None:
        record.state = f"error: {_reason(exc)}"
        log.warning(event, plugin=record.name, reason=_reason(exc))

    # -- drivers ---------------------------------------------------------------------------
    def specs(self, kind: str) -> list[DriverSpec]:
        """Every driver of ``kind`` that loaded plugins register, in registration order."""
        if self._specs is None:
            self._specs = {k: [] for k in DRIVER_KINDS}
            for k in DRIVER_KINDS:
                self._collect(k)
        return self._specs[kind]

    def _collect(self, kind: str) -> None:
        assert self._specs is not None
        caller = getattr(self.pm.hook, REGISTRATION_HOOKS[kind])
        impls = caller.get_hookimpls()
        # Bundled plugins register first, then the others in load order (by name): a driver
        # name is kept by whoever registered it first, so a third party cannot shadow a
        # bundled driver however its entry point is named.
        impls = sorted(impls, key=lambda i: (self.records[i.plugin_name].distribution != BUNDLED_DISTRIBUTION,
                                             impls.index(i)))
        for impl in impls:
            record = self.records[impl.plugin_name]
            registered: list[DriverSpec] = []

            def register(driver: DriverSpec, _registered: list[DriverSpec] = registered,
                         _plugin: str = impl.plugin_name) -> None:
                if not isinstance(driver, DriverSpec):
                    raise TypeError(f"register() takes a DriverSpec, not {type(driver).__name__}")
                driver.kind, driver.plugin = kind, _plugin
                _registered.append(driver)

            try:
                impl.function(register=register)
            except Exception as exc:
                self._fail(record, exc, "plugin.registration_failed")
                continue
            taken = {s.name: s.plugin for s in self._specs[kind]}
            for driver in registered:
                if driver.name in taken:
                    self._fail(record, ValueError(
                        f"{kind} driver {driver.name!r} is already registered by plugin "
                        f"{taken[driver.name]!r}"), "plugin.duplicate_driver")
                    break
            else:
                self._specs[kind].extend(registered)
                record.drivers.extend(registered)

    def find_spec(self, kind: str, name: str, asked_by: str = "") -> DriverSpec:
        """The spec of driver ``name``, or a PluginError/UsageError that says why there is none."""
        for driver in self.specs(kind):
            if driver.name == name:
                return driver
        label = f"{kind} driver" if kind != "isolation" else "isolator"
        where = f" ({asked_by})" if asked_by else ""
        record = self.records.get(name)
        if record and record.state == "disabled":
            how = self.disabled_source or "configuration"
            raise PluginError(f"{label} {name!r}{where} belongs to plugin {name!r}, which is disabled "
                              f"by {how}")
        if record and record.state.startswith("error"):
            raise PluginError(f"{label} {name!r}{where}: plugin {name!r} failed to load: "
                              f"{record.state[len('error: '):]}")
        known = ", ".join(s.name for s in self.specs(kind)) or "none"
        extra = [f"{r.name} ({r.state})" for r in self.records.values() if r.state != "ok"]
        tail = f"; plugins not loaded: {', '.join(extra)}" if extra else ""
        raise PluginError(f"unknown {label} {name!r}{where}; available: {known}{tail}")

    def lenient_kinds(self) -> set[str]:
        """Driver kinds whose unknown config tables may belong to a plugin that is not loaded."""
        return set(DRIVER_KINDS) if any(r.state != "ok" for r in self.records.values()) else set()

    # -- typed wrappers for the extension hooks --------------------------------------------
    def add_commands(self, cli: click.Group) -> None:
        """Let every plugin add commands; a clash with an existing name is the plugin's error."""
        # Lazily imported built-ins (EngineGroup.lazy) are not in cli.commands yet, but their
        # names are taken all the same.
        reserved = set(getattr(cli, "lazy", {}))
        for impl in reversed(self.pm.hook.pyengine_add_commands.get_hookimpls()):
            before = dict(cli.commands)
            try:
                impl.function(cli=cli)
                clash = [n for n in before if cli.commands.get(n) is not before[n]]
                clash += sorted((set(cli.commands) - set(before)) & reserved)
                if clash:
                    cli.commands.update(before)
                    raise ValueError(f"command {clash[0]!r} already exists")
            except Exception as exc:
                for name in set(cli.commands) - set(before):
                    del cli.commands[name]
                self._fail(self.records[impl.plugin_name], exc, "plugin.add_commands_failed")

    def emit_container_event(self, event: str, container_id: str, attributes: dict[str, Any]) -> None:
        """Tell every plugin about a container event; one plugin's exception is only logged."""
        for impl in self.pm.hook.pyengine_container_event.get_hookimpls():
            try:
                impl.function(event=event, container_id=container_id, attributes=attributes)
            except Exception as exc:
                log.warning("plugin.event_hook_failed", plugin=impl.plugin_name, hook_event=event,
                            reason=_reason(exc))

    def registry_credentials(self, registry: str) -> Credentials | None:
        """Credentials from the first plugin that has some for ``registry``."""
        return self.pm.hook.pyengine_get_registry_credentials(registry=registry)

    def authorize_request(self, method: str, path: str, user: str | None) -> str | None:
        """None when every plugin allows the request, else the first refusal's reason."""
        return self.pm.hook.pyengine_authorize_request(method=method, path=path, user=user)

    def authorizes(self) -> bool:
        """True when a plugin implements ``pyengine_authorize_request``; without one every
        request is allowed, and the daemon does not ask."""
        return bool(self.pm.hook.pyengine_authorize_request.get_hookimpls())
