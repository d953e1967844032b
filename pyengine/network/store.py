"""The network store: one JSON file per network under <data-root>/networks/, and the lock that
makes every read-modify-write of it (IPAM included) safe across processes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyengine.errors import NotFound, UsageError
from pyengine.fsutil import flocked, write_json_atomic


@dataclass
class EndpointRecord:
    """A container's attachment as the store keeps it.

    :param state: ``joining`` while the driver works (the address is reserved), then ``joined``
    :param endpoint: the driver's Endpoint as a dict (what ``leave`` needs)
    :param hosts_path: the container's /etc/hosts on the host, rewritten when peers change
    """

    container_id: str
    name: str
    aliases: list[str] = field(default_factory=list)
    address: str | None = None
    ports: list[dict[str, Any]] = field(default_factory=list)
    state: str = "joining"
    endpoint: dict[str, Any] = field(default_factory=dict)
    hosts_path: str | None = None


@dataclass
class NetworkRecord:
    """A network: what the user asked for, the driver's state and its endpoints."""

    id: str
    name: str
    driver: str
    created: str
    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None
    internal: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NetworkRecord:
        endpoints = {cid: EndpointRecord(**ep) for cid, ep in raw.pop("endpoints", {}).items()}
        return cls(**raw, endpoints=endpoints)

    def used_addresses(self) -> list[str]:
        used = [e.address.split("/")[0] for e in self.endpoints.values() if e.address]
        if self.gateway:
            used.append(self.gateway)
        return used


class NetworkStore:
    """Networks on disk. Callers hold :meth:`locked` around every read-modify-write."""

    def __init__(self, data_root: Path) -> None:
        self.root = Path(data_root) / "networks"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock over the whole store (flock: released if the process dies)."""
        with flocked(self.root / ".lock"):
            yield

    def all(self) -> list[NetworkRecord]:
        if not self.root.is_dir():
            return []
        records = []
        for path in sorted(self.root.glob("*.json")):
            with contextlib.suppress(FileNotFoundError):
                records.append(NetworkRecord.from_dict(json.loads(path.read_text())))
        return sorted(records, key=lambda r: r.name)

    def find(self, name_or_id: str) -> NetworkRecord | None:
        """By exact name, exact id, or unique id prefix."""
        records = self.all()
        for record in records:
            if name_or_id in (record.name, record.id):
                return record
        matches = [r for r in records if r.id.startswith(name_or_id)]
        if len(matches) > 1:
            raise UsageError(f"network id prefix {name_or_id!r} is ambiguous")
        return matches[0] if matches else None

    def get(self, name_or_id: str) -> NetworkRecord:
        record = self.find(name_or_id)
        if record is None:
            raise NotFound(f"network {name_or_id!r} not found")
        return record

    def save(self, record: NetworkRecord) -> None:
        write_json_atomic(self.root / f"{record.id}.json", record.as_dict(), indent=2, sort_keys=True)

    def delete(self, record: NetworkRecord) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / f"{record.id}.json").unlink()
