"""The registry protocol: a place images are pulled from and pushed to."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Protocol, runtime_checkable


@dataclass(frozen=True)
class Credentials:
    """A user name and secret for one registry (the secret may be an identity token)."""

    username: str
    secret: str


@runtime_checkable
class Registry(Protocol):
    """What every registry plugin implements; references are the plugin's own syntax
    (``docker.io/library/busybox:latest``, ``oci:DIR:TAG``, ``docker-archive:FILE``)."""

    name: str

    def handles(self, reference: str) -> bool:
        """True when this registry understands ``reference``."""

    def get_manifest(self, reference: str, accept: list[str]) -> tuple[str, bytes]:
        """Return (media type, raw bytes) of the manifest or index ``reference`` names."""

    def get_blob(self, reference: str, digest: str, offset: int = 0) -> Iterator[bytes]:
        """Stream the blob ``digest`` from byte ``offset`` on."""

    def put_blob(self, reference: str, digest: str, size: int, data: IO[bytes]) -> None:
        """Upload a blob unless the registry already has it."""

    def put_manifest(self, reference: str, media_type: str, data: bytes) -> str:
        """Upload a manifest under the reference's tag; return its digest."""

    def status(self) -> list[tuple[str, str]]:
        """Key/value pairs that describe the registry plugin's state, for ``info``."""
