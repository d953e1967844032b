"""Image-writing machinery shared by the builder and ``commit``: layer tars to gzip'd blobs,
image configs with their history, and manifests committed through the image store.

Owns turning a storage layer's diff (or any layer tar) into a blob of the image store (the
diff ID is the sha256 of the uncompressed tar, the blob digest that of the gzip stream), the
image config's history entries, ``SOURCE_DATE_EPOCH`` clamping, and writing a Docker schema 2
or OCI manifest that ``ImageStore.commit_image`` turns into an image. Calls the image store and
the storage driver protocol only.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Protocol

from pyengine.errors import InvalidArchive
from pyengine.images import media
from pyengine.log import get_logger

log = get_logger("pyengine.build.layers")

#: Paths the runtime creates in a container's root as mount points for files of its own (bind
#: mounts of hostname, hosts and resolv.conf; the kernel filesystems). They belong to the
#: container, not to its image, so a diff leaves them out when it only *added* them, as
#: Docker's init layer does.
MOUNT_POINTS = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/proc", "/sys", "/dev")

GZIP_LEVEL = 6
CHUNK = 1 << 20


class Readable(Protocol):
    """A layer member's content: the tar writer only reads it (a file, or one opened lazily)."""

    def read(self, size: int = -1, /) -> bytes: ...


#: A member of a layer being written: its header and, for a regular file, its content.
Member = tuple[tarfile.TarInfo, Readable | None]


def now_iso(epoch: int | None = None) -> str:
    """RFC 3339 time with nanoseconds as Docker writes it; ``epoch`` (SOURCE_DATE_EPOCH) wins."""
    if epoch is not None:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


def source_date_epoch(environ: dict[str, str] | None = None, build_args: dict[str, str] | None = None) -> int | None:
    """SOURCE_DATE_EPOCH from the build args (as BuildKit takes it) or the environment."""
    import os

    for source in (build_args or {}, environ if environ is not None else os.environ):
        value = source.get("SOURCE_DATE_EPOCH")
        if value:
            try:
                return int(value)
            except ValueError:
                from pyengine.errors import UsageError

                raise UsageError(f"invalid SOURCE_DATE_EPOCH {value!r}: a number of seconds is needed") from None
    return None


# -- layer blobs -------------------------------------------------------------------------------
@dataclass
class LayerBlob:
    """A layer written to the blob store: what a manifest and an image config need of it."""

    digest: str       # of the gzip'd blob
    diff_id: str      # of the uncompressed tar
    size: int         # bytes of the blob
    media_type: str = media.DOCKER_LAYER
    entries: int = 0  # tar members, so a caller can tell an empty layer

    def descriptor(self, oci: bool) -> dict[str, Any]:
        return {"mediaType": media.OCI_LAYER_GZIP if oci else media.DOCKER_LAYER,
                "digest": self.digest, "size": self.size}


class _GzipSink:
    """A write-only stream that hashes what it is given (the diff ID) and gzips it into a spool
    file, hashing the compressed bytes too (the blob digest)."""

    def __init__(self, level: int = GZIP_LEVEL) -> None:
        # wbits 31: a gzip wrapper with mtime 0 and no name, so the same tar gives the same blob.
        self.compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        self.raw = hashlib.sha256()
        self.packed = hashlib.sha256()
        self.out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=16 << 20)  # type: ignore[assignment]
        self.size = 0

    def write(self, data: bytes) -> int:
        self.raw.update(data)
        self._emit(self.compressor.compress(data))
        return len(data)

    def _emit(self, packed: bytes) -> None:
        if packed:
            self.packed.update(packed)
            self.out.write(packed)
            self.size += len(packed)

    def finish(self) -> tuple[str, str]:
        self._emit(self.compressor.flush())
        self.out.seek(0)
        return "sha256:" + self.packed.hexdigest(), "sha256:" + self.raw.hexdigest()


