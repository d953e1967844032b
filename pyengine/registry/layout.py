"""OCI image layout directories as a registry: ``oci:DIR[:TAG]``.

Owns reading an image out of a layout (platform selection like a registry pull, every blob
verified by the store's ingest) and writing a stored image into one (blobs, then index.json
replaced atomically, tag in ``org.opencontainers.image.ref.name``). The tarball formats
(``docker-archive:FILE``, ``oci-archive:FILE``) are the image store's load/save code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from pyengine.errors import InvalidArchive, NotFound, UsageError
from pyengine.images import media
from pyengine.images.reference import parse_reference
from pyengine.registry.transfer import Platform, _check_manifest, select_platform

REF_NAME = "org.opencontainers.image.ref.name"


def parse_layout_ref(text: str) -> tuple[Path, str | None]:
    """``oci:DIR[:TAG]`` -> (DIR, TAG or None)."""
    if not text.startswith("oci:"):
        raise UsageError(f"{text!r} is not an oci:DIR[:TAG] reference")
    body = text[len("oci:"):]
    path, sep, tag = body.rpartition(":")
    if not sep or "/" in tag or not tag:
        path, tag = body, ""
    if not path:
        raise UsageError(f"{text!r}: the layout directory is missing")
    return Path(path), tag or None


def local_name(directory: Path, tag: str | None) -> str:
    """The name a layout image gets in the store, as podman does: ``localhost/<dir>:<tag>``."""
    base = "".join(c if c.isalnum() or c in "._-" else "-" for c in directory.resolve().name.lower()) or "layout"
    return str(parse_reference(f"localhost/{base.strip('._-') or 'layout'}:{tag or 'latest'}"))


def _blob(directory: Path, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise InvalidArchive(f"layout {directory}: malformed digest {digest!r}")
    return directory / "blobs" / "sha256" / hexpart


def pull_layout(store: Any, text: str, want: Platform) -> tuple[str, Any]:
    """Copy ``oci:DIR[:TAG]`` into the store; return (the store name, Image)."""
    directory, tag = parse_layout_ref(text)
    try:
        index = json.loads((directory / "index.json").read_text())
    except FileNotFoundError:
        raise NotFound(f"{directory} is not an OCI image layout (no index.json)") from None
    except ValueError:
        raise InvalidArchive(f"{directory}/index.json is not JSON") from None
    entries = index.get("manifests") or []
    if tag:
        entries = [d for d in entries if (d.get("annotations") or {}).get(REF_NAME) == tag]
        if not entries:
            raise NotFound(f"no image tagged {tag!r} in the layout {directory}")
    elif len(entries) != 1:
        raise UsageError(f"the layout {directory} holds {len(entries)} images: name one with oci:DIR:TAG")
    desc = entries[0]
    try:
        data = _read_verified(directory, desc["digest"])
        media_type, doc = _check_manifest(data, desc.get("mediaType") or "", text)
        while media_type in media.INDEX_TYPES:
            desc = select_platform(doc, want)
            data = _read_verified(directory, desc["digest"])
            media_type, doc = _check_manifest(data, desc.get("mediaType") or "", text)
        for blob in [doc["config"], *(doc.get("layers") or [])]:
            with open(_blob(directory, blob["digest"]), "rb") as f:
                store.ingest_blob(blob["digest"], f, blob.get("size"))
        name = local_name(directory, tag)
        return name, store.commit_image([name], data, media_type)
    except FileNotFoundError as exc:
        store.discard_new_blobs()
        raise InvalidArchive(f"layout {directory} is missing blob {Path(exc.filename).name}") from None
    except BaseException:
        store.discard_new_blobs()
        raise


def _read_verified(directory: Path, digest: str) -> bytes:
    data = _blob(directory, digest).read_bytes()
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise InvalidArchive(f"blob {digest} in the layout {directory} is corrupt")
    return data


def push_layout(store: Any, image_ref: str, text: str) -> str:
    """Write a stored image into ``oci:DIR[:TAG]`` (created if needed); return its manifest digest."""
    directory, tag = parse_layout_ref(text)
    image = store.resolve_image(image_ref)
    digest = image.manifest_digest
    data = store.read_blob(digest)
    doc = json.loads(data)
    blobs_dir = directory / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    layout_file = directory / "oci-layout"
    if not layout_file.exists():
        layout_file.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    for blob in [doc["config"], *(doc.get("layers") or [])]:
        target = _blob(directory, blob["digest"])
        if not target.exists():
            tmp = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.copyfile(store.blob_path(blob["digest"]), tmp)
            os.rename(tmp, target)
    _blob(directory, digest).write_bytes(data)
    index_path = directory / "index.json"
    index: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
    if index_path.exists():
        index = json.loads(index_path.read_text())
    name = tag or "latest"
    index["manifests"] = [d for d in index.get("manifests") or []
                          if (d.get("annotations") or {}).get(REF_NAME) != name]
    index["manifests"].append({"mediaType": doc.get("mediaType") or media.guess_type(doc), "digest": digest,
                               "size": len(data), "annotations": {REF_NAME: name}})
    tmp = index_path.with_name(f".index.json.{os.getpid()}")
    tmp.write_text(json.dumps(index))
    os.rename(tmp, index_path)
    return digest
