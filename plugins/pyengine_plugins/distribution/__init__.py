"""The ``distribution`` registry plugin: the OCI distribution HTTP API (Docker Hub, the CNCF
distribution registry, ...). Registers the ``[registries."host:port"]`` config tables
(ca-file, insecure, mirrors); the client itself is ``pyengine.registry``."""

from __future__ import annotations

from pyengine.drivers import DriverContext, DriverSpec, Register
from pyengine.plugin import hookimpl
from pyengine.registry.options import RegistryOptions


class DistributionRegistry:
    """The Registry protocol over ``pyengine.registry.client`` (for callers outside the CLI)."""

    name = "distribution"

    def __init__(self, ctx: DriverContext) -> None:
        self.by_host: dict[str, RegistryOptions] = dict(ctx.options or {})

    def handles(self, reference: str) -> bool:
        return not reference.startswith(("oci:", "docker-archive:", "oci-archive:"))

    def _client(self, reference: str):  # noqa: ANN202
        from pyengine.images.reference import parse_reference
        from pyengine.registry.client import RegistryClient

        ref = parse_reference(reference)
        return ref, RegistryClient(ref.domain, self.by_host.get(ref.domain))

    def get_manifest(self, reference: str, accept: list[str]) -> tuple[str, bytes]:
        ref, client = self._client(reference)
        media_type, data, _ = client.get_manifest(ref.path, ref.digest or ref.tag or "latest", accept)
        return media_type, data

    def get_blob(self, reference: str, digest: str, offset: int = 0):  # noqa: ANN201
        ref, client = self._client(reference)
        resp, _ = client.blob_stream(ref.path, digest, offset)
        yield from resp.iter_chunks()

    def put_blob(self, reference: str, digest: str, size: int, data) -> None:  # noqa: ANN001
        import contextlib

        ref, client = self._client(reference)
        if not client.has_blob(ref.path, digest):
            client.upload_blob(ref.path, digest, size, lambda: contextlib.nullcontext(data))

    def put_manifest(self, reference: str, media_type: str, data: bytes) -> str:
        import hashlib

        ref, client = self._client(reference)
        client.put_manifest(ref.path, ref.tag or "latest", media_type, data)
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def status(self) -> list[tuple[str, str]]:
        return [(host, "insecure" if o.insecure else ("ca-file " + o.ca_file if o.ca_file else "tls"))
                for host, o in sorted(self.by_host.items())]


@hookimpl
def pyengine_register_registries(register: Register) -> None:
    register(DriverSpec(name="distribution", factory=DistributionRegistry, options=RegistryOptions,
                        config_section="registries", config_keyed=True,
                        description="OCI distribution HTTP API registries (Docker Hub, distribution, ...)"))
