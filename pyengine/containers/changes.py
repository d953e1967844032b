"""The verbs on a container's filesystem: commit, diff, export, and copying in and out (cp, the
API's archive routes). Used by the CLI and the daemon.

Owns resolving a container path *inside* the container's root (symlinks followed with the
root as ``/``, never out of it) and the Docker shapes of the results (A/C/D lines, the
``X-Docker-Container-Path-Stat`` dict). Calls the container engine for the record and pause,
the storage driver for the rootfs and its diff, ``pyengine.build.layers`` to write images, and
the layer extractor to write into a root.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pyengine.errors import Conflict, NotFound, UsageError
from pyengine.log import get_logger

if TYPE_CHECKING:
    from pyengine.containers.engine import Containers

log = get_logger("pyengine.containers.changes")

# Go's os.FileMode bits, as Docker's path stat carries them
_GO_DIR, _GO_SYMLINK, _GO_DEVICE, _GO_PIPE, _GO_SOCKET = 1 << 31, 1 << 27, 1 << 26, 1 << 25, 1 << 24
_GO_SETUID, _GO_SETGID, _GO_CHARDEV, _GO_STICKY = 1 << 23, 1 << 22, 1 << 21, 1 << 20


def go_file_mode(st_mode: int) -> int:
    """A stat mode as Go's os.FileMode (type bits high, permissions low)."""
    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    if kind == stat.S_IFDIR:
        mode |= _GO_DIR
    elif kind == stat.S_IFLNK:
        mode |= _GO_SYMLINK
    elif kind == stat.S_IFIFO:
        mode |= _GO_PIPE
    elif kind == stat.S_IFSOCK:
        mode |= _GO_SOCKET
    elif kind == stat.S_IFBLK:
        mode |= _GO_DEVICE
    elif kind == stat.S_IFCHR:
        mode |= _GO_DEVICE | _GO_CHARDEV
    if st_mode & stat.S_ISUID:
        mode |= _GO_SETUID
    if st_mode & stat.S_ISGID:
        mode |= _GO_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= _GO_STICKY
    return mode


def _rfc3339(seconds: float) -> str:
    when = datetime.fromtimestamp(seconds, UTC)
    nanos = int(round((seconds % 1) * 1e9))
    return when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{nanos:09d}".rstrip("0") if nanos else "") + "Z"


@contextlib.contextmanager
def mounted_rootfs(containers: Containers, record: Any) -> Iterator[str]:
    """The container's root filesystem as a host path, mounted for the block (stopped or
    running: the storage driver counts references)."""
    storage = containers.engine.storage
    root = storage.get(record.layer_id)
    try:
        yield os.path.realpath(root)
    finally:
        storage.put(record.layer_id)


def _relative(path: str) -> str:
    """A container path as a clean path relative to its root ('' for the root itself)."""
    if not path:
        raise UsageError("a path in the container is required")
    return posixpath.normpath("/" + path).lstrip("/") if path not in ("/", ".") else ""


def resolve(root: str, container_path: str, follow_last: bool) -> str:
    """The host path of ``container_path`` resolved inside ``root``: every symlink is followed
    as the container would see it, with ``root`` as ``/``; the result never leaves ``root``."""
    from pyengine.layers.extract import resolve_in_root

    rel = _relative(container_path)
    host = resolve_in_root(root, rel, follow_last=follow_last)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.abspath(host)]) != real_root:
        raise UsageError(f"path {container_path} resolves outside the container")  # cannot happen; kept as a guard
    return host


def _container_path(root: str, host: str) -> str:
    rel = os.path.relpath(host, root)
    return "/" if rel == "." else "/" + rel


def path_stat(root: str, container_path: str, follow_link: bool = False) -> tuple[str, dict[str, Any]]:
    """(host path, Docker's path stat) for a container path; NotFound when it does not exist."""
    host = resolve(root, container_path, follow_last=follow_link)
    try:
        st = os.lstat(host)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"Could not find the file {container_path} in container") from None
    link_target = ""
    if stat.S_ISLNK(st.st_mode):
        link_target = _container_path(root, resolve(root, container_path, follow_last=True))
    name = posixpath.basename(posixpath.normpath("/" + container_path)) or "/"
    return host, {"name": name, "size": st.st_size, "mode": go_file_mode(st.st_mode),
                  "mtime": _rfc3339(st.st_mtime), "linkTarget": link_target}


# -- diff ------------------------------------------------------------------------------------
def diff(containers: Containers, ref: str) -> list[tuple[str, str]]:
    """``docker diff``: (kind, path) for every path the container added (A), changed (C) or
    deleted (D) against its image, sorted by path as Docker prints them."""
    from pyengine.build.layers import visible_changes

    record = containers.get(ref)
    image_layer = _image_top_layer(containers, record)
    found = visible_changes(containers.engine.storage, record.layer_id, image_layer)
    return sorted(found, key=lambda change: change[1])


