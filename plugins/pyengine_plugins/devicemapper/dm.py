"""The kernel seam of the devicemapper driver: dmsetup, losetup, mkfs, mount and the probe.

Everything here runs a tool as a subprocess and turns its failure into a DriverError (or
DriverNotSupported in the probe); the layer bookkeeping above it lives in ``driver.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyengine.errors import DriverError, DriverNotSupported
from pyengine.log import get_logger

log = get_logger("pyengine.storage.devicemapper")

SECTOR = 512


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Without a running udev (the test VM, minimal hosts) dmsetup would wait forever for a
    # udev cookie; tell it to create and remove its /dev/mapper nodes itself.
    if not os.path.exists("/run/udev/control"):
        env["DM_DISABLE_UDEV"] = "1"
    return env


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a tool; on failure raise DriverError with its first line of stderr."""
    result = subprocess.run(list(argv), capture_output=True, text=True, env=_env())
    if check and result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise DriverError(f"{' '.join(argv[:3])} failed: {message[0] if message else f'exit {result.returncode}'}")
    return result


def dmsetup(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run("dmsetup", *args, check=check)


# -- probe -----------------------------------------------------------------------------------

def _misc_has_device_mapper() -> bool:
    try:
        with open("/proc/misc") as f:
            return any(line.split()[1:] == ["device-mapper"] for line in f if line.strip())
    except OSError:
        return False


def _modprobe(*modules: str) -> None:
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", "-a", *modules], capture_output=True)


def probe(options) -> None:  # noqa: ANN001 - DevicemapperOptions, imported lazily by the caller
    """Raise DriverNotSupported with the reason when this host cannot run the driver."""
    tools = ["dmsetup"] + (["losetup"] if options.pool is None else [])
    for tool in tools:
        if shutil.which(tool) is None:
            raise DriverNotSupported(f"{tool} not found (apt-get install dmsetup util-linux)")
    # The kernel's word, not the node's: a /dev/mapper/control left behind (a copied /dev,
    # an earlier mknod) on a kernel without device-mapper would pass a node check.
    if not _misc_has_device_mapper():
        _modprobe("dm_mod", "dm_thin_pool")
        if not _misc_has_device_mapper():
            raise DriverNotSupported("the kernel has no device-mapper (not in /proc/misc, "
                                     "and dm_mod cannot be loaded)")
    if not os.path.exists("/dev/mapper/control"):
        # The module is there but nothing made the node (no udev): dmsetup can.
        run("dmsetup", "mknodes", check=False)
        if not os.path.exists("/dev/mapper/control"):
            raise DriverNotSupported("device-mapper is loaded but /dev/mapper/control is missing")
    if "thin-pool" not in _targets():
        _modprobe("dm_thin_pool")
        if "thin-pool" not in _targets():
            raise DriverNotSupported("the kernel has no dm thin-pool target (modprobe dm_thin_pool failed)")
    mkfs = f"mkfs.{options.fs}"
    if shutil.which(mkfs) is None:
        package = "e2fsprogs" if options.fs == "ext4" else "xfsprogs"
        raise DriverNotSupported(f"{mkfs} not found (apt-get install {package})")
    if options.pool is not None:
        status = dmsetup("status", options.pool, check=False)
        if status.returncode != 0 or " thin-pool " not in f" {status.stdout} ":
            raise DriverNotSupported(f"thin pool {options.pool!r} is not an active dm thin-pool "
                                     "(see `dmsetup status`)")
    elif not os.path.exists("/dev/loop-control"):
        _modprobe("loop")
        if not os.path.exists("/dev/loop-control"):
            raise DriverNotSupported("no loop devices (/dev/loop-control missing) for the development pool")


def _targets() -> str:
    result = dmsetup("targets", check=False)
    return result.stdout if result.returncode == 0 else ""


# -- devices ---------------------------------------------------------------------------------

def active_names() -> set[str]:
    """Names of every device-mapper device the kernel has, read from sysfs: far cheaper than
    a dmsetup process, which costs a good fraction of a second under emulation."""
    names = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir("/sys/block"):
            if entry.startswith("dm-"):
                with contextlib.suppress(OSError), open(f"/sys/block/{entry}/dm/name") as f:
                    names.add(f.read().strip())
    return names


def exists(name: str) -> bool:
    return name in active_names()


def device_path(name: str) -> str:
    return f"/dev/mapper/{name}"


@dataclass
class PoolUsage:
    """``dmsetup status`` of a thin pool, in bytes."""

    transaction_id: int
    metadata_used: int
    metadata_total: int
    data_used: int
    data_total: int
    block_size: int
    mode: str


def pool_usage(pool: str) -> PoolUsage:
    """Parse ``<start> <len> thin-pool <trans id> <used meta>/<total meta> <used data>/<total data> ...``."""
    status = dmsetup("status", pool).stdout.split()
    table = dmsetup("table", pool).stdout.split()
    # table: <start> <len> thin-pool <meta dev> <data dev> <block size in sectors> ...
    block_size = int(table[5]) * SECTOR
    meta_used, meta_total = (int(x) for x in status[4].split("/"))
    data_used, data_total = (int(x) for x in status[5].split("/"))
    mode = status[7] if len(status) > 7 else "?"
    # metadata blocks are always 4 KiB
    return PoolUsage(int(status[3]), meta_used * 4096, meta_total * 4096,
                     data_used * block_size, data_total * block_size, block_size, mode)


def pool_message(pool: str, message: str) -> subprocess.CompletedProcess:
    return dmsetup("message", pool, "0", message)


def activate_thin(pool: str, name: str, device_id: int, size: int) -> None:
    """Make thin device ``device_id`` of ``pool`` visible as /dev/mapper/NAME, ``size`` bytes."""
    if exists(name):
        return
    dmsetup("create", name, "--table", f"0 {size // SECTOR} thin {device_path(pool)} {device_id}")


def deactivate(name: str) -> None:
    if exists(name):
        dmsetup("remove", "--retry", name)


# -- loop devices ----------------------------------------------------------------------------

def loop_for(path: Path) -> str | None:
    """The loop device already backed by ``path``, if any."""
    out = run("losetup", "-j", str(path), check=False).stdout
    for line in out.splitlines():
        if line.strip():
            return line.split(":", 1)[0]
    return None


def attach_loop(path: Path) -> str:
    return loop_for(path) or run("losetup", "--find", "--show", str(path)).stdout.strip()


def detach_loop(device: str) -> None:
    run("losetup", "-d", device, check=False)


# -- filesystems -----------------------------------------------------------------------------

def mkfs(fs: str, device: str) -> None:
    if fs == "ext4":
        # Initialise inode tables and journal now: a lazy init would write them later in
        # every snapshot that gets mounted, un-sharing those blocks once per layer.
        run("mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", device)
    else:
        run("mkfs.xfs", "-q", "-f", "-K", device)


def mount(fs: str, device: str, target: Path) -> None:
    # Every snapshot carries its origin's filesystem UUID; xfs refuses duplicates unless told.
    options = "nouuid" if fs == "xfs" else "defaults"
    run("mount", "-t", fs, "-o", options, device, str(target))


def umount(target: Path) -> None:
    run("umount", str(target))


def grow(fs: str, device: str, mountpoint: Path) -> None:
    """Grow the mounted filesystem to fill its (already larger) device."""
    if fs == "ext4":
        run("resize2fs", device)
    else:
        run("xfs_growfs", str(mountpoint))
