"""The container store: one directory per container under ``<data-root>/containers``.

Owns the on-disk records (``config.json``: what the user asked for, written once;
``state.json``: what is happening now, rewritten atomically), the name index, the lock, and
reconciliation of containers whose monitor died. Knows nothing of how a process is started.

Every record read is validated: a container whose record cannot be read is still listed, as
``damaged`` with the reason in its state's error, so that it can be removed. When the data
root is full, a state is kept in the run root until the data root has room again.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pyengine.errors import Conflict, Damaged, NoSpace, NotFound, UsageError
from pyengine.fsutil import PRIVATE_MODE, flocked, make_dirs, write_json_atomic
from pyengine.log import get_logger

log = get_logger("pyengine.containers.store")

#: the status of a container whose record cannot be read (``ps -a`` shows it, ``rm -f`` removes it)
DAMAGED = "damaged"


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


@dataclass
class ContainerState:
    """The mutable part of a container, Docker's ``State`` in our words."""

    status: str = "created"  # created | running | paused | restarting | exited | dead | damaged
    pid: int = 0
    monitor_pid: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    started_at: str = ""
    finished_at: str = ""
    restart_count: int = 0
    stop_requested: bool = False
    #: when ``monitor_pid`` and ``pid`` started (``procfs.start_time``, recorded with them; 0 in
    #: records of older engines): a pid the kernel has since given to another process is not
    #: the monitor's, nor the container's
    monitor_start_time: int = 0
    pid_start_time: int = 0
    #: Docker's State.Health while the container has a healthcheck: {"Status": starting |
    #: healthy | unhealthy, "FailingStreak": N, "Log": [the last 5 results]} (containers.health)
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")

    def monitor_alive(self) -> bool:
        """True when the recorded monitor runs: its pid lives with its recorded start time."""
        return process_alive(self.monitor_pid, self.monitor_start_time)

    def process_alive(self) -> bool:
        """True when the recorded container process (PID 1) runs, by pid and start time."""
        return process_alive(self.pid, self.pid_start_time)


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


def _is_name(name: str) -> bool:
    """True when ``name`` is one a container can have."""
    return bool(name) and name[0] in _NAME_FIRST and set(name) <= _NAME_CHARS


_NAME_FIRST = _NAME_CHARS - set("_.-")