def _excluded(name: str, exclude: set[str]) -> bool:
    path = "/" + name.strip("/")
    return any(path == e or path.startswith(e.rstrip("/") + "/") for e in exclude)


def write_layer(store: Any, tar_stream: IO[bytes], *, exclude: Iterable[str] = (), epoch: int | None = None,
                rewrite: bool = True) -> LayerBlob:
    """Write a layer tar into ``store`` as a gzip'd blob.

    :param exclude: absolute paths (with everything under them) left out of the layer
    :param epoch: SOURCE_DATE_EPOCH: entries newer than it get it as their mtime, as BuildKit's
        ``rewrite-timestamp`` does, so a rebuild writes the same bytes
    :param rewrite: False streams the tar as it is (it must already be what the layer should
        hold); True re-serializes it member by member, which ``exclude`` and ``epoch`` need
    """
    sink = _GzipSink()
    entries = 0
    excluded = set(exclude)
    if rewrite or excluded or epoch is not None:
        try:
            with tarfile.open(fileobj=tar_stream, mode="r|") as source, \
                    tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as target:  # type: ignore[call-overload]  # stub wants read/seek too; "w|" only writes
                for member in source:
                    if excluded and _excluded(member.name, excluded):
                        continue
                    if epoch is not None and member.mtime > epoch:
                        member.mtime = epoch
                        member.pax_headers = {k: v for k, v in member.pax_headers.items()
                                              if k not in ("mtime", "atime", "ctime")}
                    data = source.extractfile(member) if member.isreg() else None
                    target.addfile(member, data)
                    entries += 1
        except tarfile.TarError as exc:
            raise InvalidArchive(f"the layer is not a valid tar archive: {exc}") from None
    else:
        while chunk := tar_stream.read(CHUNK):
            sink.write(chunk)
        entries = -1  # not counted
    return _store_layer(store, sink, entries)


def _store_layer(store: Any, sink: _GzipSink, entries: int) -> LayerBlob:
    """Finish ``sink``, hand its blob to ``store`` and describe the layer (``entries`` -1: not counted)."""
    digest, diff_id = sink.finish()
    try:
        store.ingest_blob(digest, sink.out, sink.size)
    finally:
        sink.out.close()
    log.info("layer.written", digest=digest, diff_id=diff_id, size=sink.size, entries=entries)
    return LayerBlob(digest=digest, diff_id=diff_id, size=sink.size, entries=entries)


def write_tar_members(store: Any, members: Iterable[Member], *,
                      epoch: int | None = None) -> LayerBlob:
    """Write a layer made of ``(TarInfo, content)`` pairs (COPY and ADD build theirs so)."""
    sink = _GzipSink()
    entries = 0
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as target:  # type: ignore[call-overload]  # stub wants read/seek too; "w|" only writes
        for member, data in members:
            if epoch is not None and member.mtime > epoch:
                member.mtime = epoch
            target.addfile(member, data)
            entries += 1
    return _store_layer(store, sink, entries)


def mount_point_exclusions(changes: Iterable[tuple[str, str]], extra: Iterable[str] = ()) -> set[str]:
    """The runtime's mount points (and ``extra`` mount targets) that a diff only added: they
    are left out of the layer. A path the container changed or that the image already had
    (kind C) stays."""
    candidates = set(MOUNT_POINTS) | {"/" + p.strip("/") for p in extra if p.strip("/")}
    return {path for kind, path in changes if kind == "A" and path in candidates}


def layer_from_storage(store: Any, storage: Any, layer_id: str, parent: str | None, *,
                       extra_mount_points: Iterable[str] = (), epoch: int | None = None) -> tuple[LayerBlob, int]:
    """The layer of ``layer_id``'s changes against ``parent`` (a driver layer id or None),
    without the mount points the runtime made; returns it and the number of changed paths."""
    found = list(storage.changes(layer_id, parent))
    exclude = mount_point_exclusions(found, extra_mount_points)
    kept = [c for c in found if not _excluded(c[1], exclude)]
    stream = storage.diff(layer_id, parent)
    try:
        blob = write_layer(store, stream, exclude=exclude, epoch=epoch)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return blob, len(kept)


