"""The network store: one JSON file per network under <data-root>/networks/, and the lock that
makes every read-modify-write of it (IPAM included) safe across processes."""

from __future__ import annotations

import contextlib
import contextvars
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


#: While ``read_snapshot`` is active in this thread (or task): data root -> the records read.
_snapshot: contextvars.ContextVar[dict[Path, list[NetworkRecord]] | None] = \
    contextvars.ContextVar("pyengine_network_snapshot", default=None)


@contextlib.contextmanager
def read_snapshot() -> Iterator[None]:
    """Within it, ``NetworkStore.all`` reads the store once (per data root) and hands the same
    records out again: for a read-only listing that asks once per container (``ps`` of a
    thousand containers on fifty networks read 100,000 network files). Writes are safe inside
    it (``NetworkStore.locked`` reads the disk); the records it hands out are shared: read only."""
    token = _snapshot.set({} if _snapshot.get() is None else _snapshot.get())
    try:
        yield
    finally:
        _snapshot.reset(token)


class NetworkStore:
    """Networks on disk. Callers hold :meth:`locked` around every read-modify-write."""

    def __init__(self, data_root: Path) -> None:
        self.root = Path(data_root) / "networks"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock over the whole store (flock: released if the process dies).
        Under it every read goes to the disk, ``read_snapshot`` or not, and a snapshot reads
        the store afresh after it (a container record reconciled during a listing may have
        changed its networks)."""
        snapshot = _snapshot.get()
        token = _snapshot.set(None)
        try:
            with flocked(self.root / ".lock"):
                yield
        finally:
            _snapshot.reset(token)
            if snapshot is not None:
                snapshot.pop(self.root, None)

    def all(self) -> list[NetworkRecord]:
        snapshot = _snapshot.get()
        if snapshot is not None:
            if self.root not in snapshot:
                snapshot[self.root] = self._read_all()
            return list(snapshot[self.root])
        return self._read_all()

    def _read_all(self) -> list[NetworkRecord]:
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
