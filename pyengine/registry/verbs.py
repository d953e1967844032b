"""The registry verbs the CLI and the daemon share: pull and push with Docker's progress
events, search, the login check, and the credentials a client sends (``X-Registry-Auth``).

Progress is a stream of dicts in the shape dockerd writes to its clients (``{"status":
"Pulling fs layer", "progressDetail": {}, "id": "ec562eabd705"}``): the API sends them as
they are, the CLI prints them as ``id: status`` lines. Calls the registry client and transfer
(``pyengine.registry.client``, ``.transfer``) and the image store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyengine.drivers.registry import Credentials
from pyengine.errors import NotFound, UsageError
from pyengine.images.reference import Reference, parse_reference

Event = dict[str, Any]
OnEvent = Callable[[Event], None]

#: a byte-progress event is sent at most every this fraction of a blob (and at its end)
_PROGRESS_STEP = 1 / 50


def human_size(size: float) -> str:
    """Docker's progress sizes: decimal units, four significant digits (``2.152MB``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.4g}{unit}"
        size /= 1000
    return f"{size}"


def progress_bar(current: int, total: int | None) -> str:
    """The ``progress`` string of a Docker JSON message: ``[=====>     ]  1.2MB/3.4MB``."""
    if not total or total <= 0:
        return f"{human_size(current):>8}"
    filled = min(50, int(50 * current / total))
    return f"[{'=' * filled}>{' ' * (50 - filled)}] {human_size(current):>8}/{human_size(total)}"


def short_id(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def layer_event(digest: str, status: str, current: int | None = None, total: int | None = None) -> Event:
    event: Event = {"status": status, "progressDetail": {}, "id": short_id(digest)}
    if current is not None:
        event["progressDetail"] = {"current": current, **({"total": total} if total else {})}
        event["progress"] = progress_bar(current, total)
    return event


class _ByteProgress:
    """Turns per-chunk byte counts into Docker's throttled ``Downloading``/``Pushing`` events."""

    def __init__(self, status: str, emit: OnEvent, skip: set[str]) -> None:
        self.status, self.emit, self.skip = status, emit, skip
        self.last: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, digest: str, current: int, total: int | None) -> None:
        if digest in self.skip:
            return
        with self.lock:
            step = max(32 << 10, int((total or 0) * _PROGRESS_STEP))
            if current - self.last.get(digest, -step) < step and current != total:
                return
            self.last[digest] = current
        self.emit(layer_event(digest, self.status, current, total))


def byte_events(status: str, emit: OnEvent) -> Callable[[str, int, int | None], None]:
    """``(digest, bytes so far, total)`` -> Docker's throttled byte events with ``status``
    (``Loading layer`` for the layers ``load`` reads out of an archive)."""
    return _ByteProgress(status, emit, set())


