"""The event journal: container, image, network and volume events in Docker's shape, appended
to a bounded JSON-lines file under the run root by whichever process made them (a CLI command,
a container's monitor, the daemon), and read back with since/until/filters or followed.

Owns the journal's files (``<run-root>/events/``), Docker's event filters and its time syntax;
imports only the standard library and fsutil. ``pyengine events`` and ``GET /events`` read it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pyengine.errors import UsageError
from pyengine.fsutil import flocked

#: the journal rotates when its file would grow past this; one older file is kept
MAX_BYTES = 2 * 1024 * 1024
#: how often a follower looks for new lines (inotify is not in the standard library)
POLL_SECONDS = 0.1

#: the types Docker's daemon emits events for; the ones this engine records are the first four
EVENT_TYPES = ("container", "image", "network", "volume", "daemon", "plugin", "node", "service",
               "secret", "config", "builder")
#: filter keys dockerd accepts for events
FILTER_KEYS = ("container", "daemon", "event", "image", "label", "network", "node", "plugin", "scope",
               "type", "volume", "config", "secret", "service")


class EventJournal:
    """The journal of one run root: ``events.jsonl`` and, after a rotation, ``events.jsonl.1``."""

    def __init__(self, run_root: Path, max_bytes: int = MAX_BYTES) -> None:
        self.dir = Path(run_root) / "events"
        self.path = self.dir / "events.jsonl"
        self.old_path = self.dir / "events.jsonl.1"
        self.lock_path = self.dir / "lock"
        self.max_bytes = max_bytes
        self._dir_checked = False

    # -- writing ---------------------------------------------------------------------------
    def record(self, event_type: str, action: str, actor_id: str, attributes: Mapping[str, Any] | None = None,
               *, when_ns: int | None = None) -> dict[str, Any]:
        """Append one event; returns it. One ``write`` of one line under the journal's flock, so
        readers and other writers never see half a line or lose one at a rotation."""
        event = make_event(event_type, action, actor_id, attributes, when_ns=when_ns)
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with flocked(self.lock_path):
            if not self._dir_checked:  # root's only: events name every container and image
                os.chmod(self.dir, 0o700)
                self._dir_checked = True
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(fd).st_size + len(line) > self.max_bytes:
                    os.close(fd)
                    fd = -1
                    os.replace(self.path, self.old_path)
                    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                os.write(fd, line)
            finally:
                if fd >= 0:
                    os.close(fd)
        return event

    # -- reading ---------------------------------------------------------------------------
    def read(self, since_ns: int | None = None, until_ns: int | None = None,
             event_filter: EventFilter | None = None) -> list[dict[str, Any]]:
        """The recorded events with ``since_ns <= timeNano <= until_ns`` that pass the filter."""
        out = []
        for path in (self.old_path, self.path):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            for event in _parse_lines(data.split(b"\n")):
                if _in_range(event, since_ns, until_ns) and (event_filter is None or event_filter.match(event)):
                    out.append(event)
        return out

    def follower(self) -> Follower:
        """A follower positioned at the journal's current end: it sees only events recorded later."""
        return Follower(self)


