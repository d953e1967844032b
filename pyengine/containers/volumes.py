"""Named volumes: directories under ``<data-root>/volumes/<name>/_data`` that outlive containers.

Owns their records and the rule that a volume in use by a container is not removed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pyengine.containers.store import now_iso
from pyengine.errors import Conflict, NotFound, UsageError
from pyengine.fsutil import DATA_ROOT_MODE, make_dirs, secure_root, write_json_atomic

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


class VolumeStore:
    """The local volume driver's store."""

    def __init__(self, data_root: Path, events_root: Path | None = None) -> None:
        """:param events_root: the run root whose event journal records create and destroy"""
        self.events_root = events_root
        secure_root(data_root, DATA_ROOT_MODE)  # the volume commands need no engine
        self.root = data_root / "volumes"

    def create(self, name: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
        import secrets

        name = name or secrets.token_hex(32)
        if not _NAME.match(name):
            raise UsageError(f"invalid volume name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]+")
        path = self.root / name
        if (path / "volume.json").exists():
            return self.inspect(name)
        # As Docker's: volumes/ and volumes/<name> root's only, _data 0755 so that a container
        # user other than root can enter a volume whose content it owns.
        make_dirs(path / "_data", 0o755)
        record = {"Name": name, "Driver": "local", "Mountpoint": str(path / "_data"),
                  "CreatedAt": now_iso(), "Labels": labels or {}, "Scope": "local", "Options": {}}
        write_json_atomic(path / "volume.json", record)
        self._record_event("create", name)
        return record

    def inspect(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self.root / name / "volume.json").read_text())
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such volume: {name}") from None

    def list(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        return [json.loads((p / "volume.json").read_text()) for p in sorted(self.root.iterdir())
                if (p / "volume.json").exists()]

    def remove(self, name: str, in_use_by: Iterable[str] = (), force: bool = False) -> None:
        self.inspect(name)
        users = list(in_use_by)
        if users and not force:
            raise Conflict(f"volume {name} is in use by container(s) {', '.join(u[:12] for u in users)}")
        shutil.rmtree(self.root / name)
        self._record_event("destroy", name)

    def _record_event(self, action: str, name: str) -> None:
        if self.events_root is not None:
            from pyengine import events

            events.record(self.events_root, "volume", action, name, {"driver": "local"})


def is_named_volume(source: str) -> bool:
    """``-v SOURCE:TARGET``: a source without a slash is a volume name, as in Docker."""
    return "/" not in source and not source.startswith(".")


def volumes_used(host_config: dict[str, Any]) -> list[str]:
    names = []
    for bind in host_config.get("Binds") or []:
        source = bind.split(":", 1)[0]
        if is_named_volume(source):
            names.append(source)
    return names
