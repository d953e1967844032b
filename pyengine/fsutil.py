"""What every store needs from the filesystem: directories that only root can reach (the data
root 0710, the run root 0711, everything the engine makes under them 0700, as Docker's); writing
a JSON file so that a reader (or a crash) sees the old content or the new, never half; and an
exclusive lock that the kernel releases when the holder dies (flock on a lock file)."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyengine.log import get_logger

log = get_logger("pyengine.fsutil")

#: the data root: root only (Docker's 0710 leaves a remapped root's group the right to pass)
DATA_ROOT_MODE = 0o710
#: the run root: passable by anyone, listable by nobody, so that a socket in it (the daemon's,
#: root:pyengine 0660) can be reached by its group while nothing else in it can
RUN_ROOT_MODE = 0o711
#: every other directory the engine makes under its roots
PRIVATE_MODE = 0o700

#: the roots this process has secured: absolute path -> the mode a new one is made with
_root_modes: dict[str, int] = {}


def secure_root(path: Path, mode: int) -> None:
    """Take away from an existing root directory every permission bit beyond ``mode``, and have
    :func:`make_dirs` give it (and any parent it makes for it) ``mode`` when it is made later.

    A stat per root and process: a data root made 0755 by an older engine or by hand is
    tightened the first time an engine uses it, without walking the tree below it.
    """
    key = os.path.abspath(path)
    if key in _root_modes:
        return
    _root_modes[key] = mode
    try:
        perms = stat.S_IMODE(os.stat(key).st_mode)
    except FileNotFoundError:
        return  # made with ``mode`` when something is first written under it
    except OSError as exc:
        log.warning("root.unchecked", path=key, reason=exc.strerror)
        return
    if perms & ~mode:
        try:
            os.chmod(key, perms & mode)
        except OSError as exc:  # not its owner: this process cannot use the root either
            log.warning("root.too_open", path=key, mode=oct(perms), reason=exc.strerror)
            return
        log.debug("root.tightened", path=key, mode=oct(perms & mode), was=oct(perms))


def secure_roots(data_root: Path, run_root: Path) -> None:
    """:func:`secure_root` for an engine's data root and run root."""
    secure_root(data_root, DATA_ROOT_MODE)
    secure_root(run_root, RUN_ROOT_MODE)


def make_dirs(path: Path, mode: int = PRIVATE_MODE) -> Path:
    """``mkdir -p`` in which every directory made gets an exact mode, whatever the umask:
    ``mode`` for ``path`` itself, a secured root's own mode for that root and the parents made
    for it, 0700 for the others. Existing directories are left as they are; returns ``path``."""
    try:
        os.mkdir(path, PRIVATE_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return path
    except FileNotFoundError:
        parent = Path(path).parent
        if parent == Path(path):
            raise
        make_dirs(parent, _mode_for(parent, PRIVATE_MODE))
        try:
            os.mkdir(path, PRIVATE_MODE)
        except FileExistsError:  # made meanwhile by another process
            if not os.path.isdir(path):
                raise
            return path
    os.chmod(path, _mode_for(path, mode))
    return path


def _mode_for(path: Path, mode: int) -> int:
    """A root's mode for the root, the union of the modes of the roots below it for a parent of
    roots (the run root's parent must let a socket's group pass), else ``mode``."""
    key = os.path.abspath(path)
    if key in _root_modes:
        return _root_modes[key]
    below = [m for root, m in _root_modes.items() if root.startswith(key.rstrip("/") + "/")]
    if below:
        union = 0
        for m in below:
            union |= m
        return union
    return mode


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 1, sort_keys: bool = False,
                      fsync: bool = True) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, rename it over ``path``.

    The temp name starts with a dot and ends in ``.tmp``, so globs for ``*.json`` never see it;
    the file is 0600 and missing parents are made 0700 (see :func:`make_dirs`).
    """
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=indent, sort_keys=sort_keys)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def flocked(path: Path) -> Iterator[int]:
    """Hold an exclusive flock on ``path`` (created 0600, missing parents 0700) for the block."""
    make_dirs(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)
