"""The image verbs the CLI and the daemon share: list with Docker's filters, inspect and history
in Docker's shapes, remove with dockerd's conflict rules, prune, import with ``--change``.

Calls the image store and, to know which containers use an image, the container store. The
CLI prints what these return; the API encodes it as Docker's JSON.
"""

from __future__ import annotations

import fnmatch
import json
import re
from datetime import UTC, datetime
from typing import IO, Any

from pyengine.errors import Conflict, NotFound, UsageError
from pyengine.images.reference import looks_like_id, parse_reference
from pyengine.images.store import Image, ImageStore

#: the filters ``GET /images/json`` and ``images --filter`` accept
LIST_FILTERS = ("dangling", "label", "reference", "before", "since")
#: the filters ``POST /images/prune`` accepts
PRUNE_FILTERS = ("dangling", "label", "until")


def unix_time(created: str) -> int:
    """An RFC 3339 time (nanoseconds allowed) as Unix seconds; 0 when unknown."""
    if not created:
        return 0
    try:
        when = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", created).replace("Z", "+00:00"))
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def check_filters(filters: dict[str, list[str]], allowed: tuple[str, ...]) -> None:
    for key in filters:
        if key not in allowed:
            raise UsageError(f"invalid filter '{key}'")


def _bool_filter(values: list[str], name: str) -> bool:
    value = values[-1].lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise UsageError(f"invalid filter '{name}={values[-1]}'")


def labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    """Docker's ``label`` filter: every ``key`` must be present, every ``key=value`` equal."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def repo_digests(store: ImageStore, image: Image) -> list[str]:
    """``busybox@sha256:...`` for every repository the image was pulled or pushed under."""
    tags = store.tags()
    out = set()
    for name in image.tags:
        digest = tags.get(name)
        if digest:
            out.add(f"{parse_reference(name).familiar_repository}@{digest}")
    return sorted(out)


def summary(store: ImageStore, image: Image, containers: int = -1) -> dict[str, Any]:
    """One entry of ``GET /images/json`` (Docker's ImageSummary)."""
    return {
        "Id": image.id,
        "ParentId": "",
        "RepoTags": [parse_reference(t).familiar() for t in image.tags],
        "RepoDigests": repo_digests(store, image),
        "Created": unix_time(image.created),
        "Size": image.size,
        "SharedSize": -1,
        "VirtualSize": image.size,
        "Labels": image.config.get("Labels") or {},
        "Containers": containers,
    }


def list_images(store: ImageStore, filters: dict[str, list[str]] | None = None,
                all_: bool = True) -> list[dict[str, Any]]:
    """Images as ``GET /images/json`` lists them, newest first, with Docker's filters.

    Without ``all_`` the untagged intermediate images of builds (the build cache's) are left
    out, as dockerd leaves out images that are only parents of others.
    """
    filters = filters or {}
    check_filters(filters, LIST_FILTERS)
    images = sorted(store.images(), key=lambda i: (unix_time(i.created), i.id), reverse=True)
    if not all_:
        from pyengine.build.cache import BuildCache

        intermediate = BuildCache(store.data_root).held_images()
        images = [i for i in images if i.tags or i.id not in intermediate]
    if "dangling" in filters:
        dangling = _bool_filter(filters["dangling"], "dangling")
        images = [i for i in images if (not i.tags) == dangling]
    if "label" in filters:
        images = [i for i in images if labels_match(i.config.get("Labels") or {}, filters["label"])]
    if "reference" in filters:
        # As dockerd: only the matching names are shown, and an image with none is left out.
        for image in images:
            image.tags = [t for t in image.tags if any(_reference_match(t, p) for p in filters["reference"])]
        images = [i for i in images if i.tags]
    for key, keep_older in (("before", True), ("since", False)):
        for value in filters.get(key, []):
            pivot = unix_time(store.resolve_image(value).created)
            images = [i for i in images if (unix_time(i.created) < pivot if keep_older
                                            else unix_time(i.created) > pivot)]
    return [summary(store, i) for i in images]


def _reference_match(tag: str, pattern: str) -> bool:
    """Docker's ``reference`` filter: the pattern against the familiar name with and without tag."""
    ref = parse_reference(tag)
    return fnmatch.fnmatchcase(ref.familiar(), pattern) or fnmatch.fnmatchcase(ref.familiar_repository, pattern)


_CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None, "Cmd": None,
    "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None,
}


