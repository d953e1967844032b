"""The vfs driver itself: layers are plain directories under ``<state-dir>/dir``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import structlog

from pyengine.drivers import DriverContext
from pyengine.errors import DriverError, NotFound

log = structlog.get_logger("pyengine.storage.vfs")


class VfsDriver:
    """Each layer a directory holding its whole tree; ``get`` needs no mount."""

    name = "vfs"

    def __init__(self, ctx: DriverContext) -> None:
        self.root = ctx.state_dir
        self.dirs = self.root / "dir"

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
        self.dirs.mkdir(parents=True, exist_ok=True)
        tmp = self.dirs / f".tmp-{layer_id}"
        if tmp.exists():
            shutil.rmtree(tmp)
        if parent is None:
            tmp.mkdir(mode=0o755)
        else:
            source = self._path(parent)
            if not source.is_dir():
                raise NotFound(f"parent layer {parent} does not exist")
            # cp keeps ownership, modes, xattrs, hard links, device nodes and sparse files,
            # and reflinks where the filesystem can; shutil.copytree does none of these.
            result = subprocess.run(["cp", "-a", "--reflink=auto", "--", str(source), str(tmp)],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise DriverError(f"copying layer {parent}: {result.stderr.strip()}")
        os.rename(tmp, target)
        log.debug("layer.created", layer=layer_id, parent=parent)

    def remove(self, layer_id: str) -> None:
        target = self._path(layer_id)
        if not target.exists():
            return
        trash = self.dirs / f".rm-{layer_id}"
        os.rename(target, trash)
        shutil.rmtree(trash)

    def get(self, layer_id: str) -> Path:
        target = self._path(layer_id)
        if not target.is_dir():
            raise NotFound(f"layer {layer_id} does not exist")
        return target

    def put(self, layer_id: str) -> None:
        self._path(layer_id)

    def exists(self, layer_id: str) -> bool:
        return self._path(layer_id).is_dir()

    def status(self) -> list[tuple[str, str]]:
        count = sum(1 for p in self.dirs.iterdir() if not p.name.startswith(".")) if self.dirs.is_dir() else 0
        return [("Root Dir", str(self.root)), ("Layers", str(count))]

    def cleanup(self) -> None:
        pass
