"""Pull and push between a distribution registry and the image store.

Owns manifest/platform selection, the parallel blob downloads (each verified while
streaming, resumed with Range from ``<data-root>/blobs/incoming/<hex>.partial`` after a cut,
committed to the store only once whole and verified), and the push sequence (HEAD, mount,
upload, manifest). Progress goes to a callback, one event per line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform as _platform
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyengine.errors import InvalidArchive, NotFound, UsageError
from pyengine.fsutil import make_dirs
from pyengine.images import media
from pyengine.images.reference import Reference
from pyengine.log import get_logger
from pyengine.registry.client import RegistryClient, RegistryError, TransferInterrupted

log = get_logger(__name__)

SCHEMA1 = {"application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws"}
ACCEPT = [media.OCI_INDEX, media.DOCKER_LIST, media.OCI_MANIFEST, media.DOCKER_MANIFEST]
PARALLEL = 4
#: blobs above this size are pushed in PATCH chunks of this size
PUSH_CHUNK = 64 << 20

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def host_platform() -> Platform:
    variant = "v8" if media.host_architecture() == "arm64" else None
    return Platform(_platform.system().lower() or "linux", media.host_architecture(), variant)


def parse_platform(text: str | None) -> Platform:
    if not text:
        return host_platform()
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"invalid platform {text!r}: expected os/arch[/variant]")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def select_platform(index: dict[str, Any], want: Platform) -> dict[str, Any]:
    best = None
    for desc in index.get("manifests") or []:
        p = desc.get("platform") or {}
        if p.get("os") != want.os or p.get("architecture") != want.architecture:
            continue
        if want.variant and p.get("variant") not in (want.variant, None):
            continue
        if p.get("variant") == want.variant:
            return desc
        best = best or desc
    if best is None:
        have = ", ".join("/".join(x for x in ((d.get("platform") or {}).get("os"),
                                               (d.get("platform") or {}).get("architecture"),
                                               (d.get("platform") or {}).get("variant")) if x)
                         for d in index.get("manifests") or [])
        raise NotFound(f"no image for platform {want} in the index (it has: {have or 'none'})")
    return best


def _digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_manifest(data: bytes, media_type: str, where: str) -> tuple[str, dict[str, Any]]:
    if media_type in SCHEMA1:
        raise RegistryError(f"{where} is a Docker schema 1 manifest, which pyengine does not support; "
                            "push it again with a current client")
    try:
        doc = json.loads(data)
    except ValueError:
        raise InvalidArchive(f"{where}: the manifest is not JSON") from None
    if doc.get("schemaVersion") == 1:
        raise RegistryError(f"{where} is a Docker schema 1 manifest, which pyengine does not support; "
                            "push it again with a current client")
    media_type = doc.get("mediaType") or (media_type if media_type in media.MANIFEST_TYPES | media.INDEX_TYPES
                                          else media.guess_type(doc))
    return media_type, doc


@dataclass
class ResolvedManifest:
    """What a reference names in the registry: the top digest (index or manifest), and the
    platform's manifest with its media type and parsed document."""

    top_digest: str
    data: bytes
    media_type: str
    document: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.document["config"]

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.document.get("layers") or [])