def _image_top_layer(containers: Containers, record: Any) -> str | None:
    try:
        return containers.engine.images.resolve_image(record.image_id).top_layer
    except NotFound:
        raise NotFound(f"the image {record.image_id[:19]} of container {record.name} is gone") from None


# -- commit ----------------------------------------------------------------------------------
def commit(containers: Containers, ref: str, repo_tag: str | None = None, changes: list[str] | None = None,
           message: str = "", author: str = "", pause: bool = True) -> Any:
    """``docker commit``: a new image of the container's image plus the container's changes as
    one layer, with its config (and ``changes``, Dockerfile instructions, applied)."""
    from pyengine.build import layers, metadata
    from pyengine.images.reference import parse_reference

    parsed_changes = [metadata.parse_change(line) for line in changes or []]
    if repo_tag:
        ref_parsed = parse_reference(repo_tag)
        if ref_parsed.digest:
            raise UsageError(f"refusing to create a tag with a digest reference: {repo_tag}")
    record = containers.get(ref)
    store = containers.engine.images
    base = store.resolve_image(record.image_id)
    paused = False
    if pause and record.state.status == "running":
        containers.pause(record.id)
        paused = True
    try:
        epoch = layers.source_date_epoch()
        layer, changed = layers.layer_from_storage(store, containers.engine.storage, record.layer_id,
                                                   base.top_layer, epoch=epoch)
    except BaseException:
        store.discard_new_blobs()
        raise
    finally:
        if paused:
            with contextlib.suppress(Conflict):
                containers.unpause(record.id)
    try:
        config = layers.derive_config(base.image_config)
        container_config = metadata.image_config_from_container(record.config)
        for name, value in parsed_changes:
            metadata.apply(container_config, name, value)
        config["config"] = container_config
        created = layers.now_iso(epoch)
        config["created"] = created
        config["container"] = record.id
        if author:
            config["author"] = author
        else:
            config.pop("author", None)
        command = list(record.config.get("Entrypoint") or []) + list(record.config.get("Cmd") or [])
        empty = changed == 0
        layers.add_history(config, " ".join(command), empty_layer=empty, created=created, comment=message,
                           author=author)
        descriptors, oci = layers.base_layer_descriptors(store, base)
        if not empty:
            layers.add_layer(config, layer)
            descriptors.append(layer.descriptor(oci))
        image = layers.commit_config(store, config, descriptors, oci=oci, refs=[repo_tag] if repo_tag else [])
    except BaseException:
        store.discard_new_blobs()
        raise
    log.info("container.committed", container=record.id, image=image.id, empty=empty)
    containers.emit(record, "commit")
    return image


# -- export ----------------------------------------------------------------------------------
def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Numeric owners only: the host's user names mean nothing in the container.
    info.uname = info.gname = ""
    return info


def _add_tree(tar: tarfile.TarFile, host: str, arcname: str) -> None:
    """Add ``host`` and (for a directory) everything under it, never following a symlink."""
    tar.add(host, arcname=arcname, recursive=False, filter=_tar_filter)
    st = os.lstat(host)
    if not stat.S_ISDIR(st.st_mode):
        return
    with os.scandir(host) as entries:
        names = sorted(e.name for e in entries)
    for name in names:
        _add_tree(tar, os.path.join(host, name), f"{arcname}/{name}" if arcname else name)


def export(containers: Containers, ref: str, out: IO[bytes]) -> None:
    """``docker export``: a tar of the container's whole filesystem to ``out``."""
    record = containers.get(ref)
    with mounted_rootfs(containers, record) as root:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            with os.scandir(root) as entries:
                names = sorted(e.name for e in entries)
            for name in names:
                _add_tree(tar, os.path.join(root, name), name)


# -- copy --------------------------------------------------------------------------------------
def stat_path(containers: Containers, ref: str, path: str, follow_link: bool = False) -> dict[str, Any]:
    """The API's HEAD /archive: Docker's path stat of a container path."""
    record = containers.get(ref)
    with mounted_rootfs(containers, record) as root:
        return path_stat(root, path, follow_link)[1]


def copy_from(containers: Containers, ref: str, path: str,
              follow_link: bool = False) -> tuple[IO[bytes], dict[str, Any]]:
    """``docker cp CONTAINER:PATH``: a tar (rewound) whose top entry is the path's last element
    (its target's content under the link's name with ``follow_link``), and the path stat.

    A path ending in ``/.`` archives the directory's content under ``.`` as Docker does.
    """
    record = containers.get(ref)
    with mounted_rootfs(containers, record) as root:
        try:
            host, info = path_stat(root, path, follow_link)
        except NotFound:
            raise NotFound(f"Could not find the file {path} in container {record.name}") from None
        if path.endswith("/") or path.endswith("/."):
            if not stat.S_ISDIR(os.lstat(resolve(root, path, follow_last=True)).st_mode):
                raise UsageError(f"{path} is not a directory")
            host = resolve(root, path, follow_last=True)
        out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # type: ignore[assignment]
        arcname = "." if path.endswith("/.") else info["name"]
        if arcname == "/":
            arcname = "."
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_tree(tar, host, arcname)
    out.seek(0)
    return out, info