# -- credentials -----------------------------------------------------------------------------
def decode_registry_auth(header: str | None) -> Credentials | None:
    """The ``X-Registry-Auth`` header: base64url JSON ``{username, password, auth,
    serveraddress, identitytoken}``; None when absent or empty."""
    if not header or not header.strip():
        return None
    text = header.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, TypeError):
        raise UsageError("invalid X-Registry-Auth header: not base64url-encoded JSON") from None
    if not isinstance(data, dict):
        raise UsageError("invalid X-Registry-Auth header: not a JSON object")
    username, password = data.get("username") or "", data.get("password") or ""
    if data.get("auth") and not (username and password):
        try:
            username, _, password = base64.b64decode(data["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise UsageError("invalid X-Registry-Auth header: bad auth field") from None
    token = data.get("identitytoken") or ""
    if token:
        return Credentials(username or "<token>", token)
    if username and password:
        return Credentials(username, password)
    return None


def _clients(engine: Any, host: str, credentials: Credentials | None, stored_credentials: bool) -> list[Any]:
    """The mirrors, then the registry; the registry's client carries ``credentials`` when given."""
    from pyengine.registry.client import RegistryClient
    from pyengine.registry.connect import pull_clients, registry_options

    clients = pull_clients(engine, host, with_credentials=stored_credentials)
    if credentials is not None:
        clients[-1] = RegistryClient(host, registry_options(engine, host), credentials)
    return clients


# -- pull ------------------------------------------------------------------------------------
@dataclass
class PullResult:
    ref: Reference
    digest: str
    image: Any
    up_to_date: bool


def pull_reference(name: str, tag: str | None = None) -> Reference:
    """``fromImage`` and ``tag`` of ``POST /images/create`` (the tag may be a digest); with
    neither a tag nor a digest the reference has none (the whole repository)."""
    if tag:
        name = f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"
    return parse_reference(name, default_tag=False)


def pull_image(engine: Any, store: Any, ref: Reference, platform: str | None = None, *,
               credentials: Credentials | None = None, stored_credentials: bool = True,
               on_event: OnEvent | None = None) -> PullResult:
    """Pull ``ref`` into ``store``, trying the registry's mirrors first; events as dockerd's.

    :param credentials: the client's (``X-Registry-Auth``), used instead of any stored ones
    :param stored_credentials: look up credential plugins and the credentials file (the CLI
        does; the daemon does not, so a client never borrows the daemon user's logins)
    """
    from pyengine.registry.client import RegistryAuthError, RegistryError
    from pyengine.registry.transfer import Puller, parse_platform

    emit = on_event or (lambda _event: None)
    want = parse_platform(platform)
    clients = _clients(engine, ref.domain, credentials, stored_credentials)
    try:
        for client in clients:
            last = client is clients[-1]
            try:
                return _pull_from(client, store, ref, want, emit, Puller)
            except RegistryAuthError:
                if last:
                    raise
            except (RegistryError, NotFound):
                # A mirror that fails is skipped; the registry's own failure is the answer.
                if last:
                    raise
    finally:
        for client in clients:
            client.close()
    raise AssertionError("unreachable")  # the loop returns or raises


def _pull_from(client: Any, store: Any, ref: Reference, want: Any, emit: OnEvent, puller_class: Any) -> PullResult:
    config_digest: set[str] = set()
    downloading = _ByteProgress("Downloading", emit, config_digest)

    def on_transfer(digest: str, event: str) -> None:
        if digest in config_digest or event in ("Already exists", "Downloading"):
            return
        if event == "Pull complete":  # the blob arrived whole and verified
            emit(layer_event(digest, "Verifying Checksum"))
            emit(layer_event(digest, "Download complete"))
            return
        emit(layer_event(digest, event))

    def on_layer(digest: str, event: str) -> None:
        emit(layer_event(digest, event))

    from pyengine.registry.client import RegistryError

    puller = puller_class(client, store, on_transfer, on_bytes=downloading, on_layer=on_layer)
    try:
        resolved = puller.resolve(ref, want)
    except RegistryError as exc:
        if exc.http_status == 404:  # dockerd's wording, which clients show as is
            raise NotFound(f"manifest for {ref.familiar()} not found: manifest unknown: manifest unknown") from None
        raise
    config_digest.add(resolved.config["digest"])
    emit({"status": f"Pulling from {ref.path}", "id": ref.tag or ref.digest})
    for layer in resolved.layers:
        emit(layer_event(layer["digest"], "Already exists" if store.has_blob(layer["digest"]) else "Pulling fs layer"))
    if ref.tag:
        up_to_date = store.tags().get(str(ref)) == resolved.top_digest
    else:
        try:
            store.resolve_image(str(ref))
            up_to_date = True
        except NotFound:
            up_to_date = False
    digest, image = puller.complete(ref, resolved)
    emit({"status": f"Digest: {digest}"})
    emit({"status": f"Status: {'Image is up to date' if up_to_date else 'Downloaded newer image'} for "
                    f"{ref.familiar()}"})
    return PullResult(ref, digest, image, up_to_date)


def repository_tags(engine: Any, ref: Reference, credentials: Credentials | None = None,
                    stored_credentials: bool = True) -> list[str]:
    """Every tag of ``ref``'s repository, as the registry (not a mirror) lists them."""
    client = _clients(engine, ref.domain, credentials, stored_credentials)[-1]
    try:
        return list(client.tags(ref.path))
    finally:
        client.close()


# -- push ------------------------------------------------------------------------------------
@dataclass
class PushResult:
    ref: Reference
    digest: str
    size: int


def push_image(engine: Any, local_ref: str, destination: str | None = None, *,
               credentials: Credentials | None = None, stored_credentials: bool = True,
               chunk_size: int | None = None, on_event: OnEvent | None = None) -> PushResult:
    """Push the stored image ``local_ref`` to ``destination`` (default: its own name)."""
    from pyengine.registry.connect import client_for, registry_options
    from pyengine.registry.transfer import PUSH_CHUNK, Pusher

    emit = on_event or (lambda _event: None)
    store = engine.images
    try:
        image = store.resolve_image(local_ref)
    except NotFound:
        raise NotFound(f"An image does not exist locally with the tag: {local_ref}") from None
    ref = parse_reference(destination or local_ref)
    if credentials is not None:
        from pyengine.registry.client import RegistryClient

        client = RegistryClient(ref.domain, registry_options(engine, ref.domain), credentials)
    else:
        client = client_for(engine, ref.domain, with_credentials=stored_credentials)
    manifest = json.loads(store.read_blob(image.manifest_digest))
    config_digest = {manifest["config"]["digest"]}
    emit({"status": f"The push refers to repository [{ref.repository}]"})
    for layer in reversed(manifest.get("layers") or []):
        emit(layer_event(layer["digest"], "Preparing"))

    def on_transfer(digest: str, event: str) -> None:
        if digest not in config_digest:
            emit(layer_event(digest, event))

    pushing = _ByteProgress("Pushing", emit, config_digest)
    try:
        digest = Pusher(client, store, on_transfer, chunk_size or PUSH_CHUNK, on_bytes=pushing).push(local_ref, ref)
    finally:
        client.close()
    size = len(store.read_blob(digest))
    tag = ref.tag or "latest"
    emit({"status": f"{tag}: digest: {digest} size: {size}"})
    emit({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": size}})
    return PushResult(ref, digest, size)


# -- search and login ------------------------------------------------------------------------
def search(engine: Any, term: str, limit: int = 25, with_tags: bool = False,
           credentials: Credentials | None = None, stored_credentials: bool = True) -> list[dict[str, Any]]:
    """Repositories of a registry's catalog whose name contains TERM (``[REGISTRY/]TERM``), in
    the shape of ``GET /images/search``; ``with_tags`` adds each one's ``tags``."""
    from pyengine.registry.client import RegistryClient
    from pyengine.registry.connect import client_for, registry_options

    first, sep, rest = term.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, needle = first, rest
    else:
        host, needle = "docker.io", term
    if credentials is not None:
        client = RegistryClient(host, registry_options(engine, host), credentials)
    else:
        client = client_for(engine, host, with_credentials=stored_credentials)
    try:
        names = [r for r in client.catalog() if needle in r][:limit]
        found = []
        for repo in names:
            entry: dict[str, Any] = {"name": f"{host}/{repo}", "description": "", "star_count": 0,
                                     "is_official": False, "is_automated": False}
            if with_tags:
                entry["tags"] = sorted(client.tags(repo))
            found.append(entry)
        return found
    finally:
        client.close()


def distribution_inspect(engine: Any, ref: Reference, credentials: Credentials | None = None,
                         stored_credentials: bool = False) -> dict[str, Any]:
    """``GET /distribution/{name}/json``: the descriptor a reference resolves to in its registry
    and the platforms it offers, without pulling anything."""
    from pyengine.images import media
    from pyengine.registry.transfer import ACCEPT

    if not ref.tag and not ref.digest:
        ref = ref.with_tag("latest")
    client = _clients(engine, ref.domain, credentials, stored_credentials)[-1]
    try:
        media_type, data, _ = client.get_manifest(ref.path, ref.digest or ref.tag or "latest", ACCEPT)
        doc = json.loads(data)
        media_type = doc.get("mediaType") or media_type
        descriptor = {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                      "size": len(data)}
        if media_type in media.INDEX_TYPES:
            platforms = [{k: v for k, v in (d.get("platform") or {}).items()} for d in doc.get("manifests") or []
                         if d.get("platform")]
        else:
            config_ref = doc.get("config") or {}
            resp, _ = client.blob_stream(ref.path, config_ref["digest"])
            config = json.loads(resp.read())
            platforms = [{"architecture": config.get("architecture", ""), "os": config.get("os", ""),
                          **({"variant": config["variant"]} if config.get("variant") else {})}]
        return {"Descriptor": descriptor, "Platforms": platforms}
    finally:
        client.close()


def check_login(engine: Any, server: str, username: str, password: str) -> str:
    """Check credentials against a registry (RegistryAuthError when refused); its host name."""
    from pyengine.registry import auth
    from pyengine.registry.client import RegistryClient
    from pyengine.registry.connect import registry_options

    host = auth.normalise_host(server)
    if not username or not password:
        raise UsageError("login needs a user name and a password")
    client = RegistryClient(host, registry_options(engine, host), Credentials(username, password))
    try:
        client.login()
    finally:
        client.close()
    return host