class Puller:
    """Pulls one reference into an image store.

    :param progress: ``(blob digest, event)`` per layer event, one line each
    :param on_bytes: ``(blob digest, bytes so far, total or None)`` while a blob downloads
    :param on_layer: ``(layer digest, "Extracting" | "Pull complete")`` around each layer applied
    """

    def __init__(self, client: RegistryClient, store: Any, progress: Progress | None = None,
                 parallel: int = PARALLEL, on_bytes: Callable[[str, int, int | None], None] | None = None,
                 on_layer: Callable[[str, str], None] | None = None) -> None:
        self.client = client
        self.store = store
        self.progress = progress or (lambda _id, _event: None)
        self.on_bytes = on_bytes
        self.on_layer = on_layer
        self.parallel = parallel
        self.incoming = Path(store.data_root) / "blobs" / "incoming"
        self.bytes_downloaded = 0
        self._count_lock = threading.Lock()

    def pull(self, ref: Reference, want: Platform) -> tuple[str, Any]:
        """Pull ``ref``; return (digest pulled, committed Image)."""
        digest, image = self.complete(ref, self.resolve(ref, want))
        self.store.record_event("pull", ref.familiar(), ref.familiar_repository)
        return digest, image

    def resolve(self, ref: Reference, want: Platform) -> ResolvedManifest:
        """Fetch the manifest ``ref`` names (through an index to ``want``'s), checking digests."""
        repo = ref.path
        where = str(ref)
        media_type, data, header_digest = self.client.get_manifest(repo, ref.digest or ref.tag or "latest", ACCEPT)
        top_digest = _digest_of(data)
        if ref.digest and top_digest != ref.digest:
            raise InvalidArchive(f"{where}: registry sent a manifest whose digest is {top_digest}")
        media_type, doc = _check_manifest(data, media_type, where)
        if media_type in media.INDEX_TYPES:
            desc = select_platform(doc, want)
            media_type, data, _ = self.client.get_manifest(repo, desc["digest"], ACCEPT)
            if _digest_of(data) != desc["digest"]:
                raise InvalidArchive(f"{where}: manifest {desc['digest']} is corrupt")
            media_type, doc = _check_manifest(data, desc.get("mediaType") or media_type, where)
        if media_type not in media.MANIFEST_TYPES:
            raise InvalidArchive(f"{where}: unsupported manifest type {media_type!r}")
        return ResolvedManifest(top_digest, data, media_type, doc)

    def complete(self, ref: Reference, resolved: ResolvedManifest) -> tuple[str, Any]:
        """Download what ``resolve`` found and commit it as an image tagged ``ref``.

        The commit starts as soon as the config and the first layer are in: a layer is unpacked
        while the ones after it still download. It takes the store's lock only then, so a pull
        still downloading holds up no other command."""
        repo = ref.path
        try:
            todo = self._to_fetch([resolved.config, *resolved.layers])
            with ThreadPoolExecutor(max_workers=max(1, min(self.parallel, len(todo)))) as pool:
                futures = {desc["digest"]: pool.submit(self._fetch, repo, desc) for desc in todo}

                def arriving(digest: str) -> None:
                    if digest in futures:
                        futures[digest].result()

                try:
                    arriving(resolved.config["digest"])
                    if resolved.layers:
                        arriving(resolved.layers[0]["digest"])
                    image = self.store.commit_image([str(ref)] if ref.tag else None, resolved.data,
                                                    resolved.media_type, on_layer=self.on_layer, arriving=arriving)
                except BaseException:
                    for future in futures.values():
                        future.cancel()  # the ones not started; the others finish (or fail) first
                    raise
        except BaseException:
            self.store.discard_new_blobs()
            with contextlib.suppress(OSError):
                self.incoming.rmdir()  # only when empty: partials stay for the retry
            raise
        with contextlib.suppress(OSError):
            self.incoming.rmdir()
        return resolved.top_digest, image

    def _to_fetch(self, blobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        todo: list[dict[str, Any]] = []
        for desc in blobs:
            if self.store.has_blob(desc["digest"]):
                self.progress(desc["digest"], "Already exists")
            elif desc["digest"] not in {d["digest"] for d in todo}:
                todo.append(desc)
        return todo

    def _fetch(self, repo: str, desc: dict[str, Any]) -> None:
        digest, size = desc["digest"], desc.get("size")
        self.store.blob_path(digest)  # rejects malformed digests before they name a file
        make_dirs(self.incoming)
        partial = self.incoming / f"{digest.split(':', 1)[1]}.partial"
        hasher = hashlib.sha256()
        offset = 0
        if partial.exists():
            # Re-hash what an earlier, interrupted pull kept, then ask only for the rest.
            with open(partial, "rb") as f:
                while chunk := f.read(1 << 20):
                    hasher.update(chunk)
                    offset += len(chunk)
            if size is not None and offset > size:
                partial.unlink()
                hasher, offset = hashlib.sha256(), 0
        started = time.monotonic()
        self.progress(digest, f"Resuming at {offset} bytes" if offset else "Downloading")
        resp, honoured = self.client.blob_stream(repo, digest, offset)
        if honoured != offset:
            hasher, offset = hashlib.sha256(), 0
        got = 0
        with open(partial, "r+b" if honoured else "wb") as out:
            out.seek(offset)
            out.truncate()
            try:
                for chunk in resp.iter_chunks():
                    hasher.update(chunk)
                    out.write(chunk)
                    got += len(chunk)
                    if self.on_bytes is not None:
                        self.on_bytes(digest, offset + got, size)
            except TransferInterrupted:
                self.progress(digest, f"Interrupted at {offset + got} bytes")
                raise TransferInterrupted(f"download of blob {digest} stopped at {offset + got} of {size} bytes; "
                                          "pull again to resume") from None
            finally:
                out.flush()
                os.fsync(out.fileno())
                with self._count_lock:
                    self.bytes_downloaded += got
        total = offset + got
        if size is not None and total < size:
            self.progress(digest, f"Interrupted at {total} of {size} bytes")
            raise TransferInterrupted(f"download of blob {digest} stopped at {total} of {size} bytes; "
                                      "pull again to resume")
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest or (size is not None and total != size):
            partial.unlink()
            raise InvalidArchive(f"blob {digest} from {self.client.host}/{repo} is corrupt: its content hashes "
                                 f"to {actual}; nothing was stored")
        self.store.adopt_blob(digest, partial)  # hashed and fsynced above: moved, not copied
        ms = int((time.monotonic() - started) * 1000)
        log.info("blob.pulled", digest=digest, bytes=got, resumed_at=offset, ms=ms)
        self.progress(digest, "Pull complete")


class Pusher:
    """Pushes one stored image to a repository."""

    def __init__(self, client: RegistryClient, store: Any, progress: Progress | None = None,
                 chunk_size: int | None = PUSH_CHUNK, parallel: int = PARALLEL,
                 on_bytes: Callable[[str, int, int | None], None] | None = None) -> None:
        """:param on_bytes: ``(blob digest, bytes sent so far, total)`` while a blob uploads"""
        self.client = client
        self.store = store
        self.progress = progress or (lambda _id, _event: None)
        self.chunk_size = chunk_size
        self.parallel = parallel
        self.on_bytes = on_bytes

    def push(self, local_ref: str, ref: Reference) -> str:
        image = self.store.resolve_image(local_ref)
        manifest_digest = image.manifest_digest
        data = self.store.read_blob(manifest_digest)
        doc = json.loads(data)
        media_type = doc.get("mediaType") or media.guess_type(doc)
        blobs = [doc["config"], *(doc.get("layers") or [])]
        sources = self._mount_sources(ref)
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            for f in [pool.submit(self._push_blob, ref.path, d, sources) for d in blobs]:
                f.result()
        tag = ref.tag or ref.digest or "latest"
        self.client.put_manifest(ref.path, tag, media_type, data)
        log.info("image.pushed", ref=str(ref), digest=manifest_digest)
        self.store.record_event("push", ref.familiar(), ref.familiar_repository)
        return manifest_digest

    def _mount_sources(self, ref: Reference) -> list[str]:
        """Other repositories of the same registry this store has images from: mount candidates."""
        from pyengine.images.reference import parse_reference

        out = []
        for name in self.store.tags():
            with contextlib.suppress(Exception):
                other = parse_reference(name)
                if other.domain == ref.domain and other.path != ref.path and other.path not in out:
                    out.append(other.path)
        return out

    def _push_blob(self, repo: str, desc: dict[str, Any], sources: list[str]) -> None:
        digest, size = desc["digest"], desc["size"]
        if self.client.has_blob(repo, digest):
            self.progress(digest, "Layer already exists")
            return
        for source in sources[:3]:
            if self.client.mount_blob(repo, digest, source):
                self.progress(digest, f"Mounted from {source}")
                return
        started = time.monotonic()
        self.progress(digest, "Pushing")
        path = self.store.blob_path(digest)
        if self.on_bytes is None:
            self.client.upload_blob(repo, digest, size, lambda: open(path, "rb"), self.chunk_size)
        else:
            report = self.on_bytes
            self.client.upload_blob(repo, digest, size,
                                    lambda: _CountingFile(open(path, "rb"), lambda n: report(digest, n, size)),
                                    self.chunk_size)
        log.info("blob.pushed", digest=digest, bytes=size, ms=int((time.monotonic() - started) * 1000))
        self.progress(digest, "Pushed")


class _CountingFile:
    """A file for an upload body that reports how far it has been read (rewound on a retry)."""

    def __init__(self, f: Any, report: Callable[[int], None]) -> None:
        self.f = f
        self.report = report
        self.position = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.position += len(data)
        if data:
            self.report(self.position)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = self.f.seek(offset, whence)
        return self.position

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
