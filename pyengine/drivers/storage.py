"""The storage driver protocol, in moby's graphdriver vocabulary.

A layer is a directory tree identified by an id; each layer but the first has a parent and
shows the parent's tree plus its own changes. Image layers are read-only once their diff is
applied; a container's layer is read-write on top.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import IO, Protocol, runtime_checkable


@runtime_checkable
class StorageDriver(Protocol):
    """What every storage driver implements. Ids are opaque strings chosen by the core."""

    name: str
    # Optional: ``independent_layers = True`` says that filling a layer (``apply_diff``) does not
    # need its parent's tree to be complete, only to exist (overlay's diff directories). A pull
    # or load then applies its new layers concurrently, after creating them all in order. Leave
    # it out when ``create`` copies or snapshots the parent (vfs, devicemapper).

    def create(self, layer_id: str, parent: str | None) -> None:
        """Create a read-only layer ``layer_id`` whose tree starts as ``parent``'s tree."""

    def create_read_write(self, layer_id: str, parent: str | None, size: int | None = None) -> None:
        """Create a read-write (container) layer on ``parent``, at most ``size`` bytes if given."""

    def remove(self, layer_id: str) -> None:
        """Remove the layer; refuse with Conflict while it is mounted or has children."""

    def get(self, layer_id: str) -> Path:
        """Mount the layer (reference counted) and return the path of its merged tree."""

    def put(self, layer_id: str) -> None:
        """Release one reference taken by ``get``; unmount when the last one goes."""

    def exists(self, layer_id: str) -> bool:
        """True when the driver holds a layer with this id."""

    def status(self) -> list[tuple[str, str]]:
        """Key/value pairs that describe the driver's state, for ``info``."""

    def cleanup(self) -> None:
        """Release everything held by this process (mounts, devices) before the engine exits."""

    def diff(self, layer_id: str, parent: str | None) -> IO[bytes]:
        """A tar stream of the layer's changes against ``parent`` (whiteouts for deletions)."""

    def changes(self, layer_id: str, parent: str | None) -> Iterable[tuple[str, str]]:
        """The changed paths against ``parent`` as (kind, path), kind one of A, C, D."""

    def apply_diff(self, layer_id: str, parent: str | None, diff: IO[bytes]) -> int:
        """Apply an uncompressed layer tar to the layer; return the bytes applied."""

    def diff_size(self, layer_id: str, parent: str | None) -> int:
        """The size in bytes of the layer's changes against ``parent``."""
