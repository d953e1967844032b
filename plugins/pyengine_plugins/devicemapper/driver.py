"""The devicemapper driver: every layer a dm-thin snapshot of its parent, on one thin pool.

Owns the layer bookkeeping (``<state-dir>/metadata.json``: device ids, parents, sizes, the
pool's transaction id), the mount counts (``<run-root>/storage/devicemapper/mounts.json``,
since mounts do not outlive a reboot) and, for the development pool, the sparse data and
metadata files under ``<state-dir>/devicemapper``. Talks to the kernel only through ``dm``.
Every change happens under one lock (a thread lock inside the process, flock across them).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from pyengine.drivers import DriverContext
from pyengine.errors import Conflict, DriverError, NotFound, UsageError
from pyengine.fsutil import PRIVATE_MODE, make_dirs, secure_root, write_json_atomic
from pyengine.log import get_logger
from pyengine_plugins.devicemapper import DevicemapperOptions, dm, parse_size

log = get_logger("pyengine.storage.devicemapper")

#: 64 KiB pool blocks (in 512-byte sectors): moby's default, a fair trade between
#: snapshot sharing granularity and metadata size
BLOCK_SECTORS = 128
#: dm thin device ids are 24-bit
MAX_DEVICE_ID = (1 << 24) - 1
ROOTFS = "rootfs"


def _write_json(path: Path, data: Any) -> None:
    write_json_atomic(path, data, indent=1, sort_keys=True)


def _read_json(path: Path, default: Any) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


class DevicemapperDriver:
    """Layers as thin snapshots; ``get`` activates and mounts, ``put`` unmounts and deactivates."""

    name = "devicemapper"

    def __init__(self, ctx: DriverContext, options: DevicemapperOptions) -> None:
        dm.probe(options)
        self.options = options
        self.fs = options.fs
        self.root = ctx.state_dir
        secure_root(self.root, PRIVATE_MODE)  # layers' setuid files: for root's eyes only
        self.mnt = self.root / "mnt"
        self.loop_dir = self.root / "devicemapper"
        self.meta_path = self.root / "metadata.json"
        self.mounts_path = ctx.run_root / "storage" / "devicemapper" / "mounts.json"
        # Device names must be unique on the host, and several data roots may each have a pool.
        tag = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:10]
        self.prefix = f"pyengine-{tag}"
        self.own_pool = options.pool is None
        self.pool = options.pool or f"{self.prefix}-pool"
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._lock_file: IO[str] | None = None
        self._held: Counter[str] = Counter()
        with self._locked():
            meta = self._meta()
            if meta.get("pool") not in (None, self.pool):
                raise DriverError(f"{self.meta_path} belongs to pool {meta['pool']!r}, not {self.pool!r}; "
                                  "set [storage.devicemapper] pool accordingly")
            self._ensure_base(meta)

    # -- locking and state files -----------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the driver lock (re-entrant), with the pool up."""
        with self._thread_lock:
            if self._depth == 0:
                make_dirs(self.root)
                self._lock_file = open(self.root / "lock", "a")  # noqa: SIM115 - held across calls
                fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            self._depth += 1
            try:
                if self._depth == 1:
                    self._ensure_pool()
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_file is not None:
                    self._lock_file.close()
                    self._lock_file = None

    def _meta(self) -> dict[str, Any]:
        meta = _read_json(self.meta_path, {})
        meta.setdefault("layers", {})
        meta.setdefault("next_device_id", 1)
        meta.setdefault("transaction_id", 0)
        return meta

    def _save_meta(self, meta: dict[str, Any]) -> None:
        meta["pool"] = self.pool
        _write_json(self.meta_path, meta)

    def _mounts(self) -> dict[str, int]:
        return _read_json(self.mounts_path, {})

    def _save_mounts(self, mounts: dict[str, int]) -> None:
        _write_json(self.mounts_path, {k: v for k, v in mounts.items() if v > 0})

    def _device_name(self, device_id: int) -> str:
        return f"{self.prefix}-{device_id}"

    @staticmethod
    def _check_id(layer_id: str) -> None:
        if not layer_id or "/" in layer_id or layer_id in (".", "..") or layer_id.startswith("."):
            raise DriverError(f"invalid layer id {layer_id!r}")

    # -- the pool and the base device ------------------------------------------------------
    def _ensure_pool(self) -> None:
        if dm.exists(self.pool):
            return
        if not self.own_pool:
            raise DriverError(f"thin pool {self.pool!r} is not active (see `dmsetup status`)")
        started = time.monotonic()
        make_dirs(self.loop_dir)
        data_file, meta_file = self.loop_dir / "data", self.loop_dir / "metadata"
        data_size = parse_size(self.options.data_size)
        for path, size in ((data_file, data_size), (meta_file, parse_size(self.options.metadata_size))):
            if not path.exists():
                # Sparse: the files take only the blocks the pool writes. A new metadata file
                # reads as zeros, which the thin-pool target formats as empty metadata.
                with open(path, "wb") as f:
                    f.truncate(size)
        data_loop = dm.attach_loop(data_file)
        meta_loop = dm.attach_loop(meta_file)
        blocks = data_size // (BLOCK_SECTORS * dm.SECTOR)
        try:
            # skip_block_zeroing: a filesystem never reads a block it has not written, and
            # zeroing every freshly provisioned 64 KiB block doubles the cost of small writes.
            dm.dmsetup("create", self.pool, "--table",
                       f"0 {blocks * BLOCK_SECTORS} thin-pool {meta_loop} {data_loop} "
                       f"{BLOCK_SECTORS} {max(1, blocks // 100)} 1 skip_block_zeroing")
        except DriverError:
            dm.detach_loop(data_loop)
            dm.detach_loop(meta_loop)
            raise
        log.info("pool.activated", pool=self.pool, data=data_loop, metadata=meta_loop,
                 ms=round((time.monotonic() - started) * 1000))

    def _release_pool_if_idle(self) -> None:
        """Deactivate the development pool and free its loop devices when nothing uses it."""
        if not self.own_pool or self._mounts() or not dm.exists(self.pool):
            return
        if any(n.startswith(f"{self.prefix}-") and n != self.pool for n in dm.active_names()):
            return
        loops = [dm.loop_for(self.loop_dir / "data"), dm.loop_for(self.loop_dir / "metadata")]
        dm.deactivate(self.pool)
        for loop in loops:
            if loop:
                dm.detach_loop(loop)
        log.info("pool.deactivated", pool=self.pool)

    def _tx(self, meta: dict[str, Any], message: str) -> None:
        """Send one metadata-changing message to the pool, then bump its transaction id so
        the pool and metadata.json say the same thing (a mismatch means a crash between)."""
        dm.pool_message(self.pool, message)
        old = meta["transaction_id"]
        try:
            dm.pool_message(self.pool, f"set_transaction_id {old} {old + 1}")
        except DriverError:
            found = dm.pool_usage(self.pool).transaction_id
            log.warning("pool.transaction_mismatch", pool=self.pool, expected=old, found=found)
            old = found
            dm.pool_message(self.pool, f"set_transaction_id {old} {old + 1}")
        meta["transaction_id"] = old + 1

    def _new_device(self, meta: dict[str, Any], origin: int | None) -> int:
        """Create a thin device (a snapshot of ``origin`` if given); returns its id."""
        for _ in range(64):
            device_id = meta["next_device_id"]
            if device_id > MAX_DEVICE_ID:
                raise DriverError(f"thin pool {self.pool} ran out of device ids")
            meta["next_device_id"] = device_id + 1
            # Saved before the pool is touched, so an id is never handed out twice.
            self._save_meta(meta)
            message = f"create_thin {device_id}" if origin is None else f"create_snap {device_id} {origin}"
            try:
                self._tx(meta, message)
                return device_id
            except DriverError as exc:
                # An id left in the pool by a crash (or another user of a shared pool): skip it.
                if "exists" not in str(exc).lower():
                    raise
        raise DriverError(f"thin pool {self.pool}: no free device id found")

    def _delete_device(self, meta: dict[str, Any], device_id: int) -> None:
        dm.deactivate(self._device_name(device_id))
        self._tx(meta, f"delete {device_id}")

    def _ensure_base(self, meta: dict[str, Any]) -> None:
        if meta.get("base"):
            return
        started = time.monotonic()
        size = parse_size(self.options.base_size)
        device_id = self._new_device(meta, None)
        name = self._device_name(device_id)
        target = self.mnt / ".base"
        try:
            dm.activate_thin(self.pool, name, device_id, size)
            dm.mkfs(self.fs, dm.device_path(name))
            make_dirs(target)
            dm.mount(self.fs, dm.device_path(name), target)
            try:
                # Layers live in a subdirectory, so the filesystem's own lost+found stays out
                # of every layer's tree and diff.
                (target / ROOTFS).mkdir(mode=0o755)
                os.chmod(target / ROOTFS, 0o755)
            finally:
                dm.umount(target)
            dm.deactivate(name)
        except BaseException:
            with contextlib.suppress(DriverError):
                self._delete_device(meta, device_id)
            self._save_meta(meta)
            raise
        finally:
            with contextlib.suppress(OSError):
                target.rmdir()
        meta["base"] = {"device_id": device_id, "size": size, "fs": self.fs}
        self._save_meta(meta)
        log.info("base.created", pool=self.pool, device_id=device_id, size=size, fs=self.fs,
                 ms=round((time.monotonic() - started) * 1000))

    # -- the protocol ----------------------------------------------------------------------
    def create(self, layer_id: str, parent: str | None) -> None:
        self._create(layer_id, parent, None)

    def create_read_write(self, layer_id: str, parent: str | None, size: int | None = None) -> None:
        self._create(layer_id, parent, size)

    def _create(self, layer_id: str, parent: str | None, size: int | None) -> None:
        self._check_id(layer_id)
        started = time.monotonic()
        with self._locked():
            meta = self._meta()
            if layer_id in meta["layers"]:
                raise DriverError(f"layer {layer_id} already exists")
            if parent is None:
                origin = meta["base"]
            elif parent in meta["layers"]:
                origin = meta["layers"][parent]
            else:
                raise NotFound(f"parent layer {parent} does not exist")
            new_size = origin["size"]
            if size is not None:
                if size < origin["size"]:
                    raise UsageError(f"size {size} is smaller than the layer's filesystem "
                                     f"({origin['size']} bytes); it can only grow")
                new_size = size
            origin_name = self._device_name(origin["device_id"])
            # A snapshot of an active origin needs it suspended, so no write is half in it.
            suspended = dm.exists(origin_name)
            if suspended:
                dm.dmsetup("suspend", origin_name)
            try:
                device_id = self._new_device(meta, origin["device_id"])
            finally:
                if suspended:
                    dm.dmsetup("resume", origin_name)
            meta["layers"][layer_id] = {"device_id": device_id, "parent": parent, "size": origin["size"]}
            self._save_meta(meta)
            if new_size > origin["size"]:
                self._grow(meta, layer_id, new_size)
        log.info("layer.created", layer=layer_id, parent=parent, device_id=device_id, size=new_size,
                 ms=round((time.monotonic() - started) * 1000))

    def _grow(self, meta: dict[str, Any], layer_id: str, size: int) -> None:
        """Give the layer a larger device and grow its filesystem to fill it."""
        record = meta["layers"][layer_id]
        name = self._device_name(record["device_id"])
        target = self.mnt / layer_id
        make_dirs(target)
        dm.activate_thin(self.pool, name, record["device_id"], size)
        try:
            dm.mount(self.fs, dm.device_path(name), target)
            try:
                dm.grow(self.fs, dm.device_path(name), target)
            finally:
                dm.umount(target)
        finally:
            dm.deactivate(name)
        record["size"] = size
        self._save_meta(meta)

    def remove(self, layer_id: str) -> None:
        self._check_id(layer_id)
        with self._locked():
            meta = self._meta()
            record = meta["layers"].get(layer_id)
            if record is None:
                return
            target = self.mnt / layer_id
            mounts = self._mounts()
            if os.path.ismount(target):
                raise Conflict(f"layer {layer_id} is mounted at {target}; unmount it first")
            children = sorted(k for k, v in meta["layers"].items() if v["parent"] == layer_id)
            if children:
                raise Conflict(f"layer {layer_id} has {len(children)} child layer(s) ({children[0]}...)")
            if mounts.pop(layer_id, 0):
                # Counted but not mounted: a process died holding it (or a reboot cleared the
                # mounts but not the run root); the count is stale.
                log.warning("layer.stale_mount_count", layer=layer_id)
                self._save_mounts(mounts)
            self._delete_device(meta, record["device_id"])
            del meta["layers"][layer_id]
            self._save_meta(meta)
            with contextlib.suppress(OSError):
                target.rmdir()
        log.info("layer.removed", layer=layer_id, device_id=record["device_id"])

    def get(self, layer_id: str) -> Path:
        self._check_id(layer_id)
        with self._locked():
            meta = self._meta()
            record = meta["layers"].get(layer_id)
            if record is None:
                raise NotFound(f"layer {layer_id} does not exist")
            mounts = self._mounts()
            target = self.mnt / layer_id
            # The count may be stale (a process died holding it); what is mounted is the truth.
            if not os.path.ismount(target):
                name = self._device_name(record["device_id"])
                make_dirs(target)
                dm.activate_thin(self.pool, name, record["device_id"], record["size"])
                try:
                    dm.mount(self.fs, dm.device_path(name), target)
                except DriverError:
                    dm.deactivate(name)
                    raise
                mounts[layer_id] = 0
                log.debug("layer.mounted", layer=layer_id, device=name)
            mounts[layer_id] = mounts.get(layer_id, 0) + 1
            self._save_mounts(mounts)
            self._held[layer_id] += 1
            return target / ROOTFS

    def put(self, layer_id: str) -> None:
        self._check_id(layer_id)
        with self._locked():
            mounts = self._mounts()
            count = mounts.get(layer_id, 0)
            if count <= 0:
                log.warning("layer.put_unmounted", layer=layer_id)
                return
            mounts[layer_id] = count - 1
            if mounts[layer_id] == 0:
                self._unmount(layer_id)
            self._save_mounts(mounts)
            if self._held[layer_id] > 0:
                self._held[layer_id] -= 1

    def _unmount(self, layer_id: str) -> None:
        target = self.mnt / layer_id
        if os.path.ismount(target):
            dm.umount(target)
        record = self._meta()["layers"].get(layer_id)
        if record is not None:
            dm.deactivate(self._device_name(record["device_id"]))
        log.debug("layer.unmounted", layer=layer_id)

    def exists(self, layer_id: str) -> bool:
        self._check_id(layer_id)
        return layer_id in self._meta()["layers"]

    def status(self) -> list[tuple[str, str]]:
        with self._locked():
            usage = dm.pool_usage(self.pool)
            meta = self._meta()
        rows = [("Pool Name", self.pool),
                ("Pool Blocksize", _human(usage.block_size)),
                ("Base Device Size", _human(meta["base"]["size"]) if meta.get("base") else "-"),
                ("Backing Filesystem", self.fs),
                ("Data Space Used", _human(usage.data_used)),
                ("Data Space Total", _human(usage.data_total)),
                ("Data Space Available", _human(usage.data_total - usage.data_used)),
                ("Metadata Space Used", _human(usage.metadata_used)),
                ("Metadata Space Total", _human(usage.metadata_total)),
                ("Metadata Space Available", _human(usage.metadata_total - usage.metadata_used)),
                ("Pool Mode", usage.mode),
                ("Layers", str(len(meta["layers"])))]
        if self.own_pool:
            rows[1:1] = [("Data file", str(self.loop_dir / "data")),
                         ("Metadata file", str(self.loop_dir / "metadata"))]
        return rows

    def cleanup(self) -> None:
        with self._locked():
            for layer_id, count in list(self._held.items()):
                for _ in range(count):
                    self.put(layer_id)
            self._held.clear()
            self._release_pool_if_idle()

    # -- diffs: done on the mounted trees ----------------------------------------------------
    @contextlib.contextmanager
    def _trees(self, layer_id: str, parent: str | None) -> Iterator[tuple[Path, Path | None]]:
        """Mount the layer and its parent for the duration; the parent is None for a base."""
        layer_path = self.get(layer_id)
        try:
            if parent is None:
                yield layer_path, None
                return
            parent_path = self.get(parent)
            try:
                yield layer_path, parent_path
            finally:
                self.put(parent)
        finally:
            self.put(layer_id)

    def apply_diff(self, layer_id: str, parent: str | None, diff: IO[bytes]) -> int:
        from pyengine.layers.extract import apply_layer

        started = time.monotonic()
        with self._trees(layer_id, None) as (layer_path, _):
            applied = apply_layer(layer_path, diff, whiteouts="delete")
        log.info("layer.applied", layer=layer_id, bytes=applied, ms=round((time.monotonic() - started) * 1000))
        return applied

    def diff(self, layer_id: str, parent: str | None) -> IO[bytes]:
        from pyengine.layers import diff as naive

        # export_diff spools the tar while both trees are mounted, so the caller may read it
        # at leisure without holding mounts.
        with self._trees(layer_id, parent) as (layer_path, parent_path):
            return naive.export_diff(layer_path, parent_path)

    def changes(self, layer_id: str, parent: str | None) -> Iterable[tuple[str, str]]:
        from pyengine.layers import diff as naive

        with self._trees(layer_id, parent) as (layer_path, parent_path):
            return list(naive.changes(layer_path, parent_path))

    def diff_size(self, layer_id: str, parent: str | None) -> int:
        from pyengine.layers import diff as naive

        with self._trees(layer_id, parent) as (layer_path, parent_path):
            return naive.diff_size(layer_path, parent_path)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return str(size)