def inspect(store: ImageStore, image: Image, store_details: bool = True) -> dict[str, Any]:
    """Docker's ImageInspect; with ``store_details`` (the CLI's) also the store's manifest
    digests (``Manifests``) and the manifest it resolves to (``Descriptor``)."""
    config = image.image_config
    data = {
        "Id": image.id,
        "RepoTags": [parse_reference(t).familiar() for t in image.tags],
        "RepoDigests": repo_digests(store, image),
        "Parent": "",
        "Comment": config.get("comment", "") or _last_comment(config),
        "Created": image.created,
        "DockerVersion": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Config": {**_CONFIG_DEFAULTS, **image.config},
        "Architecture": config.get("architecture", ""),
        **({"Variant": config["variant"]} if config.get("variant") else {}),
        "Os": config.get("os", ""),
        "Size": image.size,
        "VirtualSize": image.size,
        "GraphDriver": {"Name": getattr(store.storage, "name", ""), "Data": {"TopLayer": image.top_layer}},
        "RootFS": {"Type": "layers", "Layers": image.diff_ids},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }
    if store_details:
        data["Manifests"] = image.manifests
        data["Descriptor"] = {"digest": image.manifest_digest}
    return data


def _last_comment(config: dict[str, Any]) -> str:
    history = config.get("history") or []
    return (history[-1].get("comment") or "") if history else ""


def history(image: Image) -> list[dict[str, Any]]:
    """``GET /images/{name}/history``: newest first; only the top entry carries the image ID."""
    entries = image.image_config.get("history") or [{"created": image.created}] * len(image.layers)
    sizes = list(image.layer_sizes)
    rows = []
    for i, entry in enumerate(entries):
        size = 0 if entry.get("empty_layer") or not sizes else sizes.pop(0)
        top = i == len(entries) - 1
        rows.append({"Id": image.id if top else "<missing>", "Created": unix_time(entry.get("created", "")),
                     "CreatedAt": entry.get("created", ""), "CreatedBy": entry.get("created_by", ""),
                     "Tags": [parse_reference(t).familiar() for t in image.tags] if top else None,
                     "Size": size, "Comment": entry.get("comment", "")})
    rows.reverse()
    return rows


# -- removal ---------------------------------------------------------------------------------
def container_users(engine: Any) -> dict[str, list[tuple[str, bool]]]:
    """image id -> [(container id, running)] for every container of the engine."""
    from pyengine.containers.engine import Containers

    users: dict[str, list[tuple[str, bool]]] = {}
    for record in Containers(engine).list(all_=True):
        users.setdefault(record.image_id, []).append((record.id, bool(record.state.running)))
    return users


def remove(engine: Any, image_ref: str, force: bool = False) -> list[tuple[str, str]]:
    """``rmi`` / ``DELETE /images/{name}`` with dockerd's rules; ("Untagged"|"Deleted", what) lines.

    A name is untagged; the image goes with its last name unless a container uses it (then
    the untag is refused without ``force``, and with it the image stays, untagged). By ID,
    every name goes with the image; a stopped container's image needs ``force``, a running
    one's cannot be removed.
    """
    store = engine.images
    with store.lock():
        image = store.resolve_image(image_ref)
        users = container_users(engine).get(image.id, [])
        by_id = looks_like_id(image_ref) and image.id[len("sha256:"):].startswith(
            image_ref.removeprefix("sha256:"))
        ref = None if by_id else parse_reference(image_ref)
        if ref is not None and not ref.digest:
            single = len(image.tags) <= 1
            if not force and single and users:
                raise Conflict(f'conflict: unable to remove repository reference "{image_ref}" (must force) - '
                               f"container {users[0][0][:12]} is using its referenced image {image.short_id}")
            out = store.untag(str(ref))
            if not single or users:
                return out  # other names remain, or the image stays untagged for its container
            return out + store.delete_untagged(store.resolve_image(image.id))
        repos = {parse_reference(t).repository for t in image.tags}
        if len(repos) > 1 and not force:
            raise Conflict(f"conflict: unable to delete {image.short_id} (must be forced) - image is "
                           "referenced in multiple repositories")
        blocking = _blocking(image, users, force)
        if blocking:
            raise blocking
        out = []
        for name in image.tags:
            out += store.untag(name)
        return out + store.delete_untagged(store.resolve_image(image.id))