class ContainerStore:
    """Container records under a data root and their run-time files under a run root."""

    def __init__(self, data_root: Path, run_root: Path) -> None:
        # Nothing is created until something is written: a command that fails (a missing
        # image, a bad flag) leaves the roots as they were.
        self.root = data_root / "containers"
        self.run_dir = run_root / "containers"
        # The same as strings: a listing reads every record, and pathlib's joins cost more
        # than the reads
        self._root = str(self.root)
        self._run_dir = str(self.run_dir)

    # -- locking ---------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """The store-wide lock: names, creation and removal happen under it."""
        with flocked(self.root / ".lock"):
            yield

    @contextmanager
    def container_lock(self, container_id: str) -> Iterator[None]:
        """A per-container lock around read-modify-write of its state; NotFound when the
        container is gone (its directory is never made again by taking the lock)."""
        import fcntl

        try:
            fd = os.open(self.dir(container_id) / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such container: {container_id}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

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
        if not _is_name(name):
            raise UsageError(f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")

    def names(self) -> dict[str, str]:
        """name -> id of every container, from each one's config record alone (a third of what
        ``list`` reads, and no record built): a scan of every container, which the name index
        spares ``create`` and ``rename``; it rebuilds the index and ``system check`` checks it."""
        out: dict[str, str] = {}
        try:
            entries = os.listdir(self._root)
        except (FileNotFoundError, NotADirectoryError):
            return out
        for entry in entries:
            if entry.startswith("."):
                continue
            name = self._record_name(entry)
            if name:
                out[name] = entry
        return out

    def _record_name(self, container_id: str) -> str | None:
        """The name in the container's own config record (the one ``load`` gives when that record
        is damaged); None when there is no such container."""
        raw = _read_if_there(os.path.join(self._root, container_id, "config.json"))
        try:
            name = json.loads(raw)["name"] if isinstance(raw, bytes) else None
        except (ValueError, KeyError, TypeError):
            name = None
        if not isinstance(name, str):  # unreadable or damaged: the name the full load gives
            try:
                name = self.load(container_id).name
            except NotFound:
                return None
        return name

    # -- the name index --------------------------------------------------------------------
    # One file per name under ``<root>/.names`` (a dot-directory: listings skip it) holding the
    # ID of the container that has the name. It is a cache that the container's own record
    # confirms: an entry is written (O_EXCL, under the store's lock) before the record that has
    # the name is renamed into place or rewritten, and removed only after the record has gone
    # or changed its name. So a kill at any point leaves, at worst, an entry that its record
    # does not confirm; a lookup drops it (under the lock). Every container with a name has
    # an entry whenever the directory exists; it is made whole (from ``names``) by the first
    # create or rename of a data root that has none, and goes when its last entry does.

    def has_name_index(self) -> bool:
        return os.path.isdir(self._names_dir)

    @property
    def _names_dir(self) -> str:
        return os.path.join(self._root, NAME_INDEX)

    def _ensure_name_index(self) -> None:
        """Build the index when the data root has none (made by an older engine); under ``lock``."""
        if not self.has_name_index():
            self._build_name_index()

    def _build_name_index(self) -> None:
        """The index made afresh from every container's record, swapped in whole: a reader sees
        the old one, none (and scans), or the new one. Under ``lock``."""
        make_dirs(self.root)
        tmp = os.path.join(self._root, f".tmp-names-{os.urandom(4).hex()}")
        old = os.path.join(self._root, f".rm-names-{os.urandom(4).hex()}")
        try:
            os.mkdir(tmp, PRIVATE_MODE)
            for name, container_id in self.names().items():
                _write_name_entry(os.path.join(tmp, _name_file(name)), container_id)
            try:
                os.rename(self._names_dir, old)
            except FileNotFoundError:
                pass
            os.rename(tmp, self._names_dir)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if NoSpace.is_full(exc):
                raise NoSpace(self.root) from None
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
        log.info("container.name_index_built")

    def _name_holder(self, name: str, *, locked: bool) -> str | None:
        """The ID of the container named ``name``, from the index, confirmed by its record;
        None when no container has it. ``locked`` (the caller holds ``lock``): an entry its
        record does not confirm is dropped, or rewritten when it was unreadable; without the
        lock nothing is written. IndexMissing when the data root has no index."""
        path = os.path.join(self._names_dir, _name_file(name))
        raw = _read_if_there(path)
        if raw is None:
            if not self.has_name_index():
                raise IndexMissing(self._names_dir)
            return None
        container_id = raw.decode("ascii", "replace") if isinstance(raw, bytes) else ""
        if _valid_id(container_id):
            if self._record_name(container_id) == name:
                return container_id
            holder = None  # stale: a create, remove or rename was interrupted
        else:  # cut short or unreadable: who has the name is not known but by a scan
            holder = self.names().get(name)
        if locked:
            try:
                os.unlink(path)
                if holder is not None:
                    _write_name_entry(path, holder)
            except OSError as exc:  # the next lookup tries again
                log.warning("container.name_entry_not_repaired", name=name, reason=_reason(exc))
        return holder

    def _claim_name(self, name: str, container_id: str) -> str | None:
        """Write the name's entry for ``container_id`` (under ``lock``); the ID of the container
        that has the name already, else None."""
        path = os.path.join(self._names_dir, _name_file(name))
        for _ in range(3):
            other = self._name_holder(name, locked=True)
            if other is not None:
                return other
            try:
                _write_name_entry(path, container_id)
                return None
            except FileExistsError:  # written meanwhile by a process without the lock
                continue
        raise Conflict(f"the name index entry {path} keeps coming back; run `pyengine system check --repair`")

    def _drop_name(self, name: str, container_id: str) -> None:
        """Remove the name's entry if it is ``container_id``'s, and the index when that was its
        last entry (under ``lock``)."""
        path = os.path.join(self._names_dir, _name_file(name))
        raw = _read_if_there(path) if name else None
        if isinstance(raw, bytes) and raw.decode("ascii", "replace") == container_id:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        try:  # none left: a store without containers holds nothing of them (the next create makes it)
            os.rmdir(self._names_dir)
        except OSError:
            pass

    def generate_name(self) -> str:
        """A free adjective_noun name (call under ``lock``). Any entry counts as taken, even a
        stale one: a random name can as well be another, and a stat is all each try costs."""
        self._ensure_name_index()
        for _ in range(100):
            a, b = os.urandom(2)
            name = f"{_ADJ[a % len(_ADJ)]}_{_NOUN[b % len(_NOUN)]}"
            if not os.path.lexists(os.path.join(self._names_dir, _name_file(name))):
                return name
        return f"pyengine_{os.urandom(4).hex()}"

    def add(self, record: ContainerRecord) -> None:
        """Persist a new container; the name must be free (call under ``lock``)."""
        path = self.dir(record.id)
        make_dirs(path.parent)
        other = None
        if record.name:
            self._ensure_name_index()
            try:
                other = self._claim_name(record.name, record.id)
            except OSError as exc:
                if NoSpace.is_full(exc):
                    raise NoSpace(self.root) from None
                raise
        if other is not None:
            raise Conflict(f"Conflict. The container name \"/{record.name}\" is already in use by container "
                           f"\"{other}\". You have to remove (or rename) that container to be able to reuse "
                           "that name.")
        # Both records are written in a temp directory renamed into place: a container
        # directory always holds both, and a crash or a full disk leaves only a `.tmp-` one,
        # which this removes on failure and `system check --repair` after a crash.
        tmp = self.root / f".tmp-{record.id}"
        try:
            os.mkdir(tmp, PRIVATE_MODE)
            # The lock file too, so that taking the lock later creates nothing (a full disk).
            os.close(os.open(tmp / ".lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            write_json_atomic(tmp / "state.json", asdict(record.state))
            write_json_atomic(tmp / "config.json", record.as_config())
            os.rename(tmp, path)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            self._drop_name(record.name, record.id)
            if NoSpace.is_full(exc):
                raise NoSpace(self.root) from None
            raise

    def is_container_dir(self, entry: Path) -> bool:
        """A directory of the store that holds a container (or what is left of one's records):
        not a temp or trash entry, not an empty directory."""
        return _is_container_dir(entry.name, str(entry))

    def load(self, container_id: str, *, shared: bool = False) -> ContainerRecord:
        """The container's record; a record that cannot be read comes back with the status
        ``damaged`` and the reason in ``state.error`` (it is never silently dropped).

        :param shared: the caller only reads the record (a listing): while the record's files
            hold the same bytes, this process returns the same record object, not parsed again
            (the daemon lists every container for each ``ps``)
        """
        directory = os.path.join(self._root, container_id)
        if container_id.startswith(".") or "/" in container_id:
            raise NotFound(f"no such container: {container_id}")
        files = (_read_if_there(os.path.join(self._run_dir, container_id, "state.json")),
                 _read_if_there(os.path.join(directory, "state.json")),
                 _read_if_there(os.path.join(directory, "config.json")))
        if files[1] is None and files[2] is None:  # not a container's directory (is_container_dir)
            raise NotFound(f"no such container: {container_id}")
        if shared:
            seen = _shared_records.get(directory)
            if seen is not None and seen[0] == files:
                return seen[1]
        state, problem = _parse_state(files[0], files[1])
        try:
            config = _parse_config(files[2], container_id)
        except Damaged as exc:
            problem = f"{exc}; {problem}" if problem else str(exc)
            config = None
        if not problem and config is not None:
            record = ContainerRecord(**config, state=state)
            if shared:
                if len(_shared_records) >= _SHARED_RECORDS_MAX:
                    _shared_records.clear()
                _shared_records[directory] = (files, record)
            return record
        if not os.path.isdir(directory):  # removed while it was read (remove_record renames it away whole)
            raise NotFound(f"no such container: {container_id}")
        damaged = ContainerState(status=DAMAGED, pid=state.pid, monitor_pid=state.monitor_pid,
                                 monitor_start_time=state.monitor_start_time, pid_start_time=state.pid_start_time,
                                 exit_code=state.exit_code, started_at=state.started_at,
                                 finished_at=state.finished_at,
                                 error=f"{problem}; remove it with `pyengine rm -f {container_id}`")
        if config is not None:
            return ContainerRecord(**config, state=damaged)
        # The layer of every container is named by its ID (see Containers.create).
        return ContainerRecord(id=container_id, name="", created=state.started_at or "", image="", image_id="",
                               config={}, host_config={}, layer_id=container_id, state=damaged)

    def _state_paths(self, container_id: str) -> tuple[Path, Path]:
        """Where a state lives: the data root, and the run root while the data root is full."""
        return self.dir(container_id) / "state.json", self.run_dir / container_id / "state.json"

    def save_state(self, container_id: str, state: ContainerState) -> None:
        """Write the state atomically; when the data root is full, into the run root instead
        (read in preference until the data root takes a state again). NoSpace when both are
        full; Conflict for a damaged container, whose record must not be overwritten."""
        if state.status == DAMAGED:
            raise Conflict(f"container {container_id} is damaged: {state.error}")
        main, spare = self._state_paths(container_id)
        try:
            write_json_atomic(main, asdict(state))
        except OSError as exc:
            if not NoSpace.is_full(exc):
                raise
            if not main.parent.is_dir():
                raise NotFound(f"no such container: {container_id}") from None
            log.info("container.state_in_run_root", container=container_id, reason=exc.strerror)
            try:
                write_json_atomic(spare, asdict(state))
            except OSError as spare_exc:
                if NoSpace.is_full(spare_exc):
                    raise NoSpace(main.parent) from None
                raise
            return
        try:
            os.unlink(spare)
        except FileNotFoundError:
            pass

    def save_config(self, record: ContainerRecord) -> None:
        if record.state.status == DAMAGED:
            raise Conflict(f"container {record.id} is damaged: {record.state.error}")
        path = self.dir(record.id) / "config.json"
        try:
            write_json_atomic(path, record.as_config())
        except OSError as exc:
            if NoSpace.is_full(exc):
                raise NoSpace(path.parent) from None
            raise

    def list(self, *, shared: bool = False) -> list[ContainerRecord]:
        """Every container's record, newest first (``shared``: see ``load``)."""
        records = []
        try:
            names = sorted(os.listdir(self._root))
        except (FileNotFoundError, NotADirectoryError):
            names = []
        for name in names:
            if name.startswith("."):
                continue
            try:
                records.append(self.load(name, shared=shared))  # NotFound: not a container's, or removed meanwhile
            except NotFound:
                continue
        records.sort(key=lambda r: r.created, reverse=True)
        return records

    def resolve(self, ref: str) -> str:
        """A full ID from a full ID, a unique ID prefix or a name."""
        if not ref:
            raise UsageError("a container name or ID is required")
        if "/" not in ref and ref not in (".", "..") and self.is_container_dir(self.root / ref):
            return ref
        name = ref.lstrip("/")
        try:  # a name, by the index: no other record read
            holder = self._name_holder(name, locked=False) if _is_name(name) else None
        except IndexMissing:
            holder = None
        if holder is not None and self.load(holder).name == name:
            return holder
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
        """Remove the container's records, then its name's entry (call under ``lock``)."""
        path = self.dir(container_id)
        trash = self.root / f".rm-{container_id}"
        name = self._record_name(container_id) if "/" not in container_id else None
        try:
            os.rename(path, trash)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(self.run_dir / container_id, ignore_errors=True)
        if name:
            self._drop_name(name, container_id)
        elif self.has_name_index():  # a damaged record that no longer says its name: find its entry
            for file_name in os.listdir(self._names_dir):
                raw = _read_if_there(os.path.join(self._names_dir, file_name))
                if isinstance(raw, bytes) and raw.decode("ascii", "replace") == container_id:
                    os.unlink(os.path.join(self._names_dir, file_name))
            self._drop_name("", container_id)

    def rename(self, record: ContainerRecord, new_name: str) -> None:
        """Give the container ``new_name`` (call under ``lock``); Conflict when another container
        has it. The new name's entry is written before the record, the old one removed after."""
        old_name = record.name
        if old_name != new_name:
            self._ensure_name_index()
            if self._claim_name(new_name, record.id) is not None:
                raise Conflict(f"the container name {new_name!r} is already in use")
        record.name = new_name
        try:
            self.save_config(record)
        except BaseException:
            record.name = old_name
            if old_name != new_name:
                self._drop_name(new_name, record.id)
            raise
        if old_name != new_name:
            self._drop_name(old_name, record.id)

    def check(self, repair: bool = False) -> tuple[builtins.list[str], builtins.list[str]]:
        """The store's problems, and the IDs of damaged containers (``system check``).

        Leftovers of an interrupted write — a ``.tmp-`` container directory, a ``.rm-`` one, a
        directory that holds no record, a temp file of an atomic write — are reported and,
        with ``repair``, removed. Damaged containers are only reported here: removing one
        means killing its processes and releasing its layer (``Containers.remove``).
        """
        problems: builtins.list[str] = []
        damaged: builtins.list[str] = []
        if not self.root.is_dir():
            return problems, damaged
        with self.lock():
            for entry in sorted(self.root.iterdir()):
                if entry.name in (".lock", NAME_INDEX):
                    continue
                if entry.name.startswith((".tmp-", ".rm-")) or not self.is_container_dir(entry):
                    problems.append(f"stale temporary entry {entry} (an interrupted create or remove)")
                    if repair:
                        _remove_path(entry)
                    continue
                try:
                    with self.container_lock(entry.name):
                        for leftover in sorted(entry.glob(".*.tmp")):
                            problems.append(f"stale temporary file {leftover}")
                            if repair:
                                leftover.unlink(missing_ok=True)
                        record = self.load(entry.name)
                except NotFound:
                    continue
                if record.state.status == DAMAGED:
                    problems.append(f"container {record.id} is damaged: {record.state.error}")
                    damaged.append(record.id)
            index_problems = self._check_name_index()
            problems += index_problems
            if index_problems and repair:
                self._build_name_index()
        return problems, damaged

    def _check_name_index(self) -> builtins.list[str]:
        """What the name index says that the records do not (under ``lock``): entries that no
        record confirms (left by an interrupted create, remove or rename: harmless, a lookup
        drops them) and names without an entry. A data root without an index has no problem:
        the next create builds it."""
        if not self.has_name_index():
            return []
        problems: builtins.list[str] = []
        wanted = {_name_file(name): (name, container_id) for name, container_id in self.names().items()}
        for file_name in sorted(os.listdir(self._names_dir)):
            path = os.path.join(self._names_dir, file_name)
            raw = _read_if_there(path)
            held = raw.decode("ascii", "replace") if isinstance(raw, bytes) else ""
            if file_name in wanted and wanted[file_name][1] == held:
                del wanted[file_name]
                continue
            problems.append(f"stale name index entry {path} (an interrupted create, remove or rename)")
        for name, container_id in sorted(wanted.values()):
            problems.append(f"the name index has no entry for {name!r} of container {container_id}")
        return problems


#: the directory of the name index under the containers root (``ContainerStore._name_holder``)
NAME_INDEX = ".names"


class IndexMissing(Exception):
    """The data root has no name index (made by an older engine): a scan must answer."""


def _name_file(name: str) -> str:
    """The index entry's file name for ``name``: the name itself (a container name is a valid
    file name that never starts with a dot), or a digest when it is too long for one."""
    if len(name) <= 200:
        return name
    import hashlib

    return "-" + hashlib.sha256(name.encode()).hexdigest()


def _write_name_entry(path: str, container_id: str) -> None:
    """Make the entry ``path`` holding ``container_id``; FileExistsError when there is one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, container_id.encode())
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)


def _valid_id(text: str) -> bool:
    """True when ``text`` can be a container's directory name (an entry cut short is not)."""
    return bool(text) and not text.startswith(".") and "/" not in text and text.isascii() and text.isprintable()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _is_container_dir(name: str, directory: str) -> bool:
    return (not name.startswith(".") and os.path.isdir(directory)
            and (os.path.exists(os.path.join(directory, "config.json"))
                 or os.path.exists(os.path.join(directory, "state.json"))))


#: what ``load(shared=True)`` read and made of it, by container directory: the bytes of the
#: record files (spare state, state, config), and the record
_shared_records: dict[str, tuple[tuple[bytes | OSError | None, ...], ContainerRecord]] = {}
_SHARED_RECORDS_MAX = 4096


def _read_if_there(path: str) -> bytes | OSError | None:
    """A record file's bytes; None when it (or its directory) does not exist; the error when
    it cannot be read."""
    try:
        return _read_bytes(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return exc


def _parse_state(spare: bytes | OSError | None, main: bytes | OSError | None) -> tuple[ContainerState, str]:
    """The container's state from its files' bytes (a spare in the run root exists only while
    it is newer than the main one) and, when it cannot be read, why (the state is then "dead")."""
    for raw, is_spare in ((spare, True), (main, False)):
        if raw is None:
            if is_spare:
                continue
            return ContainerState(status="dead", error="state file missing"), ""
        try:
            if isinstance(raw, OSError):
                raise raw
            data = json.loads(raw)
        except (OSError, ValueError) as exc:
            if is_spare:
                continue
            return ContainerState(status="dead"), f"state.json is damaged: {_reason(exc)}"
        try:
            return _valid_state(data), ""
        except Damaged as exc:
            if is_spare:
                continue
            return ContainerState(status="dead"), str(exc)
    raise AssertionError("unreachable")


def _read_bytes(path: str) -> bytes:
    """A small file's bytes, without the buffered file object ``open`` builds."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _read_object(raw: bytes | OSError | None, name: str) -> dict[str, Any]:
    """The JSON object in a file's bytes (``_read_if_there``); Damaged when it is missing,
    unreadable or not an object."""
    if raw is None:
        raise Damaged(f"{name} is missing")
    try:
        if isinstance(raw, OSError):
            raise raw
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise Damaged(f"{name} is damaged: {_reason(exc)}") from None
    if not isinstance(data, dict):
        raise Damaged(f"{name} is damaged: not a JSON object")
    return data


#: the keys of config.json and the type each must have
_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str, "name": str, "created": str, "image": str, "image_id": str, "config": dict,
    "host_config": dict, "layer_id": str, "networks": dict}


def _parse_config(raw: bytes | OSError | None, container_id: str) -> dict[str, Any]:
    """config.json's fields for ContainerRecord, checked; Damaged saying what is wrong."""
    data = _read_object(raw, "config.json")
    out: dict[str, Any] = {}
    for key, kind in _CONFIG_TYPES.items():
        if key not in data:
            if key == "networks":
                continue
            raise Damaged(f"config.json is damaged: {key!r} is missing")
        if not isinstance(data[key], kind):
            raise Damaged(f"config.json is damaged: {key!r} is not a {getattr(kind, '__name__', kind)}")
        out[key] = data[key]
    if out["id"] != container_id:
        raise Damaged(f"config.json is damaged: it is the record of container {out['id']!r}")
    if not out["layer_id"]:
        raise Damaged("config.json is damaged: the layer ID is empty")
    return out


def _state_fields() -> tuple[tuple[str, type, tuple[type, ...]], ...]:
    """Each field of ContainerState with its type and the JSON types it accepts."""
    out = []
    for spec in fields(ContainerState):
        kind: type = object if spec.default is MISSING or spec.default is None else type(spec.default)
        out.append((spec.name, kind, (int, float) if kind is float else (kind,)))
    return tuple(out)


_STATE_FIELDS = _state_fields()


def _valid_state(data: Any) -> ContainerState:
    """A ContainerState from state.json's object, every known field of its type (unknown
    fields, from a newer engine, are left out); Damaged saying what is wrong."""
    if not isinstance(data, dict):
        raise Damaged("state.json is damaged: not a JSON object")
    values: dict[str, Any] = {}
    for name, kind, accepted in _STATE_FIELDS:
        if name not in data:
            continue
        value = data[name]
        if (kind is not bool and isinstance(value, bool)) or not isinstance(value, accepted):
            raise Damaged(f"state.json is damaged: {name!r} is not a {kind.__name__}")
        values[name] = value
    return ContainerState(**values)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (whichever process has it now: see
    ``process_alive``)."""
    return process_alive(pid)


def process_alive(pid: int, start_time: int = 0) -> bool:
    """True when ``pid`` exists, is not a zombie and, with ``start_time`` (0: not known),
    started then: it is still the process recorded, not a later one that got its pid."""
    if pid <= 0:
        return False
    from pyengine.procfs import stat_fields

    try:
        fields = stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z" and (not start_time or int(fields[19]) == start_time)
