"""The container store: one directory per container under ``<data-root>/containers``.

Owns the on-disk records (``config.json``: what the user asked for, written once;
``state.json``: what is happening now, rewritten atomically), the name index, the lock, and
reconciliation of containers whose monitor died. Knows nothing of how a process is started.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyengine.errors import Conflict, NotFound, UsageError
from pyengine.fsutil import PRIVATE_MODE, flocked, make_dirs, write_json_atomic


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


@dataclass
class ContainerState:
    """The mutable part of a container, Docker's ``State`` in our words."""

    status: str = "created"  # created | running | paused | restarting | exited | dead
    pid: int = 0
    monitor_pid: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    started_at: str = ""
    finished_at: str = ""
    restart_count: int = 0
    stop_requested: bool = False

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")


@dataclass
class ContainerRecord:
    """A container: its immutable config and its current state."""

    id: str
    name: str
    created: str
    image: str
    image_id: str
    config: dict[str, Any]
    host_config: dict[str, Any]
    layer_id: str
    state: ContainerState = field(default_factory=ContainerState)
    #: networks joined at start: name -> {"Aliases": [...], "IPAddress": ""} (EndpointsConfig)
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_config(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("state")
        return data


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_ADJ = ["brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nifty", "quirky", "serene", "tender", "vivid", "witty", "zen", "bold", "cool", "dreamy"]
_NOUN = ["turing", "hopper", "lovelace", "ritchie", "thompson", "torvalds", "knuth", "liskov",
         "dijkstra", "hamilton", "curie", "noether", "euler", "gauss", "shannon", "wirth"]


class ContainerStore:
    """Container records under a data root and their run-time files under a run root."""

    def __init__(self, data_root: Path, run_root: Path) -> None:
        # Nothing is created until something is written: a command that fails (a missing
        # image, a bad flag) leaves the roots as they were.
        self.root = data_root / "containers"
        self.run_dir = run_root / "containers"

    # -- locking ---------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """The store-wide lock: names, creation and removal happen under it."""
        with flocked(self.root / ".lock"):
            yield

    @contextmanager
    def container_lock(self, container_id: str) -> Iterator[None]:
        """A per-container lock around read-modify-write of its state."""
        with flocked(self.dir(container_id) / ".lock"):
            yield

    # -- paths -----------------------------------------------------------------------------
    def dir(self, container_id: str) -> Path:
        return self.root / container_id

    def run_path(self, container_id: str) -> Path:
        return make_dirs(self.run_dir / container_id)

    def log_path(self, container_id: str) -> Path:
        return self.dir(container_id) / f"{container_id}-json.log"

    # -- records ---------------------------------------------------------------------------
    def new_id(self) -> str:
        # os.urandom, not secrets: the secrets module costs 4 ms of import on every `run`.
        return os.urandom(32).hex()

    def check_name(self, name: str) -> None:
        if not name or name[0] not in _NAME_CHARS - set("_.-") or not set(name) <= _NAME_CHARS:
            raise UsageError(f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")

    def generate_name(self) -> str:
        taken = {r.name for r in self.list()}
        for _ in range(100):
            a, b = os.urandom(2)
            name = f"{_ADJ[a % len(_ADJ)]}_{_NOUN[b % len(_NOUN)]}"
            if name not in taken:
                return name
        return f"pyengine_{os.urandom(4).hex()}"

    def add(self, record: ContainerRecord) -> None:
        """Persist a new container; the name must be free (call under ``lock``)."""
        for other in self.list():
            if other.name == record.name:
                raise Conflict(f"Conflict. The container name \"/{record.name}\" is already in use by container "
                               f"\"{other.id}\". You have to remove (or rename) that container to be able to reuse "
                               "that name.")
        path = self.dir(record.id)
        make_dirs(path.parent)
        os.mkdir(path, PRIVATE_MODE)
        write_json_atomic(path / "state.json", asdict(record.state))
        write_json_atomic(path / "config.json", record.as_config())

    def load(self, container_id: str) -> ContainerRecord:
        path = self.dir(container_id)
        try:
            config = json.loads((path / "config.json").read_text())
        except FileNotFoundError:
            raise NotFound(f"no such container: {container_id}") from None
        try:
            state = ContainerState(**json.loads((path / "state.json").read_text()))
        except FileNotFoundError:
            state = ContainerState(status="dead", error="state file missing")
        return ContainerRecord(**config, state=state)

    def save_state(self, container_id: str, state: ContainerState) -> None:
        write_json_atomic(self.dir(container_id) / "state.json", asdict(state))

    def save_config(self, record: ContainerRecord) -> None:
        write_json_atomic(self.dir(record.id) / "config.json", record.as_config())

    def list(self) -> list[ContainerRecord]:
        records = []
        for entry in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if entry.name.startswith(".") or not (entry / "config.json").exists():
                continue
            try:
                records.append(self.load(entry.name))
            except (NotFound, json.JSONDecodeError):
                continue
        records.sort(key=lambda r: r.created, reverse=True)
        return records

    def resolve(self, ref: str) -> str:
        """A full ID from a full ID, a unique ID prefix or a name."""
        if not ref:
            raise UsageError("a container name or ID is required")
        if (self.root / ref / "config.json").exists():
            return ref
        records = self.list()
        for record in records:
            if record.name == ref.lstrip("/"):
                return record.id
        matches = [r.id for r in records if r.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"container ID prefix {ref!r} is ambiguous; give more characters")
        raise NotFound(f"no such container: {ref}")

    def remove_record(self, container_id: str) -> None:
        import shutil

        path = self.dir(container_id)
        trash = self.root / f".rm-{container_id}"
        try:
            os.rename(path, trash)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(self.run_dir / container_id, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    from pyengine.procfs import stat_fields

    try:
        return stat_fields(pid)[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
