"""The ``example`` storage driver: each layer is a directory holding its whole tree.

A new layer starts as a copy of its parent (``shutil.copytree``, symlinks kept as links), so
``get`` needs no mount. Diffs are computed by comparing a layer's tree with its parent's.
State lives under the driver's state dir: ``layers/<id>/`` and ``parents/<id>`` (the parent id).
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import structlog

from pyengine.drivers import DriverContext
from pyengine.errors import Conflict, DriverError, InvalidArchive, NotFound

log = structlog.get_logger("pyengine_example_driver")

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class ExampleDriver:
    """A directory copy per layer; reference counts of ``get`` are kept per process."""

    name = "example"

    def __init__(self, ctx: DriverContext) -> None:
        self.root = ctx.state_dir
        self.layers = self.root / "layers"
        self.parents = self.root / "parents"
        self.fsync = ctx.options.fsync if ctx.options is not None else True
        self.refs: dict[str, int] = {}

    # -- layers ----------------------------------------------------------------------------
    def _path(self, layer_id: str) -> Path:
        if not layer_id or "/" in layer_id or layer_id.startswith("."):
            raise DriverError(f"invalid layer id {layer_id!r}")
        return self.layers / layer_id

    def create(self, layer_id: str, parent: str | None) -> None:
        self._create(layer_id, parent)

    def create_read_write(self, layer_id: str, parent: str | None, size: int | None = None) -> None:
        if size is not None:
            raise DriverError("the example driver cannot limit a layer's size")
        self._create(layer_id, parent)

    def _create(self, layer_id: str, parent: str | None) -> None:
        started = time.monotonic()
        target = self._path(layer_id)
        if target.exists():
            raise Conflict(f"layer {layer_id} already exists")
        self.layers.mkdir(parents=True, exist_ok=True)
        self.parents.mkdir(parents=True, exist_ok=True)
        tmp = self.layers / f".tmp-{layer_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        if parent is None:
            tmp.mkdir(mode=0o755)
        else:
            source = self._path(parent)
            if not source.is_dir():
                raise NotFound(f"parent layer {parent} does not exist")
            shutil.copytree(source, tmp, symlinks=True, copy_function=shutil.copy2)
            # copytree copies modes and times but not owners: a layer must keep them.
            _copy_owners(source, tmp)
        if self.fsync:
            _fsync_tree(tmp)
        # The parent record goes first: a layer directory never exists without it.
        _write_atomic(self.parents / layer_id, parent or "")
        os.rename(tmp, target)
        log.debug("layer.created", layer=layer_id, parent=parent,
                  ms=round((time.monotonic() - started) * 1000, 1))

    def remove(self, layer_id: str) -> None:
        target = self._path(layer_id)
        if self.refs.get(layer_id):
            raise Conflict(f"layer {layer_id} is in use")
        children = [p.name for p in self.parents.iterdir()
                    if p.read_text() == layer_id] if self.parents.is_dir() else []
        if children:
            raise Conflict(f"layer {layer_id} has child layers: {', '.join(sorted(children))}")
        if target.exists():
            trash = self.layers / f".rm-{layer_id}"
            os.rename(target, trash)
            shutil.rmtree(trash)
        (self.parents / layer_id).unlink(missing_ok=True)

    def get(self, layer_id: str) -> Path:
        target = self._path(layer_id)
        if not target.is_dir():
            raise NotFound(f"layer {layer_id} does not exist")
        self.refs[layer_id] = self.refs.get(layer_id, 0) + 1
        return target

    def put(self, layer_id: str) -> None:
        count = self.refs.get(layer_id, 0)
        if count == 0:
            raise DriverError(f"layer {layer_id} is not held (put without get)")
        if count == 1:
            del self.refs[layer_id]
        else:
            self.refs[layer_id] = count - 1

    def exists(self, layer_id: str) -> bool:
        return self._path(layer_id).is_dir()

    def status(self) -> list[tuple[str, str]]:
        count = sum(1 for p in self.layers.iterdir() if not p.name.startswith(".")) if self.layers.is_dir() else 0
        return [("Root Dir", str(self.root)), ("Layers", str(count)), ("Fsync", str(self.fsync).lower())]

    def cleanup(self) -> None:
        self.refs.clear()

    # -- diffs -----------------------------------------------------------------------------
    def changes(self, layer_id: str, parent: str | None) -> list[tuple[str, str]]:
        layer = self._path(layer_id)
        if not layer.is_dir():
            raise NotFound(f"layer {layer_id} does not exist")
        base = self._path(parent) if parent else None
        out: list[tuple[str, str]] = []
        for rel, st in _walk(layer):
            old = _lstat(base / rel) if base else None
            if old is None:
                out.append(("A", "/" + rel))
            elif _differs(st, old, layer / rel, base / rel if base else None):
                out.append(("C", "/" + rel))
        if base is not None:
            for rel, _ in _walk(base, skip_under_missing=layer):
                if _lstat(layer / rel) is None:
                    out.append(("D", "/" + rel))
        return sorted(out, key=lambda change: change[1])

    def diff(self, layer_id: str, parent: str | None) -> IO[bytes]:
        layer = self._path(layer_id)
        stream = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for kind, path in self.changes(layer_id, parent):
                rel = path.lstrip("/")
                if kind == "D":
                    head, _, name = rel.rpartition("/")
                    info = tarfile.TarInfo((head + "/" if head else "") + WHITEOUT + name)
                    info.mtime = int(time.time())
                    tar.addfile(info)
                else:
                    tar.add(layer / rel, arcname=rel, recursive=False)
        stream.seek(0)
        return stream  # type: ignore[return-value]

    def diff_size(self, layer_id: str, parent: str | None) -> int:
        layer = self._path(layer_id)
        total = 0
        for kind, path in self.changes(layer_id, parent):
            if kind != "D":
                st = os.lstat(layer / path.lstrip("/"))
                total += st.st_size if stat.S_ISREG(st.st_mode) else 0
        return total

    def apply_diff(self, layer_id: str, parent: str | None, diff: IO[bytes]) -> int:
        started = time.monotonic()
        layer = self._path(layer_id)
        if not layer.is_dir():
            raise NotFound(f"layer {layer_id} does not exist")
        counted = _CountingReader(diff)
        try:
            with tarfile.open(fileobj=counted, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    self._apply_member(tar, member, layer)
        except tarfile.TarError as exc:
            raise InvalidArchive(f"layer {layer_id}: not a valid tar stream: {exc}") from None
        if self.fsync:
            _fsync_tree(layer)
        log.debug("layer.applied", layer=layer_id, bytes=counted.count,
                  ms=round((time.monotonic() - started) * 1000, 1))
        return counted.count

    def _apply_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, layer: Path) -> None:
        rel = _safe_relpath(member.name)
        if rel is None:
            return  # the archive's root directory itself
        target = _inside(layer, rel)
        name = target.name
        if name == OPAQUE:
            for child in list(target.parent.iterdir()):
                _remove(child)
            return
        if name.startswith(WHITEOUT):
            _remove(target.parent / name[len(WHITEOUT):])
            return
        if member.islnk():
            link_rel = _safe_relpath(member.linkname)
            if link_rel is None:
                raise InvalidArchive(f"hard link {member.name!r} points at the layer root")
            _inside(layer, link_rel)
            member = member.replace(linkname=link_rel, deep=False)
        existing = _lstat(target)
        if existing is not None and not (stat.S_ISDIR(existing.st_mode) and member.isdir()):
            _remove(target)
        member = member.replace(name=rel, deep=False)
        # The path has been checked component by component above, so the archive's own
        # modes, owners and (absolute, rootfs-relative) symlink targets are kept as they are.
        tar.extract(member, layer, set_attrs=True, filter="fully_trusted")


class _CountingReader:
    """Wraps the diff stream to count the bytes read from it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data


