"""Mount reference counts that every process sees: one small file per layer under the run
root, changed under an exclusive lock. A container's rootfs is held by its monitor, so a
layer's "in use" must be visible to every other pyengine process, not just the one that
mounted it. A helper for storage drivers."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyengine.fsutil import make_dirs


@dataclass
class Count:
    """The current count; change ``value`` inside :meth:`MountCounts.locked`."""

    value: int


class MountCounts:
    """Per-layer counts under ``directory`` (in the run root: they vanish at reboot, as mounts do)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @contextmanager
    def locked(self, layer_id: str) -> Iterator[Count]:
        """The layer's count, locked against every other process until the block ends."""
        make_dirs(self.directory)
        path = self.directory / layer_id
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder before us may have unlinked the file (count back to 0): then our lock
            # is on a dead inode, and we start again on the file now at the path.
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            raw = os.pread(fd, 32, 0)
            count = Count(int(raw) if raw.strip() else 0)
            before = count.value
            yield count
            if count.value <= 0:
                os.unlink(path)
            elif count.value != before:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(count.value).encode(), 0)
        finally:
            os.close(fd)

    def get(self, layer_id: str) -> int:
        try:
            raw = (self.directory / layer_id).read_text()
        except FileNotFoundError:
            return 0
        return int(raw) if raw.strip() else 0
