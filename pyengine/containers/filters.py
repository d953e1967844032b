"""Which containers ``ps`` and ``GET /containers/json`` list: Docker's filters (id, name, label,
status, exited, ancestor, before, since, volume, network, health), ``--all`` and ``--last``.

Values of one key are alternatives (any may match); different keys must all match, as in
dockerd. Reads the container records, the image store (ancestor) and nothing else.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pyengine.errors import NotFound, UsageError

if TYPE_CHECKING:
    from pyengine.containers.engine import Containers
    from pyengine.containers.store import ContainerRecord

FILTER_KEYS = ("id", "name", "label", "status", "exited", "ancestor", "before", "since", "volume", "network",
               "health", "is-task", "publish", "expose")
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
HEALTH = ("starting", "healthy", "unhealthy", "none")


def parse_cli_filters(values: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    """``-f KEY=VALUE`` flags as the API's filters: ``{"KEY": ["VALUE", ...]}``."""
    out: dict[str, list[str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"bad format of filter (expected name=value): {item}")
        out.setdefault(key, []).append(value)
    return out


def check_filters(filters: dict[str, list[str]]) -> None:
    """Refuse unknown keys and bad values before anything is read, in dockerd's words."""
    for key, values in filters.items():
        if key not in FILTER_KEYS:
            raise UsageError(f"invalid filter '{key}'")
        for value in values:
            if key == "status" and value not in STATUSES:
                raise UsageError(f"invalid filter 'status={value}'")
            if key == "health" and value not in HEALTH:
                raise UsageError(f"unrecognized filter value for health: {value}")
            if key == "exited" and not value.lstrip("-").isdigit():
                raise UsageError(f"invalid filter 'exited={value}'")


def select(containers: Containers, filters: dict[str, list[str]] | None = None, all_: bool = False,
           limit: int | None = None) -> list[ContainerRecord]:
    """The containers to list, newest first: running ones unless ``all_`` (or a status filter,
    ``before``/``since`` or a ``limit`` asks for stopped ones too, as dockerd does). The records
    are for reading only: they may be shared with other listings (``ContainerStore.load``)."""
    filters = {k: v for k, v in (filters or {}).items() if v}
    check_filters(filters)
    limit = limit if limit and limit > 0 else None
    show_all = all_ or bool(limit) or any(k in filters for k in ("status", "exited", "before", "since"))
    records = containers.list(all_=True, shared=True)
    context = _Context(containers, records, filters)
    out = []
    for record in records:
        if context.before is not None and record.created >= context.before:
            continue
        if context.since is not None and record.created <= context.since:
            continue
        if not show_all and not record.state.running:
            continue
        if not matches(record, filters, context):
            continue
        out.append(record)
        if limit and len(out) >= limit:
            break
    return out


class _Context:
    """What filters resolve once per listing: before/since times and ancestor image IDs."""

    def __init__(self, containers: Containers, records: list[ContainerRecord], filters: dict[str, list[str]]) -> None:
        self.before = self._created(records, filters.get("before"))
        self.since = self._created(records, filters.get("since"))
        self.ancestors: set[str] = set()
        for value in filters.get("ancestor") or []:
            self.ancestors.add(value)
            try:
                self.ancestors.add(containers.engine.images.resolve_image(value).id)
            except (NotFound, UsageError):
                pass
            except Exception:  # noqa: BLE001 - a broken image record only narrows the match
                pass

    @staticmethod
    def _created(records: list[ContainerRecord], values: list[str] | None) -> str | None:
        if not values:
            return None
        ref = values[-1]
        for record in records:
            if record.id == ref or record.name == ref.lstrip("/"):
                return record.created
        found = [r for r in records if r.id.startswith(ref)]
        if len(found) == 1:
            return found[0].created
        raise NotFound(f"No such container: {ref}")


def matches(record: ContainerRecord, filters: dict[str, list[str]], context: Any = None) -> bool:
    """True when ``record`` passes every filter key: any value of a key may match, except
    ``label``, whose every value must (dockerd's MatchKVList)."""
    for key, values in filters.items():
        if key in ("before", "since"):
            continue
        match = all if key == "label" else any
        if not match(_match_one(record, key, value, context) for value in values):
            return False
    return True


def _match_one(record: ContainerRecord, key: str, value: str, context: Any) -> bool:
    from pyengine.containers.volumes import volumes_used

    if key == "id":
        return record.id.startswith(value)
    if key == "name":
        name = "/" + record.name
        try:
            return re.search(value, name) is not None
        except re.error:
            return value in name
    if key == "label":
        k, sep, v = value.partition("=")
        labels = record.config.get("Labels") or {}
        return k in labels and (not sep or labels[k] == v)
    if key == "status":
        return record.state.status == value
    if key == "exited":
        return record.state.status == "exited" and bool(record.state.started_at) and \
            record.state.exit_code == int(value)
    if key == "ancestor":
        ancestors = context.ancestors if context is not None else {value}
        return record.image in ancestors or record.image_id in ancestors or \
            record.image_id.removeprefix("sha256:") in {a.removeprefix("sha256:") for a in ancestors}
    if key == "volume":
        if value in volumes_used(record.host_config):
            return True
        return any(len(b.split(":")) > 1 and b.split(":")[1] == value for b in record.host_config.get("Binds") or [])
    if key == "network":
        mode = record.host_config.get("NetworkMode") or "none"
        names = set(record.networks) | {mode}
        return value in names or any(n.startswith(value) for n in record.networks)
    if key == "health":
        from pyengine.containers.health import filter_value

        return filter_value(record.state.health) == value
    if key == "is-task":
        return value in ("false", "0")
    if key in ("publish", "expose"):
        port = value if "/" in value else f"{value}/tcp"
        if key == "expose":
            return port in (record.config.get("ExposedPorts") or {})
        return port in (record.host_config.get("PortBindings") or {})
    raise UsageError(f"invalid filter '{key}'")