def visible_changes(storage: Any, layer_id: str, parent: str | None,
                    extra_mount_points: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``docker diff``: the driver's changes without the runtime's own mount points."""
    found = list(storage.changes(layer_id, parent))
    exclude = mount_point_exclusions(found, extra_mount_points)
    kept = [c for c in found if not _excluded(c[1], exclude)]
    # As Docker's archive.Changes: a directory with changes inside it is itself changed (C),
    # unless it was added or deleted.
    listed = {path for _, path in kept}
    parents: set[str] = set()
    for _, path in kept:
        parent = path.rsplit("/", 1)[0]
        while parent and parent not in listed and parent not in parents:
            parents.add(parent)
            parent = parent.rsplit("/", 1)[0]
    return sorted(kept + [("C", p) for p in parents], key=lambda c: c[1])


# -- configs and history -----------------------------------------------------------------------
def empty_image_config(epoch: int | None = None) -> dict[str, Any]:
    """The config a build from ``scratch`` starts with."""
    return {"architecture": media.host_architecture(), "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": []}, "history": []}


def derive_config(base: dict[str, Any] | None) -> dict[str, Any]:
    """A deep copy of a base image's config to build on (the build's own fields are set later)."""
    if not base:
        return empty_image_config()
    config = copy.deepcopy(base)
    config.setdefault("config", {})
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    config["rootfs"].setdefault("diff_ids", [])
    config.setdefault("history", [])
    config.pop("container", None)
    config.pop("container_config", None)
    return config


def add_history(config: dict[str, Any], created_by: str, *, empty_layer: bool, created: str,
                comment: str = "", author: str = "") -> None:
    """Append one history entry, as ``docker history`` shows it."""
    entry: dict[str, Any] = {"created": created, "created_by": created_by}
    if author:
        entry["author"] = author
    if comment:
        entry["comment"] = comment
    if empty_layer:
        entry["empty_layer"] = True
    config.setdefault("history", []).append(entry)


def add_layer(config: dict[str, Any], layer: LayerBlob) -> None:
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []}).setdefault("diff_ids", []).append(layer.diff_id)


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes a config or manifest is stored as: compact JSON with sorted keys, so equal
    documents give equal digests (image IDs)."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def config_digest(config: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical(config)).hexdigest()


def base_layer_descriptors(store: Any, image: Any) -> tuple[list[dict[str, Any]], bool]:
    """The layer descriptors of an image's manifest, and whether that manifest is OCI."""
    if image is None:
        return [], False
    manifest = json.loads(store.read_blob(image.manifest_digest))
    oci = (manifest.get("mediaType") or media.guess_type(manifest)) == media.OCI_MANIFEST
    return [dict(layer) for layer in manifest.get("layers") or []], oci


def commit_config(store: Any, config: dict[str, Any], layers: list[dict[str, Any]], *, oci: bool = False,
                  refs: list[str] | None = None) -> Any:
    """Store the config, write the manifest over ``layers`` (descriptors, bottom first, every
    blob in the store) and commit the image; returns the store's Image.

    The store finds the driver layers by chain ID, so layers a base image or an earlier step
    already has are reused, and a new one is applied once.
    """
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise InvalidArchive(f"the image config lists {len(diff_ids)} layers, the manifest {len(layers)}")
    config_bytes = canonical(config)
    digest = store.ingest_bytes(config_bytes)
    manifest = {"schemaVersion": 2,
                "mediaType": media.OCI_MANIFEST if oci else media.DOCKER_MANIFEST,
                "config": {"mediaType": media.OCI_CONFIG if oci else media.DOCKER_CONFIG,
                           "digest": digest, "size": len(config_bytes)},
                "layers": layers}
    return store.commit_image(refs or [], canonical(manifest), manifest["mediaType"])


def layer_tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A small tar in memory (tests and tiny layers)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()
