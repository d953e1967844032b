"""Reading a container's json-file log for ``logs`` and ``GET /containers/{id}/logs``: the
backlog across rotated files, ``since``/``until``/``tail``, and following new entries until
the container's monitor is done.

The backlog and the follow share one open file, so no entry written between the two is lost
or repeated. Reads the log the monitor (or pyengine-shim) writes; never writes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pyengine.containers.inspect import unix_seconds
from pyengine.errors import NotFound, UsageError

if TYPE_CHECKING:
    from pyengine.containers.engine import Containers


@dataclass
class LogOptions:
    """What ``logs`` asked for; ``since``/``until`` in seconds since the epoch (0: no bound),
    ``tail`` the number of backlog entries to keep (None: all)."""

    follow: bool = False
    stdout: bool = True
    stderr: bool = True
    since: float = 0.0
    until: float = 0.0
    tail: int | None = None


def parse_tail(value: str | None) -> int | None:
    """``all`` (or empty) -> None; ``N`` -> N; anything else a UsageError."""
    if value is None or value in ("", "all"):
        return None
    if not value.lstrip("-").isdigit():
        raise UsageError(f"invalid tail value {value!r}: a number or 'all'")
    number = int(value)
    return None if number < 0 else number


def parse_time(value: str | None, now: float | None = None) -> float:
    """Docker's ``since``/``until``: seconds since the epoch (``1700000000.5``), an RFC 3339
    time, or a duration before now (``10m``, ``1h30m``, ``5s``)."""
    import calendar
    import re

    if value is None or value == "" or value == "0":
        return 0.0
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    now = time.time() if now is None else now
    duration = re.fullmatch(r"((\d+(\.\d+)?)(h|m|s|ms))+", value)
    if duration:
        total = 0.0
        for number, _, unit in re.findall(r"(\d+(\.\d+)?)(ms|h|m|s)", value):
            total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        return now - total
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}(?::\d{2})?)(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?", value)
    if not match:
        raise UsageError(f"invalid time {value!r}: use seconds since the epoch, RFC 3339 or a duration (10m)")
    day, clock, frac, zone = match.groups()
    clock = clock or "00:00:00"
    if clock.count(":") == 1:
        clock += ":00"
    seconds = calendar.timegm(time.strptime(f"{day}T{clock}", "%Y-%m-%dT%H:%M:%S")) + float(frac or 0)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = zone[1:].split(":")
        seconds -= sign * (int(hours) * 3600 + int(minutes) * 60)
    return seconds


def log_entries(containers: Containers, ref: str, options: LogOptions,
                cancelled: Callable[[], bool] | None = None) -> Iterator[dict]:
    """The container's log entries (``{"log", "stream", "time"}``) oldest first, as asked;
    with ``follow``, new ones until the container stopped and its log was drained, or
    ``cancelled()`` says the reader went away."""
    record = containers.get(ref)
    path = containers.store.log_path(record.id)
    streams = {name for name, wanted in (("stdout", options.stdout), ("stderr", options.stderr)) if wanted}

    def still_running() -> bool:
        from pyengine.containers.store import pid_alive

        if cancelled is not None and cancelled():
            return False
        try:
            current = containers.store.load(record.id)
        except NotFound:
            return False
        return current.state.running or pid_alive(current.state.monitor_pid)

    def wanted(entry: dict) -> bool:
        if entry.get("stream", "stdout") not in streams:
            return False
        if options.since or options.until:
            at = unix_seconds(entry.get("time", ""))
            if options.since and at < options.since:
                return False
            if options.until and at > options.until:
                return False
        return True

    live = _open(path)
    backlog = [e for e in _rotated_entries(path) + _read_available(live) if wanted(e)]
    if options.tail is not None:
        backlog = backlog[-options.tail:] if options.tail else []
    try:
        yield from backlog
        if not options.follow or (options.until and options.until <= time.time()):
            return
        for entry in _follow(path, live, still_running):
            if options.until and unix_seconds(entry.get("time", "")) > options.until:
                return
            if wanted(entry):
                yield entry
    finally:
        if live is not None:
            live.close()


def _open(path: Path) -> IO[str] | None:
    try:
        return open(path, errors="replace")
    except FileNotFoundError:
        return None


def _parse(line: str) -> dict | None:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None


def _rotated_entries(path: Path, max_files: int = 10) -> list[dict]:
    entries: list[dict] = []
    for n in range(max_files, 0, -1):
        rotated = path.with_name(f"{path.name}.{n}")
        if rotated.exists():
            with open(rotated, errors="replace") as f:
                entries.extend(e for e in map(_parse, f) if e is not None)
    return entries


def _read_available(fh: IO[str] | None) -> list[dict]:
    """The complete lines ``fh`` has now; a partial last line is left to be read again."""
    if fh is None:
        return []
    entries: list[dict] = []
    while True:
        position = fh.tell()
        line = fh.readline()
        if not line:
            return entries
        if not line.endswith("\n"):
            fh.seek(position)
            return entries
        entry = _parse(line)
        if entry is not None:
            entries.append(entry)


def _follow(path: Path, fh: IO[str] | None, still_running: Callable[[], bool], poll: float = 0.1) -> Iterator[dict]:
    inode = os.fstat(fh.fileno()).st_ino if fh is not None else None
    while True:
        if fh is None:
            fh = _open(path)
            inode = os.fstat(fh.fileno()).st_ino if fh is not None else None
        entries = _read_available(fh)
        if entries:
            yield from entries
            continue
        try:
            rotated = fh is not None and path.stat().st_ino != inode
        except FileNotFoundError:
            rotated = False
        if rotated and fh is not None:
            fh.close()
            fh = None
            continue
        if not still_running():
            yield from _read_available(fh)
            if fh is not None:
                fh.close()
            return
        time.sleep(poll)
