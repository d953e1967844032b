"""The json-file log: one JSON object per line, Docker's format, capped in size with rotation.

Owned by the monitor (the only writer); ``logs`` reads it, following rotations. When the
filesystem is full, lines are dropped (and counted) rather than stopping the monitor: the
container's output still reaches attached clients, and its exit is still recorded.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path


def _timestamp() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


class JsonLogWriter:
    """Appends log lines; rotates to ``.1`` ... ``.N-1`` when the file exceeds ``max_size``."""

    def __init__(self, path: Path, max_size: int = 10 * 1024 * 1024, max_files: int = 2) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max(1, max_files)
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        #: lines lost to a full filesystem
        self.dropped = 0
        self.fd: int | None = None
        self.size = 0
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self.size = os.fstat(self.fd).st_size
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
            self._drop(exc)

    def write(self, stream: str, data: bytes) -> None:
        """Write the complete lines of ``data``; keep a trailing partial line for later."""
        buffered = self.partial[stream] + data
        *lines, rest = buffered.split(b"\n")
        if len(rest) > 16384:  # a runaway line without newline is flushed in pieces, like Docker
            lines.append(rest)
            rest = b""
        self.partial[stream] = rest
        for line in lines:
            self._emit(stream, line + b"\n")

    def flush(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self._emit(stream, rest)
                self.partial[stream] = b""

    def _emit(self, stream: str, line: bytes) -> None:
        record = json.dumps({"log": line.decode("utf-8", "replace"), "stream": stream,
                             "time": _timestamp()}) + "\n"
        raw = record.encode()
        try:
            if self.size + len(raw) > self.max_size and self.size > 0:
                self._rotate()
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            written = os.write(self.fd, raw)
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
            self._drop(exc)
            return
        self.size += written
        if written < len(raw):  # the disk filled mid-line: end the line so the file stays JSON lines
            self._drop(None)
            try:
                self.size += os.write(self.fd, b"\n")
            except OSError:
                pass

    def _drop(self, exc: OSError | None) -> None:
        if not self.dropped:
            from pyengine.log import get_logger

            get_logger("pyengine.containers.log").warning(
                "log.lines_dropped", path=str(self.path), reason=exc.strerror if exc else "short write")
        self.dropped += 1

    def _rotate(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        for n in range(self.max_files - 1, 0, -1):
            src = self.path if n == 1 else self.path.with_name(f"{self.path.name}.{n - 1}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{n}"))
        if self.max_files == 1:
            os.unlink(self.path)
        self.size = 0  # rotated: a failing open below is retried by the next line, not rotated again
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o640)

    def close(self) -> None:
        self.flush()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_FULL = (errno.ENOSPC, errno.EDQUOT)


def read_entries(path: Path, max_files: int = 10) -> list[dict]:
    """Every entry of the log, oldest first, across rotated files."""
    entries: list[dict] = []
    files = [path.with_name(f"{path.name}.{n}") for n in range(max_files, 0, -1)] + [path]
    for file in files:
        if file.exists():
            with open(file) as f:
                for line in f:
                    try:
                        entries.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
    return entries


def follow(path: Path, still_running, poll: float = 0.1) -> Iterator[dict]:  # noqa: ANN001
    """Entries appended to ``path`` from now on, until ``still_running()`` is false and the
    file has been drained."""
    fh = open(path) if path.exists() else None
    inode = os.fstat(fh.fileno()).st_ino if fh else None
    if fh:
        fh.seek(0, os.SEEK_END)
    while True:
        if fh is None and path.exists():
            fh = open(path)
            inode = os.fstat(fh.fileno()).st_ino
        line = fh.readline() if fh else ""
        if line:
            if line.endswith("\n"):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    pass
            continue
        try:
            rotated = path.stat().st_ino != inode
        except FileNotFoundError:
            rotated = False
        if rotated and fh:
            fh.close()
            fh = None
            continue
        if not still_running():
            return
        time.sleep(poll)
