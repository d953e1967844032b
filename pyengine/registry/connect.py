"""From an engine and a registry host to a ready client: the host's ``[registries."host"]``
options, its credentials (plugins first, then the credentials file) and its mirrors."""

from __future__ import annotations

from typing import Any

from pyengine.registry import auth
from pyengine.registry.client import RegistryClient
from pyengine.registry.options import RegistryOptions


def registry_options(engine: Any, host: str) -> RegistryOptions:
    table = (engine.options.get("registries") or {}) if engine is not None else {}
    return table.get(host) or RegistryOptions()


def client_for(engine: Any, host: str, with_credentials: bool = True) -> RegistryClient:
    creds = auth.lookup(host, engine.plugins if engine is not None else None) if with_credentials else None
    return RegistryClient(host, registry_options(engine, host), creds)


def pull_clients(engine: Any, host: str, with_credentials: bool = True) -> list[RegistryClient]:
    """The mirrors in their configured order, then the registry itself.

    :param with_credentials: look up stored credentials (plugins, the credentials file)
    """
    mirrors = registry_options(engine, host).mirrors
    out = []
    for mirror in mirrors:
        mhost = mirror.removeprefix("https://").removeprefix("http://").rstrip("/")
        opts = registry_options(engine, mhost)
        if mirror.startswith("http://"):
            opts = RegistryOptions(opts.ca_file, True, [])
        out.append(RegistryClient(mhost, opts, auth.lookup(mhost, engine.plugins) if with_credentials else None))
    out.append(client_for(engine, host, with_credentials))
    return out