def _safe_relpath(name: str) -> str | None:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArchive(f"archive member {name!r} leaves the layer")
    return "/".join(parts) or None


def _inside(layer: Path, rel: str) -> Path:
    """``layer/rel``, refusing when any existing parent component is a symlink (it could lead
    outside the layer)."""
    current = layer
    parts = rel.split("/")
    for part in parts[:-1]:
        current = current / part
        st = _lstat(current)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise InvalidArchive(f"archive member {rel!r} goes through the symlink /{current.relative_to(layer)}")
    return layer / rel


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _remove(path: Path) -> None:
    st = _lstat(path)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _walk(root: Path, skip_under_missing: Path | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Every path below ``root`` (relative) with its lstat, parents before children.

    With ``skip_under_missing``, a directory missing there is yielded but not descended into:
    one deletion record stands for the whole subtree.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            rel = str((base / name).relative_to(root))
            yield rel, os.lstat(base / name)
            if os.path.islink(base / name):
                continue
            if skip_under_missing is not None and _lstat(skip_under_missing / rel) is None:
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            yield str((base / name).relative_to(root)), os.lstat(base / name)


def _differs(new: os.stat_result, old: os.stat_result, new_path: Path, old_path: Path | None) -> bool:
    if (new.st_mode, new.st_uid, new.st_gid) != (old.st_mode, old.st_uid, old.st_gid):
        return True
    if stat.S_ISLNK(new.st_mode):
        return old_path is None or os.readlink(new_path) != os.readlink(old_path)
    if stat.S_ISDIR(new.st_mode):
        return False
    if new.st_size != old.st_size or new.st_mtime_ns != old.st_mtime_ns:
        return True
    return False


def _copy_owners(source: Path, target: Path) -> None:
    os.chown(target, os.lstat(source).st_uid, os.lstat(source).st_gid)
    for rel, st in _walk(source):
        os.chown(target / rel, st.st_uid, st.st_gid, follow_symlinks=False)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
