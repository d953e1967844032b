"""The seam between the cgroup managers and the kernel: every read, write, mkdir and rmdir of
a cgroup file goes through a :class:`CgroupFS`, so the managers' logic is testable against an
in-memory double and this small class is tested against the real kernel."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Protocol

from pyengine.errors import DriverError


class CgroupFS(Protocol):
    """What the managers need from a cgroup filesystem."""

    def read(self, path: Path) -> str: ...
    def write(self, path: Path, value: str) -> None: ...
    def exists(self, path: Path) -> bool: ...
    def mkdir(self, path: Path) -> bool: ...
    def rmdir(self, path: Path) -> bool: ...
    def listdir(self, path: Path) -> list[str]: ...
    def attach_device_program(self, path: Path, rules: list[dict]) -> None: ...


class KernelFS:
    """The real thing: cgroupfs files through plain syscalls, errors as one-line DriverErrors.

    Writes are single ``write(2)`` calls of the whole value without buffering, because
    cgroupfs parses each write on its own and a split write means a different value.
    """

    def read(self, path: Path) -> str:
        try:
            with open(path) as f:
                return f.read()
        except OSError as exc:
            raise DriverError(f"cannot read {path}: {exc.strerror}") from None

    def write(self, path: Path, value: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError as exc:
            raise DriverError(f"cannot open {path} to write {value!r}: {exc.strerror}") from None
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            raise DriverError(f"cannot write {value!r} to {path}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def exists(self, path: Path) -> bool:
        return os.path.exists(path)

    def attach_device_program(self, path: Path, rules: list[dict]) -> None:
        """cgroup v2's device cgroup: the rules as an eBPF program attached to ``path``."""
        from pyengine.cgroups.devices import attach_program

        attach_program(path, rules)

    def mkdir(self, path: Path) -> bool:
        """Create the cgroup; False when it already existed."""
        try:
            os.mkdir(path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise DriverError(f"cannot create cgroup {path}: {exc.strerror}") from None

    def rmdir(self, path: Path) -> bool:
        """Remove the cgroup; False when it was already gone. EBUSY (tasks or children left)
        surfaces as a DriverError the caller may retry."""
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise CgroupBusy(f"cgroup {path} still has processes or children") from None
            raise DriverError(f"cannot remove cgroup {path}: {exc.strerror}") from None

    def listdir(self, path: Path) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []


class CgroupBusy(DriverError):
    """A cgroup could not be removed because processes or child cgroups remain in it."""


def remove_cgroup(fs: CgroupFS, path: Path, timeout: float = 5.0) -> bool:
    """Remove a cgroup whose processes were killed; waits up to ``timeout`` for the kernel to
    let go of exiting tasks (rmdir is EBUSY until they are reaped). False if already gone."""
    import time

    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return fs.rmdir(path)
        except CgroupBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def ensure_path(fs: CgroupFS, base: Path, target: Path, on_create=None) -> None:  # noqa: ANN001
    """Create ``target`` and any missing directories between ``base`` (which must exist) and
    it, calling ``on_create(parent, created)`` for each directory made, top down."""
    relative = target.relative_to(base)
    current = base
    for part in relative.parts:
        child = current / part
        if not fs.exists(child):
            if fs.mkdir(child) and on_create is not None:
                on_create(current, child)
        current = child
