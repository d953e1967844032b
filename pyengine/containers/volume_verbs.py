"""The volume verbs the daemon (and the CLI) share: which containers use a volume, listing
with Docker's filters, create from Docker's fields, removal with dockerd's refusal, prune.

Calls the VolumeStore and the container store.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pyengine.containers.volumes import VolumeStore, volumes_used
from pyengine.errors import Conflict, NotFound, UsageError

LIST_FILTERS = ("dangling", "name", "label", "driver")
#: names the store gives volumes created without one: Docker's anonymous volumes
_ANONYMOUS = re.compile(r"^[0-9a-f]{64}$")


def volume_store(engine: Any) -> VolumeStore:
    return VolumeStore(engine.config.data_root, events_root=engine.config.run_root)


def volume_users(engine: Any) -> dict[str, list[str]]:
    """volume name -> ids of the containers (running or not) that mount it."""
    from pyengine.containers.store import ContainerStore

    users: dict[str, list[str]] = {}
    for record in ContainerStore(engine.config.data_root, engine.config.run_root).list():
        for name in volumes_used(record.host_config):
            users.setdefault(name, []).append(record.id)
    return users


def view(record: dict[str, Any]) -> dict[str, Any]:
    """A volume as ``GET /volumes/{name}`` answers it."""
    return {"CreatedAt": record.get("CreatedAt", ""), "Driver": record.get("Driver", "local"),
            "Labels": record.get("Labels") or {}, "Mountpoint": record.get("Mountpoint", ""),
            "Name": record["Name"], "Options": record.get("Options") or {}, "Scope": record.get("Scope", "local")}


def list_volumes(engine: Any, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    from pyengine.images.verbs import labels_match

    filters = filters or {}
    for key in filters:
        if key not in LIST_FILTERS:
            raise UsageError(f"invalid filter '{key}'")
    users = volume_users(engine) if "dangling" in filters else {}
    out = []
    for record in volume_store(engine).list():
        if "name" in filters and not any(v in record["Name"] for v in filters["name"]):
            continue
        if "driver" in filters and record.get("Driver", "local") not in filters["driver"]:
            continue
        if "label" in filters and not labels_match(record.get("Labels") or {}, filters["label"]):
            continue
        if "dangling" in filters:
            value = filters["dangling"][-1].lower()
            if value not in ("true", "1", "false", "0"):
                raise UsageError(f"invalid filter 'dangling={filters['dangling'][-1]}'")
            if (record["Name"] not in users) != (value in ("true", "1")):
                continue
        out.append(view(record))
    return out


def create_volume(engine: Any, name: str | None = None, driver: str | None = None,
                  driver_opts: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    if driver not in (None, "", "local"):
        raise UsageError(f"volume driver {driver!r} is not available: only the local driver is")
    if driver_opts:
        raise UsageError(f"the local volume driver takes no options here (got {', '.join(sorted(driver_opts))})")
    return view(volume_store(engine).create(name or None, labels or {}))


def get_volume(engine: Any, name: str) -> dict[str, Any]:
    try:
        return view(volume_store(engine).inspect(name))
    except NotFound:
        raise NotFound(f"get {name}: no such volume") from None


def remove_volume(engine: Any, name: str, force: bool = False) -> None:
    """``DELETE /volumes/{name}``: a volume in use is refused (also with force, as dockerd);
    with force a missing volume is no error."""
    store = volume_store(engine)
    try:
        store.inspect(name)
    except NotFound:
        if force:
            return
        raise NotFound(f"get {name}: no such volume") from None
    users = volume_users(engine).get(name, [])
    if users:
        raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
    store.remove(name)


def _size(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def prune_volumes(engine: Any, filters: dict[str, list[str]] | None = None) -> tuple[list[str], int]:
    """``POST /volumes/prune``: unused anonymous volumes (every unused one with ``all=true``),
    as dockerd since API 1.42; (names, bytes reclaimed)."""
    from pyengine.images.verbs import labels_match

    filters = filters or {}
    for key in filters:
        if key not in ("label", "all"):
            raise UsageError(f"invalid filter '{key}'")
    every = any(v.lower() in ("true", "1") for v in filters.get("all", []))
    store = volume_store(engine)
    users = volume_users(engine)
    removed, reclaimed = [], 0
    for record in store.list():
        name = record["Name"]
        if name in users or (not every and not _ANONYMOUS.match(name)):
            continue
        if not labels_match(record.get("Labels") or {}, filters.get("label", [])):
            continue
        reclaimed += _size(record.get("Mountpoint", ""))
        store.remove(name)
        removed.append(name)
    return removed, reclaimed
