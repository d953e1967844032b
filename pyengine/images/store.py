"""The content-addressed image store: blobs, image records, layer records and tags.

Owns everything under ``<data-root>/blobs`` and ``<data-root>/images``. Layers are applied
through the storage driver protocol (the chain ID hex is the driver's layer id); compressed
layers are opened by ``pyengine.layers.extract``. Every mutation runs under one flock and
writes in the order blobs -> driver layers -> layer records -> image record -> tags, so a
SIGKILL at any point never leaves a tag pointing at something missing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pyengine.errors import Conflict, Damaged, InvalidArchive, NoSpace, NotFound, PyEngineError, UsageError
from pyengine.fsutil import make_dirs
from pyengine.images import media
from pyengine.images.reference import DIGEST_RE, Reference, looks_like_id, parse_reference
from pyengine.log import get_logger

log = get_logger("pyengine.images")

CHUNK = 1 << 20
#: bytes the store keeps in reserve so that removals work on a full disk (see ``reserve_path``)
RESERVE_BYTES = 1 << 20


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain IDs of a layer list: ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n))."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else "sha256:" + sha256_hex(f"{out[-1]} {diff_id}".encode()))
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp name, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        if NoSpace.is_full(exc):
            raise NoSpace(path.parent) from None
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _no_space(path: Path) -> Iterator[None]:
    """Turn a full filesystem met in the block into NoSpace naming ``path``."""
    try:
        yield
    except OSError as exc:
        if NoSpace.is_full(exc):
            raise NoSpace(path) from None
        raise


#: the fields of an image record and of a layer record, and the type each must have
_IMAGE_RECORD: dict[str, type | tuple[type, ...]] = {
    "id": str, "manifests": list, "layers": list, "diff_ids": list, "layer_sizes": list}
_LAYER_RECORD: dict[str, type | tuple[type, ...]] = {
    "chain_id": str, "diff_id": str, "size": int, "images": list}


def _shape_problem(record: Any, shape: dict[str, type | tuple[type, ...]]) -> str:
    """What makes ``record`` unusable as a record of ``shape``; "" when nothing does."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for key, kind in shape.items():
        if not isinstance(record.get(key), kind):
            return f"{key!r} is missing or not a {getattr(kind, '__name__', kind)}"
    for key in ("id", "chain_id"):
        if key in shape and not DIGEST_RE.match(record[key]):
            return f"{key!r} is not a sha256 digest"
    for key in ("manifests", "layers", "diff_ids", "images"):
        if key in shape and not all(isinstance(item, str) for item in record[key]):
            return f"{key!r} holds something other than digests"
    if "indexes" in record and not isinstance(record["indexes"], dict):
        return "'indexes' is not an object"
    if "layer_blobs" in record and not isinstance(record["layer_blobs"], list):
        return "'layer_blobs' is not a list"
    return ""


def _pid_of_temp(name: str) -> int:
    """The pid a temp name carries (``ingest-<pid>-<uuid>``, ``.tmp-<name>-<pid>-<uuid>``), or 0."""
    parts = name.split("-")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else 0


def _in_progress(path: Path) -> bool:
    """True when the process that made the temp file ``path`` still runs (then it is not stale)."""
    pid = _pid_of_temp(path.name)
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mounted_under(path: Path) -> bool:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4].startswith(prefix) or line.split()[4] == str(path) for line in f)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()


class HashingReader:
    """A read-only stream that hashes (and counts) every byte read through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


@dataclass
class Image:
    """An image as the store knows it, and as ``inspect`` and the container engine see it.

    Its config blob is read on first use of ``image_config``, so that an image whose config is
    damaged can still be named, untagged and removed; using its config raises Damaged.
    """

    id: str
    config_digest: str
    manifests: list[str]
    indexes: dict[str, str]
    layers: list[str]          # chain ids, bottom first
    diff_ids: list[str]
    layer_sizes: list[int]
    created: str
    tags: list[str] = field(default_factory=list)
    #: reads, checks and parses the config blob (Damaged when it cannot)
    load_config: Callable[[], dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    _image_config: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def image_config(self) -> dict[str, Any]:
        """The whole image config (the OCI/Docker image config JSON)."""
        if self._image_config is None:
            self._image_config = self.load_config() if self.load_config is not None else {}
        return self._image_config

    @property
    def config(self) -> dict[str, Any]:
        """The container config part of the image config (Cmd, Env, ...)."""
        return self.image_config.get("config") or {}

    @property
    def top_layer(self) -> str | None:
        """The driver layer id of the topmost layer: what a container's layer sits on."""
        return self.layers[-1][len("sha256:"):] if self.layers else None

    @property
    def manifest_digest(self) -> str:
        return self.manifests[0]

    @property
    def size(self) -> int:
        return sum(self.layer_sizes)

    @property
    def short_id(self) -> str:
        return self.id[len("sha256:"):][:12]