def _blocking(image: Image, users: list[tuple[str, bool]], force: bool) -> Conflict | None:
    running = [cid for cid, up in users if up]
    if running:
        return Conflict(f"conflict: unable to delete {image.short_id} (cannot be forced) - image is being used "
                        f"by running container {running[0][:12]}")
    if users and not force:
        return Conflict(f"conflict: unable to delete {image.short_id} (must be forced) - image is being used "
                        f"by stopped container {users[0][0][:12]}")
    return None


def prune(engine: Any, all_images: bool = False,
          filters: dict[str, list[str]] | None = None) -> tuple[list[tuple[str, str]], int]:
    """Remove dangling images (``all_images``: every image no container uses); (lines, bytes)."""
    filters = dict(filters or {})
    check_filters(filters, PRUNE_FILTERS)
    if "dangling" in filters:
        all_images = not _bool_filter(filters.pop("dangling"), "dangling")
    keep = None
    if filters:
        store = engine.images
        until = [_until(v) for v in filters.get("until", [])]
        keep = {i.id for i in store.images()
                if not labels_match(i.config.get("Labels") or {}, filters.get("label", []))
                or any(unix_time(i.created) >= u for u in until)}
    used = set(container_users(engine))
    return engine.images.prune(all_images, extra_in_use=used | (keep or set()))


def _until(value: str) -> int:
    if value.isdigit():
        return int(value)
    stamp = unix_time(value)
    if not stamp:
        raise UsageError(f"invalid filter 'until={value}'")
    return stamp


# -- import ----------------------------------------------------------------------------------
def parse_changes(changes: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``import --change``: Dockerfile instructions applied to the new image's config."""
    config: dict[str, Any] = {}
    for change in changes:
        key, _, value = change.strip().partition(" ")
        key = key.upper()
        value = value.strip()
        if key in ("CMD", "ENTRYPOINT"):
            try:
                as_list = json.loads(value) if value.startswith("[") else ["/bin/sh", "-c", value]
            except ValueError:
                raise UsageError(f"invalid {key} {value!r}: not a JSON list") from None
            config["Cmd" if key == "CMD" else "Entrypoint"] = as_list
        elif key == "ENV":
            name, _, val = value.replace("=", " ", 1).partition(" ")
            config.setdefault("Env", []).append(f"{name}={val.strip()}")
        elif key == "WORKDIR":
            config["WorkingDir"] = value
        elif key == "USER":
            config["User"] = value
        elif key == "LABEL":
            name, _, val = value.partition("=")
            config.setdefault("Labels", {})[name] = val.strip('"')
        elif key == "EXPOSE":
            config.setdefault("ExposedPorts", {})[value if "/" in value else f"{value}/tcp"] = {}
        elif key == "STOPSIGNAL":
            config["StopSignal"] = value
        else:
            raise UsageError(f"unsupported --change instruction {key!r}")
    return config


def import_image(store: ImageStore, stream: IO[bytes], ref: str | None, message: str = "",
                 changes: list[str] | tuple[str, ...] = ()) -> Image:
    """``import`` / ``POST /images/create?fromSrc=-``: a rootfs tarball as a one-layer image."""
    from pyengine.images.archive import import_rootfs

    return import_rootfs(store, stream, ref, message, parse_changes(changes))


def find_image(store: ImageStore, name: str) -> Image:
    """``resolve_image`` with Docker's answer for a name no image has."""
    try:
        return store.resolve_image(name)
    except NotFound:
        raise NotFound(f"No such image: {name}") from None
