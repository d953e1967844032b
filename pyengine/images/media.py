"""OCI and Docker media types, and the small facts about them the image code needs.

Owns the names of manifest, index, config and layer types and the host's platform; imports
nothing from the rest of the engine.
"""

from __future__ import annotations

import os
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def host_architecture() -> str:
    """The OCI name of this machine's architecture (``amd64``)."""
    machine = os.uname().machine
    return _ARCH.get(machine, machine)


def guess_type(document: dict[str, Any]) -> str:
    """The media type of a manifest or index that does not name its own (OCI allows that)."""
    if "manifests" in document:
        return OCI_INDEX
    if "config" in document and "layers" in document:
        return OCI_MANIFEST
    return "unknown"


def layer_type_for(head: bytes) -> str:
    """The OCI layer media type for a blob starting with ``head`` (magic numbers)."""
    if head.startswith(b"\x1f\x8b"):
        return OCI_LAYER_GZIP
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return OCI_LAYER_ZSTD
    return OCI_LAYER


def is_compressed(head: bytes) -> bool:
    return layer_type_for(head) != OCI_LAYER