class ImageStore:
    """The image store of one data root; ``storage`` returns the started storage driver."""

    def __init__(self, data_root: Path, storage: Callable[[], Any] | Any | None = None) -> None:
        self.data_root = Path(data_root)
        self.blob_dir = self.data_root / "blobs" / "sha256"
        self.tmp_dir = self.data_root / "blobs" / "tmp"
        self.root = self.data_root / "images"
        self.image_dir = self.root / "records"
        self.layer_dir = self.root / "layers"
        self.tags_path = self.root / "tags.json"
        self._storage = storage
        # Re-entrant per thread: the daemon's threads share one store, and each must take
        # the flock itself (flocks on separate open files exclude each other, even in one process).
        self._held = threading.local()
        #: blobs ingested through this store object that no committed image references yet;
        #: concurrent ingests (the daemon's requests) each use their own ImageStore object
        self.new_blobs: set[str] = set()

    @classmethod
    def for_engine(cls, engine: Any) -> ImageStore:
        store = cls(engine.config.data_root, lambda: engine.storage)
        store.events_root = engine.config.run_root
        store.max_layer_size = max_layer_size(engine.config)
        return store

    #: the run root whose event journal records this store's image events (None: not recorded)
    events_root: Path | None = None
    #: the most bytes a layer may decompress to (``[images] max-layer-size``; None: no limit)
    max_layer_size: int | None = None

    def record_event(self, action: str, actor_id: str, name: str) -> None:
        """An image event (pull, push, tag, untag, delete, load, import, save) in the journal
        of the engine's run root (:mod:`pyengine.events`); a store made without one records none."""
        if self.events_root is not None:
            from pyengine import events

            events.record(self.events_root, "image", action, actor_id, {"name": name})

    @property
    def storage(self) -> Any:
        if self._storage is None:
            raise PyEngineError("no storage driver available to the image store")
        return self._storage() if callable(self._storage) and not hasattr(self._storage, "create") \
            else self._storage

    def _ensure_dirs(self) -> None:
        for path in (self.blob_dir, self.tmp_dir, self.image_dir, self.layer_dir):
            make_dirs(path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The store's one lock (re-entrant within a thread) around every mutation."""
        depth = getattr(self._held, "depth", 0)
        if depth:
            self._held.depth = depth + 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        self._ensure_dirs()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._keep_reserve()
        self._held.depth = 1
        try:
            yield
        finally:
            self._held.depth = 0
            os.close(fd)

    # -- blobs -----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        if not DIGEST_RE.match(digest):
            raise InvalidArchive(f"unsupported or malformed digest {digest!r}")
        return self.blob_dir / digest[len("sha256:"):]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the store") from None

    def ingest_blob(self, expected_digest: str | None, stream: IO[bytes], size: int | None = None) -> Path:
        """Stream ``stream`` into the blob store; commit it only if its digest is the expected one.

        With ``expected_digest`` None the digest is whatever the content hashes to. Returns the
        blob's path (its name is the hex digest). Nothing is left behind on a mismatch.
        """
        if expected_digest is not None:
            target = self.blob_path(expected_digest)
            if target.is_file():
                return target
        try:
            self._ensure_dirs()
        except OSError as exc:
            if NoSpace.is_full(exc):
                raise NoSpace(self.data_root) from None
            raise
        tmp = self.tmp_dir / f"ingest-{os.getpid()}-{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        written = 0
        try:
            with _no_space(self.blob_dir.parent), open(tmp, "wb") as f:
                while True:
                    chunk = stream.read(CHUNK)
                    if not chunk:
                        break
                    digest.update(chunk)
                    f.write(chunk)
                    written += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            actual = "sha256:" + digest.hexdigest()
            if expected_digest is not None and actual != expected_digest:
                raise InvalidArchive(f"blob {expected_digest} is corrupt: its content hashes to {actual}")
            if size is not None and written != size:
                raise InvalidArchive(f"blob {actual} has {written} bytes, expected {size}")
            target = self.blob_path(actual)
            if not target.exists():
                with _no_space(self.blob_dir):
                    os.rename(tmp, target)
                    _fsync_dir(self.blob_dir)
                self.new_blobs.add(actual)
            return target
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def adopt_blob(self, digest: str, path: Path) -> Path:
        """Move ``path``, a file the caller has hashed to ``digest`` and fsynced (a finished
        download), into the blob store: no second pass over the data. A file on another
        filesystem is copied and hashed again by ``ingest_blob``."""
        target = self.blob_path(digest)
        if target.is_file():
            path.unlink(missing_ok=True)
            return target
        try:
            self._ensure_dirs()
            with _no_space(self.blob_dir):
                os.rename(path, target)
                _fsync_dir(self.blob_dir)
        except OSError as exc:
            if NoSpace.is_full(exc):
                raise NoSpace(self.data_root) from None
            if exc.errno != errno.EXDEV:
                raise
            with open(path, "rb") as f:
                target = self.ingest_blob(digest, f)
            path.unlink(missing_ok=True)
            return target
        self.new_blobs.add(digest)
        return target

    def ingest_bytes(self, data: bytes, expected_digest: str | None = None) -> str:
        import io

        path = self.ingest_blob(expected_digest, io.BytesIO(data), len(data))
        return "sha256:" + path.name

    def discard_new_blobs(self) -> None:
        """Remove blobs this process ingested that no image references (after a failed load)."""
        with self.lock():
            referenced = self._referenced_blobs()
            for digest in sorted(self.new_blobs - referenced):
                with contextlib.suppress(FileNotFoundError):
                    self.blob_path(digest).unlink()
                log.info("blob.discarded", digest=digest)
            self.new_blobs.clear()

    # -- records ---------------------------------------------------------------------------
    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise PyEngineError(f"store file {path} is corrupt ({exc}); run `pyengine system check --repair`") from None

    def tags(self) -> dict[str, str]:
        return self._read_json(self.tags_path) or {}

    def _write_tags(self, tags: dict[str, str], freeing: bool = False) -> None:
        self._ensure_dirs()
        data = _dump(dict(sorted(tags.items())))
        if freeing:
            self._write_freeing(self.tags_path, data)
        else:
            write_atomic(self.tags_path, data)

    # -- room to remove on a full disk -----------------------------------------------------
    @property
    def reserve_path(self) -> Path:
        """A file of RESERVE_BYTES kept in the data root: a removal on a full disk gives it back
        to make room for the records it rewrites (tags, layer records) before space is freed."""
        return self.root / ".reserve"

    def _keep_reserve(self) -> None:
        """Make the reserve when it is missing and there is room (at each lock; a stat when it is there)."""
        if self.reserve_path.exists():
            return
        tmp = self.root / f".tmp-reserve-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
            os.rename(tmp, self.reserve_path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _write_freeing(self, path: Path, data: bytes) -> None:
        """``write_atomic`` for a removal: when the disk is full, give back the reserve and retry."""
        try:
            write_atomic(path, data)
        except NoSpace:
            try:
                os.unlink(self.reserve_path)
            except FileNotFoundError:
                raise NoSpace(path.parent) from None
            log.warning("store.reserve_used", path=str(path))
            write_atomic(path, data)

    def image_records(self) -> dict[str, dict[str, Any]]:
        """Every valid image record by image ID; a damaged one is left out with a warning
        (``damaged_records`` lists them, ``system check`` reports them)."""
        return self._records(self.image_dir, "id", _IMAGE_RECORD)

    def layer_records(self) -> dict[str, dict[str, Any]]:
        """Every valid layer record by chain ID; a damaged one is left out with a warning."""
        return self._records(self.layer_dir, "chain_id", _LAYER_RECORD)

    def _records(self, directory: Path, key: str, shape: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path, record, problem in self._scan_records(directory, key, shape):
            if problem:
                log.warning("store.record_damaged", path=str(path), reason=problem)
            else:
                out[record[key]] = record
        return out

    def _scan_records(self, directory: Path, key: str, shape: dict[str, type | tuple[type, ...]]
                      ) -> list[tuple[Path, Any, str]]:
        """(path, record, what is wrong with it or "") for every record file in ``directory``."""
        if not directory.is_dir():
            return []
        out = []
        for path in sorted(directory.iterdir()):
            if path.name.startswith(".") or not path.name.endswith(".json"):
                continue
            try:
                record = json.loads(path.read_bytes())
            except FileNotFoundError:  # removed meanwhile
                continue
            except (OSError, ValueError) as exc:
                out.append((path, None, f"not valid JSON ({exc})"))
                continue
            problem = _shape_problem(record, shape)
            if not problem and f"{record[key][len('sha256:'):]}.json" != path.name:
                problem = f"its {key} {record[key]} does not match its file name"
            out.append((path, record, problem))
        return out

    def damaged_records(self) -> list[tuple[Path, str]]:
        """Image and layer record files that cannot be used, and why."""
        return [(path, problem)
                for directory, key, shape in ((self.image_dir, "id", _IMAGE_RECORD),
                                              (self.layer_dir, "chain_id", _LAYER_RECORD))
                for path, _, problem in self._scan_records(directory, key, shape) if problem]

    def _layer_path(self, chain_id: str) -> Path:
        return self.layer_dir / f"{chain_id[len('sha256:'):]}.json"

    def _image_path(self, image_id: str) -> Path:
        return self.image_dir / f"{image_id[len('sha256:'):]}.json"

    def _image(self, record: dict[str, Any], tags: dict[str, str] | None = None) -> Image:
        tags = self.tags() if tags is None else tags
        digests = set(record["manifests"]) | set(record.get("indexes", {}))
        image_id = record["id"]
        return Image(id=image_id, config_digest=image_id, load_config=lambda: self._image_config(image_id),
                     manifests=record["manifests"], indexes=record.get("indexes", {}),
                     layers=record["layers"], diff_ids=record["diff_ids"],
                     layer_sizes=record["layer_sizes"], created=record.get("created", ""),
                     tags=sorted(ref for ref, digest in tags.items() if digest in digests))

    def _referenced_blobs(self) -> set[str]:
        refs: set[str] = set()
        for record in self.image_records().values():
            refs.add(record["id"])
            refs.update(record["manifests"])
            refs.update(record.get("indexes", {}))
            refs.update(record.get("layer_blobs", []))
        return refs

    def _image_config(self, image_id: str) -> dict[str, Any]:
        """The image's config blob, checked against its digest and parsed; Damaged if it is
        missing, corrupt or not a config."""
        damaged = (f"image {image_id[len('sha256:'):][:12]} is damaged: its config blob {image_id} "
                   "is {}; run `pyengine system check --repair` and pull or load it again")
        try:
            data = self.blob_path(image_id).read_bytes()
        except FileNotFoundError:
            raise Damaged(damaged.format("missing")) from None
        except OSError as exc:
            raise Damaged(damaged.format(f"unreadable ({exc.strerror})")) from None
        if "sha256:" + sha256_hex(data) != image_id:
            raise Damaged(damaged.format("corrupt (its content does not match its digest)"))
        try:
            config = json.loads(data)
        except ValueError:
            raise Damaged(damaged.format("not valid JSON")) from None
        if not isinstance(config, dict) or not isinstance(config.get("config") or {}, dict):
            raise Damaged(damaged.format("not an image config"))
        return config

    # -- lookups ---------------------------------------------------------------------------
    def images(self, include_damaged: bool = False) -> list[Image]:
        """Every image of the store; a damaged one (its config unusable) is left out with a
        warning on stderr, unless ``include_damaged`` (for removal)."""
        tags = self.tags()
        out = []
        for record in self.image_records().values():
            image = self._image(record, tags)
            if include_damaged:
                out.append(image)
                continue
            try:
                image.image_config  # noqa: B018 - read now: a damaged one is not listed
            except Damaged as exc:
                log.warning("image.damaged", image=record["id"], reason=str(exc))
                continue
            out.append(image)
        return out

    def _image_for_digest(self, digest: str, records: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        for record in records.values():
            if digest in record["manifests"] or digest in record.get("indexes", {}):
                return record
        return None

    def resolve_image(self, image_ref: str) -> Image:
        """The image a user names by tag, digest reference, full or short ID; NotFound if none."""
        records = self.image_records()
        if looks_like_id(image_ref):
            hexpart = image_ref[len("sha256:"):] if image_ref.startswith("sha256:") else image_ref
            matches = [r for r in records if r[len("sha256:"):].startswith(hexpart)]
            if len(matches) > 1:
                raise Conflict(f"image ID prefix {image_ref} is ambiguous")
            if matches:
                return self._image(records[matches[0]])
            if image_ref.startswith("sha256:"):
                raise NotFound(f"No such image: {image_ref}")
        try:
            ref = parse_reference(image_ref)
        except UsageError:
            raise NotFound(f"No such image: {image_ref}") from None
        tags = self.tags()
        if ref.digest:
            record = self._image_for_digest(ref.digest, records)
        else:
            digest = tags.get(str(ref))
            record = self._image_for_digest(digest, records) if digest else None
        if record is None:
            raise NotFound(f"No such image: {image_ref}")
        return self._image(record, tags)

    def rootfs_layer(self, image_ref: str) -> str | None:
        """The driver layer id (chain ID hex) of the image's top layer; None for an empty image."""
        return self.resolve_image(image_ref).top_layer

    def image_config(self, image_ref: str) -> dict[str, Any]:
        """The image's whole config (the OCI/Docker image config JSON)."""
        return self.resolve_image(image_ref).image_config

    # -- commit ----------------------------------------------------------------------------
    def _select_manifest(self, index: dict[str, Any]) -> dict[str, Any]:
        want_arch = media.host_architecture()
        candidates = [d for d in index.get("manifests", []) if d.get("mediaType") in media.MANIFEST_TYPES
                      or d.get("mediaType") in media.INDEX_TYPES]
        for descriptor in candidates:
            platform = descriptor.get("platform") or {}
            if platform.get("os", "linux") == "linux" and platform.get("architecture", want_arch) == want_arch:
                return descriptor
        raise NotFound(f"no manifest for linux/{want_arch} in the image index")

    def commit_image(self, refs: list[str] | str | None, manifest_bytes: bytes, media_type: str | None = None,
                     on_layer: Callable[[str, str], None] | None = None,
                     arriving: Callable[[str], None] | None = None) -> Image:
        """Make an image from a manifest (or index) whose blobs are all in the store, and tag it.

        Layers missing from the driver are created and their diffIDs checked; on any failure
        the layers made here are removed and nothing else changes.
        :param on_layer: called ``(layer blob digest, "Extracting" | "Pull complete")`` around
            each layer applied here (a pull's progress)
        :param arriving: the layer blobs are still coming (a pull's downloads): called with a
            layer's digest before that layer is applied, it returns once the blob is in the
            store and raises if it will not be; the manifests and the config must be there
        """
        if isinstance(refs, str):
            refs = [refs]
        parsed_refs = [parse_reference(r) for r in refs or []]
        top_digest = self.ingest_bytes(manifest_bytes)
        document = _load_json(manifest_bytes, "manifest")
        media_type = media_type or document.get("mediaType") or media.guess_type(document)
        indexes: dict[str, str] = {}
        index_digest = None
        while media_type in media.INDEX_TYPES:
            descriptor = self._select_manifest(document)
            index_digest = index_digest or top_digest
            manifest_bytes = self.read_blob(descriptor["digest"])
            if sha256_hex(manifest_bytes) != descriptor["digest"][len("sha256:"):]:
                raise InvalidArchive(f"manifest {descriptor['digest']} is corrupt")
            document = _load_json(manifest_bytes, "manifest")
            media_type = descriptor.get("mediaType") or document.get("mediaType") or media.guess_type(document)
        manifest_digest = "sha256:" + sha256_hex(manifest_bytes)
        if index_digest:
            indexes[index_digest] = manifest_digest
        if media_type not in media.MANIFEST_TYPES:
            raise InvalidArchive(f"unsupported manifest media type {media_type!r}")
        config_digest = document["config"]["digest"]
        config = _load_json(self.read_blob(config_digest), "image config")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        layers = document.get("layers") or []
        if len(diff_ids) != len(layers):
            raise InvalidArchive(f"manifest has {len(layers)} layers but the config lists {len(diff_ids)} diff IDs")
        for layer in layers if arriving is None else []:
            if not self.has_blob(layer["digest"]):
                raise NotFound(f"layer blob {layer['digest']} is not in the store")
        chains = chain_ids(diff_ids)
        with self.lock(), _no_space(self.data_root):
            layer_sizes = self._apply_layers(layers, diff_ids, chains, on_layer, arriving)
            record = self._read_json(self._image_path(config_digest)) or {
                "id": config_digest, "manifests": [], "indexes": {}, "layers": chains, "diff_ids": diff_ids,
                "layer_sizes": layer_sizes, "layer_blobs": [], "created": config.get("created", "")}
            if manifest_digest not in record["manifests"]:
                record["manifests"].append(manifest_digest)
            record["indexes"].update(indexes)
            record["layer_blobs"] = sorted(set(record["layer_blobs"]) | {d["digest"] for d in layers})
            # Layer refs before the image record: a crash leaves at worst a ref to a missing
            # image, which `system check --repair` drops.
            self._add_layer_refs(chains, diff_ids, layer_sizes, config_digest)
            write_atomic(self._image_path(config_digest), _dump(record))
            if parsed_refs:
                tags = self.tags()
                for ref in parsed_refs:
                    tags[str(ref.with_tag(ref.tag) if ref.tag else ref)] = index_digest or manifest_digest
                self._write_tags(tags)
            self.new_blobs.clear()
            log.info("image.committed", image=config_digest, manifest=manifest_digest,
                     refs=[str(r) for r in parsed_refs])
            return self._image(record)

    def _apply_layers(self, layers: list[dict[str, Any]], diff_ids: list[str], chains: list[str],
                      on_layer: Callable[[str, str], None] | None = None,
                      arriving: Callable[[str], None] | None = None) -> list[int]:
        storage = self.storage
        records = self.layer_records()
        created: list[str] = []
        sizes: list[int | None] = []
        # A driver whose layer holds only its own changes (overlay's diff directory) can fill
        # every new layer at once once they all exist; one whose layer starts as a copy or
        # snapshot of its parent (vfs, devicemapper) must have the parent whole first.
        independent = bool(getattr(storage, "independent_layers", False))
        pending: list[tuple[int, dict[str, Any], str, str, str | None]] = []
        try:
            for i, (layer, diff_id, chain) in enumerate(zip(layers, diff_ids, chains, strict=True)):
                layer_id = chain[len("sha256:"):]
                parent = chains[i - 1][len("sha256:"):] if i else None
                existing = records.get(chain)
                if existing and storage.exists(layer_id):
                    sizes.append(existing["size"])
                    continue
                if storage.exists(layer_id):
                    # Left by an interrupted load: its content is unknown, so redo it. The same
                    # load may have left layers above it too; those go first, top down, since a
                    # driver refuses to remove a layer that has children.
                    for above in reversed(chains[i:]):
                        above_id = above[len("sha256:"):]
                        if above not in records and storage.exists(above_id):
                            storage.remove(above_id)
                storage.create(layer_id, parent)
                created.append(layer_id)
                sizes.append(None)
                if independent:
                    pending.append((i, layer, diff_id, layer_id, parent))
                else:
                    sizes[i] = self._fill_layer(layer, diff_id, layer_id, parent, on_layer, arriving)
            if pending:
                self._fill_layers_at_once(pending, sizes, on_layer, arriving)
        except BaseException:
            for layer_id in reversed(created):
                with contextlib.suppress(Exception):
                    storage.remove(layer_id)
            raise
        return [size for size in sizes if size is not None]  # every slot is filled by now

    def _fill_layers_at_once(self, pending: list[tuple[int, dict[str, Any], str, str, str | None]],
                             sizes: list[int | None], on_layer: Callable[[str, str], None] | None,
                             arriving: Callable[[str], None] | None) -> None:
        """Apply independent layers' diffs in threads: extraction is mostly system calls (the
        GIL is free meanwhile) and decompression runs in its own process, so two layers on two
        cores take about the time of one. Every thread finishes before the first error is raised."""
        from concurrent.futures import ThreadPoolExecutor

        if len(pending) == 1:
            i, layer, diff_id, layer_id, parent = pending[0]
            sizes[i] = self._fill_layer(layer, diff_id, layer_id, parent, on_layer, arriving)
            return
        workers = min(len(pending), os.cpu_count() or 1, 4)
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="layer") as pool:
            futures = [(i, pool.submit(self._fill_layer, layer, diff_id, layer_id, parent, on_layer, arriving))
                       for i, layer, diff_id, layer_id, parent in pending]
            for i, future in futures:
                try:
                    sizes[i] = future.result()
                except BaseException as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]

    def _fill_layer(self, layer: dict[str, Any], diff_id: str, layer_id: str, parent: str | None,
                    on_layer: Callable[[str, str], None] | None, arriving: Callable[[str], None] | None) -> int:
        """Apply one layer blob's diff to the driver's new layer, checking its diff ID."""
        from pyengine.layers.extract import open_layer

        if arriving is not None:
            arriving(layer["digest"])
        if not self.has_blob(layer["digest"]):
            raise NotFound(f"layer blob {layer['digest']} is not in the store")
        started = time.monotonic()
        if on_layer is not None:
            on_layer(layer["digest"], "Extracting")
        # Unbuffered, so a decompressor that hands the fd to a subprocess sees the true offset.
        with open(self.blob_path(layer["digest"]), "rb", buffering=0) as blob:
            reader = HashingReader(open_layer(blob, max_size=self.max_layer_size, name=layer["digest"]))
            self.storage.apply_diff(layer_id, parent, reader)
            reader.drain()
        if reader.digest != diff_id:
            raise InvalidArchive(f"layer {layer['digest']} has diff ID {reader.digest}, "
                                 f"the image config says {diff_id}")
        if on_layer is not None:
            on_layer(layer["digest"], "Pull complete")
        log.info("layer.applied", chain_id="sha256:" + layer_id, digest=layer["digest"], size=reader.size,
                 ms=round((time.monotonic() - started) * 1000))
        return reader.size

    def _add_layer_refs(self, chains: list[str], diff_ids: list[str], sizes: list[int], image_id: str) -> None:
        for i, (chain, diff_id, size) in enumerate(zip(chains, diff_ids, sizes, strict=True)):
            path = self._layer_path(chain)
            record = self._read_json(path) or {"chain_id": chain, "parent": chains[i - 1] if i else None,
                                              "diff_id": diff_id, "size": size, "images": []}
            if image_id not in record["images"]:
                record["images"] = sorted([*record["images"], image_id])
                write_atomic(path, _dump(record))

    # -- tags ------------------------------------------------------------------------------
    def tag(self, source: str, target: str) -> Reference:
        with self.lock():
            image = self.resolve_image(source)
            ref = parse_reference(target)
            if ref.digest:
                raise UsageError(f"refusing to create a tag with a digest reference: {target}")
            tags = self.tags()
            if tags.get(str(ref)) != image.manifest_digest:  # a re-tag changes nothing: no write, no fsync
                tags[str(ref)] = image.manifest_digest
                self._write_tags(tags)
            self.record_event("tag", image.id, ref.familiar())
            return ref

    # -- removal ---------------------------------------------------------------------------
    def images_in_use(self) -> dict[str, list[str]]:
        """image id -> ids of containers created from it (read from the container store)."""
        root = self.data_root / "containers"
        used: dict[str, list[str]] = {}
        if not root.is_dir():
            return used
        for path in root.glob("*/config.json"):
            with contextlib.suppress(OSError, ValueError):
                config = json.loads(path.read_text())
                used.setdefault(config.get("image_id", ""), []).append(config.get("id", path.parent.name))
        return used

    def untag(self, name: str) -> list[tuple[str, str]]:
        """Remove the tag ``name`` (a normalised reference); the image itself stays."""
        with self.lock():
            tags = self.tags()
            if tags.pop(name, None) is None:
                return []
            self._write_tags(tags, freeing=True)
            log.info("image.untagged", ref=name)
            self.record_event("untag", name, parse_reference(name).familiar())
            return [("Untagged", parse_reference(name).familiar())]

    def delete_untagged(self, image: Image) -> list[tuple[str, str]]:
        """Delete an image no tag names any more: its record, unshared layers and blobs.

        Whether a container's use forbids it is the caller's rule (``pyengine.images.verbs``).
        """
        with self.lock():
            digests = set(image.manifests) | set(image.indexes)
            still = [ref for ref, digest in self.tags().items() if digest in digests]
            if still:
                raise Conflict(f"image {image.short_id} is still tagged {still[0]}")
            return self._delete_image(image.id)

    def _delete_image(self, image_id: str) -> list[tuple[str, str]]:
        """Remove an untagged image record, then its unshared layers, then its unshared blobs."""
        record = self._read_json(self._image_path(image_id))
        if record is None:
            return []
        self._image_path(image_id).unlink()
        out = [("Deleted", image_id)]
        self.record_event("delete", image_id, image_id)
        for chain in reversed(record["layers"]):
            self._drop_layer_ref(chain, image_id)
        referenced = self._referenced_blobs()
        for digest in {record["id"], *record["manifests"], *record.get("indexes", {}), *record.get("layer_blobs", [])}:
            if digest not in referenced:
                with contextlib.suppress(FileNotFoundError):
                    self.blob_path(digest).unlink()
        log.info("image.deleted", image=image_id)
        return out

    def _drop_layer_ref(self, chain: str, image_id: str | None) -> None:
        path = self._layer_path(chain)
        record = self._read_json(path)
        if record is None:
            return
        images = [i for i in record["images"] if i != image_id] if image_id else record["images"]
        if images:
            if images != record["images"]:
                record["images"] = images
                self._write_freeing(path, _dump(record))
            return
        record["images"] = []
        self._write_freeing(path, _dump(record))
        layer_id = chain[len("sha256:"):]
        # The driver layer goes before its record: a crash in between leaves a record that
        # `system check` sees is missing in the driver, never an orphan layer nobody knows of.
        if self.storage.exists(layer_id):
            self.storage.remove(layer_id)
        path.unlink()
        log.info("layer.removed", chain_id=chain)

    def prune(self, all_images: bool = False,
              extra_in_use: set[str] | None = None) -> tuple[list[tuple[str, str]], int]:
        """Remove dangling images (``all_images``: every image no container uses).

        :param extra_in_use: more image ids to keep (the caller's view of containers, filters)
        """
        with self.lock():
            before = self.disk_usage()["images_size"]
            tags = self.tags()
            used = set(self.images_in_use()) | set(extra_in_use or ())
            out: list[tuple[str, str]] = []
            for image in self.images(include_damaged=True):
                if image.id in used or (image.tags and not all_images):
                    continue
                for t in image.tags:
                    tags.pop(t, None)
                    out.append(("Untagged", parse_reference(t).familiar()))
                self._write_tags(tags, freeing=True)
                out.extend(self._delete_image(image.id))
            self._collect_orphan_blobs()
            after = self.disk_usage()["images_size"]
            return out, max(0, before - after)

    def _collect_orphan_blobs(self, min_age: float = 3600) -> None:
        """Remove blobs no image references, left by an interrupted load or pull.

        Only old ones: a load running now ingests its blobs before it takes the lock to commit.
        """
        referenced = self._referenced_blobs()
        now = time.time()
        for path in self.blob_dir.iterdir() if self.blob_dir.is_dir() else []:
            digest = "sha256:" + path.name
            if digest not in referenced and now - path.stat().st_mtime > min_age:
                path.unlink()
                log.info("blob.collected", digest=digest)

    # -- reports ---------------------------------------------------------------------------
    def disk_usage(self) -> dict[str, int]:
        records = self.image_records()
        layers = self.layer_records()
        used = self.images_in_use()
        tags = self.tags()
        tagged_digests = set(tags.values())
        active_layers: set[str] = set()
        for image_id in used:
            if image_id in records:
                active_layers.update(records[image_id]["layers"])
        total = sum(r["size"] for r in layers.values())
        active = sum(layers[c]["size"] for c in active_layers if c in layers)
        blob_bytes = sum(p.stat().st_size for p in self.blob_dir.iterdir()) if self.blob_dir.is_dir() else 0
        dangling = sum(1 for r in records.values()
                       if not (set(r["manifests"]) | set(r.get("indexes", {}))) & tagged_digests)
        return {"images": len(records), "active": sum(1 for i in records if i in used), "dangling": dangling,
                "images_size": total, "reclaimable": total - active, "blob_bytes": blob_bytes,
                "containers": sum(len(v) for v in used.values())}

    def check(self, repair: bool = False) -> list[str]:
        """Verify blobs, layer records against the driver, image records and tags.

        Returns the problems found. With ``repair`` the broken pieces are removed, in the
        order that keeps tags valid (tags, then images, then layers, then blobs).
        """
        with self.lock():
            problems: list[str] = []
            bad_blobs: set[str] = set()
            temps = sorted(self.tmp_dir.iterdir()) if self.tmp_dir.is_dir() else []
            for directory in (self.root, self.image_dir, self.layer_dir):
                if directory.is_dir():
                    temps += sorted(p for p in directory.iterdir() if p.name.startswith(".tmp-"))
            for path in temps:
                if _in_progress(path):
                    continue  # an ingest or write running now
                problems.append(f"stale temporary file {path}")
                if repair:
                    path.unlink(missing_ok=True)
            for path, problem in self.damaged_records():
                problems.append(f"record {path} is damaged: {problem}")
                if repair:
                    path.unlink(missing_ok=True)
                    log.warning("repair.record_removed", path=str(path))
            if self.blob_dir.is_dir():
                for path in sorted(self.blob_dir.iterdir()):
                    digest = "sha256:" + path.name
                    if path.name.startswith(".tmp-"):
                        if _in_progress(path):
                            continue
                        problems.append(f"stale temporary file {path}")
                        if repair:
                            path.unlink(missing_ok=True)
                        continue
                    if not DIGEST_RE.match(digest):
                        problems.append(f"unexpected file in the blob store: {path}")
                        bad_blobs.add(digest)
                        continue
                    h = hashlib.sha256()
                    with open(path, "rb") as f:
                        while chunk := f.read(CHUNK):
                            h.update(chunk)
                    if h.hexdigest() != path.name:
                        problems.append(f"blob {digest} is corrupt (content hashes to sha256:{h.hexdigest()})")
                        bad_blobs.add(digest)
            storage = self.storage
            leftovers = getattr(storage, "temp_leftovers", None)
            for path in leftovers() if leftovers is not None else []:
                # The caller holds the container store's lock too: no layer is being made.
                problems.append(f"stale temporary entry of the storage driver: {path}")
                if repair:
                    _remove_leftover(path)
            layers = self.layer_records()
            orphans = self._orphan_layers(storage, layers)
            for layer_id in orphans:
                problems.append(f"layer {layer_id} in the storage driver belongs to no image and no container "
                                "(an interrupted load, pull or create)")
            if repair:
                _remove_layers(storage, orphans)
            bad_layers: set[str] = set()
            for chain, record in layers.items():
                if not storage.exists(chain[len("sha256:"):]):
                    problems.append(f"layer {chain} is recorded but missing in the storage driver")
                    bad_layers.add(chain)
                elif record.get("parent") and record["parent"] not in layers:
                    problems.append(f"layer {chain} has a parent {record['parent']} with no record")
                    bad_layers.add(chain)
            records = self.image_records()
            bad_images: set[str] = set()
            for image_id, record in records.items():
                needed = {image_id, *record["manifests"], *record.get("indexes", {}), *record.get("layer_blobs", [])}
                missing = [d for d in sorted(needed) if d in bad_blobs or not self.has_blob(d)]
                if missing:
                    problems.append(f"image {image_id} is missing or has corrupt blobs: {', '.join(missing)}")
                    bad_images.add(image_id)
                for chain in record["layers"]:
                    if chain not in layers or chain in bad_layers:
                        problems.append(f"image {image_id} needs layer {chain}, which is missing or broken")
                        bad_images.add(image_id)
                    elif image_id not in layers[chain]["images"]:
                        problems.append(f"layer {chain} does not count image {image_id} as a user")
                        if repair:
                            self._add_layer_refs([chain], [layers[chain]["diff_id"]], [layers[chain]["size"]], image_id)
            for chain, record in layers.items():
                if not record["images"]:
                    problems.append(f"layer {chain} is held by no image (an interrupted removal)")
                for image_id in record["images"]:
                    if image_id not in records:
                        problems.append(f"layer {chain} is held by image {image_id}, which does not exist")
            tags = self.tags()
            bad_tags = []
            for ref, digest in tags.items():
                owner = self._image_for_digest(digest, records)
                if owner is None or owner["id"] in bad_images:
                    problems.append(f"tag {ref} points to {digest}, which is not a complete image")
                    bad_tags.append(ref)
            if repair and problems:
                self._repair(tags, bad_tags, bad_images, bad_layers, bad_blobs, records)
            return problems

    def _orphan_layers(self, storage: Any, layers: dict[str, dict[str, Any]]) -> list[str]:
        """Driver layers that no layer record and no container (its directory, valid or
        damaged, names its layer) holds; [] when the driver cannot list its layers. The
        caller holds both store locks, so no layer is being made meanwhile."""
        list_layers = getattr(storage, "layer_ids", None)
        if list_layers is None:
            return []
        held = {chain[len("sha256:"):] for chain in layers}
        held |= {path.stem for path, _ in self.damaged_records() if path.parent == self.layer_dir}
        containers = self.data_root / "containers"
        for entry in containers.iterdir() if containers.is_dir() else []:
            if entry.name.startswith("."):
                continue
            held.add(entry.name)
            with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
                held.add(str(json.loads((entry / "config.json").read_bytes()).get("layer_id") or ""))
        return [layer_id for layer_id in list_layers() if layer_id not in held]

    def _repair(self, tags: dict[str, str], bad_tags: list[str], bad_images: set[str], bad_layers: set[str],
                bad_blobs: set[str], records: dict[str, dict[str, Any]]) -> None:
        for ref in bad_tags:
            tags.pop(ref, None)
        for image_id in bad_images:
            digests = set(records[image_id]["manifests"]) | set(records[image_id].get("indexes", {}))
            for ref in [r for r, d in tags.items() if d in digests]:
                tags.pop(ref)
        self._write_tags(tags, freeing=True)
        for image_id in bad_images:
            self._image_path(image_id).unlink()
            log.warning("repair.image_removed", image=image_id)
        records = self.image_records()
        for digest in bad_blobs:
            with contextlib.suppress(FileNotFoundError, InvalidArchive):
                self.blob_path(digest).unlink()
        for path in self.blob_dir.iterdir():
            if not DIGEST_RE.match("sha256:" + path.name):
                path.unlink()
        # Layers held by no existing image (or broken) go, top of each chain first.
        layers = self.layer_records()
        depth = {c: _depth(c, layers) for c in layers}
        for chain in sorted(layers, key=lambda c: -depth[c]):
            record = self._read_json(self._layer_path(chain))
            if record is None:
                continue
            holders = [i for i in record["images"] if i in records]
            if chain in bad_layers:
                holders = []
            if holders != record["images"] or not holders:
                if not holders:
                    record["images"] = []
                    self._write_freeing(self._layer_path(chain), _dump(record))
                    self._drop_layer_ref(chain, None)
                else:
                    record["images"] = holders
                    self._write_freeing(self._layer_path(chain), _dump(record))


def _remove_layers(storage: Any, layer_ids: list[str]) -> None:
    """Remove driver layers nothing holds; one with children waits for them (a later pass)."""
    pending = list(layer_ids)
    for _ in range(len(pending)):
        failed = []
        for layer_id in pending:
            try:
                storage.remove(layer_id)
                log.warning("repair.layer_removed", layer=layer_id)
            except Conflict:
                failed.append(layer_id)
        if not failed or len(failed) == len(pending):
            break
        pending = failed


def max_layer_size(config: Any) -> int | None:
    """``[images] max-layer-size`` in bytes (checked when the config was loaded); None: unset."""
    from pyengine.config import byte_size

    value = (config.table("images") or {}).get("max-layer-size")
    return None if value is None else byte_size(value)


def _remove_leftover(path: Path) -> None:
    """Remove a driver's leftover entry, never through a mount point below it."""
    import shutil

    if _mounted_under(path):
        log.warning("repair.leftover_mounted", path=str(path))
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    log.warning("repair.leftover_removed", path=str(path))


def _depth(chain: str, layers: dict[str, dict[str, Any]]) -> int:
    depth = 0
    while chain in layers and layers[chain].get("parent") and depth < 10000:
        chain = layers[chain]["parent"]
        depth += 1
    return depth


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise InvalidArchive(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidArchive(f"{what} is not a JSON object")
    return document
