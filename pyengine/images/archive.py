"""Image archives: ``load`` (docker-archive and OCI layout tarballs), ``save`` and ``import``.

Owns reading and writing the outer archives; every blob goes through
:meth:`ImageStore.ingest_blob` and every image through :meth:`ImageStore.commit_image`, so the
store's ordering and rollback rules hold here too. Outer archives are opened with ``tarsafe``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pyengine.errors import InvalidArchive, NotFound, UsageError
from pyengine.images import media
from pyengine.images.reference import parse_reference
from pyengine.images.store import HashingReader, Image, ImageStore, _load_json
from pyengine.log import get_logger

log = get_logger("pyengine.images.archive")

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _OuterArchive:
    """An archive opened with tarsafe: its members by normalised name, symlinks resolved inside it."""

    def __init__(self, path: str) -> None:
        from tarsafe import TarSafe, TarSafeException

        try:
            self.tar = TarSafe.open(path, "r:*")
            # tarsafe checks on extraction; this archive is only read member by member, so its
            # name, hard link and device checks run here against a root that exists nowhere.
            # Its symlink check resolves link targets against the root rather than the link's
            # own directory, which refuses skopeo's legitimate `<id>/layer.tar -> ../<hex>.tar`;
            # symlinks are instead resolved inside the member map by `member()`.
            root = "/nonexistent-pyengine-load-root"
            for info in self.tar:
                if (self.tar._is_traversal_attempt(info, root) or self.tar._is_unsafe_link(info, root)
                        or self.tar._is_device(info)):
                    raise TarSafeException(f"unsafe member {info.name!r}")
        except (tarfile.TarError, TarSafeException, EOFError) as exc:
            # tarfile's "r:*" says what each decompressor said, a line each: one reason is enough
            text = str(exc)
            reason = "not a tar archive, plain or compressed" if "could not be opened" in text \
                else text.splitlines()[0] if text else type(exc).__name__
            raise InvalidArchive(f"{path}: not a valid image archive ({reason})") from None
        except FileNotFoundError:
            raise NotFound(f"{path}: no such file") from None
        self.members = {posixpath.normpath(m.name): m for m in self.tar.getmembers()}

    def member(self, name: str, depth: int = 0) -> tarfile.TarInfo:
        info = self.members.get(posixpath.normpath(name))
        if info is None:
            raise InvalidArchive(f"the archive has no {name}")
        if info.issym() and depth < 16:
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), info.linkname))
            if target.startswith(("/", "../")) or target == "..":
                raise InvalidArchive(f"{name} in the archive links outside the archive")
            return self.member(target, depth + 1)
        if not info.isfile():
            raise InvalidArchive(f"{name} in the archive is not a regular file")
        return info

    def open(self, name: str) -> IO[bytes]:
        stream = self.tar.extractfile(self.member(name))
        assert stream is not None
        return stream

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def has(self, name: str) -> bool:
        return posixpath.normpath(name) in self.members

    def close(self) -> None:
        self.tar.close()


#: ``(layer digest, bytes read so far, total)`` while a layer is read out of an archive
OnBytes = Callable[[str, int, int | None], None]


def load_archive(store: ImageStore, path: str, on_bytes: OnBytes | None = None) -> list[tuple[str, Image]]:
    """Load every image of a docker-archive or OCI layout tarball; returns (name or "", image).

    :param on_bytes: called as each layer is read into the store (``load``'s progress); a
        docker-archive's layer is named by its diff ID, an OCI layout's by its blob digest
    """
    started = time.monotonic()
    archive = _OuterArchive(path)
    try:
        if archive.has("index.json"):
            loaded = _load_oci(store, archive, on_bytes)
        elif archive.has("manifest.json"):
            loaded = _load_docker(store, archive, on_bytes)
        else:
            raise InvalidArchive(f"{path}: neither a docker-archive (manifest.json) nor an OCI layout (index.json)")
    except BaseException:
        store.discard_new_blobs()
        raise
    finally:
        archive.close()
    log.info("archive.loaded", path=path, images=len(loaded), ms=round((time.monotonic() - started) * 1000))
    for name, image in loaded:
        store.record_event("load", image.id, name or image.id)
    return loaded


def _docker_repo_tags(archive: _OuterArchive) -> dict[str, list[str]]:
    """config digest -> RepoTags, from a manifest.json beside an OCI layout (Docker 25 save)."""
    if not archive.has("manifest.json"):
        return {}
    out: dict[str, list[str]] = {}
    for entry in _load_json_list(archive.read("manifest.json")):
        hexpart = posixpath.basename(entry.get("Config", "")).removesuffix(".json")
        out["sha256:" + hexpart] = entry.get("RepoTags") or []
    return out


def _load_json_list(data: bytes) -> list[dict[str, Any]]:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise InvalidArchive(f"manifest.json is not valid JSON: {exc}") from None
    if not isinstance(document, list):
        raise InvalidArchive("manifest.json is not a list")
    return document


class _ReportingReader:
    """A layer member's stream that reports the bytes read through it so far to ``on_bytes``."""

    def __init__(self, stream: IO[bytes], on_bytes: OnBytes, layer_id: str, total: int) -> None:
        self.stream, self.on_bytes, self.layer_id, self.total, self.done = stream, on_bytes, layer_id, total, 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.done += len(data)
        self.on_bytes(self.layer_id, self.done, self.total)
        return data


def _ingest_member(store: ImageStore, archive: _OuterArchive, digest: str, on_bytes: OnBytes | None = None) -> None:
    if not digest.startswith("sha256:"):
        raise InvalidArchive(f"unsupported digest {digest!r}")
    if store.has_blob(digest):
        return
    name = f"blobs/sha256/{digest[len('sha256:'):]}"
    with archive.open(name) as stream:
        if on_bytes is None:
            store.ingest_blob(digest, stream)
            return
        reader = _ReportingReader(stream, on_bytes, digest, archive.member(name).size)
        store.ingest_blob(digest, reader)  # type: ignore[arg-type]  # read() is all it uses


def _load_oci(store: ImageStore, archive: _OuterArchive, on_bytes: OnBytes | None = None) -> list[tuple[str, Image]]:
    index = _load_json(archive.read("index.json"), "index.json")
    repo_tags = _docker_repo_tags(archive)
    loaded: list[tuple[str, Image]] = []
    for descriptor in index.get("manifests") or []:
        digest = descriptor["digest"]
        _ingest_member(store, archive, digest)
        top_bytes = store.read_blob(digest)
        document = _load_json(top_bytes, "manifest")
        media_type = descriptor.get("mediaType") or document.get("mediaType") or media.guess_type(document)
        manifest = document
        while media_type in media.INDEX_TYPES:
            chosen = store._select_manifest(manifest)
            _ingest_member(store, archive, chosen["digest"])
            manifest = _load_json(store.read_blob(chosen["digest"]), "manifest")
            media_type = chosen.get("mediaType") or manifest.get("mediaType") or media.guess_type(manifest)
        _ingest_member(store, archive, manifest["config"]["digest"])
        for layer in manifest.get("layers") or []:
            _ingest_member(store, archive, layer["digest"], on_bytes)
        annotations = descriptor.get("annotations") or {}
        names = []
        full = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME, "")
        if full and ("/" in full or ":" in full):
            names.append(full)
        names.extend(repo_tags.get(manifest["config"]["digest"], []))
        refs = sorted({str(parse_reference(n)) for n in names})
        image = store.commit_image(refs, top_bytes, descriptor.get("mediaType"))
        loaded.extend((r, image) for r in refs) if refs else loaded.append(("", image))
    return loaded


