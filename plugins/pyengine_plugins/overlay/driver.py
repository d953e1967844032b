"""The overlay driver itself, laid out like overlay2.

Under the state directory each layer has ``<id>/diff`` (its own changes: the upper dir of a
read-write layer), ``<id>/work`` (overlayfs's work dir), ``<id>/merged`` (the mount point),
``<id>/parent`` and ``<id>/lower`` (the chain below, as short links ``l/<short>`` that point to
each layer's ``diff``). Short links keep the mount options of a deep image under a page:
they are relative to the state directory, and a mount whose options would still be too long
is done from inside it. Mount counts live in the run root, under a lock, so that a layer
mounted by a container's monitor is seen as in use by every other process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pyengine.drivers import DriverContext
from pyengine.drivers.counts import MountCounts
from pyengine.errors import Conflict, DriverError, DriverNotSupported, NoSpace, NotFound
from pyengine.fsutil import PRIVATE_MODE, make_dirs, secure_root, write_json_atomic
from pyengine.log import get_logger

log = get_logger("pyengine.storage.overlay")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MS_RDONLY = 1
MNT_DETACH = 2
_PAGE = os.sysconf("SC_PAGE_SIZE")
_probed: dict[str, str | None] = {}


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount overlay on {target}: {os.strerror(err)}")


def _umount(target: str) -> None:
    if _libc.umount2(target.encode(), 0) != 0:
        err = ctypes.get_errno()
        if err == errno.EBUSY:
            _libc.umount2(target.encode(), MNT_DETACH)
        elif err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def _backing_fs(path: Path) -> str:
    best, fstype = "", "unknown"
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, fstype = point, fields[fields.index("-") + 1]
    return fstype


def probe(ctx: DriverContext) -> None:
    """A real test mount in a scratch dir on the data root's filesystem; cached per process,
    and a success also in the run root until the next boot (the mount costs ~3 ms a command)."""
    key = str(ctx.data_root)
    if key not in _probed:
        stamp = _probe_stamp(ctx)
        marker = ctx.run_root / "overlay-probe-ok"
        try:
            cached = bool(stamp) and json.loads(marker.read_text()) == stamp
        except (OSError, ValueError):
            cached = False
        _probed[key] = None if cached else _try_mount(ctx.data_root)
        if not cached and _probed[key] is None and stamp:
            try:
                write_json_atomic(marker, stamp, fsync=False)  # a cache: lost at worst
            except OSError:
                pass  # no cache: the next command probes again
    if _probed[key]:
        raise DriverNotSupported(_probed[key])


def _probe_stamp(ctx: DriverContext) -> str:
    """What a cached probe result holds for: this boot, and the data root's filesystem."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot} {ctx.data_root} {os.stat(_existing_ancestor(ctx.data_root)).st_dev}"
    except OSError:
        return ""


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent: where a data root yet to be made will live."""
    while not path.exists():
        path = path.parent
    return path


def _try_mount(data_root: Path) -> str | None:
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read():
            return "the kernel has no overlayfs (modprobe overlay)"
    base = _existing_ancestor(data_root)
    backing = _backing_fs(base)
    if backing in ("overlay", "aufs"):
        return f"the data root is on {backing}, which cannot hold an overlay upper dir"
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".overlay-probe-", dir=base))
    except OSError as exc:
        return f"cannot create a scratch dir under {base}: {exc.strerror}"
    try:
        for name in ("lower1", "lower2", "upper", "work", "merged"):
            (scratch / name).mkdir()
        (scratch / "lower1" / "f").write_text("x")
        data = f"lowerdir={scratch}/lower1:{scratch}/lower2,upperdir={scratch}/upper,workdir={scratch}/work"
        try:
            _mount("overlay", str(scratch / "merged"), "overlay", 0, data)
        except OSError as exc:
            return f"a test mount of overlayfs on {backing} failed: {os.strerror(exc.errno or 0)}"
        try:
            ok = (scratch / "merged" / "f").read_text() == "x"
        finally:
            _umount(str(scratch / "merged"))
        return None if ok else "a test mount of overlayfs did not show its lower layer"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class OverlayDriver:
    """overlayfs layers; ``get`` mounts, reference counted across processes."""

    name = "overlay"
    #: a layer's diff directory holds its own changes only, so a pull or load fills all its new
    #: layers at once (``StorageDriver.independent_layers``)
    independent_layers = True

    def __init__(self, ctx: DriverContext) -> None:
        probe(ctx)
        self.root = ctx.state_dir
        secure_root(self.root, PRIVATE_MODE)  # layers' setuid files: for root's eyes only
        self.counts = MountCounts(ctx.run_root / "storage" / "overlay")

    # -- layout ----------------------------------------------------------------------------
    def _dir(self, layer_id: str) -> Path:
        if not layer_id or "/" in layer_id or layer_id in (".", "..", "l"):
            raise DriverError(f"invalid layer id {layer_id!r}")
        return self.root / layer_id

    def _read(self, layer_id: str, name: str) -> str:
        try:
            return (self._dir(layer_id) / name).read_text()
        except FileNotFoundError:
            return ""

    def _lowers(self, layer_id: str) -> list[str]:
        """The lower chain of a layer, as short links relative to the state dir, top first."""
        text = self._read(layer_id, "lower")
        return text.split(":") if text else []

    def exists(self, layer_id: str) -> bool:
        return (self._dir(layer_id) / "diff").is_dir()

    # -- create / remove -------------------------------------------------------------------
    def create(self, layer_id: str, parent: str | None) -> None:
        self._create(layer_id, parent, read_write=False)

    def create_read_write(self, layer_id: str, parent: str | None, size: int | None = None) -> None:
        if size:
            raise DriverError("the overlay driver cannot limit a layer's size (--storage-opt size)")
        self._create(layer_id, parent, read_write=True)

    def _create(self, layer_id: str, parent: str | None, read_write: bool) -> None:
        path = self._dir(layer_id)
        if path.exists():
            raise DriverError(f"layer {layer_id} already exists")
        if parent is not None and not self.exists(parent):
            raise NotFound(f"parent layer {parent} does not exist")
        if parent is not None and (self._dir(parent) / "rw").exists():
            # what lets `remove` of a read-write layer skip looking for children
            raise DriverError(f"layer {parent} is a read-write layer: layers are made on read-only ones")
        make_dirs(self.root / "l")
        tmp = self.root / f".tmp-{layer_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        short = os.urandom(13).hex().upper()[:26]
        try:
            make_dirs(tmp)
            (tmp / "diff").mkdir(mode=0o755)
            (tmp / "work").mkdir(mode=0o700)
            (tmp / "merged").mkdir(mode=0o700)
            (tmp / "link").write_text(short)
            os.symlink(f"../{layer_id}/diff", self.root / "l" / short)
            if parent is not None:
                (tmp / "parent").write_text(parent)
                parent_link = self._read(parent, "link")
                chain = [f"l/{parent_link}"] + self._lowers(parent)
                (tmp / "lower").write_text(":".join(chain))
            if read_write:
                (tmp / "rw").write_text("")
            os.rename(tmp, path)
        except BaseException as exc:
            # A full disk (or a kill) midway leaves nothing: no `.tmp-` dir, no dangling link.
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / "l" / short)
            if NoSpace.is_full(exc):
                raise NoSpace(self.root) from None
            raise
        log.debug("layer.created", layer=layer_id, parent=parent)

    def _children(self, layer_id: str) -> list[str]:
        children = []
        for entry in self.root.iterdir() if self.root.is_dir() else []:
            if entry.name == "l" or entry.name.startswith("."):
                continue
            try:
                if (entry / "parent").read_text() == layer_id:
                    children.append(entry.name)
            except (FileNotFoundError, NotADirectoryError):  # no parent, or removed meanwhile
                continue
        return children

    def remove(self, layer_id: str) -> None:
        path = self._dir(layer_id)
        if not path.exists():
            return
        with self.counts.locked(layer_id) as count:
            if count.value > 0 or os.path.ismount(path / "merged"):
                raise Conflict(f"layer {layer_id} is in use (mounted)")
            # A container's read-write layer is never a parent (layers are made on image layers
            # only), so its removal skips reading every layer's parent file: that scan was most
            # of what a thousand containers present added to `run --rm`.
            children = [] if (path / "rw").exists() else self._children(layer_id)
            if children:
                raise Conflict(f"layer {layer_id} has {len(children)} child layer(s)")
            link = self._read(layer_id, "link")
            if link:
                try:
                    os.unlink(self.root / "l" / link)
                except FileNotFoundError:
                    pass
            trash = self.root / f".rm-{layer_id}"
            os.rename(path, trash)
            shutil.rmtree(trash)

    # -- mounting ---------------------------------------------------------------------------
    def get(self, layer_id: str) -> Path:
        path = self._dir(layer_id)
        if not (path / "diff").is_dir():
            raise NotFound(f"layer {layer_id} does not exist")
        lowers = self._lowers(layer_id)
        read_write = (path / "rw").exists()
        if not lowers and not read_write:
            return path / "diff"  # a base layer needs no mount to be seen
        merged = path / "merged"
        with self.counts.locked(layer_id) as count:
            if count.value == 0 or not os.path.ismount(merged):
                self._mount(layer_id, lowers, read_write)
            count.value += 1
        return merged

    def _mount(self, layer_id: str, lowers: list[str], read_write: bool) -> None:
        path = self._dir(layer_id)
        if read_write:
            if not lowers:
                make_dirs(path / "empty")
                lowers = [f"{layer_id}/empty"]
            data = f"lowerdir={':'.join(lowers)},upperdir={layer_id}/diff,workdir={layer_id}/work"
            flags = 0
        else:
            own = self._read(layer_id, "link")
            data = f"lowerdir={':'.join([f'l/{own}'] + lowers)}"
            flags = MS_RDONLY
        absolute = ",".join(self._absolute(opt) for opt in data.split(","))
        if len(absolute) < _PAGE - 1:
            _mount("overlay", str(path / "merged"), "overlay", flags, absolute)
            return
        # Too long for one page even with short links: mount from inside the state dir, where
        # the relative paths resolve, in a child so this process keeps its working directory.
        argv = ["mount", "-t", "overlay", "overlay", "-o", data + (",ro" if flags else ""), f"{layer_id}/merged"]
        result = subprocess.run(argv, cwd=self.root, capture_output=True, text=True)
        if result.returncode != 0:
            raise DriverError(f"mounting layer {layer_id}: {result.stderr.strip()}")

    def _absolute(self, option: str) -> str:
        key, _, value = option.partition("=")
        return f"{key}={':'.join(str(self.root / v) for v in value.split(':'))}"

    def put(self, layer_id: str) -> None:
        path = self._dir(layer_id)
        if not self._lowers(layer_id) and not (path / "rw").exists():
            return
        with self.counts.locked(layer_id) as count:
            count.value = max(0, count.value - 1)
            if count.value == 0 and os.path.ismount(path / "merged"):
                _umount(str(path / "merged"))

    # -- the diff side ---------------------------------------------------------------------
    def apply_diff(self, layer_id: str, parent: str | None, diff: BinaryIO) -> int:
        from pyengine.layers.extract import apply_layer

        return apply_layer(self._dir(layer_id) / "diff", diff, whiteouts="overlay")

    def diff(self, layer_id: str, parent: str | None) -> BinaryIO:
        from pyengine.layers.diff import export_diff, export_overlay_upper

        if parent == (self._read(layer_id, "parent") or None):
            return export_overlay_upper(self._dir(layer_id) / "diff")
        with self._mounted(layer_id) as top, self._mounted_parent(parent) as below:
            return export_diff(top, below)

    def changes(self, layer_id: str, parent: str | None) -> list[tuple[str, str]]:
        from pyengine.layers.diff import changes

        with self._mounted(layer_id) as top, self._mounted_parent(parent) as below:
            return changes(top, below)

    def diff_size(self, layer_id: str, parent: str | None) -> int:
        from pyengine.layers.diff import diff_size

        if parent == (self._read(layer_id, "parent") or None):
            total = 0
            for dirpath, _, files in os.walk(self._dir(layer_id) / "diff"):
                for name in files:
                    st = os.lstat(os.path.join(dirpath, name))
                    if st.st_nlink >= 1 and (st.st_mode & 0o170000) == 0o100000:
                        total += st.st_size
            return total
        with self._mounted(layer_id) as top, self._mounted_parent(parent) as below:
            return diff_size(top, below)

    @contextmanager
    def _mounted(self, layer_id: str) -> Iterator[Path]:
        path = self.get(layer_id)
        try:
            yield path
        finally:
            self.put(layer_id)

    @contextmanager
    def _mounted_parent(self, layer_id: str | None) -> Iterator[Path | None]:
        if layer_id is None:
            yield None
            return
        path = self.get(layer_id)
        try:
            yield path
        finally:
            self.put(layer_id)

    # -- state -----------------------------------------------------------------------------
    def status(self) -> list[tuple[str, str]]:
        layers = [p for p in self.root.iterdir() if (p / "diff").is_dir()] if self.root.is_dir() else []
        return [("Root Dir", str(self.root)), ("Backing Filesystem", _backing_fs(self.root if self.root.exists()
                                                                                else self.root.parent)),
                ("Layers", str(len(layers)))]

    def cleanup(self) -> None:
        pass

    def layer_ids(self) -> list[str]:
        """Every layer of the driver (``system check`` looks for ones nothing holds)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.name != "l" and not p.name.startswith(".") and (p / "diff").is_dir())

    def temp_leftovers(self) -> list[Path]:
        """What an interrupted create or remove left (``.tmp-<id>``, ``.rm-<id>``) and short
        links to no layer; ``system check`` reports them and ``--repair`` removes them, while
        it holds the locks under which layers are made and removed."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.name.startswith((".tmp-", ".rm-"))]
        links = self.root / "l"
        if links.is_dir():
            found += [p for p in links.iterdir() if p.is_symlink() and not p.exists()]
        return sorted(found)
