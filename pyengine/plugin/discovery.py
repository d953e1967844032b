"""Finding the ``pyengine`` entry points, with a cache that spares every command the import
of ``importlib.metadata`` (email, zipfile, csv...) and the scan of every distribution.

The cache (``<run-root>/plugins.json``) is keyed on the modification times of every
``sys.path`` entry: installing, upgrading or removing a distribution adds or removes a
``*.dist-info`` directory, which changes its directory's mtime, so the next command scans
again. Editing an installed ``entry_points.txt`` by hand is not noticed; reinstall instead
(``pip install -e`` rewrites the dist-info). A cache that cannot be read or written is
ignored: the scan is always the fallback.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyengine.fsutil import write_json_atomic
from pyengine.plugin import NAME

_CACHE_VERSION = 1


@dataclass(frozen=True)
class PluginEntry:
    """One entry point of the ``pyengine`` group, as the plugin host needs it."""

    name: str
    value: str
    distribution: str | None = None
    version: str | None = None

    def load(self) -> Any:
        """Import ``module[:attr.attr]`` as importlib.metadata's EntryPoint.load does."""
        module, _, attrs = self.value.partition(":")
        obj: Any = importlib.import_module(module.strip())
        for attr in attrs.strip().split(".") if attrs.strip() else []:
            obj = getattr(obj, attr)
        return obj


def _path_key() -> list[list[Any]]:
    key = []
    for entry in sys.path:
        path = entry or os.getcwd()
        try:
            key.append([path, os.stat(path).st_mtime_ns])
        except OSError:
            key.append([path, None])
    return key


def scan() -> list[PluginEntry]:
    """Every entry point of the group, read from the installed distributions."""
    from importlib import metadata

    entries = []
    for ep in metadata.entry_points(group=NAME):
        dist = getattr(ep, "dist", None)
        entries.append(PluginEntry(ep.name, ep.value, dist.name if dist else None,
                                   dist.version if dist else None))
    return entries


def discover(cache_dir: Path | None) -> list[PluginEntry]:
    """The entry points, from the cache in ``cache_dir`` when it is still valid."""
    if cache_dir is None:
        return scan()
    cache = cache_dir / "plugins.json"
    key = _path_key()
    try:
        data = json.loads(cache.read_text())
        if data.get("version") == _CACHE_VERSION and data.get("key") == key:
            return [PluginEntry(**e) for e in data["entries"]]
    except (OSError, ValueError, TypeError, KeyError):
        pass
    entries = scan()
    try:
        write_json_atomic(cache, {"version": _CACHE_VERSION, "key": key, "entries": [asdict(e) for e in entries]},
                          indent=None, fsync=False)
    except OSError:
        pass  # a read-only run root: scan every time
    return entries