def _diff_ids(config_bytes: bytes) -> list[str]:
    """The layers' names for progress; a config too damaged to say is refused later, by commit."""
    try:
        ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        return []
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def _load_docker(store: ImageStore, archive: _OuterArchive, on_bytes: OnBytes | None = None) -> list[tuple[str, Image]]:
    loaded: list[tuple[str, Image]] = []
    for entry in _load_json_list(archive.read("manifest.json")):
        config_bytes = archive.read(entry["Config"])
        config_digest = store.ingest_bytes(config_bytes)
        expected_hex = posixpath.basename(entry["Config"]).removesuffix(".json")
        if len(expected_hex) == 64 and "sha256:" + expected_hex != config_digest:
            raise InvalidArchive(f"image config {entry['Config']} is corrupt: its content hashes to {config_digest}")
        layers = []
        diff_ids = _diff_ids(config_bytes) if on_bytes is not None else []
        for number, name in enumerate(entry.get("Layers") or []):
            with archive.open(name) as stream:
                head = stream.read(4)
                stream.seek(0)
                reader: IO[bytes] | _ReportingReader = stream
                if on_bytes is not None:
                    layer_id = diff_ids[number] if number < len(diff_ids) else name
                    reader = _ReportingReader(stream, on_bytes, layer_id, archive.member(name).size)
                path = store.ingest_blob(None, reader)  # type: ignore[arg-type]  # read() is all it uses
            layers.append({"mediaType": media.layer_type_for(head), "digest": "sha256:" + path.name,
                           "size": path.stat().st_size})
        manifest = {"schemaVersion": 2, "mediaType": media.OCI_MANIFEST,
                    "config": {"mediaType": media.OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                    "layers": layers}
        refs = [str(parse_reference(t)) for t in entry.get("RepoTags") or []]
        image = store.commit_image(refs, _compact(manifest), media.OCI_MANIFEST)
        loaded.extend((r, image) for r in refs) if refs else loaded.append(("", image))
    return loaded


# -- save ------------------------------------------------------------------------------------
def save_archive(store: ImageStore, image_refs: list[str], out: IO[bytes], fmt: str = "docker-archive") -> None:
    """Write the images as an OCI layout tarball; ``docker-archive`` adds Docker's manifest.json.

    A docker-archive names uncompressed layers by their diff IDs (what ``docker load`` and
    skopeo expect); the OCI half keeps the original manifests, so a load gives back the same
    manifest digest.
    """
    if fmt not in ("docker-archive", "oci-archive"):
        raise UsageError(f"unknown format {fmt!r}: use docker-archive or oci-archive")
    chosen: list[tuple[str | None, Image]] = []
    for text in image_refs:
        image = store.resolve_image(text)
        ref = None
        if not text.startswith("sha256:") and not all(c in "0123456789abcdef" for c in text):
            parsed = parse_reference(text)
            ref = str(parsed) if not parsed.digest else None
        chosen.append((ref, image))
    written: set[str] = set()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar, \
            tempfile.TemporaryDirectory(dir=store.tmp_dir if store.tmp_dir.is_dir() else None) as tmp:

        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))

        def add_blob(digest: str) -> None:
            if digest in written:
                return
            path = store.blob_path(digest)
            info = tar.gettarinfo(str(path), arcname=f"blobs/sha256/{path.name}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode, info.mtime = 0o644, 0
            with open(path, "rb") as f:
                tar.addfile(info, f)
            written.add(digest)

        add_bytes("oci-layout", _compact({"imageLayoutVersion": "1.0.0"}))
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": []}
        docker_manifest = []
        done_images: dict[str, dict[str, Any]] = {}
        for ref, image in chosen:
            manifest_bytes = store.read_blob(image.manifest_digest)
            manifest = json.loads(manifest_bytes)
            descriptor = {"mediaType": manifest.get("mediaType") or media.OCI_MANIFEST,
                          "digest": image.manifest_digest, "size": len(manifest_bytes)}
            if ref:
                descriptor["annotations"] = {CONTAINERD_NAME: ref, REF_NAME: parse_reference(ref).tag or ""}
            index["manifests"].append(descriptor)
            add_blob(image.manifest_digest)
            add_blob(image.config_digest)
            for layer in manifest.get("layers") or []:
                add_blob(layer["digest"])
            if fmt != "docker-archive":
                continue
            entry = done_images.get(image.id)
            if entry is None:
                layer_paths = []
                for layer, diff_id in zip(manifest.get("layers") or [], image.diff_ids, strict=True):
                    if layer["digest"] != diff_id and diff_id not in written:
                        _add_uncompressed(tar, store, layer["digest"], diff_id, Path(tmp))
                        written.add(diff_id)
                    layer_paths.append(f"blobs/sha256/{diff_id[len('sha256:'):]}")
                entry = {"Config": f"blobs/sha256/{image.config_digest[len('sha256:'):]}", "RepoTags": [],
                         "Layers": layer_paths}
                done_images[image.id] = entry
                docker_manifest.append(entry)
            if ref:
                entry["RepoTags"].append(parse_reference(ref).familiar())
        add_bytes("index.json", _compact(index))
        if fmt == "docker-archive":
            add_bytes("manifest.json", _compact(docker_manifest))
    log.info("archive.saved", images=len(chosen), format=fmt)
    for ref, image in chosen:
        store.record_event("save", image.id, parse_reference(ref).familiar() if ref else image.id)


def _add_uncompressed(tar: tarfile.TarFile, store: ImageStore, digest: str, diff_id: str, tmp: Path) -> None:
    from pyengine.layers.extract import open_layer

    scratch = tmp / diff_id[len("sha256:"):]
    with open(store.blob_path(digest), "rb", buffering=0) as blob, open(scratch, "wb") as f:
        reader = HashingReader(open_layer(blob))
        while chunk := reader.read(1 << 20):
            f.write(chunk)
    if reader.digest != diff_id:
        raise InvalidArchive(f"layer blob {digest} does not decompress to its diff ID {diff_id}")
    info = tar.gettarinfo(str(scratch), arcname=f"blobs/sha256/{scratch.name}")
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode, info.mtime = 0o644, 0
    with open(scratch, "rb") as f:
        tar.addfile(info, f)
    scratch.unlink()


# -- import ----------------------------------------------------------------------------------
def import_rootfs(store: ImageStore, stream: IO[bytes], ref: str | None, message: str = "",
                  changes: dict[str, Any] | None = None) -> Image:
    """``import``: one layer from a rootfs tarball (plain, gzip or zstd), a fresh config, a tag."""
    from pyengine.layers.extract import open_layer

    parsed = str(parse_reference(ref)) if ref else None
    try:
        path = store.ingest_blob(None, stream)
        blob_digest = "sha256:" + path.name
        with open(path, "rb", buffering=0) as blob:
            head = blob.read(4)
            blob.seek(0)
            reader = HashingReader(open_layer(blob, max_size=store.max_layer_size, name=blob_digest))
            reader.drain()
        if reader.size == 0:
            raise InvalidArchive("the rootfs archive is empty")
        created = _now()
        config = {"architecture": media.host_architecture(), "os": "linux", "created": created,
                  "config": dict(changes or {}),
                  "rootfs": {"type": "layers", "diff_ids": [reader.digest]},
                  "history": [{"created": created, "created_by": "pyengine import", "comment": message or ""}]}
        config_bytes = _compact(config)
        config_digest = store.ingest_bytes(config_bytes)
        manifest = {"schemaVersion": 2, "mediaType": media.OCI_MANIFEST,
                    "config": {"mediaType": media.OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                    "layers": [{"mediaType": media.layer_type_for(head), "digest": blob_digest,
                                "size": path.stat().st_size}]}
        image = store.commit_image([parsed] if parsed else [], _compact(manifest), media.OCI_MANIFEST)
        store.record_event("import", image.id, parse_reference(parsed).familiar() if parsed else image.id)
        return image
    except BaseException:
        store.discard_new_blobs()
        raise


def open_output(path: str | None) -> tuple[IO[bytes], str | None]:
    """A binary stream for ``save -o PATH`` (written to a temp name first) or stdout."""
    if path is None or path == "-":
        import sys

        return sys.stdout.buffer, None
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pyengine-save-", dir=directory)
    umask = os.umask(0o022)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # as a file the user created (docker save -o): mkstemp made it 0600
    return os.fdopen(fd, "wb"), tmp


def write_output(path: str | None, write: Callable[[IO[bytes]], None]) -> None:
    """Run ``write`` on :func:`open_output`'s stream (``save``/``export``/``build --output``):
    a file appears at ``path`` whole (fsynced, renamed into place) or not at all."""
    stream, tmp = open_output(path)
    try:
        write(stream)
        stream.flush()
        if tmp:
            os.fsync(stream.fileno())
            stream.close()
            os.rename(tmp, path)  # type: ignore[arg-type]
    except BaseException:
        if tmp:
            stream.close()
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def spooled_input(path: str):
    """``load -i -``: spool stdin to a temp file, because archives are read out of order."""
    if path != "-":
        yield path
        return
    import shutil
    import sys

    with tempfile.NamedTemporaryFile(prefix="pyengine-load-") as f:
        shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
        f.flush()
        yield f.name