class Follower:
    """New lines of a journal since it was made, across rotations; ``poll()`` never blocks."""

    def __init__(self, journal: EventJournal) -> None:
        self.journal = journal
        self._fd = -1
        self._ino: int | None = None
        self._partial = b""
        self._open(at_end=True)

    def _open(self, at_end: bool) -> None:
        try:
            fd = os.open(self.journal.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._fd, self._ino = -1, None
            return
        self._fd, self._ino = fd, os.fstat(fd).st_ino
        if at_end:
            os.lseek(fd, 0, os.SEEK_END)

    def _drain(self) -> list[dict[str, Any]]:
        chunks = []
        while True:
            data = os.read(self._fd, 1 << 16)
            if not data:
                break
            chunks.append(data)
        if not chunks:
            return []
        lines = (self._partial + b"".join(chunks)).split(b"\n")
        self._partial = lines.pop()
        return list(_parse_lines(lines))

    def poll(self) -> list[dict[str, Any]]:
        """The events appended since the last poll (a file rotated meanwhile is read to its end first)."""
        if self._fd < 0:
            self._open(at_end=False)
            if self._fd < 0:
                return []
        events = self._drain()
        try:
            current = os.stat(self.journal.path).st_ino
        except FileNotFoundError:
            current = None
        if current != self._ino:
            events += self._drain()  # the rest of the rotated file, written before the rename
            os.close(self._fd)
            self._partial = b""
            self._open(at_end=False)
            if self._fd >= 0:
                events += self._drain()
        return events

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def make_event(event_type: str, action: str, actor_id: str, attributes: Mapping[str, Any] | None = None,
               *, when_ns: int | None = None) -> dict[str, Any]:
    """An event as dockerd sends it, with the deprecated top-level fields that older clients
    read (``status``, ``id``, ``from``) on container and image events."""
    when_ns = time.time_ns() if when_ns is None else when_ns
    attrs = {str(k): str(v) for k, v in (attributes or {}).items() if v is not None}
    event: dict[str, Any] = {}
    if event_type in ("container", "image"):
        event["status"] = action
        event["id"] = actor_id
        if event_type == "container" and "image" in attrs:
            event["from"] = attrs["image"]
    event.update({"Type": event_type, "Action": action, "Actor": {"ID": actor_id, "Attributes": attrs},
                  "scope": "local", "time": when_ns // 1_000_000_000, "timeNano": when_ns})
    return event


def _parse_lines(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line a crashed writer never finished; the next one is whole
        if isinstance(event, dict) and isinstance(event.get("timeNano"), int):
            yield event


def _in_range(event: dict[str, Any], since_ns: int | None, until_ns: int | None) -> bool:
    when = event["timeNano"]
    return (since_ns is None or when >= since_ns) and (until_ns is None or when <= until_ns)


# -- filters ---------------------------------------------------------------------------------
class EventFilter:
    """Docker's event filters: values of one key are alternatives, different keys must all match."""

    def __init__(self, filters: Mapping[str, Iterable[str]] | None = None) -> None:
        self.filters = {key: list(values) for key, values in (filters or {}).items() if list(values)}
        for key in self.filters:
            if key not in FILTER_KEYS:
                raise UsageError(f"invalid filter '{key}'")

    @classmethod
    def from_pairs(cls, pairs: Iterable[str]) -> EventFilter:
        """From the CLI's ``--filter key=value`` pairs."""
        filters: dict[str, list[str]] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UsageError(f"bad format of filter (expected name=value): {pair!r}")
            filters.setdefault(key.strip().lower(), []).append(value)
        return cls(filters)

    def _exact(self, key: str, *candidates: str | None) -> bool:
        values = self.filters.get(key)
        return values is None or any(c is not None and c in values for c in candidates)

    def _fuzzy(self, key: str, *candidates: str | None) -> bool:
        values = self.filters.get(key)
        if values is None:
            return True
        return any(c and (c in values or any(c.startswith(v) for v in values if v)) for c in candidates)

    def match(self, event: dict[str, Any]) -> bool:
        actor = event.get("Actor") or {}
        actor_id = actor.get("ID") or ""
        attrs = actor.get("Attributes") or {}
        event_type = event.get("Type") or ""
        action = event.get("Action") or ""
        image_name = attrs.get("name" if event_type == "image" else "image")
        return (self._exact("event", action, action.split(":", 1)[0])
                and self._exact("type", event_type)
                and self._exact("scope", event.get("scope"))
                and self._named("container", "container", event_type, actor_id, attrs)
                and self._named("network", "network", event_type, actor_id, attrs)
                and self._named("volume", "volume", event_type, actor_id, attrs)
                and self._named("plugin", "plugin", event_type, actor_id, attrs)
                and self._exact("image", actor_id, image_name, _strip_tag(actor_id), _strip_tag(image_name))
                and self._labels(attrs)
                and "daemon" not in self.filters and "node" not in self.filters
                and "service" not in self.filters and "secret" not in self.filters
                and "config" not in self.filters)

    def _named(self, key: str, kind: str, event_type: str, actor_id: str, attrs: dict[str, str]) -> bool:
        """As dockerd's: the actor's ID or name (prefixes allowed), and for a network or volume
        filter also the events of containers connected to or mounting it."""
        if key not in self.filters:
            return True
        if event_type == kind:
            return self._fuzzy(key, actor_id, attrs.get("name"))
        if kind == "container" and event_type in ("network", "volume"):
            return self._fuzzy(key, attrs.get("container"))
        return False

    def _labels(self, attrs: dict[str, str]) -> bool:
        for wanted in self.filters.get("label", []):
            key, sep, value = wanted.partition("=")
            if key not in attrs or (sep and attrs[key] != value):
                return False
        return True


def _strip_tag(name: str | None) -> str | None:
    if not name:
        return name
    name = name.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


# -- time ------------------------------------------------------------------------------------
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}
_UNIX = re.compile(r"^-?\d+(\.\d{1,9})?$")


def parse_time(text: str, now_ns: int | None = None) -> int:
    """A point in time as Docker's ``--since``/``--until`` accept it, in nanoseconds: unix
    seconds with a fraction (``1700000000.5``), RFC 3339 or a date (``2024-05-01``,
    ``2024-05-01T10:00:00Z``; local time without a zone), or a Go duration before now (``10m``,
    ``1h30m``)."""
    value = text.strip()
    now_ns = time.time_ns() if now_ns is None else now_ns
    if not value:
        raise UsageError("empty time value")
    if _UNIX.match(value):
        seconds, _, fraction = value.partition(".")
        nanos = int(fraction.ljust(9, "0")) if fraction else 0
        sign = -1 if seconds.startswith("-") else 1
        return int(seconds) * 1_000_000_000 + sign * nanos
    duration = _parse_duration(value)
    if duration is not None:
        return now_ns - duration
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"invalid time {text!r}: use unix seconds, RFC 3339 (2006-01-02T15:04:05Z) "
                         "or a duration such as 10m") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def _parse_duration(value: str) -> int | None:
    sign = 1
    if value[0] in "+-":
        sign, value = (-1 if value[0] == "-" else 1), value[1:]
    if value == "0":
        return 0
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(value):
        return None
    return sign * int(total)


def format_time(time_ns: int) -> str:
    """The event's time as the docker CLI prints it: RFC 3339 with nanoseconds, local zone."""
    moment = datetime.datetime.fromtimestamp(time_ns // 1_000_000_000).astimezone()
    nanos = f"{time_ns % 1_000_000_000:09d}".rstrip("0")
    offset = moment.strftime("%z")
    zone = "Z" if offset == "+0000" else f"{offset[:3]}:{offset[3:]}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{nanos}" if nanos else "") + zone


def format_event(event: dict[str, Any]) -> str:
    """One line as ``docker events`` prints it: time, type, action, actor ID, (attributes)."""
    actor = event.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    line = f"{format_time(event['timeNano'])} {event.get('Type', '')} {event.get('Action', '')} {actor.get('ID', '')}"
    if attrs:
        line += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return line


def watch(journal: EventJournal, since_ns: int | None = None, until_ns: int | None = None,
          event_filter: EventFilter | None = None) -> Iterator[dict[str, Any]]:
    """``docker events`` in this process: the journal's events from ``since_ns`` to
    ``until_ns`` (when either is given), then new ones as they are recorded, until
    ``until_ns`` (without it, for as long as the caller iterates)."""
    event_filter = event_filter or EventFilter()
    now = time.time_ns()
    # The follower first, so that nothing recorded between the replay and the follow is lost.
    follower = journal.follower() if until_ns is None or until_ns > now else None
    try:
        if since_ns is not None or until_ns is not None:
            yield from journal.read(since_ns, min(until_ns or now, now), event_filter)
        if follower is None:
            return
        while until_ns is None or time.time_ns() <= until_ns:
            for event in follower.poll():
                if event["timeNano"] <= now and since_ns is not None:
                    continue  # already replayed
                if until_ns is not None and event["timeNano"] > until_ns:
                    return
                if event_filter.match(event):
                    yield event
            time.sleep(POLL_SECONDS)
    finally:
        if follower is not None:
            follower.close()


# -- the engine's journal --------------------------------------------------------------------
_journals: dict[str, EventJournal] = {}


def journal_for(run_root: Path) -> EventJournal:
    """The journal of ``run_root`` (one object per root and process)."""
    key = os.path.abspath(run_root)
    journal = _journals.get(key)
    if journal is None:
        journal = _journals[key] = EventJournal(Path(key))
    return journal


def record(run_root: Path, event_type: str, action: str, actor_id: str,
           attributes: Mapping[str, Any] | None = None) -> None:
    """Record an event in ``run_root``'s journal; a journal that cannot be written is only
    logged: an event must never fail the operation it reports."""
    try:
        journal_for(run_root).record(event_type, action, actor_id, attributes)
    except OSError as exc:
        from pyengine.log import get_logger

        get_logger("pyengine.events").warning("events.not_recorded", type=event_type, action=action,
                                              actor=actor_id, reason=exc.strerror)
