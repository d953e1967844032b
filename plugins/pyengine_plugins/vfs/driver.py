"""The vfs driver itself: layers are plain directories under ``<state-dir>/dir``."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
from pathlib import Path

from pyengine.drivers import DriverContext
from pyengine.drivers.counts import MountCounts
from pyengine.errors import Conflict, DriverError, NoSpace, NotFound
from pyengine.fsutil import PRIVATE_MODE, make_dirs, secure_root
from pyengine.log import get_logger

log = get_logger("pyengine.storage.vfs")


@functools.cache
def _dies_with_parent() -> tuple[str, ...]:
    """A prefix that makes a helper command get SIGKILL when the engine dies (util-linux's
    setpriv, essential on Debian; without it the helper runs bare)."""
    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "KILL", "--") if setpriv else ()


class VfsDriver:
    """Each layer a directory holding its whole tree; ``get`` needs no mount."""

    name = "vfs"

    def __init__(self, ctx: DriverContext) -> None:
        self.root = ctx.state_dir
        secure_root(self.root, PRIVATE_MODE)  # layers' setuid files: for root's eyes only
        self.dirs = self.root / "dir"
        # Each layer's parent, so that a layer with children is not removed.
        self.parents = self.root / "parents"
        self.counts = MountCounts(ctx.run_root / "storage" / "vfs")

    def _path(self, layer_id: str) -> Path:
        if not layer_id or "/" in layer_id or layer_id in (".", ".."):
            raise DriverError(f"invalid layer id {layer_id!r}")
        return self.dirs / layer_id

    def create(self, layer_id: str, parent: str | None) -> None:
        self._create(layer_id, parent)

    def create_read_write(self, layer_id: str, parent: str | None, size: int | None = None) -> None:
        self._create(layer_id, parent)

    def _create(self, layer_id: str, parent: str | None) -> None:
        target = self._path(layer_id)
        if target.exists():
            raise DriverError(f"layer {layer_id} already exists")
        make_dirs(self.dirs)
        tmp = self.dirs / f".tmp-{layer_id}"
        if tmp.exists():
            shutil.rmtree(tmp)
        if parent is None:
            try:
                tmp.mkdir(mode=0o755)
            except OSError as exc:
                if NoSpace.is_full(exc):
                    raise NoSpace(self.dirs) from None
                raise
        else:
            source = self._path(parent)
            if not source.is_dir():
                raise NotFound(f"parent layer {parent} does not exist")
            # cp keeps ownership, modes, xattrs, hard links, device nodes and sparse files,
            # and reflinks where the filesystem can; shutil.copytree does none of these. It dies
            # with this process: a cp that outlived a killed engine would go on writing into the
            # temp entry after the store's lock was released, under a `system check --repair`.
            result = subprocess.run([*_dies_with_parent(), "cp", "-a", "--reflink=auto", "--", str(source), str(tmp)],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                if "No space left on device" in result.stderr or "Disk quota exceeded" in result.stderr:
                    raise NoSpace(self.dirs)
                raise DriverError(f"copying layer {parent}: {result.stderr.strip()}")
        try:
            os.rename(tmp, target)
            # After the rename: a crash in between leaves a layer without a record (harmless:
            # a vfs layer is a full copy) rather than a record without a layer.
            make_dirs(self.parents)
            (self.parents / layer_id).write_text(parent or "")
        except BaseException as exc:
            # A full disk midway leaves nothing half made: not the copy, not an empty record.
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (self.parents / layer_id).unlink()
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            if NoSpace.is_full(exc):
                raise NoSpace(self.dirs) from None
            raise
        log.debug("layer.created", layer=layer_id, parent=parent)

    def _children(self, layer_id: str) -> list[str]:
        children = []
        for record in self.parents.iterdir() if self.parents.is_dir() else []:
            try:
                if record.read_text() == layer_id and (self.dirs / record.name).is_dir():
                    children.append(record.name)
            except FileNotFoundError:  # removed by another process meanwhile
                continue
        return children

    def remove(self, layer_id: str) -> None:
        target = self._path(layer_id)
        if not target.exists():
            return
        with self.counts.locked(layer_id) as count:
            if count.value > 0:
                raise Conflict(f"layer {layer_id} is in use")
            children = self._children(layer_id)
            if children:
                raise Conflict(f"layer {layer_id} has {len(children)} child layer(s)")
            trash = self.dirs / f".rm-{layer_id}"
            os.rename(target, trash)
            try:
                (self.parents / layer_id).unlink()
            except FileNotFoundError:
                pass
        shutil.rmtree(trash)

    def get(self, layer_id: str) -> Path:
        target = self._path(layer_id)
        if not target.is_dir():
            raise NotFound(f"layer {layer_id} does not exist")
        with self.counts.locked(layer_id) as count:
            count.value += 1
        return target

    def put(self, layer_id: str) -> None:
        self._path(layer_id)
        with self.counts.locked(layer_id) as count:
            count.value = max(0, count.value - 1)

    def _view(self, layer_id: str) -> Path:
        """The layer's tree without taking a reference (the diff side reads it in place)."""
        target = self._path(layer_id)
        if not target.is_dir():
            raise NotFound(f"layer {layer_id} does not exist")
        return target

    def exists(self, layer_id: str) -> bool:
        return self._path(layer_id).is_dir()

    def status(self) -> list[tuple[str, str]]:
        count = sum(1 for p in self.dirs.iterdir() if not p.name.startswith(".")) if self.dirs.is_dir() else 0
        return [("Root Dir", str(self.root)), ("Layers", str(count))]

    def cleanup(self) -> None:
        pass

    def layer_ids(self) -> list[str]:
        """Every layer of the driver (``system check`` looks for ones nothing holds)."""
        if not self.dirs.is_dir():
            return []
        return sorted(p.name for p in self.dirs.iterdir() if not p.name.startswith(".") and p.is_dir())

    def temp_leftovers(self) -> list[Path]:
        """What an interrupted create or remove left (``.tmp-<id>``, ``.rm-<id>``);
        ``system check`` reports them and ``--repair`` removes them."""
        if not self.dirs.is_dir():
            return []
        return sorted(p for p in self.dirs.iterdir() if p.name.startswith((".tmp-", ".rm-")))

    # -- the diff side: the core's naive diff over full copies ------------------------------
    def _parent_path(self, parent: str | None) -> Path | None:
        return self._view(parent) if parent else None

    def diff(self, layer_id: str, parent: str | None):  # noqa: ANN201 - a binary stream
        from pyengine.layers.diff import export_diff

        return export_diff(self._view(layer_id), self._parent_path(parent))

    def changes(self, layer_id: str, parent: str | None) -> list[tuple[str, str]]:
        from pyengine.layers.diff import changes

        return changes(self._view(layer_id), self._parent_path(parent))

    def apply_diff(self, layer_id: str, parent: str | None, diff) -> int:  # noqa: ANN001
        from pyengine.layers.extract import apply_layer

        return apply_layer(self._view(layer_id), diff, whiteouts="delete")

    def diff_size(self, layer_id: str, parent: str | None) -> int:
        from pyengine.layers.diff import diff_size

        return diff_size(self._view(layer_id), self._parent_path(parent))