def copy_to(containers: Containers, ref: str, dest_path: str, tar_stream: IO[bytes],
            copy_uid_gid: bool = False, no_overwrite_dir_non_dir: bool = False) -> None:
    """The API's PUT /archive: extract a tar into the directory ``dest_path`` of the container.

    Every entry is written through the layer extractor, which resolves each path inside the
    container's root. Without ``copy_uid_gid`` the files belong to the container's root user.
    """
    from pyengine.layers.extract import apply_layer

    record = containers.get(ref)
    if record.config.get("ReadonlyRootfs") or record.host_config.get("ReadonlyRootfs"):
        raise Conflict(f"container {record.name} has a read-only root filesystem")
    with mounted_rootfs(containers, record) as root:
        host_dir = resolve(root, dest_path, follow_last=True)
        if not os.path.isdir(host_dir):
            if os.path.lexists(host_dir):
                raise UsageError(f"extraction point is not a directory: {dest_path}")
            raise NotFound(f"Could not find the file {dest_path} in container {record.name}")
        prefix = os.path.relpath(host_dir, root)
        prefix = "" if prefix == "." else prefix
        owner = None if copy_uid_gid else (0, 0)
        rebased = rebase_tar(tar_stream, prefix, owner=owner, check_dir=host_dir if no_overwrite_dir_non_dir else None)
        try:
            apply_layer(Path(root), rebased, whiteouts="delete")
        finally:
            rebased.close()
    log.info("container.copied_to", container=record.id, path=dest_path)


def extract_to_host(tar_stream: IO[bytes], host_dir: str, rename: tuple[str, str] | None = None) -> None:
    """``docker cp CONTAINER:SRC DEST``'s local side: extract into ``host_dir`` through the
    same extractor, every path resolved inside ``host_dir`` (a container's absolute symlink
    stays a symlink and is never followed); files belong to the user running the command."""
    from pyengine.layers.extract import apply_layer

    rebased = rebase_tar(tar_stream, "", owner=(os.getuid(), os.getgid()), rename=rename)
    try:
        apply_layer(Path(host_dir), rebased, whiteouts="delete")
    finally:
        rebased.close()


def rebase_tar(stream: IO[bytes], prefix: str, owner: tuple[int, int] | None = None,
               rename: tuple[str, str] | None = None, check_dir: str | None = None) -> IO[bytes]:
    """The tar with every name (and hard link target) under ``prefix``, its first path element
    ``rename[0]`` renamed ``rename[1]``; whiteout names refused (a copy must not delete);
    owners set to ``owner`` when given. With ``check_dir``, an entry may not replace a
    directory there with a non-directory or the reverse."""
    from pyengine.errors import InvalidArchive
    from pyengine.layers.extract import WHITEOUT_PREFIX, clean_name

    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # type: ignore[assignment]
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as source, \
                tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as target:
            for member in source:
                rel = _renamed(clean_name(member.name), rename)
                if any(part.startswith(WHITEOUT_PREFIX) for part in rel.split("/") if part):
                    raise UsageError(f"refusing to copy {member.name!r}: names starting with .wh. are reserved")
                if check_dir is not None and rel and "/" not in rel:
                    existing = os.path.join(check_dir, rel)
                    if os.path.lexists(existing) and os.path.isdir(existing) != member.isdir():
                        raise Conflict(f"cannot overwrite {'directory' if os.path.isdir(existing) else 'non-directory'}"
                                       f" {rel} with {'directory' if member.isdir() else 'non-directory'}")
                member.name = posixpath.join(prefix, rel) if rel else (prefix or ".")
                if member.islnk():
                    member.linkname = posixpath.join(prefix, _renamed(clean_name(member.linkname), rename))
                if owner is not None:
                    member.uid, member.gid = owner
                member.uname = member.gname = ""
                data = source.extractfile(member) if member.isreg() else None
                target.addfile(member, data)
    except tarfile.TarError as exc:
        out.close()
        raise InvalidArchive(f"the archive to copy is not a valid tar: {exc}") from None
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def _renamed(rel: str, rename: tuple[str, str] | None) -> str:
    if rename is None:
        return rel
    old, new = rename
    if rel == old:
        return new
    if rel.startswith(old + "/"):
        return new + rel[len(old):]
    return rel


__all__ = ["commit", "copy_from", "copy_to", "diff", "export", "go_file_mode", "path_stat", "stat_path"]
