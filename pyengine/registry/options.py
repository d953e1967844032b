"""The ``[registries."host:port"]`` options; cheap to import (the plugin registers it at load)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RegistryOptions:
    """One registry's table: a CA file to trust besides the system's, plain HTTP, and mirrors
    tried in order before the registry itself when pulling."""

    ca_file: str | None = None
    insecure: bool = False
    mirrors: list[str] = field(default_factory=list)
