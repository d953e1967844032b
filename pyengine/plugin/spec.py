"""The hooks a pyengine plugin may implement.

Every hook is named ``pyengine_*``. The core calls them only through the typed methods of
:class:`pyengine.plugin.manager.PluginHost`; each docstring says who calls the hook and what a
return value means. ``docs/hooks.md`` has one heading per hook, and a test keeps the two in step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyengine.plugin import hookspec

if TYPE_CHECKING:
    import click

    from pyengine.drivers import Register
    from pyengine.drivers.registry import Credentials


@hookspec
def pyengine_register_storage_drivers(register: Register) -> None:
    """Register storage drivers by calling ``register(DriverSpec(...))`` once per driver.

    Called by the core once per process when it first needs the list of drivers (``info``,
    ``plugins`` and every command that touches images or containers).

    :param register: call it with a :class:`pyengine.drivers.DriverSpec` whose factory
        returns an object implementing :class:`pyengine.drivers.storage.StorageDriver`.
    """


@hookspec
def pyengine_register_network_drivers(register: Register) -> None:
    """Register network drivers by calling ``register(DriverSpec(...))`` once per driver.

    Called by the core when it first needs the list of network drivers.

    :param register: call it with a :class:`pyengine.drivers.DriverSpec` whose factory
        returns an object implementing :class:`pyengine.drivers.network.NetworkDriver`.
    """


@hookspec
def pyengine_register_isolators(register: Register) -> None:
    """Register isolators (namespaces, cgroup managers) by calling ``register(DriverSpec(...))``.

    Called by the core when it first needs the list of isolators.

    :param register: call it with a :class:`pyengine.drivers.DriverSpec` whose factory
        returns an object implementing :class:`pyengine.drivers.isolation.Isolator`.
    """


@hookspec
def pyengine_register_registries(register: Register) -> None:
    """Register registry plugins by calling ``register(DriverSpec(...))`` once per registry kind.

    Called by the core when it first needs to resolve an image reference to a registry.

    :param register: call it with a :class:`pyengine.drivers.DriverSpec` whose factory
        returns an object implementing :class:`pyengine.drivers.registry.Registry`.
    """


@hookspec
def pyengine_add_commands(cli: click.Group) -> None:
    """Add click commands or groups to the ``pyengine`` command line.

    Called by the CLI when the user names a command that is not built in, or asks for the
    list of commands (``pyengine --help``). A command whose name is already taken is refused
    and reported as the plugin's error.

    :param cli: the top-level click group; call ``cli.add_command(cmd)``.
    """


@hookspec
def pyengine_container_event(event: str, container_id: str, attributes: dict[str, Any]) -> None:
    """Observe a container lifecycle event.

    Called by the engine after each event has happened (``create``, ``start``, ``die``,
    ``stop``, ``destroy``, ...). The return value is ignored; an exception from one plugin
    is logged and does not reach the others or the container.

    :param event: the event name, in Docker's vocabulary.
    :param container_id: the full container ID.
    :param attributes: the event's attributes (``name``, ``image``, ``exitCode``, ...).
    """


@hookspec(firstresult=True)
def pyengine_get_registry_credentials(registry: str) -> Credentials | None:
    """Supply credentials for a registry, as a credential helper would.

    Called by registry plugins before they fall back to the credentials stored by
    ``pyengine login``. Stops at the first non-None result.

    :param registry: the registry's host (``docker.io``, ``127.0.0.1:5000``).
    :return: a :class:`pyengine.drivers.registry.Credentials`, or None to let the next
        plugin (and finally the stored credentials) answer.
    """


@hookspec(firstresult=True)
def pyengine_authorize_request(method: str, path: str, user: str | None) -> str | None:
    """Refuse a daemon API request, like Docker's authorization plugins.

    Called by the daemon before it routes each request. Stops at the first non-None result.

    :param method: the HTTP method.
    :param path: the request path, without the API version prefix (``/containers/create``).
    :param user: the authenticated user (TLS client certificate subject, or the Unix peer's
        user name), or None when unknown.
    :return: None to allow, or the reason for refusing: the client gets 403 with it.
    """
